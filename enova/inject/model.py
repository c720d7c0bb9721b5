"""The data the injector passes between its parts: what is scheduled, what is sent, what was
measured. Plain data, JSON-able, no I/O. Produced by `arrivals` and `requests`, filled in by
`runner`, read by `results` and `report`.

Times: `at`, `scheduled`, `sent` are seconds from the run's start on the monotonic clock;
durations are seconds. A run's result file is `RunResult.to_dict()` as JSON (format_version 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Arrival:
    """One scheduled request: when it leaves, and the token lengths the schedule asks for
    (from a trace, or drawn by the request generator; None: the generator decides)."""

    index: int
    at: float
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class Request:
    """One request ready to send. `api`: "completions" | "chat" | "generate". `body` is the JSON
    body without `stream`/`stream_options`, which the runner adds."""

    index: int
    at: float
    api: str
    body: dict[str, Any]
    input_tokens: int | None = None        # as counted by the model's tokenizer, when known
    expected_output_tokens: int | None = None


@dataclass
class RequestResult:
    """What happened to one request. `ok` means HTTP 200 and a complete answer."""

    index: int
    scheduled: float
    sent: float | None = None              # None: never sent (the run was stopped first)
    ttft: float | None = None              # first token (stream) or whole answer (no stream)
    itl: list[float] = field(default_factory=list)   # gaps between token events after the first
    e2e: float | None = None
    prompt_tokens: int | None = None       # from the server's usage report
    output_tokens: int | None = None       # from the server's usage report
    status: int | None = None
    error: str | None = None
    ok: bool = False
    worker: int = 0

    @property
    def lateness(self) -> float | None:
        return None if self.sent is None else self.sent - self.scheduled

    @property
    def tpot(self) -> float | None:
        """(E2E - TTFT) / (output tokens - 1): vLLM's time per output token."""
        if self.e2e is None or self.ttft is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RequestResult":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RunResult:
    """A whole run: what was asked (profile, seed, target), by whom (versions, workers, shard),
    and every request's result. `partial`: stopped before the schedule ended (Ctrl-C)."""

    profile: dict[str, Any]                # the LoadProfile spec as run (or the CLI's quick-run options)
    target: str                            # base URL
    model: str
    api: str
    seed: int | None
    started_at: float                      # wall clock, seconds since the epoch
    duration: float                        # the schedule's length, seconds
    requests: list[RequestResult] = field(default_factory=list)
    slo: dict[str, Any] | None = None      # the SLO spec judged against
    partial: bool = False
    workers: int = 1
    shard: tuple[int, int] = (0, 1)        # (i, N): this run sent every N-th request from i
    versions: dict[str, str] = field(default_factory=dict)
    name: str = ""                          # profile name, or "quick"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
        data["shard"] = list(self.shard)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunResult":
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["requests"] = [RequestResult.from_dict(r) for r in data.get("requests", [])]
        values["shard"] = tuple(data.get("shard", (0, 1)))
        return cls(**values)
