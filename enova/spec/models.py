"""The spec documents: what a user writes in YAML, as strict pydantic models.

Five kinds of document, each with `apiVersion`, `kind`, `metadata` and `spec`:
`Deployment` (a model served by engine replicas), `SLO` (latency and error objectives),
`LoadProfile` (synthetic load aimed at a Deployment), `Gateway` (the data plane on :9199) and
`Monitoring` (the Prometheus that scrapes them). `Document` is their union, discriminated
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
    StringConstraints,
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
AUTO_ARG = "auto"  # engine.args key: the recommender fills in the rest (never passed to the engine)
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
        json_schema_extra={"anyOf": [{"const": "auto"}, {"type": "object", "properties": {"auto": {"type": "boolean"}}}],
                           **_ONLY_PATTERN_KEYS},
        description=(
            "Engine arguments in snake_case, passed as --kebab-case flags (max_num_seqs: 16 becomes "
            "--max-num-seqs 16). model, host, port and served_model_name are set by enova. `auto` (or "
            "`auto: true` beside other args) lets enova's recommender choose what is not set here from the "
            "model's geometry and the host's GPUs or CPU memory; enova diff shows what it chose and why."
        ),
    )
    env: dict[EnvName, str] = Field(
        {}, json_schema_extra=_ONLY_PATTERN_KEYS,
        description=("Extra environment variables for the engine process. Not the ones enova sets (ENOVA_*, "
                     "CUDA_VISIBLE_DEVICES, VLLM_CPU_OMP_THREADS_BIND, ...) nor ones that could run other code "
                     "in it (LD_PRELOAD, PYTHONPATH, PATH, ...)."),
    )
    startup_timeout: Duration = Field(600.0, description="How long a replica may take to become healthy.")

    @field_validator("args", mode="before")
    @classmethod
    def _auto_alone(cls, args: Any) -> Any:
        """`args: auto` is short for `args: {auto: true}`."""
        if isinstance(args, str):
            if args != AUTO_ARG:
                raise ValueError(f"must be `auto` or a mapping of engine args (got {args!r})")
            return {AUTO_ARG: True}
        return args

    @field_validator("args")
    @classmethod
    def _auto_is_a_switch(cls, args: dict[str, Any]) -> dict[str, Any]:
        if AUTO_ARG in args and not isinstance(args[AUTO_ARG], bool):
            raise ValueError(f"auto: must be true or false (got {args[AUTO_ARG]!r})")
        return args

    @property
    def auto(self) -> bool:
        """The recommender fills in the engine args this spec does not set."""
        return self.args.get(AUTO_ARG) is True


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
    hold_timeout: Union[Duration, None] = Field(
        None, description="With scaling.min 0: how long the gateway holds a request while no replica is ready "
        "before it answers 503 (default: the replica start time the reconciler last measured plus 30s; 180s "
        "until one was measured).")


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


# ---------------------------------------------------------------------------------------------
# Scaling (the autoscaler: enova.autoscale)

def parse_delay(value: Any) -> float:
    """Seconds, like `parse_duration`, but 0 ("0s", 0) is allowed: no delay, or never."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must be >= 0")
        if value == 0:
            return 0.0
    if isinstance(value, str) and re.fullmatch(DURATION_PATTERN, value) and all(
            float(number) == 0 for number, _ in _DURATION_PART.findall(value)):
        return 0.0
    return parse_duration(value)


