"""`enova pilot run`: everything from one command, in the shared state directory.

Order: write (or reuse) the specs folder (enova.pilot.specs); check that the shared state lets
pilot own what it would start (no other pilot, no other holder of the state lock, no deployment
of the same name started by someone else, no gateway serving others, the ports free); record
itself in `<state_dir>/pilot/pilot.json`; start, each in its own session with its output in
`<state_dir>/logs/pilot/`, `enova reconcile SPECS` (which starts the gateway, the replicas and
Prometheus from the Monitoring document), `enova app run` and `enova webui run`; relay the
reconciler's progress (model download or conversion, engine start) and its Warning events until
every deployment has a ready replica behind the gateway; print every URL; then follow the events
until SIGINT / SIGTERM / `enova pilot stop`, or until a child exits, and stop everything it
started (enova.pilot.stop). The specs folder stays.

`--hf_proxy URL` becomes HTTPS_PROXY / HTTP_PROXY (with loopback in NO_PROXY, so enova's own
calls between its processes never go through it) in the environment of the reconciler, which
resolves hub models (huggingface_hub) and converts builtin ones (pip), and, inherited from it,
of the engines, which download the weights (a docker runtime forwards those variables to its
containers). It is never written into the specs: a proxy URL may carry credentials.

Called by enova.commands.pilot; `Pilot.run` takes a stop event, so tests can drive it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from enova.errors import EnovaError, LockHeldError, UsageError
from enova.monitor import process as monitor
from enova.monitor.view import build_view
from enova.observe.lock import StateLock
from enova.observe.ports import port_is_free
from enova.observe.state import StateStore
from enova.reconcile.controller import STALLED, read_status
from enova.reconcile.events import EventLog
from enova.runtime.procs import log_tail
from enova.settings import Settings
from enova.spec.loader import SpecSet, load_specs

from .record import Handle, PilotRecord, read_record, remove_record, terminate, write_record
from .specs import PilotOptions, PreparedSpecs, prepare_specs
from .stop import shutdown

Print = Callable[[str], None]
LOOPBACK_NO_PROXY = ("localhost", "127.0.0.1", "::1")
HOST = "127.0.0.1"
CHILD_READY_TIMEOUT = 90.0     # app server and web UI: import, bind, answer
HEARTBEAT = 15.0


@dataclass(frozen=True)
class PilotConfig:
    specs_dir: Path
    options: PilotOptions
    app_port: int = 8182
    webui_port: int = 8501
    metrics_port: int = 9188
    hf_proxy: str | None = None


def check_proxy(url: str | None) -> str | None:
    """The --hf_proxy URL, checked: http(s):// or socks5(h):// with a host. Raises UsageError."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
        raise UsageError(f"--hf_proxy {url}: expected a proxy URL such as http://proxy.example:3128 "
                         "(http, https, socks5 or socks5h, with a host)")
    try:
        parts.port
    except ValueError:
        raise UsageError(f"--hf_proxy {url}: the port is not a number from 0 to 65535") from None
    return url


def child_env(base: Mapping[str, str], hf_proxy: str | None) -> dict[str, str]:
    """The environment of what pilot starts: `base`, unbuffered output, and with a proxy,
    HTTPS_PROXY/HTTP_PROXY (both spellings: libraries read one or the other) and loopback added
    to NO_PROXY/no_proxy."""
    env = dict(base)
    env["PYTHONUNBUFFERED"] = "1"
    if hf_proxy:
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
            env[name] = hf_proxy
        have = [h.strip() for h in (env.get("NO_PROXY") or env.get("no_proxy") or "").split(",") if h.strip()]
        merged = ",".join(have + [h for h in LOOPBACK_NO_PROXY if h not in have])
        env["NO_PROXY"] = env["no_proxy"] = merged
    return env


def enova_argv(state_dir: Path, *args: str) -> list[str]:
    """`enova --state-dir DIR ARGS...` with this interpreter (no PATH lookup, no shell)."""
    return [sys.executable, "-m", "enova.cli", "--state-dir", str(state_dir), *args]


@dataclass
class _Child:
    name: str
    label: str
    proc: subprocess.Popen
    handle: Handle
    url: str = ""
    probe: str = ""           # GET url+probe answers 200 once it serves
    ready: bool = False
    started: float = field(default_factory=time.monotonic)
    log_offset: int = 0       # where this run's output starts in its (appended) log


