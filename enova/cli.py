"""The `enova` command: parses options, calls one function, renders the result.

The only module that wires real drivers together. One handler turns an EnovaError into a
single message on stderr and its exit code. Plans and status go to stdout; progress to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from enova import __version__
from enova.errors import EnovaError, UsageError
from enova.settings import Settings

app = typer.Typer(
    name="enova",
    help="enova: a declarative control plane for serving LLMs. Keep specs in git; "
         "`enova diff` shows what would change, `enova apply` makes the machine match.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Output(str, Enum):
    text = "text"
    json = "json"


class _State:
    settings: Settings


_state = _State()


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(message: str) -> None:
    _err(f"enova: {message}")


def _fail(exc: EnovaError, code: int | None = None) -> typer.Exit:
    _err(f"error: {exc}")
    return typer.Exit(code if code is not None else exc.exit_code)


def _version_callback(value: bool) -> None:
    if value:
        print(f"enova {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    state_dir: Annotated[Optional[Path], typer.Option(
        "--state-dir", envvar="ENOVA_STATE_DIR",
        help="Where replica records live (default: $XDG_STATE_HOME/enova).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state.settings = Settings.from_env(state_dir)


SpecsArg = Annotated[Path, typer.Argument(help="A spec file or a directory of them (read recursively).")]
PruneOpt = Annotated[bool, typer.Option("--prune", help="Delete deployments that are no longer in the specs.")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json.")]


def _load(path: Path):
    from enova.spec.loader import load_specs
    return load_specs(path)


def _observe():
    from enova.observe.state import StateStore
    from enova.observe.world import observe, observe_gateway
    store = StateStore(_state.settings.state_dir)
    return store, (observe(store), observe_gateway(store))


def _plan(specs, observed, prune: bool):
    from enova.plan.desired import desired_gateway, desired_state
    from enova.plan.diff import compute_plan
    deployments, gateway = observed
    return compute_plan(desired_state(specs), deployments, prune=prune, gateway=desired_gateway(specs),
                        observed_gateway=gateway)


def _render(plan, output: Output) -> str:
    from enova.plan.render import render_json, render_text
    return render_json(plan) if output is Output.json else render_text(plan)


@app.command()
def validate(paths: Annotated[list[Path], typer.Argument(help="Spec files or directories.")]) -> None:
    """Check spec files; report every error as file:line field: message. Exit 0 valid, 2 invalid."""
    try:
        for path in paths:
            specs = _load(path)
            print(f"{path}: valid ({len(specs.deployments)} Deployment, {len(specs.slos)} SLO, "
                  f"{len(specs.load_profiles)} LoadProfile)")
    except EnovaError as exc:
        raise _fail(exc)


@app.command()
def schema() -> None:
    """Print the JSON Schema of spec documents (for yaml-language-server and other editors)."""
    from enova.spec.schema import json_schema
    print(json.dumps(json_schema(), indent=2))


@app.command()
def diff(specs: SpecsArg, prune: PruneOpt = False, output: OutputOpt = Output.text) -> None:
    """Show the plan. Exit 0 = in sync, 1 = changes pending, 2 = error."""
    try:
        spec_set = _load(specs)
        _, observed = _observe()
        plan = _plan(spec_set, observed, prune)
    except EnovaError as exc:
        raise _fail(exc, 2)
    sys.stdout.write(_render(plan, output))
    raise typer.Exit(1 if plan.has_changes else 0)


@app.command()
def apply(specs: SpecsArg, prune: PruneOpt = False, output: OutputOpt = Output.text) -> None:
    """Converge: start, scale, replace (and with --prune delete) replicas to match the specs."""
    from enova.apply.executor import Applier
    from enova.observe.lock import StateLock
    try:
        spec_set = _load(specs)
        with StateLock(_state.settings.state_dir, "enova apply"):
            store, observed = _observe()
            plan = _plan(spec_set, observed, prune)
            sys.stdout.write(_render(plan, output))
            sys.stdout.flush()
            if not plan.has_changes:
                return
            applier = Applier(store=store, settings=_state.settings, specs=spec_set, progress=_progress)
            began = time.monotonic()
            applier.preflight(plan)
            result = applier.apply(plan)
    except EnovaError as exc:
        raise _fail(exc)
    _err(f"{result.summary()} ({time.monotonic() - began:.1f} s)")
    if result.failed:
        for outcome in result.failed:
            _err(f"error: {outcome.deployment}: {outcome.message}")
        raise typer.Exit(1)


@app.command()
def delete(name: Annotated[str, typer.Argument(help="The deployment to stop.")]) -> None:
    """Stop a deployment's replicas gracefully and forget it. (Its spec, if still present,
    would start it again on the next apply.)"""
    from enova.apply.executor import Applier
    from enova.observe.lock import StateLock
    from enova.observe.state import StateStore
    try:
        with StateLock(_state.settings.state_dir, "enova delete"):
            store = StateStore(_state.settings.state_dir)
            if name not in store.deployment_names():
                known = ", ".join(store.deployment_names()) or "none"
                raise UsageError(f"no deployment named {name!r} (running: {known})")
            applier = Applier(store=store, settings=_state.settings, specs=None, progress=_progress)
            stopped = applier.delete(name)
            applier.stop_gateway_if_idle()
    except EnovaError as exc:
        raise _fail(exc)
    _err(f"deleted {name}: {stopped} replica(s) stopped")


enode_app = typer.Typer(help="The single-module LLM service: one model behind the gateway, in the foreground.",
                        no_args_is_help=True)
app.add_typer(enode_app, name="enode")


@enode_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def enode_run(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="builtin:NAME, a Hugging Face id, or a local folder.")],
    host: Annotated[str, typer.Option("--host", help="Address the gateway binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the gateway (/generate and the OpenAI API).")] = 9199,
    name: Annotated[Optional[str], typer.Option("--name", help="Deployment (served model) name; "
                                                "default: from the model.")] = None,
    replicas: Annotated[int, typer.Option("--replicas", help="Engine replicas.")] = 1,
    cpus: Annotated[int, typer.Option("--cpus", help="CPU cores per replica (CPU engine).")] = 1,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs per replica (0: vLLM's CPU build).")] = 0,
    token_file: Annotated[Optional[str], typer.Option("--token-file", help="Require this bearer token.")] = None,
) -> None:
    """Serve one model in the foreground behind the gateway. Other --flags are vLLM engine args,
    e.g. --max-num-seqs 8 or --max_num_seqs=8. Ctrl-C drains in-flight requests and stops."""
    import signal
    import threading

    from enova.apply.enode import build_specs, parse_engine_args, run_enode
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        specs = build_specs(model=model, name=name, replicas=replicas, cpus=cpus, gpus=gpus,
                            engine_args=parse_engine_args(list(ctx.args)), host=host, port=port,
                            token_file=token_file)
        run_enode(specs, _state.settings, stop, progress=_progress)
    except EnovaError as exc:
        raise _fail(exc)


def _duration(value: str, option: str) -> float:
    from enova.spec.models import parse_duration
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{option} {value}: {exc}") from None


@app.command()
def reconcile(
    specs: SpecsArg,
    interval: Annotated[str, typer.Option("--interval", help="Re-observe everything this often (e.g. 30s, 2m).")] = "30s",
    unhealthy_after: Annotated[str, typer.Option("--unhealthy-after", help="Replace a replica failing /health "
                                                 "this long.")] = "60s",
    prune: PruneOpt = False,
    git_pull: Annotated[Optional[str], typer.Option("--git-pull", metavar="BRANCH", help="Fetch and fast-forward "
                                                    "BRANCH from origin before each timed pass.")] = None,
    committed_only: Annotated[bool, typer.Option("--committed-only", help="Apply what is committed at HEAD, "
                                                 "not what is being edited.")] = False,
) -> None:
    """Keep converging: watch the specs, re-observe on a timer, self-heal, report status and events.
    SIGHUP re-reads specs and clears stalls; SIGTERM exits 0 and leaves the replicas serving."""
    import signal
    import threading

    from enova.reconcile.controller import Reconciler
    from enova.reconcile.notify import Notifier
    stop = threading.Event()
    try:
        reconciler = Reconciler(
            specs.resolve(), _state.settings, stop=stop, interval=_duration(interval, "--interval"),
            unhealthy_after=_duration(unhealthy_after, "--unhealthy-after"), prune=prune, git_pull=git_pull,
            committed_only=committed_only, notifier=Notifier(), progress=_progress)

        def _stop(*_):
            stop.set()
            reconciler.wake.set()
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGHUP, lambda *_: reconciler.request_reload())
        code = reconciler.run()
    except EnovaError as exc:
        raise _fail(exc)
    raise typer.Exit(code)


@app.command()
def events(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    deployment: Annotated[Optional[str], typer.Option("--deployment", "-d", help="Only this deployment.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many recent events to show first.")] = 50,
    output: OutputOpt = Output.text,
) -> None:
    """The reconciler's events: every action with its reason (newest last)."""
    import threading

    from enova.reconcile.events import EventLog
    log = EventLog(_state.settings.state_dir / "events.jsonl")
    subject = f"deployment/{deployment}" if deployment else None
    show = (lambda e: print(e.to_json(), flush=True)) if output is Output.json else (lambda e: print(e.format(), flush=True))
    for event in log.read(subject=subject)[-limit:] if limit > 0 else []:
        show(event)
    if follow:
        stop = threading.Event()
        try:
            for event in log.follow(stop, subject=subject):
                show(event)
        except KeyboardInterrupt:
            stop.set()