Delay = Annotated[
    float,
    BeforeValidator(parse_delay),
    WithJsonSchema({"oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}]}),
]
"""A duration in seconds that may be 0 (as a number or a string such as "0s" or "5m")."""

SCALING_POLICIES = ("slo", "concurrency", "rps", "enova-original")
# what each policy's `target` must hold: policy -> the one key it needs (None: it takes no target)
_POLICY_TARGET: dict[str, Union[str, None]] = {"slo": None, "concurrency": "concurrency", "rps": "rps",
                                                "enova-original": None}


class ScalingTarget(StrictModel):
    """The per-replica level a policy holds: concurrency for policy concurrency, rps for policy rps."""

    concurrency: Union[float, None] = Field(
        None, gt=0, description="Requests in flight per replica to aim for (policy concurrency, as Knative's target).")
    rps: Union[float, None] = Field(
        None, gt=0, description="Requests per second per replica to aim for (policy rps, as dstack's and SkyServe's).")


def _target_schema() -> list[dict[str, Any]]:
    """The policy -> target rules of ScalingSpec._target_fits_the_policy, as JSON Schema for editors."""
    rules: list[dict[str, Any]] = []
    for policy, key in _POLICY_TARGET.items():
        when = {"properties": {"policy": {"const": policy}}, "required": ["policy"]} if policy != "slo" else {
            "properties": {"policy": {"const": "slo"}}}
        if key is None:
            rules.append({"if": when, "then": {"not": {"required": ["target"]}}})
        else:
            other = [k for k in ("concurrency", "rps") if k != key]
            rules.append({"if": when, "then": {"required": ["target"], "properties": {"target": {
                "required": [key], "not": {"anyOf": [{"required": [k]} for k in other]}}}}})
    return rules


class ScalingSpec(StrictModel):
    """Autoscaling: while set, the replica count belongs to the autoscaler, within [min, max]."""

    model_config = ConfigDict(json_schema_extra={"allOf": [
        *_target_schema(),
        {"if": {"properties": {"min": {"const": 0}}, "required": ["min"]},
         "then": {"required": ["scale_to_zero_after"],
                  "properties": {"scale_to_zero_after": {"not": {"enum": [0, "0s", "0m", "0h", "0ms"]}}}}},
    ]})

    min: int = Field(1, ge=0, description="Fewest replicas. 0 lets an idle deployment go to zero replicas (then "
                     "scale_to_zero_after is required): the gateway holds requests while one starts.")
    max: int = Field(ge=1, description="Most replicas; >= min.")
    policy: Literal["slo", "concurrency", "rps", "enova-original"] = Field(
        "slo", description=("How the count is decided: slo (hold the deployment's SLO; needs spec.slo), concurrency "
                            "(Knative's KPA: in-flight requests per replica, target.concurrency), rps (dstack's and "
                            "SkyServe's request rate per replica, target.rps), enova-original (the original ENOVA "
                            "rule: pending requests)."))
    target: Union[ScalingTarget, None] = Field(
        None, validate_default=True,
        description="The per-replica target: {concurrency: N} for policy concurrency, {rps: R} for policy rps; "
                    "slo and enova-original take none.")
    scale_up_delay: Delay = Field(0.0, description="How long a shortage must last before replicas are added (0s: at once).")
    scale_down_delay: Delay = Field(300.0, description="How long a surplus must last before a replica is removed.")
    scale_to_zero_after: Delay = Field(
        0.0, validate_default=True,
        description="Idle time after which the count may go to 0 (needs min 0); 0s: never.")

    @field_validator("max")
    @classmethod
    def _max_not_below_min(cls, maximum: int, info: ValidationInfo) -> int:
        minimum = info.data.get("min")
        if minimum is not None and maximum < minimum:
            raise ValueError(f"must be >= min ({minimum})")
        return maximum

    @field_validator("target")
    @classmethod
    def _target_fits_the_policy(cls, target: Union[ScalingTarget, None], info: ValidationInfo) -> Union[ScalingTarget, None]:
        policy = info.data.get("policy")
        if policy is None:  # invalid and reported
            return target
        key = _POLICY_TARGET[policy]
        if key is None:
            if target is not None:
                raise ValueError(f"only used with policy 'concurrency' or 'rps' (policy is '{policy}'); "
                                 f"{policy} takes no target")
            return target
        example = "{concurrency: 8}" if key == "concurrency" else "{rps: 4}"
        if target is None:
            raise ValueError(f"required with policy '{policy}', such as target: {example}")
        if getattr(target, key) is None:
            raise ValueError(f"policy '{policy}' needs target.{key}, such as target: {example}")
        misplaced = [k for k in ("concurrency", "rps") if k != key and getattr(target, k) is not None]
        if misplaced:
            raise ValueError(f"target.{misplaced[0]} is only used with policy '{misplaced[0]}' (policy is '{policy}')")
        return target

    @field_validator("scale_to_zero_after")
    @classmethod
    def _zero_needs_min_zero(cls, after: float, info: ValidationInfo) -> float:
        minimum = info.data.get("min")
        if minimum == 0 and after == 0:
            raise ValueError("required with min 0: the idle time after which the count may go to 0, "
                             "such as 10m (or set min >= 1)")
        if minimum is not None and minimum > 0 and after > 0:
            raise ValueError(f"only used with min 0 (min is {minimum})")
        return after


DEFAULT_GPU_IMAGE = "vllm/vllm-openai:v0.11.0"  # pinned: a tag, never latest
_VOLUME = r"^[^:\s]+:/[^:\s]*(:(ro|rw))?$"


class DockerSpec(StrictModel):
    """How replicas run as containers (runtime docker)."""

    host: Union[str, None] = Field(
        None, pattern=r"^(unix|tcp|ssh|npipe)://\S+$",
        description=("The Docker engine: unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host, as the "
                     "Docker SDK takes it (default: DOCKER_HOST, else the local socket)."))
    network: Union[str, None] = Field(
        None, min_length=1, description="A Docker network to attach containers to (default: the engine's bridge).")
    bind: str = Field(
        "127.0.0.1", description=("The host address the engine's port is published on. Beyond loopback only with "
                                  "a token on the gateway, as for the gateway's own host."))
    shm_size: str = Field(
        "2g", pattern=r"^[0-9]+[bkmg]?$",
        description="Shared memory for the engine (/dev/shm): tensor-parallel workers and vLLM's IPC need it.")
    ipc: Literal["private", "host", "shareable"] = Field(
        "private", description="The IPC namespace. host is what vLLM's docs suggest for multi-GPU; private with "
                               "shm_size is the safer default.")
    volumes: list[Annotated[str, StringConstraints(pattern=_VOLUME)]] = Field(
        [], description="Extra mounts, host_path:container_path[:ro|rw] (a named volume works as host_path).")
    env: dict[EnvName, str] = Field(
        {}, json_schema_extra=_ONLY_PATTERN_KEYS,
        description="Extra environment variables for the container, over engine.env (the same names are refused).")


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
    runtime: Literal["local", "docker"] = Field(
        "local", description=("Where replicas run. local: processes on this host; docker: containers on a Docker "
                              "engine (docker.host), labelled as enova's."))
    replicas: int = Field(1, ge=0, description="How many engine replicas to run.")
    resources: Resources = Field(Resources(), description="What each replica gets from the host.")
    image: Union[str, None] = Field(
        None, min_length=1, validate_default=True,
        description=("runtime docker: the engine image (default for GPU deployments: " + DEFAULT_GPU_IMAGE + "; a "
                     "CPU deployment must name one). Only with runtime docker."))
    docker: Union[DockerSpec, None] = Field(
        None, description="runtime docker: where and how containers run. Only with runtime docker.")
    slo: Union[str, None] = Field(None, description="Name of an SLO document this deployment is held to.")
    serving: ServingSpec = Field(ServingSpec(), description="How the gateway serves this deployment.")
    scaling: Union[ScalingSpec, None] = Field(
        None, description=("Autoscaling between scaling.min and scaling.max replicas. While set, the autoscaler owns "
                           "the count (replicas is only where it starts); enova diff and apply leave its count alone."))

    @field_validator("model")
    @classmethod
    def _model_reference(cls, ref: str) -> str:
        if classify_model(ref) == "builtin":
            name = ref.removeprefix("builtin:")
            if name not in BUILTIN_MODELS:
                raise ValueError(f"unknown builtin model; known: {', '.join(sorted(BUILTIN_MODELS))}")
        return ref

    @field_validator("scaling")
    @classmethod
    def _slo_policy_needs_an_slo(cls, scaling: Union[ScalingSpec, None], info: ValidationInfo) -> Union[ScalingSpec, None]:
        if scaling is not None and scaling.policy == "slo" and "slo" in info.data and info.data["slo"] is None:
            raise ValueError("policy 'slo' (the default) needs the deployment's slo: name an SLO document in "
                             "spec.slo, or choose policy concurrency or rps")
        return scaling

    @field_validator("image", "docker")
    @classmethod
    def _only_for_docker(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("runtime", "local") != "docker":
            raise ValueError("only used with runtime docker")
        return value

    @field_validator("image")
    @classmethod
    def _cpu_containers_name_their_image(cls, image: Union[str, None], info: ValidationInfo) -> Union[str, None]:
        resources = info.data.get("resources")
        if image is None and info.data.get("runtime") == "docker" and resources is not None and resources.gpus == 0:
            raise ValueError("required for a CPU deployment with runtime docker (the default "
                             f"{DEFAULT_GPU_IMAGE} is vLLM's CUDA build)")
        return image


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

# What each conditional field is for: field -> (values of the selector that require it, values that
# allow it). A field outside its values is an error, so a misplaced key is never silently ignored.
_Rules = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]


def _either(values: tuple[str, ...]) -> str:
    quoted = [f"'{value}'" for value in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _check_rule(value: Any, info: ValidationInfo, selector: str, rules: _Rules) -> Any:
    """The field validator behind every `_Rules` table: required with, and only used with."""
    chosen = info.data.get(selector)
    if chosen is None:  # the selector itself is invalid and reported
        return value
    required, allowed = rules[str(info.field_name)]
    if value is None and chosen in required:
        raise ValueError(f"required with {selector} '{chosen}'")
    if value is not None and chosen not in allowed:
        raise ValueError(f"only used with {selector} {_either(allowed)} ({selector} is '{chosen}')")
    return value


def _rules_schema(selector: str, rules: _Rules) -> list[dict[str, Any]]:
    """The same rules as `_check_rule`, as JSON Schema for editors."""
    def when(values: tuple[str, ...]) -> dict[str, Any]:
        return {"required": [selector], "properties": {selector: {"enum": list(values)}}}

    schema: list[dict[str, Any]] = []
    for field_name, (required, allowed) in rules.items():
        if required:
            schema.append({"if": when(required), "then": {"required": [field_name]}})
        schema.append({"if": when(allowed), "else": {"not": {"required": [field_name]}}})
    return schema


_RATED = ("poisson", "gamma", "constant", "normal", "ramp")
_ARRIVAL_RULES: _Rules = {
    "rate": (_RATED, _RATED),
    "burstiness": (("gamma",), ("gamma",)),
    "std": (("normal",), ("normal",)),
    "end_rate": (("ramp",), ("ramp",)),
    "steps": (("steps",), ("steps",)),
    "trace": (("trace",), ("trace",)),
    "trace_format": ((), ("trace",)),
    "time_scale": ((), ("trace",)),
}


class StepSpec(StrictModel):
    """One step of a `steps` arrival process: a Poisson rate held for a while."""

    duration: Duration = Field(description="How long this step lasts, such as 10s or 2m.")
    rate: float = Field(ge=0, description="Requests per second during this step (Poisson); 0 sends nothing.")


class ArrivalSpec(StrictModel):
    """When requests arrive."""

    # The same rules as the field validators below, for editors.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                *_rules_schema("process", _ARRIVAL_RULES),
                {"if": {"required": ["process"], "properties": {"process": {"const": "ramp"}}},
                 "else": {"properties": {"rate": {"exclusiveMinimum": 0}}}},
            ]
        }
    )

    process: Literal["poisson", "gamma", "constant", "normal", "ramp", "steps", "trace"] = Field(
        description=(
            "The arrival process: poisson (exponential gaps), gamma (gamma gaps with a burstiness), "
            "constant (fixed gaps), normal (each second's count drawn from a normal distribution), "
            "ramp (Poisson, its rate linear from rate to end_rate), steps (Poisson, a rate per step), "
            "trace (replay timestamps from a file)."
        )
    )
    rate: Union[float, None] = Field(
        None, ge=0, validate_default=True,
        description=("Requests per second: the mean rate (poisson, gamma, constant), the mean per-second count "
                     "(normal), the rate at the start (ramp, where it may be 0). Required with those processes, "
                     "only for them."),
    )
    burstiness: Union[float, None] = Field(
        None, gt=0, validate_default=True,
        description=("Gamma shape, as vllm bench serve defines it: 1 is Poisson, < 1 burstier, > 1 more regular; "
                     "the mean gap stays 1/rate. Required with gamma, only for gamma."),
    )
    std: Union[float, None] = Field(
        None, ge=0, validate_default=True,
        description=("Standard deviation of each second's count: count ~ round(N(rate, std)), truncated at 0. "
                     "Required with normal, only for normal."),
    )
    end_rate: Union[float, None] = Field(
        None, ge=0, validate_default=True,
        description="Requests per second at the end of the run; the rate goes linearly from rate to end_rate. "
                    "Required with ramp, only for ramp.",
    )
    steps: Union[list[StepSpec], None] = Field(
        None, min_length=1, validate_default=True,
        description="The steps, in order; the last step's rate holds until the run's duration ends. "
                    "Required with steps, only for steps.",
    )
    trace: Union[str, None] = Field(
        None, min_length=1, validate_default=True,
        description="A trace file (CSV or JSONL), relative to the spec file's folder. Required with process trace, "
                    "only for trace.",
    )
    trace_format: Union[Literal["auto", "enova", "azure", "burstgpt"], None] = Field(
        None, validate_default=True,
        description=("The trace's column layout (default auto: known by its header): enova (timestamp in seconds, "
                     "optional input_tokens, output_tokens), azure (the Azure LLM inference traces: TIMESTAMP, "
                     "ContextTokens, GeneratedTokens) or burstgpt (Timestamp, Request tokens, Response tokens). "
                     "Only for trace."),
    )
    time_scale: Union[float, None] = Field(
        None, gt=0, validate_default=True,
        description="Replay speed (default 1): 2 replays the trace twice as fast, 0.5 at half speed. Only for trace.",
    )

    @field_validator(*_ARRIVAL_RULES)
    @classmethod
    def _used_by_the_process(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_rule(value, info, "process", _ARRIVAL_RULES)

    @field_validator("rate")
    @classmethod
    def _rate_above_zero_unless_ramp(cls, rate: Union[float, None], info: ValidationInfo) -> Union[float, None]:
        if rate == 0 and info.data.get("process") not in (None, "ramp"):
            raise ValueError("must be > 0")
        return rate

    @field_validator("end_rate")
    @classmethod
    def _ramp_sends_something(cls, end_rate: Union[float, None], info: ValidationInfo) -> Union[float, None]:
        if end_rate == 0 and info.data.get("rate") == 0:
            raise ValueError("rate and end_rate are both 0: nothing would be sent")
        return end_rate

    @field_validator("steps")
    @classmethod
    def _steps_send_something(cls, steps: Union[list[StepSpec], None]) -> Union[list[StepSpec], None]:
        if steps and all(step.rate == 0 for step in steps):
            raise ValueError("every step's rate is 0: nothing would be sent")
        return steps


_LENGTH_RULES: _Rules = {
    "value": (("fixed",), ("fixed",)),
    "mean": (("normal", "lognormal"), ("normal", "lognormal")),
    "std": (("normal", "lognormal"), ("normal", "lognormal")),
    "min": (("uniform",), ("uniform", "normal", "lognormal")),
    "max": (("uniform",), ("uniform", "normal", "lognormal")),
}


class LengthSpec(StrictModel):
    """A distribution of lengths in tokens, counted with the model's own tokenizer."""

    model_config = ConfigDict(json_schema_extra={"allOf": _rules_schema("distribution", _LENGTH_RULES)})

    distribution: Literal["fixed", "uniform", "normal", "lognormal"] = Field(
        description=("fixed (value), uniform (integers from min to max, both included), normal (mean, std), "
                     "lognormal (a log-normal whose own mean and std, in tokens, are mean and std). Normal and "
                     "lognormal draws are rounded and kept within [min, max] (min defaults to 1).")
    )
    value: Union[int, None] = Field(
        None, gt=0, validate_default=True, description="The length, in tokens. Required with fixed, only for fixed.")
    mean: Union[float, None] = Field(
        None, gt=0, validate_default=True,
        description="Mean length, in tokens. Required with normal and lognormal, only for them.")
    std: Union[float, None] = Field(
        None, ge=0, validate_default=True,
        description="Standard deviation of the length, in tokens. Required with normal and lognormal, only for them.")
    min: Union[int, None] = Field(
        None, gt=0, validate_default=True,
        description="Shortest length, in tokens. Required with uniform; optional with normal and lognormal (default 1).")
    max: Union[int, None] = Field(
        None, gt=0, validate_default=True,
        description="Longest length, in tokens. Required with uniform; optional with normal and lognormal (no bound).")

    @field_validator(*_LENGTH_RULES)
    @classmethod
    def _used_by_the_distribution(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_rule(value, info, "distribution", _LENGTH_RULES)

    @field_validator("max")
    @classmethod
    def _max_not_below_min(cls, maximum: Union[int, None], info: ValidationInfo) -> Union[int, None]:
        minimum = info.data.get("min")
        if maximum is not None and minimum is not None and maximum < minimum:
            raise ValueError(f"must be >= min ({minimum})")
        return maximum


PROMPT_SOURCES = ("builtin", "synthetic")
_PROMPT_FILE_SUFFIXES = (".jsonl", ".json")


class RequestsSpec(StrictModel):
    """What each request asks for."""

    model_config = ConfigDict(json_schema_extra={
        "if": {"required": ["prompts"], "properties": {"prompts": {"const": "synthetic"}}},
        "then": {"required": ["input_tokens"]},
        "else": {"not": {"required": ["input_tokens"]}},
    })

    api: Literal["completions", "chat", "generate"] = Field(
        "completions",
        description="The API: completions (/v1/completions), chat (/v1/chat/completions) or generate (/generate).")
    prompts: str = Field(
        "builtin", min_length=1,
        json_schema_extra={"anyOf": [{"enum": list(PROMPT_SOURCES)}, {"pattern": r"\.jsonl?$"}]},
        description=("Where prompts come from: builtin (the prompt set shipped with enova), synthetic (generated to "
                     "input_tokens), or a file relative to the spec file's folder: JSONL (one prompt per line) or a "
                     "ShareGPT-format .json."),
    )
    input_tokens: Union[LengthSpec, None] = Field(
        None, validate_default=True,
        description="Prompt lengths, in tokens. Required with synthetic prompts, only for them.")
    output_tokens: Union[LengthSpec, None] = Field(
        None, description="Output lengths, in tokens, sent as max_tokens (default: fixed at spec.max_tokens).")
    temperature: Union[float, None] = Field(None, ge=0, description="Sampling temperature (default: the server's).")
    top_p: Union[float, None] = Field(None, gt=0, le=1, description="Nucleus sampling top_p (default: the server's).")
    ignore_eos: bool = Field(False, description="Keep generating past the end-of-sequence token, to the full length.")
    stream: bool = Field(True, description="Stream the answer, so that time to first token and inter-token gaps are measured.")

    @field_validator("prompts")
    @classmethod
    def _a_source_or_a_file(cls, prompts: str) -> str:
        if prompts not in PROMPT_SOURCES and not prompts.endswith(_PROMPT_FILE_SUFFIXES):
            raise ValueError("must be builtin, synthetic, or a prompt file: .jsonl, or ShareGPT-format .json")
        return prompts

    @field_validator("input_tokens")
    @classmethod
    def _lengths_for_synthetic(cls, lengths: Union[LengthSpec, None], info: ValidationInfo) -> Union[LengthSpec, None]:
        prompts = info.data.get("prompts")
        if prompts is None:  # invalid and reported
            return lengths
        if prompts == "synthetic" and lengths is None:
            raise ValueError("required with prompts 'synthetic'")
        if prompts != "synthetic" and lengths is not None:
            raise ValueError(f"only used with prompts 'synthetic' (prompts is '{prompts}'); "
                             "a prompt set has its own lengths")
        return lengths


def _seconds(value: float) -> str:
    return f"{value:g}s"


class LoadProfileSpec(StrictModel):
    """Synthetic load sent to a Deployment."""

    target: str = Field(description="Name of the Deployment the load is sent to.")
    arrival: ArrivalSpec = Field(description="When requests arrive.")
    duration: Duration = Field(description="How long to send load, such as 60s or 5m.")
    slo: Union[str, None] = Field(
        None, description="Name of an SLO document to judge the run against (default: the target deployment's slo).")
    max_tokens: int = Field(128, gt=0, description="Tokens to generate per request when requests.output_tokens is not set.")
    seed: Union[int, None] = Field(
        None, description="Random seed: the same seed gives the same arrivals and requests (default: a fresh one, "
                          "written in the result file).")
    concurrency: Union[int, None] = Field(
        None, gt=0, description="At most this many requests in flight: a closed loop, where a request waits for a free "
                                "slot (default: open loop, every request leaves at its scheduled time).")
    requests: RequestsSpec = Field(RequestsSpec(), description="What each request asks for.")

    @field_validator("duration")
    @classmethod
    def _covers_the_steps(cls, duration: float, info: ValidationInfo) -> float:
        arrival = info.data.get("arrival")
        if arrival is not None and arrival.steps:
            total = sum(step.duration for step in arrival.steps)
            if total > duration * (1 + 1e-9):
                raise ValueError(f"shorter than arrival.steps, which last {_seconds(total)}: "
                                 f"the steps past {_seconds(duration)} would never run")
        return duration


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
    otlp_endpoint: Union[str, None] = Field(
        None, pattern=r"^https?://[^/\s]+", description="An OTLP/HTTP traces endpoint (e.g. "
        "http://127.0.0.1:4318/v1/traces) that receives one span per API request; none: tracing off. "
        "Changed in place (reload).")
    service_name: str = Field("enova-gateway", min_length=1, description="The service.name of the gateway's spans.")

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


# ---------------------------------------------------------------------------------------------
# Monitoring

# Prometheus's own units, days and weeks included (a retention is counted in days).
LONG_DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|w|d|h|m|s))+$"
_LONG_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|w|d|h|m|s)")
_LONG_UNIT_SECONDS = {**_UNIT_SECONDS, "d": 86400.0, "w": 604800.0}


