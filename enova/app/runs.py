"""Injection runs started from the API, each one an `enova inject run` process: the same path as
the CLI, so a run from the browser measures and writes exactly what a run from a terminal does.

Layout under `<state_dir>/app/runs/<id>/` (the id is made here, never taken from a client):
    run.json       what was asked, the argv, the process (pid and start time), cancel_requested
    exit.json      the exit code and time, written when the process this server started ends
    stderr.log     the run's progress and messages (one plain line every 5 s: `inject: ... sent a/b`)
    stdout.json    the run's figures as `enova inject run -o json` prints them
    result.json    the result file (`--out`); report.html is rendered from it on demand

A run's state is read from these files and the process each time (level-triggered): a restarted
app server lists earlier runs, sees one still running by its pid and start time, and can cancel it.
Cancel sends SIGINT, as Ctrl-C would: the run stops sending, waits briefly and writes a partial
result. One run at a time: a second start while one runs is refused (`Busy`).

Called by enova.app.api (plan_run checks a request against the world first); the process is started
with an argv list (no shell), the gateway's token in its environment (never in its argv).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.exceptions import HTTPException

from enova.errors import EnovaError
from enova.observe.ports import connect_url
from enova.observe.processes import check_process, process_start_time
from enova.observe.state import StateStore, write_json
from enova.plan.model import ReplicaState
from enova.runtime.world import observe

ID_PATTERN = r"^[a-z0-9-]{1,64}$"
_ID = re.compile(ID_PATTERN)
# the non-terminal lines of enova.inject.live.LiveView, and the CLI's first line
_PROGRESS = re.compile(r"inject:\s+([0-9.]+) s: sent (\d+)/(\d+), in flight (\d+), ok (\d+), failed (\d+)")
_START = re.compile(r"inject: (\d+) requests over ([0-9.]+) s to ")
STOP_GRACE = 15.0   # seconds a run is given to write its partial result when the server stops


class Busy(EnovaError):
    """Another run is in progress."""


class RunNotFound(EnovaError):
    """No run with that id."""


class NotRunning(EnovaError):
    """The run has already finished."""


def new_id(now: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(3)


class RunManager:
    """The runs under `<state_dir>/app/runs`. Thread-safe. `python` runs `-m enova.cli`."""

    def __init__(self, state_dir: Path, cache_dir: Path, *, python: str = sys.executable,
                 clock: Callable[[], float] = time.time):
        self.state_dir = Path(state_dir)
        self.cache_dir = Path(cache_dir)
        self.root = self.state_dir / "app" / "runs"
        self.python = python
        self.clock = clock
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}

    # ---- starting ------------------------------------------------------------------------------
    def start(self, args: list[str], *, kind: str, request: dict[str, Any], profile: str | None,
              deployment: str | None, duration: float | None, token: str | None) -> dict[str, Any]:
        """Start `enova inject run ARGS --out <folder>/result.json -o json` and return its view.
        Raises Busy when a run is in progress. Blocks only to spawn the process."""
        with self._lock:
            for run in self.list():
                if run["state"] in ("starting", "running", "cancelling"):
                    raise Busy(f"run {run['id']} is {run['state']}; wait for it or cancel it "
                               f"(POST /api/v1/runs/{run['id']}/cancel)")
            now = self.clock()
            run_id = new_id(now)
            folder = self.root / run_id
            folder.mkdir(parents=True, mode=0o700)
            argv = [self.python, "-m", "enova.cli", "--state-dir", str(self.state_dir), "inject", "run", *args,
                    "--out", str(folder / "result.json"), "--output", "json"]
            meta: dict[str, Any] = {"id": run_id, "kind": kind, "profile": profile, "deployment": deployment,
                                    "request": request, "created_at": now, "duration": duration, "argv": argv,
                                    "pid": None, "create_time": None, "cancel_requested": False}
            write_json(folder / "run.json", meta)
            env = {k: v for k, v in os.environ.items() if k != "ENOVA_TOKEN"}
            env.update(COLUMNS="200", PYTHONUNBUFFERED="1", ENOVA_CACHE_DIR=str(self.cache_dir))
            if token:
                env["ENOVA_TOKEN"] = token
            with open(folder / "stdout.json", "wb") as out, open(folder / "stderr.log", "wb") as err:
                try:
                    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=folder,
                                            env=env, start_new_session=True)
                except OSError as exc:
                    write_json(folder / "exit.json", {"exit_code": None, "finished_at": self.clock(),
                                                      "error": f"could not start: {exc}"})
                    return self.view(run_id)
            try:
                create_time = process_start_time(proc.pid)
            except Exception:  # gone already: exit.json says how it ended
                create_time = None
            meta.update(pid=proc.pid, create_time=create_time)
            write_json(folder / "run.json", meta)
            self._procs[run_id] = proc
            threading.Thread(target=self._wait, args=(run_id, proc), name=f"enova-run-{run_id}", daemon=True).start()
            return self.view(run_id)

    def _wait(self, run_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        write_json(self.root / run_id / "exit.json", {"exit_code": code, "finished_at": self.clock()})
        with self._lock:
            self._procs.pop(run_id, None)

    # ---- reading -------------------------------------------------------------------------------
    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if _ID.match(p.name) and (p / "run.json").is_file()]

    def folder(self, run_id: str) -> Path:
        """The run's folder; RunNotFound unless `run_id` is the name of one (checked against the
        listing, so a client's string never becomes a path by itself)."""
        if not _ID.match(run_id) or run_id not in self.ids():
            raise RunNotFound(f"no run {run_id!r}")
        return self.root / run_id

    def list(self) -> list[dict[str, Any]]:
        runs = []
        for run_id in self.ids():
            try:
                runs.append(self.view(run_id))
            except RunNotFound:
                continue
        return sorted(runs, key=lambda r: r["created_at"], reverse=True)

    def view(self, run_id: str) -> dict[str, Any]:
        """The run as the API shows it (schemas.Run), derived from its files and its process."""
        folder = self.folder(run_id)
        meta = _read(folder / "run.json")
        if meta is None:
            raise RunNotFound(f"no run {run_id!r}")
        ended = _read(folder / "exit.json")
        result = folder / "result.json"
        has_result = result.is_file()
        watching = ended is None and (run_id in self._procs or self._alive(meta))
        summary = None if watching else _read(folder / "stdout.json")
        if summary is None and has_result and not watching:
            summary = _summary(result)
        log = _tail(folder / "stderr.log")
        code = ended.get("exit_code") if ended else None
        cancel = bool(meta.get("cancel_requested"))
        partial = summary.get("partial") if summary else None
        if watching:
            state = "cancelling" if cancel else "running"
            message = _last_line(log)
        elif ended is None and meta.get("pid") is None and self.clock() - float(meta.get("created_at") or 0) < 30:
            state, message = "starting", ""  # being spawned
        else:
            if code == 130 or partial:
                state = "cancelled"
            elif has_result and summary is not None and code in (0, 1, None):
                state = "done"
            elif cancel:
                state = "cancelled"
            else:
                state = "failed"
            message = (ended or {}).get("error") or _error_line(log) or _last_line(log)
            if ended is None and state == "failed":
                message = message or "the run's process ended while no app server was watching it, with no result"
        finished = ended.get("finished_at") if ended else None
        return {
            "id": meta["id"], "state": state, "kind": meta.get("kind", "quick"), "profile": meta.get("profile"),
            "deployment": meta.get("deployment"), "request": meta.get("request") or {},
            "created_at": float(meta.get("created_at") or 0.0), "finished_at": finished, "exit_code": code,
            "message": message,
            "progress": _progress(log, meta, state, finished or self.clock()),
            "slo_met": summary.get("slo_met") if summary else None, "partial": partial,
            "summary": summary,
            "result_url": f"/api/v1/runs/{meta['id']}/result" if has_result else None,
            "report_url": f"/api/v1/runs/{meta['id']}/report" if has_result else None,
        }

    def _alive(self, meta: dict[str, Any]) -> bool:
        pid, create_time = meta.get("pid"), meta.get("create_time")
        if pid is None or create_time is None:
            return False
        return check_process(int(pid), float(create_time)).alive

    def result_path(self, run_id: str) -> Path | None:
        path = self.folder(run_id) / "result.json"
        return path if path.is_file() else None

    def report(self, run_id: str) -> str | None:
        """The HTML report of the run's result (rendered once, kept beside it); None without a result."""
        from enova.inject.report import write_report
        from enova.inject.session import read_result
        folder = self.folder(run_id)
        result = folder / "result.json"
        if not result.is_file():
            return None
        report = folder / "report.html"
        if not report.is_file() or report.stat().st_mtime < result.stat().st_mtime:
            write_report(read_result(result), report)
        return report.read_text(encoding="utf-8")

    # ---- stopping ------------------------------------------------------------------------------
    def cancel(self, run_id: str) -> dict[str, Any]:
        """Ask a running run to stop (SIGINT: it stops sending and writes a partial result).
        Idempotent while it stops; NotRunning once it has ended."""
        with self._lock:
            folder = self.folder(run_id)
            meta = _read(folder / "run.json") or {}
            if (folder / "exit.json").is_file() or not self._alive(meta):
                raise NotRunning(f"run {run_id} has already ended ({self.view(run_id)['state']})")
            if not meta.get("cancel_requested"):
                meta["cancel_requested"] = True
                write_json(folder / "run.json", meta)
                try:
                    os.kill(int(meta["pid"]), signal.SIGINT)
                except ProcessLookupError:
                    pass
        return self.view(run_id)

    def shutdown(self, grace: float = STOP_GRACE) -> None:
        """Cancel the runs this server started and wait up to `grace` s for their partial results."""
        with self._lock:
            procs = dict(self._procs)
        for run_id in procs:
            try:
                self.cancel(run_id)
            except EnovaError:
                pass
        deadline = time.monotonic() + grace
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _summary(result: Path) -> dict[str, Any] | None:
    from enova.inject.results import summarize
    from enova.inject.session import read_result
    try:
        return summarize(read_result(result)).to_dict()
    except (EnovaError, ValueError, KeyError, TypeError):
        return None