service_app = typer.Typer(help="Run `enova reconcile` as a systemd service.", no_args_is_help=True)
app.add_typer(service_app, name="service")


@service_app.command("install")
def service_install(
    specs: SpecsArg,
    user: Annotated[bool, typer.Option("--user", help="A user unit (~/.config/systemd/user) instead of a system one.")] = False,
    interval: Annotated[str, typer.Option("--interval", help="The reconciler's --interval.")] = "30s",
) -> None:
    """Write enova-reconcile.service (Type=notify, watchdog, KillMode=process so replicas outlive
    the controller) and enable and start it when systemd runs."""
    from enova.reconcile.service import install_service
    try:
        result = install_service(specs, user=user, interval=_duration(interval, "--interval"),
                                 state_dir=_state.settings.state_dir, cache_dir=_state.settings.cache_dir)
    except EnovaError as exc:
        raise _fail(exc)
    print(f"{result.unit_path}: {result.message}")


@service_app.command("uninstall")
def service_uninstall(
    user: Annotated[bool, typer.Option("--user", help="The user unit.")] = False,
) -> None:
    """Stop and disable the service and remove its unit. Replicas keep serving (enova delete stops them)."""
    from enova.reconcile.service import uninstall_service
    try:
        result = uninstall_service(user=user)
    except EnovaError as exc:
        raise _fail(exc)
    print(f"{result.unit_path}: {result.message}")