def parse_long_duration(value: Any) -> float:
    """Seconds from a number of seconds or a string such as "15d", "2w", "12h", "1d12h".
    Raises ValueError for anything else, and for durations that are not > 0."""
    if isinstance(value, str) and re.fullmatch(LONG_DURATION_PATTERN, value):
        value = sum(float(n) * _LONG_UNIT_SECONDS[u] for n, u in _LONG_DURATION_PART.findall(value))
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError("must be a duration such as 15d, 2w, 12h or 90m, or a number of seconds")
    return parse_duration(value)


LongDuration = Annotated[
    float,
    BeforeValidator(parse_long_duration),
    WithJsonSchema({"oneOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": LONG_DURATION_PATTERN}]}),
]
"""A duration in seconds that may be written in days or weeks ("15d", "2w")."""


def _minimum_seconds(minimum: float, shown: str):
    def check(seconds: float) -> float:
        if seconds < minimum:
            raise ValueError(f"must be at least {shown}")
        return seconds
    return AfterValidator(check)


class PrometheusSpec(StrictModel):
    """The Prometheus server enova runs (local mode: a process it owns, like the gateway)."""

    binary: str = Field("prometheus", min_length=1, description="The Prometheus server to run: a name looked up on "
                        "PATH or an absolute path (Debian's `apt-get install prometheus` gives /usr/bin/prometheus).")
    host: str = Field("127.0.0.1", min_length=1, json_schema_extra={"pattern": _LOOPBACK_PATTERN},
                      description="Address to bind. Loopback only: Prometheus has no authentication, and its API "
                      "answers anyone who reaches it.")
    port: int = Field(9090, ge=1, le=65535, description="Port to bind.")
    scrape_interval: Annotated[Duration, _minimum_seconds(1.0, "1s")] = Field(
        5.0, description="How often every target (the gateway, each replica) is scraped; rules are evaluated as "
        "often. At least 1s.")
    retention: Annotated[LongDuration, _minimum_seconds(3600.0, "1h")] = Field(
        15 * 86400.0, description="How long stored samples are kept, such as 15d or 2w. At least 1h.")

    @field_validator("binary")
    @classmethod
    def _name_or_absolute(cls, binary: str) -> str:
        if "/" in binary and not binary.startswith(("/", "~")):
            raise ValueError("must be a name looked up on PATH (prometheus) or an absolute path "
                             "(/usr/bin/prometheus)")
        return binary

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        if not is_loopback(host):
            raise ValueError("must be a loopback address such as 127.0.0.1: Prometheus has no authentication, so "
                             "anyone who reached it could read every metric and run any query")
        return host