def _tail(path: Path, size: int = 16384) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            data = fh.read()
    except OSError:
        return []
    return [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]


def _last_line(lines: list[str]) -> str:
    return lines[-1].strip()[:500] if lines else ""


def _error_line(lines: list[str]) -> str:
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.strip()[:2000]
    return ""


def _progress(lines: list[str], meta: dict[str, Any], state: str, now: float) -> dict[str, Any]:
    duration = meta.get("duration")
    total = None
    for line in lines:
        match = _START.search(line)
        if match:
            total, duration = int(match.group(1)), float(match.group(2))
    last = None
    for line in reversed(lines):
        last = _PROGRESS.search(line)
        if last:
            break
    elapsed = max(0.0, now - float(meta.get("created_at") or now))
    if state in ("done", "failed", "cancelled"):
        fraction = 1.0
    elif duration:
        fraction = min(0.99, elapsed / float(duration))
    else:
        fraction = 0.0
    out: dict[str, Any] = {"elapsed_seconds": round(elapsed, 3), "duration_seconds": duration, "fraction": fraction,
                           "sent": None, "total": total, "ok": None, "failed": None, "in_flight": None}
    if last:
        out.update(sent=int(last.group(2)), total=int(last.group(3)), in_flight=int(last.group(4)),
                   ok=int(last.group(5)), failed=int(last.group(6)))
    return out


