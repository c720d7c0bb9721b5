"""The spec documents: what a user writes in YAML, as strict pydantic models.

Three kinds of document, each with `apiVersion`, `kind`, `metadata` and `spec`:
`Deployment` (a model served by engine replicas), `SLO` (latency and error objectives) and
`LoadProfile` (synthetic load aimed at a Deployment). `Document` is their union, discriminated
on `kind`. `enova.spec.loader` validates YAML into these; the planner and the load injector read
them. Checks that need more than one document (references, duplicate names) live in the loader.

Validators raise `ValueError` with a short message written for the user; the loader adds the
file, line, field path and the offending value.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_validator,
    model_validator,
)

from enova.spec.base import StrictModel
from enova.spec.builtins import BUILTIN_MODELS

API_VERSION = "enova/v1"

# ---------------------------------------------------------------------------------------------
# Durations

DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|h|m|s))+$"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_HELP = "must be a duration such as 500ms, 60s, 5m or 1h30m, or a number of seconds"


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or a string such as "500ms", "60s", "5m", "1h30m".

    Raises ValueError for anything else, and for durations that are not > 0."""
    if isinstance(value, bool):
        raise ValueError(_DURATION_HELP)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(DURATION_PATTERN, value):
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(value))
    else:
        raise ValueError(_DURATION_HELP)
    if not seconds > 0:
        raise ValueError("must be > 0")
    if math.isinf(seconds):
        raise ValueError("must be finite")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]
"""A duration in seconds; YAML may give a number of seconds or a string such as "1h30m"."""