COMPOSE_SERVICES = ("prometheus", "grafana", "otel-collector", "tempo", "dcgm-exporter")
"""The services of compose mode's project (enova.monitor.compose pins an image for each)."""


def unpinned_image(image: str) -> str | None:
    """Why `image` is not pinned (None when it names an exact tag or a digest): compose mode and
    its image overrides never run `latest` or a bare repository."""
    if "@" in image:
        return None
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag:
        return "must be pinned by an exact tag (repository:tag), such as prom/prometheus:v2.55.1"
    if tag == "latest":
        return "must be pinned by an exact tag, never `latest`"
    return None


def _pinned(image: str) -> str:
    problem = unpinned_image(image)
    if problem:
        raise ValueError(problem)
    return image


PinnedImage = Annotated[str, AfterValidator(_pinned)]
ComposeService = Literal["prometheus", "grafana", "otel-collector", "tempo", "dcgm-exporter"]


class ComposeMonitoringSpec(StrictModel):
    """Compose mode's own settings (used when mode is compose)."""

    grafana_port: int = Field(32827, ge=1, le=65535, description="Grafana's port on 127.0.0.1.")
    dcgm: Literal["auto", "on", "off"] = Field("auto", description="Run DCGM's exporter: auto (when NVML "
                                                "reports a GPU), on, off.")
    images: dict[ComposeService, PinnedImage] = Field(
        default_factory=dict, description="service -> image, pinned by tag, instead of enova's default for that "
        "service (a registry mirror for offline clusters). Services: " + ", ".join(COMPOSE_SERVICES) + ".")