def _uptime(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


@app.command()
def status(specs: Annotated[Optional[Path], typer.Argument(
               help="Specs to compare with (sync status); without them sync is Unknown.")] = None,
           output: OutputOpt = Output.text) -> None:
    """Per deployment: sync status and health status; per replica: pid, port, health, uptime, config."""
    from enova.observe.gpus import gpu_inventory
    from enova.observe.state import StateStore
    from enova.observe.world import observe_details, observe_gateway
    from enova.plan.model import ObservedDeployment
    from enova.plan.status import deployment_statuses
    from enova.reconcile.controller import read_status
    controller = read_status(_state.settings.state_dir)
    implicit = specs is None and bool(controller and controller.get("alive"))
    if implicit:
        specs = Path(controller["specs"])  # compare with what the running reconciler enforces
    try:
        try:
            spec_set = _load(specs) if specs is not None else None
        except EnovaError:
            if not implicit:
                raise
            spec_set = None  # the reconciler reports the spec error itself (shown below)
        store = StateStore(_state.settings.state_dir)
        details = observe_details(store, probe_health=True)
        observed = {n: ObservedDeployment(n, tuple(d.observed for d in ds)) for n, ds in details.items()}
        gateway = observe_gateway(store)
        plan = _plan(spec_set, (observed, gateway), False) if spec_set is not None else None
    except EnovaError as exc:
        raise _fail(exc)
    statuses = deployment_statuses(plan, observed)
    subjects = (controller or {}).get("subjects", {}) if controller and controller.get("alive") else {}
    gpus = gpu_inventory()
    now = time.time()
    gateway_record = store.read_gateway()
    gateway_info = None
    if gateway_record is not None:
        change = plan.gateway_change if plan else None
        gateway_info = {
            "pid": gateway_record.pid, "host": gateway_record.config["host"], "port": gateway_record.config["port"],
            "alive": bool(gateway and gateway.alive), "detail": gateway.detail if gateway else "",
            "config_hash": gateway_record.config_hash, "log": gateway_record.log,
            "uptime_seconds": round(now - gateway_record.started_at, 1),
            "sync": ("Unknown" if change is None and plan is None else
                     "Synced" if change is not None and change.action.value == "noop" else "OutOfSync"),
        }

    def replica_rows(name: str) -> list[dict]:
        rows = []
        for d in details.get(name, []):
            r, o = d.record, d.observed
            health = "exited" if not o.alive else ("healthy" if o.healthy else
                                                   ("starting" if r.state == "starting" else "unhealthy"))
            rows.append({"id": r.id, "pid": r.pid, "port": r.port, "host": r.host, "state": o.state.value,
                         "health": health, "detail": o.detail, "uptime_seconds": round(now - r.started_at, 1),
                         "config_hash": r.config_hash, "cpus": r.cpus, "gpus": r.gpus, "log": r.log})
        return rows

    if output is Output.json:
        print(json.dumps({
            "state_dir": str(_state.settings.state_dir),
            "gateway": gateway_info,
            "reconciler": controller,
            "gpus": {"available": gpus.available, "description": gpus.describe(),
                     "devices": [g.__dict__ for g in gpus.gpus]},
            "deployments": [{
                "name": s.name,
                "sync": {"status": s.sync.value, "reason": s.sync_reason},
                "health": {"status": s.health.value, "reason": s.health_reason},
                "replicas": {"desired": s.desired, "running": s.running},
                "reconciler": subjects.get(s.name),
                "config_hash": plan.desired[s.name].config_hash if plan and s.name in plan.desired else None,
                "replica_details": replica_rows(s.name),
            } for s in statuses],
        }, indent=2))
        return
    if controller:
        git = controller.get("git") or {}
        where = f", specs {git.get('short')}" if git else ""
        state = f"running (pid {controller['pid']})" if controller.get("alive") else "not running (last status shown)"
        print(f"reconciler: {state}{where}" + (f"; SPECS INVALID: {controller['spec_error']}"
                                                if controller.get("spec_error") else ""))
    if gateway_info:
        state = "running" if gateway_info["alive"] else f"not running ({gateway_info['detail']})"
        print(f"gateway: {state} on {gateway_info['host']}:{gateway_info['port']} (pid {gateway_info['pid']}, "
              f"up {_uptime(gateway_info['uptime_seconds'])}); sync {gateway_info['sync']}")
    if not statuses:
        print("No deployments.")
    for s in statuses:
        desired = "-" if s.desired is None else str(s.desired)
        print(f"{s.name}: sync {s.sync.value} ({s.sync_reason}); health {s.health.value} "
              f"({s.health_reason}); replicas {s.running}/{desired}")
        sub = subjects.get(s.name)
        if sub:
            print(f"  reconciler: {sub['condition']} ({sub['reason']}: {sub['message']}); "
                  f"applied {sub['last_applied'] or '-'}" + (f" at {sub['revision']}" if sub.get('revision') else "")
                  + f", attempted {sub['last_attempted'] or '-'}")
        rows = replica_rows(s.name)
        if rows:
            print(f"  {'REPLICA':<22} {'PID':>7} {'PORT':>6} {'HEALTH':<10} {'UPTIME':>8} {'CONFIG':<13} WHERE")
            for r in rows:
                where = ("cpus " + ",".join(map(str, r["cpus"]))) if r["cpus"] else ("gpus " + ",".join(r["gpus"]))
                health = r["health"] + (f" ({r['detail']})" if r["detail"] else "")
                print(f"  {r['id']:<22} {r['pid']:>7} {r['port']:>6} {health:<10} "
                      f"{_uptime(r['uptime_seconds']):>8} {r['config_hash']:<13} {where}")
    print(f"GPUs: {gpus.describe()}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
