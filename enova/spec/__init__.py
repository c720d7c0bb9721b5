"""Desired state: the spec documents users write, loaded from YAML with file:line errors.

Pure: imports only the standard library, pydantic and yaml, and reads nothing but spec files.
The planner, the reconcile loop and the CLI import from here rather than from the submodules.
"""

from enova.spec.base import StrictModel
from enova.spec.builtins import BUILTIN_MODELS, BuiltinModel
from enova.spec.loader import Located, SpecSet, load_specs
from enova.spec.models import (
    API_VERSION,
    DOCUMENT_KINDS,
    SLO,
    ArrivalSpec,
    Deployment,
    DeploymentSpec,
    Document,
    Duration,
    EngineArgValue,
    EngineSpec,
    LoadProfile,
    LoadProfileSpec,
    Metadata,
    Monitoring,
    MonitoringSpec,
    PrometheusSpec,
    Resources,
    SLOSpec,
    classify_model,
    parse_duration,
)
from enova.spec.schema import SCHEMA_ID, json_schema

__all__ = [
    "API_VERSION",
    "BUILTIN_MODELS",
    "DOCUMENT_KINDS",
    "SCHEMA_ID",
    "SLO",
    "ArrivalSpec",
    "BuiltinModel",
    "Deployment",
    "DeploymentSpec",
    "Document",
    "Duration",
    "EngineArgValue",
    "EngineSpec",
    "LoadProfile",
    "LoadProfileSpec",
    "Located",
    "Metadata",
    "Monitoring",
    "MonitoringSpec",
    "PrometheusSpec",
    "Resources",
    "SLOSpec",
    "SpecSet",
    "StrictModel",
    "classify_model",
    "json_schema",
    "load_specs",
    "parse_duration",
]