class MonitoringSpec(StrictModel):
    """How enova monitors what it serves: `enova mon start` runs this."""

    mode: Literal["local", "compose"] = Field("local", description="local: a Prometheus process enova owns, "
                                              "storage under the state directory. compose: Prometheus, Grafana "
                                              "(127.0.0.1:32827), the OpenTelemetry collector, Tempo and, on GPU "
                                              "hosts, DCGM's exporter as containers on this host's Docker engine.")
    prometheus: PrometheusSpec = Field(PrometheusSpec(), description="The Prometheus server.")
    compose: ComposeMonitoringSpec = Field(ComposeMonitoringSpec(), description="Compose mode's settings: "
                                           "Grafana's port, DCGM's exporter, image overrides.")


class Monitoring(StrictModel):
    """Monitoring: Prometheus scraping the gateway and every replica. At most one per spec set."""

    apiVersion: Literal["enova/v1"] = Field(description="The spec format version: enova/v1.")
    kind: Literal["Monitoring"] = Field(description="The kind of document.")
    metadata: Metadata = Field(description="Name and labels.")
    spec: MonitoringSpec = Field(MonitoringSpec(), description="How monitoring runs.")


Document = Annotated[Union[Deployment, SLO, LoadProfile, Gateway, Monitoring], Field(discriminator="kind")]
"""Any spec document, chosen by its `kind`."""

DOCUMENT_KINDS: dict[str, type[StrictModel]] = {
    "Deployment": Deployment, "SLO": SLO, "LoadProfile": LoadProfile, "Gateway": Gateway, "Monitoring": Monitoring}