# =====================================================================================================
# From a run request (schemas.RunRequest) to the `enova inject run` arguments, after the checks a
# client deserves a clear answer to before any process starts: the LoadProfile exists (404), the
# deployment exists (404), it has a ready replica and the gateway runs (409, naming why). Quick runs
# are sent to the running gateway (its record's address) with the gateway's token, given to the
# process in its environment; profile runs are the CLI's `enova inject SPECS --profile NAME`, which
# finds the gateway and its token in the specs itself.

MAX_DURATION = 86400.0


@dataclass(frozen=True)
class Launch:
    args: list[str]
    kind: str
    profile: str | None
    deployment: str
    duration: float | None
    token: str | None


def _invalid(field: str, message: str, value=None):
    from .api import invalid
    return invalid(field, message, value)


def _api():
    from . import api
    return api


def plan_run(ctx, body) -> Launch:
    """The launch for `body`. Raises HTTPException (404, 409) or RequestValidationError (422)."""
    if body.profile is not None:
        return _profile_run(ctx, body)
    return _quick_run(ctx, body)


def _quick_options(body) -> list[str]:
    out = []
    if body.seed is not None:
        out += ["--seed", str(body.seed)]
    if body.concurrency is not None:
        out += ["--concurrency", str(body.concurrency)]
    return out