class Pilot:
    """One `enova pilot run`. `out` prints to the user's stdout (URLs, events), `progress` to
    stderr. Blocks in `run` until `stop` is set or something fails."""

    def __init__(self, config: PilotConfig, settings: Settings, stop: threading.Event, *,
                 out: Print = print, progress: Print = lambda m: None, environ: Mapping[str, str] | None = None):
        self.config = config
        self.settings = settings
        self.state_dir = settings.state_dir
        self.stop = stop
        self.out = out
        self.progress = progress
        self.environ = dict(os.environ if environ is None else environ)
        self.children: dict[str, _Child] = {}
        self.record: PilotRecord | None = None
        self.failure: str | None = None

    # ---- the whole run --------------------------------------------------------------------
    def run(self) -> int:
        """0 after a requested stop; raises EnovaError (everything started is stopped) when
        something cannot start or a child exits while serving."""
        proxy = check_proxy(self.config.hf_proxy)
        began_wall, began = time.time(), time.monotonic()
        previous = self._previous_pilot()
        prepared = prepare_specs(self.config.specs_dir, self.config.options, cache_dir=self.settings.cache_dir)
        self.progress(prepared.message)
        specs = prepared.specs
        if self.stop.is_set():
            return 0
        self._check_shared_state(specs, previous)
        self.record = PilotRecord(
            pilot=Handle.of(os.getpid(), sys.argv), specs=str(prepared.folder), state_dir=str(self.state_dir),
            started_at=began_wall, deployments=sorted(set(specs.deployments) | set(previous.deployments if previous else [])),
            others_before=previous.others_before if previous else
            sorted(set(StateStore(self.state_dir).deployment_names()) - set(specs.deployments)),
            gateway_before=previous.gateway_before if previous else self._gateway_now(),
            prometheus_before=previous.prometheus_before if previous else self._prometheus_now())
        write_record(self.state_dir, self.record)
        try:
            self._start_children(prepared, proxy)
            self._wait_until_serving(specs, began_wall)
            if self.stop.is_set():
                return 0
            self._show_urls(specs, prepared, time.monotonic() - began)
            self._follow(began_wall)
        finally:
            self._shutdown()
        if self.failure:
            raise EnovaError(self.failure)
        return 0

    # ---- before anything starts -----------------------------------------------------------
    def _previous_pilot(self) -> PilotRecord | None:
        """A pilot record left here: refused when that pilot still runs; when it was killed, its
        children (reconciler, app, web UI) are stopped and its replicas, gateway and Prometheus
        adopted by this run."""
        previous = read_record(self.state_dir)
        if previous is None:
            return None
        if previous.pilot.alive():
            raise UsageError(f"a pilot already runs here (pid {previous.pilot.pid}, specs {previous.specs}); "
                             "stop it with `enova pilot stop`, or give this one another --state-dir")
        self.progress(f"the last pilot (pid {previous.pilot.pid}) did not stop; picking up what it left")
        for name, label in (("webui", "web UI"), ("app", "app server"), ("reconciler", "reconciler")):
            handle = previous.processes.get(name)
            if handle is not None and handle.alive():
                self.progress(f"stopping its {label} (pid {handle.pid})")
                terminate(handle, 60.0 if name == "reconciler" else 10.0)
        return previous

    def _check_shared_state(self, specs: SpecSet, previous: PilotRecord | None) -> None:
        """Refuse (exit 2) what would make pilot take over, or later stop, what it does not own."""
        lock = StateLock(self.state_dir, "enova pilot run (checking)")
        try:
            lock.acquire()
        except LockHeldError as exc:
            raise UsageError(f"{exc}. pilot runs its own reconciler on this state directory "
                             f"({self.state_dir}): stop that process first, or give pilot another --state-dir") from None
        try:
            store = StateStore(self.state_dir)
            inherited = set(previous.deployments) if previous else set()
            present = set(store.deployment_names())
            taken = sorted((set(specs.deployments) & present) - inherited)
            if taken:
                raise UsageError(
                    f"deployment {', '.join(taken)} already runs in {self.state_dir}, started by "
                    f"{self._source(store, taken[0])}, not by pilot; stop it (`enova delete {taken[0]}`) or "
                    "rename the Deployment in the specs")
            others = sorted(present - set(specs.deployments) - inherited)
            gateway = store.read_gateway()
            if gateway is not None and others and Handle(gateway.pid, gateway.create_time).alive():
                raise UsageError(
                    f"the gateway in {self.state_dir} (pid {gateway.pid} on {gateway.config.get('host')}:"
                    f"{gateway.config.get('port')}) serves deployments pilot does not own ({', '.join(others)}), "
                    "and pilot stops its gateway when it stops; delete them, or give pilot another --state-dir")
            self._check_ports(specs, store)
        finally:
            lock.release()

    def _source(self, store: StateStore, name: str) -> str:
        try:
            record = store.read_deployment(name)
        except EnovaError:
            record = None
        return f"specs at {record.source}" if record is not None and record.source else "another enova command"

    def _check_ports(self, specs: SpecSet, store: StateStore) -> None:
        busy = []
        gateway = store.read_gateway()
        gateway_port = specs.gateway.doc.spec.port if specs.gateway else 9199
        own_gateway = gateway is not None and gateway.config.get("port") == gateway_port and \
            Handle(gateway.pid, gateway.create_time).alive()
        if not own_gateway and not port_is_free(HOST, gateway_port):
            busy.append(f"--port {gateway_port} (the gateway; the specs' gateway.yaml)")
        if specs.monitoring is not None:
            prom = specs.monitoring.doc.spec.prometheus
            running = monitor.read_record(self.state_dir)
            ours = monitor.is_running(running) and running.config.get("port") == prom.port
            if not ours and not port_is_free(prom.host, prom.port):
                busy.append(f"--prometheus-port {prom.port} (Prometheus; the specs' monitoring.yaml)")
        for option, port in (("--app-port", self.config.app_port), ("--webui-port", self.config.webui_port),
                             ("--metrics-port", self.config.metrics_port)):
            if port and not port_is_free(HOST, port):
                busy.append(f"{option} {port}")
        if busy:
            raise UsageError("ports in use on 127.0.0.1: " + "; ".join(busy) + "; stop what holds them or choose "
                             "other ports")

    def _gateway_now(self) -> Handle | None:
        gateway = StateStore(self.state_dir).read_gateway()
        if gateway is None:
            return None
        handle = Handle(gateway.pid, gateway.create_time, list(gateway.argv), gateway.log)
        return handle if handle.alive() else None

    def _prometheus_now(self) -> Handle | None:
        record = monitor.read_record(self.state_dir)
        return Handle(record.pid, record.create_time, list(record.argv), record.log) \
            if monitor.is_running(record) else None

    # ---- the children ---------------------------------------------------------------------
    def _start_children(self, prepared: PreparedSpecs, proxy: str | None) -> None:
        specs = prepared.specs
        env = child_env(self.environ, proxy)
        if proxy:
            self.progress(f"weights are downloaded through {_redact(proxy)} (HTTPS_PROXY for the reconciler "
                          "and the engines)")
        gw = specs.gateway.doc.spec if specs.gateway else None
        gw_host, gw_port = (gw.host if gw else HOST), (gw.port if gw else 9199)
        self._spawn("reconciler", "reconciler", ["reconcile", str(prepared.folder),
                                                 "--metrics-port", str(self.config.metrics_port)], env)
        self._spawn("app", "app server", ["app", "run", str(prepared.folder), "--host", HOST,
                                          "--port", str(self.config.app_port)], env,
                    url=f"http://{HOST}:{self.config.app_port}/instance", probe=f"http://{HOST}:{self.config.app_port}/healthz")
        token = ["--token-file", str(_token_path(specs))] if gw is not None and gw.token_file else []
        self._spawn("webui", "web UI", ["webui", "run", "--serving-host", _client_host(gw_host),
                                        "--serving-port", str(gw_port), "--host", HOST,
                                        "--port", str(self.config.webui_port), *token], env,
                    url=f"http://{HOST}:{self.config.webui_port}", probe=f"http://{HOST}:{self.config.webui_port}/")

    def _spawn(self, name: str, label: str, args: list[str], env: dict[str, str], *, url: str = "",
               probe: str = "") -> None:
        log = self.state_dir / "logs" / "pilot" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = enova_argv(self.state_dir, *args)
        with open(log, "ab") as fh:
            offset = fh.tell()
            fh.write(f"--- enova pilot: starting {argv}\n".encode())
            fh.flush()
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                        start_new_session=True, close_fds=True, env=env)
            except OSError as exc:
                raise EnovaError(f"cannot start the {label}: {exc}") from None
        handle = Handle.of(proc.pid, argv, str(log))
        self.children[name] = _Child(name, label, proc, handle, url, probe, log_offset=offset)
        assert self.record is not None
        self.record.processes[name] = handle
        write_record(self.state_dir, self.record)
        self.progress(f"started the {label} (pid {proc.pid}; log {log})")

    def _check_children(self) -> None:
        """Raise EnovaError when a child has exited (with its log's last lines)."""
        for child in self.children.values():
            code = child.proc.poll()
            if code is not None:
                raise EnovaError(f"the {child.label} exited (code {code}); last lines of {child.handle.log}:\n"
                                 f"{log_tail(child.handle.log, 15)}")

    def _probe_children(self) -> None:
        for child in self.children.values():
            if child.ready or not child.probe:
                continue
            if _answers(child.probe):
                child.ready = True
                self.progress(f"{child.label} ready on {child.url} in {time.monotonic() - child.started:.1f} s")
            elif time.monotonic() - child.started > CHILD_READY_TIMEOUT:
                raise EnovaError(f"the {child.label} did not answer on {child.probe} within "
                                 f"{CHILD_READY_TIMEOUT:.0f} s; see {child.handle.log}")

    # ---- waiting for the first replica ----------------------------------------------------
    def _wait_until_serving(self, specs: SpecSet, since: float) -> None:
        """Until every deployment that wants replicas has a ready one behind the gateway and the
        app server and web UI answer, relaying the reconciler's progress and Warning events.
        Raises EnovaError when a child exits or a deployment stalls."""
        gw = specs.gateway.doc.spec if specs.gateway else None
        health = f"http://{_client_host(gw.host if gw else HOST)}:{gw.port if gw else 9199}/health"
        wanted = sorted(n for n, d in specs.deployments.items()
                        if d.doc.spec.replicas >= 1 or (d.doc.spec.scaling and d.doc.spec.scaling.min >= 1))
        reconciler = self.children["reconciler"]
        relay = _LogRelay(reconciler.handle.log, reconciler.log_offset)
        events = _EventRelay(self.state_dir, since)
        store = StateStore(self.state_dir)
        next_beat = time.monotonic() + HEARTBEAT
        while not self.stop.is_set():
            for line in relay.lines():
                self.progress(f"reconciler: {line}")
            for event in events.new():
                if event.type == "Warning":
                    self.progress(f"{event.subject}: {event.reason}: {event.message}")
            self._check_children()
            self._probe_children()
            self._check_stalled(wanted)
            serving = _ready_counts(health)
            if serving is not None and all(serving.get(n, 0) >= 1 for n in wanted) and \
                    all(c.ready for c in self.children.values() if c.probe):
                return
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT
                self.progress(self._waiting(store, wanted, serving))
            self.stop.wait(0.25)

    def _check_stalled(self, wanted: list[str]) -> None:
        status = read_status(self.state_dir)
        if not status or not status.get("alive"):
            return
        reconciler = self.children["reconciler"].handle
        if status.get("pid") != reconciler.pid:
            return  # an older reconciler's file, until ours writes
        for name in wanted:
            subject = status.get("subjects", {}).get(name) or {}
            if subject.get("condition") == STALLED:
                raise EnovaError(f"deployment {name} is stalled ({subject.get('reason')}): {subject.get('message')}; "
                                 f"fix the specs in {self.record.specs if self.record else 'the specs folder'} "
                                 "and run again")

    def _waiting(self, store: StateStore, wanted: list[str], serving: dict[str, int] | None) -> str:
        parts = []
        for name in wanted:
            try:
                records = store.replicas(name)
            except EnovaError:
                records = []
            if not records:
                parts.append(f"{name}: no replica started yet (model being prepared, or the first pass)")
            for r in records:
                took = time.time() - r.started_at if r.started_at else 0
                last = _last_line(r.log) if r.state == "starting" else ""
                parts.append(f"{name}: replica {r.id} {r.state} for {took:.0f} s (engine log {r.log})"
                             + (f"; its last line: {last}" if last else ""))
        if serving is None:
            parts.append("gateway: not answering yet")
        waiting = [c.label for c in self.children.values() if c.probe and not c.ready]
        if waiting:
            parts.append(f"waiting for {', '.join(waiting)}")
        return "waiting: " + "; ".join(parts)

    # ---- serving ---------------------------------------------------------------------------
    def _show_urls(self, specs: SpecSet, prepared: PreparedSpecs, took: float) -> None:
        gw = specs.gateway.doc.spec if specs.gateway else None
        base = f"http://{_client_host(gw.host if gw else HOST)}:{gw.port if gw else 9199}"
        urls = {"LLM service": base}
        urls.update({c.label: c.url for c in self.children.values() if c.url})
        if self.config.metrics_port:
            urls["reconciler metrics"] = f"http://{HOST}:{self.config.metrics_port}/metrics"
        monitoring = self._monitoring_parts(specs)
        urls.update({name: url for name, url in monitoring.items() if url.startswith("http")})
        assert self.record is not None
        self.record.urls = urls
        write_record(self.state_dir, self.record)
        width = max(len(k) for k in [*urls, *monitoring]) + 2
        lines = [f"enova pilot: serving {', '.join(specs.deployments)} (everything up in {took:.1f} s)"]
        lines += [f"  {name:<{width}}{url}" for name, url in urls.items()]
        lines += [f"  {name:<{width}}{why}" for name, why in monitoring.items() if not why.startswith("http")]
        lines += [f"  {'specs':<{width}}{prepared.folder} (edit and save: the reconciler applies it)",
                  f"  {'':<{width}}the app server's actions need its token: `enova app token`",
                  *([f"  {'':<{width}}Grafana's user and password: `enova mon status`"] if "Grafana" in urls else []),
                  "Try it:",
                  f"  curl -X POST {base}/generate -d '{{\"prompt\": \"San Francisco is a\", \"max_tokens\": 64, "
                  "\"temperature\": 0.9, \"top_p\": 0.9}'",
                  "Ctrl-C (or `enova pilot stop` from another shell) stops everything pilot started; "
                  "the specs stay. Events follow:"]
        for line in lines:
            self.out(line)

    def _monitoring_parts(self, specs: SpecSet, wait: float = 30.0) -> dict[str, str]:
        """name -> URL of each monitoring part that runs (Prometheus; Grafana where it runs), or
        name -> why not. Waits up to `wait` s for Prometheus, which the reconciler starts beside
        the first pass."""
        if specs.monitoring is None:
            return {"Prometheus": "not run (no Monitoring document in the specs)"}
        deadline = time.monotonic() + wait
        failed = None
        while True:
            try:
                view = build_view(self.state_dir, timeout=1.0)
            except EnovaError as exc:
                return {"Prometheus": f"unknown ({exc})"}
            parts = {p.name: p for p in view.parts}
            if "prometheus" in parts and parts["prometheus"].state == "running":
                break
            for event in EventLog(self.state_dir / "events.jsonl").read(since=self.record.started_at):
                if event.reason == "MonitoringFailed":
                    failed = event.message
            if failed or time.monotonic() >= deadline or self.stop.is_set():
                return {"Prometheus": f"not running ({failed or 'not ready yet; see `enova mon status`'}); "
                                      "serving is unaffected"}
            time.sleep(0.5)
        out = {}
        for part in view.parts:
            label = {"prometheus": "Prometheus", "grafana": "Grafana"}.get(part.name, part.name)
            out[label] = part.url if part.state == "running" and part.url else f"{part.state} {part.detail}".strip()
        grafana = _compose_grafana(self.state_dir)
        out["Grafana"] = grafana or "not run by pilot (`enova mon start --mode compose` runs one; or import the " \
                                    "dashboards in enova/monitor/grafana/ into yours)"
        return out

    def _follow(self, since: float) -> None:
        """Print every event until stop; a child that exits stops the run with its error."""
        watcher = threading.Thread(target=self._watch_children, name="pilot-watch", daemon=True)
        watcher.start()
        log = EventLog(self.state_dir / "events.jsonl")
        for event in log.follow(self.stop, poll=0.5):
            self.out(event.format())

    def _watch_children(self) -> None:
        ticks = 0
        while not self.stop.wait(1.0):
            try:
                self._check_children()
            except EnovaError as exc:
                self.failure = str(exc)
                self.stop.set()
            ticks += 1
            if ticks % 5 == 0:
                self._track_specs()

    def _track_specs(self) -> None:
        """Deployments added to the specs while pilot runs are pilot's too (stopped with it, and
        listed in its record for `enova pilot stop`). Specs that do not load are the reconciler's
        to report; they change nothing here."""
        assert self.record is not None
        try:
            specs = load_specs(Path(self.record.specs))
        except EnovaError:
            return
        added = sorted(set(specs.deployments) - set(self.record.deployments) - set(self.record.others_before))
        if added:
            self.record.deployments = sorted(set(self.record.deployments) | set(added))
            write_record(self.state_dir, self.record)
            self.progress(f"{', '.join(added)}: added to the specs; stopped with pilot")

    # ---- stopping ---------------------------------------------------------------------------
    def _shutdown(self) -> None:
        if self.record is None:
            return
        self.progress("stopping everything pilot started (the specs stay)")
        began = time.monotonic()
        self._track_specs()
        problems = shutdown(self.record, self.settings, self.progress)
        for child in self.children.values():
            try:
                child.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        if problems:
            self.failure = (self.failure + "\n" if self.failure else "") + "left running: " + "; ".join(problems)
        else:
            self.progress(f"stopped in {time.monotonic() - began:.1f} s")
        remove_record(self.state_dir)


