"""The REST API's request and response models, so that /openapi.json says exactly what each route
takes and gives (and schemathesis can hold the server to it).

Response models mirror the JSON the CLI prints (`enova status -o json`, `enova diff -o json`,
`enova scale status -o json`, `enova recommend -o json`, `enova events -o json`): the API adds
fields, never renames them. Objects whose keys belong to another layer (engine args, a run's
summary, a plan's auto block) are open (`additionalProperties`); the fields a client relies on are
named. Request models forbid unknown fields, so a typo is a 422 naming it.
Used by enova.app.api and enova.app.runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from enova.spec.models import NAME_PATTERN


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- errors --------------------------------------------------------------------------------------

class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong and, where there is one, what to do about it.")


ERRORS = {
    401: {"model": ErrorBody, "description": "No bearer token (Authorization: Bearer <token>)."},
    403: {"model": ErrorBody, "description": "A wrong token."},
    404: {"model": ErrorBody, "description": "No such deployment, run or autoscaled deployment."},
    409: {"model": ErrorBody, "description": "Not possible in the current state (said why)."},
    503: {"model": ErrorBody, "description": "Something the answer depends on is out of reach."},
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: ERRORS[code] for code in codes}


# ---- deployments (enova status -o json) -----------------------------------------------------------

class StatusPair(BaseModel):
    status: str = Field(description="Sync: Synced, OutOfSync or Unknown. Health: Healthy, Progressing, "
                                    "Degraded or Missing.")
    reason: str


class ReplicaCounts(BaseModel):
    desired: Optional[int] = Field(description="From the specs (or the autoscaler); null without specs.")
    running: int
    managed_by: Optional[str] = Field(description="spec or autoscaler; null without specs.")


class Replica(BaseModel):
    id: str
    runtime: str = Field(description="local (a process), docker (a container), ...")
    where: str = Field(description="Where it runs, as `enova status` prints it (pid N, container ID).")
    pid: Optional[int]
    container: Optional[str]
    port: int
    host: str
    state: str = Field(description="starting, ready, draining or stopping (the record's state).")
    health: Literal["healthy", "starting", "unhealthy", "exited"]
    detail: str
    uptime_seconds: float
    config_hash: str
    cpus: list[int]
    gpus: list[str]
    log: str


class SpecSummary(BaseModel):
    source: Literal["specs", "applied"] = Field(
        description="specs: read from the spec files now; applied: the deployment record (what was last applied), "
                    "for a deployment that is not in the specs.")
    file: str = Field(description="file:line of the Deployment document (as applied, for source applied).")
    model: str
    engine: str
    engine_args: dict[str, Any]
    runtime: str
    replicas: Optional[int] = Field(description="spec.replicas (applied: the count last applied).")
    resources: dict[str, Any]
    scaling: Optional[dict[str, Any]]
    slo: Optional[Any]


class Deployment(BaseModel):
    name: str
    spec: Optional[SpecSummary]
    sync: StatusPair
    health: StatusPair
    replicas: ReplicaCounts
    reconciler: Optional[dict[str, Any]] = Field(
        description="The running reconciler's condition for this deployment (Ready, Reconciling, Stalled), "
                    "with reason, message, last applied and attempted config; null when none runs.")
    config_hash: Optional[str] = Field(description="The config hash the specs ask for (null without specs).")
    replica_details: list[Replica]


class Gpus(BaseModel):
    available: bool
    description: str
    devices: list[dict[str, Any]]


class Status(BaseModel):
    """`enova status -o json`, plus which specs sync was computed against."""
    state_dir: str
    specs: Optional[str] = Field(description="The specs folder sync is computed against (the app's, else the "
                                             "running reconciler's); null: none, so sync is Unknown.")
    gateway: Optional[dict[str, Any]]
    reconciler: Optional[dict[str, Any]]
    gpus: Gpus
    spec_error: Optional[str]
    deployments: list[Deployment]


# ---- the plan (enova diff -o json) --------------------------------------------------------------

class FieldChange(_Out):
    path: str
    before: Any = None
    after: Any = None


class Change(_Out):
    kind: Literal["deployment", "gateway"]
    deployment: str
    action: Literal["create", "replace", "scale", "update", "delete", "noop"]
    reason: str
    replicas: dict[str, Any]
    config: dict[str, Any]
    fields: list[FieldChange]
    start: int
    stop: list[str]
    forget: list[str]
    wait: list[str]
    roll: list[str]
    update: list[FieldChange]
    orphaned: bool


class Plan(_Out):
    """`enova diff -o json` for the specs named in `specs`."""
    format_version: int
    prune: bool
    has_changes: bool
    summary: dict[str, int]
    changes: list[Change]
    specs: str = Field(description="The specs folder the plan was computed from.")
    in_sync: bool = Field(description="No change pending (what `enova diff` exits 0 for).")
    blocked: list[str] = Field(description="Deployments the plan could not compute, each with why "
                                           "(`enova diff` exits 2).")


# ---- events --------------------------------------------------------------------------------------

class Event(BaseModel):
    time: float = Field(description="Seconds since the epoch.")
    type: Literal["Normal", "Warning"]
    reason: str
    subject: str = Field(description="deployment/NAME, gateway, specs, reconciler, autoscaler, ...")
    message: str
    revision: str
    cursor: str = Field(description="This event's position: pass it as `before` for the events older than it, "
                                    "or as Last-Event-ID to the stream.")


class EventPage(BaseModel):
    events: list[Event] = Field(description="Oldest first (newest last), at most `limit`.")
    next_before: Optional[str] = Field(description="The cursor for the next older page; null when there is none.")


# ---- the autoscaler (enova scale status -o json) --------------------------------------------------

class Autoscaled(_Out):
    deployment: str
    policy: Optional[str]
    target: Optional[int]
    ready: int
    starting: int
    start_seconds: Optional[float]
    updated_at: Optional[float]
    signals: Optional[dict[str, Any]] = Field(description="The last scraped signals: at, ready, in_flight, "
                                                          "queued, held, rps, engine_running, engine_waiting, "
                                                          "kv_cache_usage.")
    last_decision: Optional[dict[str, Any]] = Field(description="at, previous, target, reason, numbers.")
    state: dict[str, Any]


# ---- the recommender -------------------------------------------------------------------------------

class RecommendRequest(_In):
    model: str = Field(min_length=1, max_length=200, description=(
        "builtin:NAME, a Hugging Face id (org/name: only its config.json is read), or the name of a Deployment "
        "in the specs (its model). Local folders are not accepted over the API."))
    gpu: Optional[str] = Field(None, min_length=1, max_length=64,
                               description="A GPU from the catalogue (H100-80GB, A100-40GB, L4, ...).")
    gpu_memory: Optional[str] = Field(None, pattern=r"^\s*[0-9]+(\.[0-9]+)?\s*([KMGT]i?B?)?\s*$", max_length=32,
                                      description="GPUs with this much memory each (24GiB, 80GB).")
    gpus: Optional[int] = Field(None, ge=1, le=64, description="GPUs per replica (tensor parallel).")
    cpus: Optional[int] = Field(None, ge=1, le=4096, description="CPU engine: cores per replica.")
    memory: Optional[str] = Field(None, pattern=r"^\s*[0-9]+(\.[0-9]+)?\s*([KMGT]i?B?)?\s*$", max_length=32,
                                  description="CPU engine: the host's memory (default: this host's).")
    profile: Optional[str] = Field(None, pattern=NAME_PATTERN, max_length=63,
                                   description="Fit the lengths and rate of this LoadProfile of the specs.")
    capacity: Optional[float] = Field(None, gt=0, le=1e6, description="Requests/s one replica sustains (measured).")
    capacity_run: Optional[str] = Field(None, pattern=r"^[a-z0-9-]{1,64}$",
                                        description="An injection run of this server (its id) against one replica: "
                                                    "its throughput is the capacity.")
    run_replicas: int = Field(1, ge=1, le=1024, description="How many replicas served the capacity run.")
    max_model_len: Optional[int] = Field(None, ge=1, le=10_000_000, description="Keep this max_model_len.")
    set: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")],
              Union[bool, int, float, Annotated[str, StringConstraints(max_length=256)]]] = Field(
        {}, max_length=32, description="Engine args to keep as given ({\"max_num_seqs\": 8}).")
    kv_cache_dtype: str = Field("auto", pattern=r"^[a-z0-9_]{1,32}$", description="auto (the model's dtype), fp8, ...")


class Recommendation(_Out):
    """`enova recommend -o json`: the summary keys at top level, then args, figures and notes."""
    tensor_parallel_size: Optional[int]
    gpu_memory_utilization: Optional[float]
    max_model_len: Optional[int]
    max_num_seqs: Optional[int]
    replicas: Optional[int] = Field(description="For a profile with a measured capacity; else null.")
    device: str = Field(description="gpu or cpu.")
    model: str = Field(description="The model and where its config was read.")
    target: str = Field(description="The hardware sized for.")
    args: dict[str, Any] = Field(description="The engine args to put in the Deployment's engine.args.")
    figures: list[dict[str, Any]]
    user_set: list[str]
    notes: list[str]


class Refusal(_Out):
    """The model does not fit: the arithmetic, and the nearest settings that would."""
    refused: bool
    model: str
    target: str
    arithmetic: str
    suggestions: list[str]
    figures: list[dict[str, Any]]
    message: str


# ---- injection runs --------------------------------------------------------------------------------

RunState = Literal["starting", "running", "cancelling", "done", "failed", "cancelled"]


class RunRequest(_In):
    """Either a LoadProfile of the specs (`profile`), or a quick run (`deployment` and `rate`)."""
    profile: Optional[str] = Field(None, pattern=NAME_PATTERN, max_length=63,
                                   description="A LoadProfile in the specs; its target is the deployment.")
    deployment: Optional[str] = Field(None, pattern=NAME_PATTERN, max_length=63,
                                      description="Quick run: the deployment (served model) to load. With "
                                                  "`profile`: must be the profile's target, if given.")
    rate: Optional[float] = Field(None, gt=0, le=10_000, description="Quick run: requests per second.")
    duration: Union[float, str] = Field(
        60.0, description="Quick run: seconds (a number, 0 < d <= 86400) or a duration such as 30s or 5m.")
    output_len: int = Field(128, ge=1, le=131_072, description="Quick run: max_tokens per request.")
    api: Literal["completions", "chat", "generate"] = Field("completions", description="Quick run: the API used.")
    process: Literal["poisson", "constant"] = Field("poisson", description="Quick run: the arrival process.")
    ignore_eos: bool = Field(False, description="Quick run: generate exactly output_len tokens.")
    seed: Optional[int] = Field(None, ge=0, le=2**32 - 1, description="Seed of the schedule and prompts.")
    concurrency: Optional[int] = Field(None, ge=1, le=100_000, description="Cap on requests in flight.")


class RunProgress(BaseModel):
    elapsed_seconds: float = Field(description="Since the run started.")
    duration_seconds: Optional[float] = Field(description="The schedule's length.")
    fraction: float = Field(ge=0, le=1, description="elapsed / duration while running, 1 once finished.")
    sent: Optional[int] = Field(description="From the run's last progress line (every 5 s).")
    total: Optional[int]
    ok: Optional[int]
    failed: Optional[int]
    in_flight: Optional[int]


class Run(BaseModel):
    id: str
    state: RunState = Field(description="starting/running: sending; cancelling: asked to stop; done: finished "
                                        "(see summary.slo_met); failed: ended with no result (see message); "
                                        "cancelled: stopped early (a partial result when one was written).")
    kind: Literal["profile", "quick"]
    profile: Optional[str]
    deployment: Optional[str]
    request: dict[str, Any] = Field(description="What was asked (the request body, with defaults).")
    created_at: float
    finished_at: Optional[float]
    exit_code: Optional[int] = Field(description="The `enova inject run` process's exit code (0 met or no SLO, "
                                                 "1 SLO missed or error, 2 bad input, 130 stopped early).")
    message: str = Field(description="Why it failed, or the run's last line of output.")
    progress: RunProgress
    slo_met: Optional[bool]
    partial: Optional[bool]
    summary: Optional[dict[str, Any]] = Field(description="The run's figures (`enova inject run -o json`) "
                                                          "once it has a result.")
    result_url: Optional[str]
    report_url: Optional[str]


class RunList(BaseModel):
    runs: list[Run] = Field(description="Newest first.")


# ---- misc ----------------------------------------------------------------------------------------

class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Reloaded(BaseModel):
    detail: str
    pid: int