# ---------------------------------------------------------------------------------------------
# Metadata

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Metadata(StrictModel):
    """The document's name (unique per kind) and free-form labels."""

    name: str = Field(
        description="Name of the document, unique per kind: a DNS-1123 label (lowercase letters, digits and '-').",
        json_schema_extra={"pattern": NAME_PATTERN, "maxLength": 63},
    )
    labels: dict[str, str] = Field({}, description="Free-form labels for grouping and selection (team, tier, ...); they do not change replicas.")

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, name: str) -> str:
        if not name:
            raise ValueError("must not be empty")
        if len(name) > 63:
            raise ValueError("must be at most 63 characters")
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(
                "must be a DNS-1123 label: lowercase letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return name


# ---------------------------------------------------------------------------------------------
# Deployment

ENGINE_ARG_KEY_PATTERN = r"^[a-z][a-z0-9_]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
RESERVED_ENGINE_ARGS = {
    "model": "set from spec.model",
    "host": "set by enova",
    "port": "set by enova",
    "served_model_name": "set from metadata.name",
}


def _check_engine_arg_key(key: str) -> str:
    snake = key.lower().replace("-", "_")
    if snake in RESERVED_ENGINE_ARGS:
        raise ValueError(f"reserved; {RESERVED_ENGINE_ARGS[snake]}")
    if not re.fullmatch(ENGINE_ARG_KEY_PATTERN, key):
        if re.fullmatch(ENGINE_ARG_KEY_PATTERN, snake):
            raise ValueError(f"use snake_case: {snake}")
        raise ValueError("must be snake_case: lowercase letters, digits and '_', starting with a letter")
    return key


def _one_engine_arg_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        raise ValueError("must be a string, number, boolean, list of those, or mapping") from None


# engine.env names a spec may not set, and why. enova's own are what templates/vllm/env.yaml.j2
# renders (a unit test holds the two together); the others would let a spec run other code in the
# engine process, or speak for enova to systemd.
_ENOVA_SETS = "enova sets it for every replica"
_HIJACK = "could hijack the engine process"
RESERVED_ENV = {
    **dict.fromkeys(("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE", "VLLM_CPU_OMP_THREADS_BIND",
                     "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"), _ENOVA_SETS),
    "NVIDIA_VISIBLE_DEVICES": "enova assigns GPUs by CUDA_VISIBLE_DEVICES; this would override it",
    **dict.fromkeys(("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                     "PATH"), _HIJACK),
    **dict.fromkeys(("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"), "systemd's, for enova's own service"),
}
RESERVED_ENV_PREFIXES = {"ENOVA_": "enova's own variables", "WATCHDOG_": "systemd's, for enova's own service"}


def _check_env_name(name: str) -> str:
    if not re.fullmatch(ENV_NAME_PATTERN, name):
        raise ValueError("must be an environment variable name: letters, digits and '_', not starting with a digit")
    if name in RESERVED_ENV:
        raise ValueError(f"reserved; {RESERVED_ENV[name]}")
    for prefix, why in RESERVED_ENV_PREFIXES.items():
        if name.startswith(prefix):
            raise ValueError(f"reserved; {prefix}* are {why}")
    return name


EngineArgKey = Annotated[
    str,
    AfterValidator(_check_engine_arg_key),
    WithJsonSchema(
        {"type": "string", "pattern": ENGINE_ARG_KEY_PATTERN, "not": {"enum": sorted(RESERVED_ENGINE_ARGS)}}
    ),
]
EngineArgValue = Annotated[
    Union[str, int, float, bool, list[Union[str, int, float]], dict[str, Any]],
    WrapValidator(_one_engine_arg_error),
]
"""A JSON-ish value of an engine argument."""
EnvName = Annotated[
    str,
    AfterValidator(_check_env_name),
    WithJsonSchema({
        "type": "string", "pattern": ENV_NAME_PATTERN,
        "not": {"anyOf": [{"enum": sorted(RESERVED_ENV)},
                          *({"pattern": f"^{prefix}"} for prefix in sorted(RESERVED_ENV_PREFIXES))]},
    }),
]
# pydantic renders a key pattern as patternProperties; this makes other keys invalid too.
_ONLY_PATTERN_KEYS = {"additionalProperties": False}


class EngineSpec(StrictModel):
    """The inference engine and how it is started."""

    name: Literal["vllm"] = Field("vllm", description="The inference engine. Only vLLM for now.")
    args: dict[EngineArgKey, EngineArgValue] = Field(
        {},
        json_schema_extra=_ONLY_PATTERN_KEYS,
        description=(
            "Engine arguments in snake_case, passed as --kebab-case flags (max_num_seqs: 16 becomes "
            "--max-num-seqs 16). model, host, port and served_model_name are set by enova."
        ),
    )
    env: dict[EnvName, str] = Field(
        {}, json_schema_extra=_ONLY_PATTERN_KEYS,
        description=("Extra environment variables for the engine process. Not the ones enova sets (ENOVA_*, "
                     "CUDA_VISIBLE_DEVICES, VLLM_CPU_OMP_THREADS_BIND, ...) nor ones that could run other code "
                     "in it (LD_PRELOAD, PYTHONPATH, PATH, ...)."),
    )
    startup_timeout: Duration = Field(600.0, description="How long a replica may take to become healthy.")


class Resources(StrictModel):
    """What each replica gets from the host."""

    gpus: int = Field(
        0,
        ge=0,
        description="GPUs per replica. The GPU build of vLLM needs gpus >= 1; gpus 0 means the CPU build.",
    )
    cpus: int = Field(1, ge=1, description="CPU cores bound to each replica.")


class ServingSpec(StrictModel):
    """How the gateway on :9199 serves this deployment."""

    default: bool = Field(
        False, description="Requests to /generate (which names no model) go here. At most one deployment may set it; "
        "with a single deployment it is the default anyway.")
    max_concurrency: Union[int, None] = Field(
        None, gt=0, description="Requests in flight per replica before the gateway queues them "
        "(default: the engine's max_num_seqs, else 256).")
    drain_timeout: Duration = Field(
        30.0, description="Before a replica is stopped, how long its in-flight requests may take to finish.")


def classify_model(ref: str) -> Literal["builtin", "hub", "local"]:
    """Which of the three kinds of model reference `ref` is.

    "builtin:<name>" is a builtin model, a path ("/x", "./x", "../x", "~/x", ".") a local folder,
    "org/name" a Hugging Face id. Anything else raises ValueError explaining the three forms.
    Does not check that a builtin name exists (DeploymentSpec does)."""
    if ref.startswith("builtin:"):
        return "builtin"
    if ref == "." or ref.startswith(("/", "./", "../", "~")):
        return "local"
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", ref):
        return "hub"
    raise ValueError(
        "must be builtin:<name>, a Hugging Face id (org/name) or a local folder (./path, /path or ~/path)"
    )


class DeploymentSpec(StrictModel):
    """A model served by one or more engine replicas."""

    model: str = Field(
        description=(
            "The model: builtin:<name> (one of: " + ", ".join(sorted(BUILTIN_MODELS)) + "), "
            "a Hugging Face id (org/name) or a local folder (./path, /path or ~/path)."
        ),
        min_length=1,
    )
    engine: EngineSpec = Field(EngineSpec(), description="The inference engine and its arguments.")
    runtime: Literal["local"] = Field(
        "local", description="Where replicas run. local: processes on this host (docker comes later)."
    )
    replicas: int = Field(1, ge=0, description="How many engine replicas to run.")
    resources: Resources = Field(Resources(), description="What each replica gets from the host.")
    slo: Union[str, None] = Field(None, description="Name of an SLO document this deployment is held to.")
    serving: ServingSpec = Field(ServingSpec(), description="How the gateway serves this deployment.")

    @field_validator("model")
    @classmethod
    def _model_reference(cls, ref: str) -> str:
        if classify_model(ref) == "builtin":
            name = ref.removeprefix("builtin:")
            if name not in BUILTIN_MODELS:
                raise ValueError(f"unknown builtin model; known: {', '.join(sorted(BUILTIN_MODELS))}")
        return ref

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime_not_yet(cls, runtime: Any) -> Any:
        if runtime == "docker":
            raise ValueError("the docker runtime is not available yet; use 'local'")
        return runtime


# ---------------------------------------------------------------------------------------------
# SLO

_OBJECTIVES = ("ttft_p95_ms", "itl_p95_ms", "e2e_p99_ms", "max_error_rate")


class SLOSpec(StrictModel):
    """Service level objectives; set at least one."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": [name]} for name in _OBJECTIVES]})

    ttft_p95_ms: Union[float, None] = Field(None, gt=0, description="95th percentile time to first token, in ms.")
    itl_p95_ms: Union[float, None] = Field(None, gt=0, description="95th percentile inter-token latency, in ms.")
    e2e_p99_ms: Union[float, None] = Field(None, gt=0, description="99th percentile end-to-end request latency, in ms.")
    max_error_rate: Union[float, None] = Field(
        None, ge=0, le=1, description="Largest acceptable fraction of failed requests, from 0 to 1."
    )

    @model_validator(mode="after")
    def _at_least_one_objective(self) -> "SLOSpec":
        if all(getattr(self, name) is None for name in _OBJECTIVES):
            raise ValueError(f"set at least one objective: {', '.join(_OBJECTIVES)}")
        return self


# ---------------------------------------------------------------------------------------------
# LoadProfile


def _when_process(process: str, then: dict[str, Any], otherwise: dict[str, Any]) -> dict[str, Any]:
    condition = {"required": ["process"], "properties": {"process": {"const": process}}}
    return {"if": condition, "then": then, "else": otherwise}


class ArrivalSpec(StrictModel):
    """When requests arrive."""

    # The same rules as the field validators below, for editors.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                _when_process("trace", {"required": ["trace"]}, {"required": ["rate"], "not": {"required": ["trace"]}}),
                _when_process("gamma", {"required": ["burstiness"]}, {"not": {"required": ["burstiness"]}}),
            ]
        }
    )

    process: Literal["poisson", "constant", "gamma", "trace"] = Field(
        description=(
            "The arrival process: poisson (exponential gaps), constant (fixed gaps), "
            "gamma (gaps with a burstiness), trace (replay timestamps from a file)."
        )
    )
    rate: Union[float, None] = Field(
        None, gt=0, validate_default=True, description="Requests per second; required unless process is trace."
    )
    burstiness: Union[float, None] = Field(
        None,
        gt=0,
        validate_default=True,
        description="Gamma shape: 1 is Poisson, < 1 burstier, > 1 more regular. Required with gamma, only for gamma.",
    )
    trace: Union[str, None] = Field(
        None,
        validate_default=True,
        description="A trace file, relative to the spec file's folder. Required with process trace, only for trace.",
    )

    @field_validator("rate")
    @classmethod
    def _rate_unless_trace(cls, rate: Union[float, None], info: ValidationInfo) -> Union[float, None]:
        process = info.data.get("process")
        if rate is None and process is not None and process != "trace":
            raise ValueError(f"required with process '{process}'")
        return rate

    @field_validator("burstiness")
    @classmethod
    def _burstiness_with_gamma(cls, burstiness: Union[float, None], info: ValidationInfo) -> Union[float, None]:
        return _only_with(burstiness, info.data.get("process"), "gamma")

    @field_validator("trace")
    @classmethod
    def _trace_with_trace(cls, trace: Union[str, None], info: ValidationInfo) -> Union[str, None]:
        return _only_with(trace, info.data.get("process"), "trace")


def _only_with(value: Any, process: Union[str, None], wanted: str) -> Any:
    if process is None:  # process itself is invalid and reported
        return value
    if process == wanted and value is None:
        raise ValueError(f"required with process '{wanted}'")
    if process != wanted and value is not None:
        raise ValueError(f"only used with process '{wanted}' (process is '{process}')")
    return value


class LoadProfileSpec(StrictModel):
    """Synthetic load sent to a Deployment."""

    target: str = Field(description="Name of the Deployment the load is sent to.")
    arrival: ArrivalSpec = Field(description="When requests arrive.")
    duration: Duration = Field(description="How long to send load, such as 60s or 5m.")
    slo: Union[str, None] = Field(None, description="Name of an SLO document to judge the run against.")
    max_tokens: int = Field(128, gt=0, description="Tokens to generate per request.")
    seed: Union[int, None] = Field(None, description="Random seed, for a reproducible arrival sequence.")


# ---------------------------------------------------------------------------------------------
# Documents


class Deployment(StrictModel):
    """A model served by engine replicas."""

    apiVersion: Literal["enova/v1"] = Field(description="The spec format version: enova/v1.")
    kind: Literal["Deployment"] = Field(description="The kind of document.")
    metadata: Metadata = Field(description="Name and labels.")
    spec: DeploymentSpec = Field(description="The desired state.")


class SLO(StrictModel):
    """Service level objectives that Deployments and LoadProfiles refer to by name."""

    apiVersion: Literal["enova/v1"] = Field(description="The spec format version: enova/v1.")
    kind: Literal["SLO"] = Field(description="The kind of document.")
    metadata: Metadata = Field(description="Name and labels.")
    spec: SLOSpec = Field(description="The objectives.")


class LoadProfile(StrictModel):
    """Synthetic load aimed at a Deployment."""

    apiVersion: Literal["enova/v1"] = Field(description="The spec format version: enova/v1.")
    kind: Literal["LoadProfile"] = Field(description="The kind of document.")
    metadata: Metadata = Field(description="Name and labels.")
    spec: LoadProfileSpec = Field(description="The load to send.")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the gateway on this machine: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to anything


_LOOPBACK_PATTERN = r"^(127\.[0-9.]+|::1|\[::1\]|[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]\.?)$"


class GatewaySpec(StrictModel):
    """The gateway: one stable endpoint (/generate and the OpenAI API) in front of every replica."""

    # The same rule as _token_beyond_loopback, for editors.
    model_config = ConfigDict(json_schema_extra={
        "if": {"required": ["host"], "properties": {"host": {"not": {"pattern": _LOOPBACK_PATTERN}}}},
        "then": {"required": ["token_file"]},
    })

    enabled: bool = Field(True, description="Run the gateway. It runs with these defaults when no Gateway document exists.")
    host: str = Field("127.0.0.1", min_length=1, description="Address to bind. Beyond loopback (0.0.0.0, a LAN "
                      "address) token_file is required.")
    port: int = Field(9199, ge=1, le=65535, description="Port to bind.")
    token_file: Union[str, None] = Field(
        None, min_length=1, validate_default=True,
        description="A file holding a bearer token that every request except /health and /metrics must carry; "
        "relative to the spec file's folder. Keep the token out of git. Required when host is not loopback.")
    max_body_bytes: int = Field(1048576, gt=0, description="Largest request body accepted (413 above it).")
    queue_size: int = Field(100, ge=0, description="Requests that may wait per deployment when every replica is busy.")
    queue_timeout: Duration = Field(30.0, description="How long a queued request waits before a 429.")

    @field_validator("token_file")
    @classmethod
    def _token_beyond_loopback(cls, token_file: Union[str, None], info: ValidationInfo) -> Union[str, None]:
        host = info.data.get("host")
        if token_file is None and isinstance(host, str) and not is_loopback(host):
            raise ValueError(f"required when host ({host}) is beyond loopback: anyone who reaches it could use "
                             "every model; set a token file, or bind 127.0.0.1")
        return token_file


class Gateway(StrictModel):
    """The gateway on :9199. At most one per spec set."""

    apiVersion: Literal["enova/v1"] = Field(description="The spec format version: enova/v1.")
    kind: Literal["Gateway"] = Field(description="The kind of document.")
    metadata: Metadata = Field(description="Name and labels.")
    spec: GatewaySpec = Field(GatewaySpec(), description="Where and how the gateway listens.")


Document = Annotated[Union[Deployment, SLO, LoadProfile, Gateway], Field(discriminator="kind")]
"""Any spec document, chosen by its `kind`."""

DOCUMENT_KINDS: dict[str, type[StrictModel]] = {
    "Deployment": Deployment, "SLO": SLO, "LoadProfile": LoadProfile, "Gateway": Gateway}