def _profile_run(ctx, body) -> Launch:
    quick = body.model_fields_set & {"rate", "duration", "output_len", "api", "process", "ignore_eos"}
    if quick:
        field = sorted(quick)[0]
        raise _invalid(field, "set by the LoadProfile: leave it out, or leave out profile for a quick run",
                       getattr(body, field))
    folder, _ = _api().specs_folder(ctx)
    if folder is None:
        raise HTTPException(409, "no specs to find the LoadProfile in: start the app server with a specs folder "
                                 "(enova app run specs/) or run the reconciler")
    try:
        specs = _api().load(ctx, folder)
    except EnovaError as exc:
        raise HTTPException(409, f"the specs in {folder} cannot be read: {exc}") from None
    if body.profile not in specs.load_profiles:
        known = ", ".join(sorted(specs.load_profiles)) or "none"
        raise HTTPException(404, f"no LoadProfile named {body.profile!r} in {folder} (profiles: {known})")
    spec = specs.load_profiles[body.profile].doc.spec
    if body.deployment is not None and body.deployment != spec.target:
        raise _invalid("deployment", f"LoadProfile {body.profile} targets {spec.target!r}; leave deployment out "
                                     "or name that one", body.deployment)
    ready(ctx, spec.target)
    return Launch([str(folder), "--profile", body.profile, *_quick_options(body)], "profile", body.profile,
                  spec.target, float(spec.duration), None)


def _quick_run(ctx, body) -> Launch:
    from enova.spec.models import parse_duration
    if body.deployment is None:
        raise _invalid("deployment", "a quick run needs deployment and rate (or profile: a LoadProfile's name)")
    if body.rate is None:
        raise _invalid("rate", "a quick run needs rate (requests per second)")
    duration = body.duration
    if isinstance(duration, str):
        try:
            duration = parse_duration(duration)
        except ValueError as exc:
            raise _invalid("duration", str(exc), body.duration) from None
    if not (0 < duration <= MAX_DURATION) or duration != duration:
        raise _invalid("duration", f"must be > 0 and <= {MAX_DURATION:g} seconds", body.duration)
    gateway = ready(ctx, body.deployment)
    args = ["--target", connect_url(gateway.config["host"], gateway.config["port"]), "--model", body.deployment,
            "--rate", repr(float(body.rate)), "--duration", f"{duration!r}s", "--output-len", str(body.output_len),
            "--api", body.api, "--process", body.process, *_quick_options(body)]
    if body.ignore_eos:
        args.append("--ignore-eos")
    return Launch(args, "quick", None, body.deployment, float(duration), _gateway_token(gateway.config))


def ready(ctx, name: str):
    """The running gateway, when `name` is a deployment with a ready replica behind it. 404 for an
    unknown deployment; 409 naming what is missing."""
    store = StateStore(ctx.settings.state_dir)
    if name not in store.deployment_names():
        raise HTTPException(404, f"no deployment named {name!r} (running: {', '.join(store.deployment_names()) or 'none'})")
    try:
        world = observe(store, _api().runtime(ctx, store), now=time.time(), names=[name])
    except EnovaError as exc:
        raise HTTPException(503, f"cannot observe {name}: {exc}") from None
    replicas = world.deployments[name].replicas if name in world.deployments else ()
    if not any(r.state is ReplicaState.READY for r in replicas):
        states = ", ".join(f"{r.id} {r.state.value}" for r in replicas) or "no replica"
        raise HTTPException(409, f"deployment {name} has no ready replica ({states}); wait for it to become ready "
                                 "(enova status) or apply the specs")
    gateway = world.gateway
    if gateway is None or not gateway.alive:
        why = "no gateway record" if gateway is None else gateway.detail
        raise HTTPException(409, f"the gateway is not running ({why}); runs go through it: enova apply starts it")
    return gateway


def _gateway_token(config: dict) -> str | None:
    path = config.get("token_file")
    if not path:
        return None
    from enova.gateway.config import load_tokens
    try:
        return load_tokens(path)[0]
    except EnovaError as exc:
        raise HTTPException(409, f"the gateway's token cannot be read: {exc}") from None
