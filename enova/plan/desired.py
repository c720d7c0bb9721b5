"""Desired state from a validated spec set: one DesiredDeployment per Deployment document,
computed once over the whole set (which deployment is the default is a property of the set).

The replica config holds exactly the fields that plan.fields marks REPLACE, so its hash
changes if and only if the replicas must be replaced; `serving` and `settings` hold the
UPDATE fields, written to the deployment record in place. Pure; called by the CLI, enode and
the reconciler before plan.diff.compute_plan.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import os

from enova.spec.loader import SpecSet
from enova.spec.models import DeploymentSpec, GatewaySpec

from .fields import Effect, project
from .model import DesiredDeployment, DesiredGateway


def replica_config(spec: DeploymentSpec) -> dict[str, Any]:
    """The fields a replica process is started from (plan.fields REPLACE), in a canonical shape."""
    return project(spec.model_dump(mode="json"), Effect.REPLACE)


def in_place(spec: DeploymentSpec, is_default: bool) -> dict[str, Any]:
    """The in-place fields (plan.fields UPDATE): {"serving": {...}, "settings": {...}}, with the
    effective default decided over the spec set."""
    out = project(spec.model_dump(mode="json"), Effect.UPDATE)
    out["serving"]["default"] = is_default
    return out


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a replica config (12 hex digits of sha256 over canonical JSON)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def desired_state(specs: SpecSet) -> dict[str, DesiredDeployment]:
    """Map deployment name -> DesiredDeployment, sorted by name."""
    out: dict[str, DesiredDeployment] = {}
    default = specs.default_deployment
    for name in sorted(specs.deployments):
        located = specs.deployments[name]
        config = replica_config(located.doc.spec)
        updates = in_place(located.doc.spec, name == default)
        out[name] = DesiredDeployment(
            name=name,
            replicas=located.doc.spec.replicas,
            config=config,
            config_hash=config_hash(config),
            source=f"{located.file}:{located.line}",
            serving=updates["serving"],
            settings=updates["settings"],
            base_dir=os.path.dirname(os.path.realpath(str(located.file))),
        )
    return out


def desired_gateway(specs: SpecSet) -> DesiredGateway | None:
    """The gateway's config from the Gateway document (or the defaults); None when disabled.
    A relative token_file is resolved against the spec file's folder (path arithmetic only)."""
    located = specs.gateway
    spec = located.doc.spec if located else GatewaySpec()
    if not spec.enabled:
        return None
    token_file = spec.token_file
    if token_file and located is not None:
        token_file = os.path.normpath(os.path.join(os.path.dirname(located.file), os.path.expanduser(token_file)))
    config = {
        "host": spec.host, "port": spec.port, "token_file": token_file,
        "max_body_bytes": spec.max_body_bytes, "queue_size": spec.queue_size, "queue_timeout": spec.queue_timeout,
    }
    return DesiredGateway(config=config, config_hash=config_hash(config))