# ---- helpers ------------------------------------------------------------------------------
class _LogRelay:
    """New complete lines of a log file (the reconciler's), without enova's "enova: " prefix."""

    def __init__(self, path: str, offset: int = 0):
        self.path = path
        self.offset = offset
        self.partial = b""

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
                self.offset = fh.tell()
        except OSError:
            return []
        chunks = (self.partial + data).split(b"\n")
        self.partial = chunks.pop()
        out = []
        for raw in chunks:
            line = raw.decode(errors="replace").rstrip()
            if line and not line.startswith("--- enova pilot:"):
                out.append(line.removeprefix("enova: "))
        return out


class _EventRelay:
    def __init__(self, state_dir: Path, since: float):
        self.log = EventLog(Path(state_dir) / "events.jsonl")
        self.since = since
        self.seen = 0

    def new(self):
        events = self.log.read(since=self.since)
        fresh = events[self.seen:]
        self.seen = len(events)
        return fresh


def _last_line(path: str, width: int = 160) -> str:
    """The engine log's last line as a terminal shows it (a download's progress bar redraws its
    line with carriage returns: the last redraw), cut to `width`."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [seg.strip() for line in tail.splitlines() for seg in line.split("\r")[-1:] if seg.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def _compose_grafana(state_dir: Path) -> str:
    """Grafana's URL when monitoring's compose mode runs it for this state directory ("" when not:
    compose mode never started here, or its Grafana container is not running)."""
    from enova.monitor.compose_engine import compose_view
    view = compose_view(state_dir)
    if view is None or not any(s.service == "grafana" and s.state == "running" for s in view.services):
        return ""
    return view.urls.get("grafana", "")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _ready_counts(health_url: str) -> dict[str, int] | None:
    """deployment -> replicas the gateway routes to, from its /health; None when it does not answer."""
    try:
        resp = httpx.get(health_url, timeout=1.0, trust_env=False)
        data = resp.json()
    except (httpx.HTTPError, ValueError):
        return None
    deployments = data.get("deployments") if isinstance(data, dict) else None
    if not isinstance(deployments, dict):
        return None
    return {name: int(d.get("ready", 0)) for name, d in deployments.items() if isinstance(d, dict)}


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _token_path(specs: SpecSet) -> Path:
    assert specs.gateway is not None and specs.gateway.doc.spec.token_file
    path = Path(specs.gateway.doc.spec.token_file).expanduser()
    return path if path.is_absolute() else Path(specs.gateway.file).parent / path


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
