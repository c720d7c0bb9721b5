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
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

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


from enova.commands.common import (  # noqa: E402 - shared by every command module
    Output, OutputOpt, PruneOpt, SpecsArg, err as _err, fail as _fail, progress as _progress, state as _state,
    workspace as _workspace,
)


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
    try:
        _state.settings = Settings.from_env(state_dir)
    except EnovaError as exc:
        raise _fail(exc)
    _state.state_dir_given = state_dir is not None




def _load(path: Path):
    return _workspace().load(path)


def _runtime(store, specs=None):
    return _workspace().runtime(store, specs)


def _observe(specs=None):
    return _workspace().observe(specs)


def _rotate_logs(store) -> None:
    _workspace().rotate_logs(store)


def _facts(specs):
    return _workspace().facts(specs)


def _plan(specs, world, prune: bool):
    return _workspace().plan(specs, world, prune)


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


class RenderFormat(str, Enum):
    compose = "compose"


@app.command()
def render(
    specs: SpecsArg,
    format: Annotated[RenderFormat, typer.Option(
        "--format", help="compose: a Docker Compose file, one service per replica of each runtime docker deployment.")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write DIR/compose.yaml and print its path (default: print the file).")] = None,
    gpus: Annotated[Optional[int], typer.Option(
        "--gpus", min=0, help="Render for a host with N GPUs, device ids 0..N-1 (default: this host's GPUs "
                              "by UUID, else as many as the deployments need).")] = None,
) -> None:
    """Render the specs for another tool: the containers `enova apply` would create, with
    deterministic replica ids, ports, cores and GPUs. Exit 0 rendered, 2 error."""
    from enova.apply.compose import render_compose
    from enova.observe.gpus import gpu_inventory
    try:
        spec_set = _load(specs)
        inventory = [g.uuid for g in gpu_inventory().gpus] if gpus is None else None
        text = render_compose(spec_set, cache_dir=_state.settings.cache_dir, inventory_gpu_ids=inventory, gpus=gpus,
                              port_start=_state.settings.port_range[0], revision=_revision(specs),
                              facts=_facts(spec_set))
    except EnovaError as exc:
        raise _fail(exc, 2)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compose.yaml").write_text(text)
    except OSError as exc:
        raise _fail(UsageError(f"cannot write {out / 'compose.yaml'}: {exc}"))
    print(out / "compose.yaml")


@app.command()
def diff(specs: SpecsArg, prune: PruneOpt = False, output: OutputOpt = Output.text) -> None:
    """Show the plan. Exit 0 = in sync, 1 = changes pending, 2 = error."""
    try:
        spec_set = _load(specs)
        _, _, world = _observe(spec_set)
        plan = _plan(spec_set, world, prune)
    except EnovaError as exc:
        raise _fail(exc, 2)
    sys.stdout.write(_render(plan, output))
    for change in plan.blocked:
        _err(f"error: deployment {change.deployment} is blocked: {change.blocked}")
    raise typer.Exit(2 if plan.blocked else 1 if plan.has_changes else 0)


@app.command()
def apply(specs: SpecsArg, prune: PruneOpt = False, output: OutputOpt = Output.text) -> None:
    """Converge: start, scale, replace (and with --prune delete) replicas to match the specs.
    Ctrl-C stops waiting: replicas still starting are left starting for the next apply (or the
    reconciler) to adopt; a second Ctrl-C quits at once."""
    import signal
    import threading

    from enova.apply.executor import Applier
    from enova.observe.lock import StateLock
    from enova.runtime.base import StartInterrupted
    stop = threading.Event()

    def _interrupt(*_):
        _err("enova: interrupted; replicas still starting are left for the next apply to adopt "
             "(Ctrl-C again quits at once)")
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        spec_set = _load(specs)
        with StateLock(_state.settings.state_dir, "enova apply"):
            store, runtime, world = _observe(spec_set)
            _rotate_logs(store)
            plan = _plan(spec_set, world, prune)
            sys.stdout.write(_render(plan, output))
            sys.stdout.flush()
            if not plan.has_changes:
                _report_blocked(plan)
                _ensure_monitoring(spec_set)
                return
            applier = Applier(store=store, settings=_state.settings, runtime=runtime, progress=_progress,
                              stop=stop, revision=_revision(specs), on_change=_targets)
            began = time.monotonic()
            applier.preflight(plan)
            result = applier.apply(plan)
    except EnovaError as exc:
        raise _fail(exc)
    _err(f"{result.summary()} ({time.monotonic() - began:.1f} s)")
    if any(isinstance(o.error, StartInterrupted) for o in result.failed):
        raise typer.Exit(130)
    if result.failed:
        for outcome in result.failed:
            _err(f"error: {outcome.deployment}: {outcome.message}")
        raise typer.Exit(1)
    _report_blocked(plan)
    _ensure_monitoring(spec_set)


def _ensure_monitoring(spec_set) -> None:
    """With a Monitoring document in the specs, Prometheus runs as it says (started, or left
    running when nothing changed). A failure is an error exit; serving replicas are untouched."""
    if spec_set.monitoring is None:
        return
    from enova.monitor.compose_engine import ensure_monitoring
    try:
        done = ensure_monitoring(_state.settings.state_dir, spec_set, progress=_progress)
    except (EnovaError, OSError) as exc:
        _err(f"error: monitoring: {exc} (replicas keep serving)")
        raise typer.Exit(1)
    _err(f"monitoring: {done.line}")


def _targets() -> None:
    _workspace().refresh_targets()


def _revision(specs: Path) -> str:
    from enova.workspace import revision
    return revision(specs)


def _report_blocked(plan) -> None:
    """Deployments the plan could not compute (engine.args auto unresolvable) were left as they
    run: say so and exit 2."""
    for change in plan.blocked:
        _err(f"error: deployment {change.deployment} is blocked (left as it runs): {change.blocked}")
    if plan.blocked:
        raise typer.Exit(2)


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
            applier = Applier(store=store, settings=_state.settings, runtime=_runtime(store), progress=_progress,
                              on_change=_targets)
            stopped = applier.delete(name)
            applier.stop_gateway_if_idle()
    except EnovaError as exc:
        raise _fail(exc)
    _err(f"deleted {name}: {stopped} replica(s) stopped")


enode_app = typer.Typer(help="The single-module LLM service: one model behind the gateway, in the foreground.",
                        no_args_is_help=True)
app.add_typer(enode_app, name="enode")


def _engine_arg(text: str) -> tuple[str, Any]:
    import yaml
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not sep or not key:
        raise UsageError(f"--set {text!r}: expected KEY=VALUE, such as max_model_len=8192")
    return key, yaml.safe_load(value)


@app.command()
def recommend(
    model: Annotated[str, typer.Option("--model", "-m", help="builtin:NAME, a local folder, or a Hugging Face id (only its config is read).")],
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="Size for this GPU from the catalogue (H100-80GB, A100-40GB, L4, ...).")] = None,
    gpu_memory: Annotated[Optional[str], typer.Option("--gpu-memory", help="Size for GPUs with this much memory each (24GiB, 80GB).")] = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="How many GPUs a replica may use (tensor parallel); default 1, or all this host has.")] = None,
    cpus: Annotated[Optional[int], typer.Option("--cpus", help="CPU engine: cores per replica (resources.cpus).")] = None,
    memory: Annotated[Optional[str], typer.Option("--memory", help="CPU engine: the host's memory (default: this host's).")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", help="Fit the lengths and rate of this LoadProfile (from --specs).")] = None,
    specs: Annotated[Optional[Path], typer.Option("--specs", help="Where --profile is looked up (default: ./specs when it exists).")] = None,
    capacity: Annotated[Optional[float], typer.Option("--capacity", help="Requests/s one replica sustains (measured), for the replica count.")] = None,
    capacity_from: Annotated[Optional[Path], typer.Option("--capacity-from", help="An `enova inject run` result against one replica: its throughput is the capacity.")] = None,
    run_replicas: Annotated[int, typer.Option("--run-replicas", help="How many replicas served the --capacity-from run.")] = 1,
    max_model_len: Annotated[Optional[int], typer.Option("--max-model-len", help="Keep this max_model_len; choose the rest around it.")] = None,
    set_args: Annotated[Optional[list[str]], typer.Option("--set", help="Keep this engine arg as given: KEY=VALUE (repeatable).")] = None,
    kv_cache_dtype: Annotated[str, typer.Option("--kv-cache-dtype", help="auto (the model's dtype), fp8, ...")] = "auto",
    output: OutputOpt = Output.text,
) -> None:
    """Recommend vLLM settings for a model on given GPUs (or this host's CPU), computed from the
    model's real config and the hardware's memory, each number with its reason. Exit 0, or 2
    when it does not fit (with the arithmetic and the nearest setting that would)."""
    from enova.advise import Request, advise
    from enova.recommend.model import Refusal
    from enova.recommend.render import refusal_json, render_text, to_json
    try:
        fixed = dict(_engine_arg(a) for a in set_args or [])
        if max_model_len is not None:
            fixed["max_model_len"] = max_model_len
        spec_set = None
        folder = specs or (Path("specs") if profile and Path("specs").is_dir() else None)
        if profile:
            if folder is None:
                raise UsageError("--profile needs the specs that hold it: --specs DIR")
            spec_set = _load(folder)
        req = Request(model=model, gpu=gpu, gpu_memory=gpu_memory, gpus=gpus, cpus=cpus, memory=memory,
                      profile=profile, capacity_rps=capacity, capacity_from=capacity_from,
                      run_replicas=run_replicas, fixed=fixed, kv_cache_dtype=kv_cache_dtype)
        rec = advise(req, base_dir=Path.cwd(), cache_dir=_state.settings.cache_dir, specs=spec_set)
    except Refusal as refusal:
        if output is Output.json:
            print(json.dumps(refusal_json(refusal), indent=2))
        raise _fail(refusal)
    except EnovaError as exc:
        raise _fail(exc)
    print(json.dumps(to_json(rec), indent=2) if output is Output.json else render_text(rec), end="" if output is Output.text else "\n")


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
        run_enode(specs, _state.settings, stop, progress=_progress, on_change=_targets)
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
    metrics_port: Annotated[int, typer.Option("--metrics-port", envvar="ENOVA_RECONCILER_METRICS_PORT",
                                              min=0, max=65535, help="Serve the reconciler's own /metrics (and "
                                              "GPU metrics) on 127.0.0.1 at this port; 0 disables.")] = 9188,
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
            committed_only=committed_only, notifier=Notifier(), progress=_progress,
            metrics_port=metrics_port)

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


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="The deployment.")],
    replica: Annotated[Optional[str], typer.Option("--replica", "-r", help="One replica's id (default: every replica).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="How many recent lines of each replica first.")] = 100,
) -> None:
    """A deployment's engine output, from whichever runtime runs it (a process's log file, a
    container's logs). Several replicas are prefixed with their ids."""
    import threading

    from enova.observe.state import StateStore
    store = StateStore(_state.settings.state_dir)
    records = store.replicas(name)
    if not records:
        raise _fail(UsageError(f"no replicas of {name!r} (known: {', '.join(store.deployment_names()) or 'none'})"))
    if replica is not None:
        records = [r for r in records if r.id == replica]
        if not records:
            raise _fail(UsageError(f"{name} has no replica {replica!r}"))
    if tail < 0:
        raise _fail(UsageError(f"--tail: must be >= 0 (got {tail})"))
    runtime = _runtime(store)
    prefix = len(records) > 1
    lock = threading.Lock()

    def show(record) -> None:
        for line in runtime.logs(record, tail=tail, follow=follow):
            with lock:
                print(f"{record.id} | {line}" if prefix else line, flush=True)

    try:
        if not follow or len(records) == 1:
            for record in records:
                show(record)
            return
        threads = [threading.Thread(target=show, args=(r,), daemon=True) for r in records]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        pass
    except EnovaError as exc:
        raise _fail(exc)


class _RunByDefault(TyperGroup):
    """`enova inject specs/ --profile x` and `enova inject --target ...` mean `enova inject run ...`;
    `report`, `compare` and `merge` are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


inject_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True,
                         help="Send realistic load (LoadProfile specs or quick options), measure, judge against SLOs.")
app.add_typer(inject_app, name="inject")


def _shard(value: str) -> tuple[int, int]:
    index, _, total = value.partition("/")
    try:
        i, n = int(index), int(total)
    except ValueError:
        raise UsageError(f"--shard {value}: expected i/N, such as 0/2") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {value}: i must be in 0..N-1")
    return i, n


@inject_app.command("run")
def inject_run(
    specs: Annotated[Optional[Path], typer.Argument(help="Specs holding the LoadProfile (with --profile).")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", "-p", help="The LoadProfile to run.")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Base URL (default: the specs' gateway).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Served model name (quick run).")] = None,
    rate: Annotated[Optional[float], typer.Option("--rate", help="Requests per second (quick run).")] = None,
    duration: Annotated[str, typer.Option("--duration", help="How long (quick run), e.g. 60s.")] = "60s",
    process: Annotated[str, typer.Option("--process", help="poisson or constant (quick run).")] = "poisson",
    input_len: Annotated[Optional[int], typer.Option("--input-len", help="Synthetic prompt tokens (quick run; "
                                                     "needs --tokenizer).")] = None,
    output_len: Annotated[int, typer.Option("--output-len", help="max_tokens per request (quick run).")] = 128,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Generate exactly --output-len tokens.")] = False,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="The model's folder, for "
                                                     "--input-len.")] = None,
    api: Annotated[str, typer.Option("--api", help="completions, chat or generate (quick run).")] = "completions",
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the schedule and prompts.")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", help="Cap on requests in flight "
                                                       "(closed loop).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes sharing the schedule on this host.")] = 1,
    shard: Annotated[str, typer.Option("--shard", help="i/N: this host's share when N hosts run one "
                                       "profile (join with enova inject merge).")] = "0/1",
    token: Annotated[Optional[str], typer.Option("--token", envvar="ENOVA_TOKEN", help="Bearer token.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Result file (default: "
                                                "runs/<time>-<name>.json).")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Send load on an exact open-loop schedule, measure every request, print the figures and write
    the result file. Ctrl-C stops sending, waits briefly, and writes a partial result. Exit 1 when
    the run misses its SLO, 2 on bad input."""
    import signal
    import threading

    from enova.inject import session
    from enova.inject.results import render_summary, summarize
    stop = threading.Event()

    def _interrupt(*_):
        _err("enova: stopping: no more requests are sent; waiting briefly for those in flight")
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        seconds = _duration(duration, "--duration")
        if workers < 1:
            raise UsageError("--workers must be >= 1")
        if profile is not None:
            if specs is None:
                raise UsageError("--profile needs the specs folder: enova inject specs/ --profile NAME")
            setup = session.from_profile(_load(specs), profile, cache_dir=_state.settings.cache_dir,
                                         target=target, token=token)
        else:
            if specs is not None:
                raise UsageError("give --profile NAME to run a LoadProfile from the specs")
            missing = [o for o, v in (("--target", target), ("--model", model), ("--rate", rate)) if v is None]
            if missing:
                raise UsageError(f"a quick run needs {', '.join(missing)} (or: enova inject specs/ --profile NAME)")
            setup = session.quick(target=target, model=model, rate=rate, duration=seconds, input_len=input_len,
                                  output_len=output_len, ignore_eos=ignore_eos, seed=seed, api=api,
                                  process=process, concurrency=concurrency, token=token, model_path=tokenizer)
        if concurrency is not None:
            setup.concurrency = concurrency
        session.preflight(setup)
        path = out or Path("runs") / f"{time.strftime('%Y-%m-%dT%H-%M-%S')}-{setup.name}.json"
        _progress(f"inject: {len(setup.requests)} requests over {setup.duration:g} s to {setup.target} "
                  f"({setup.model}, {setup.api}, seed {setup.seed}); results -> {path}")
        signal.signal(signal.SIGINT, _interrupt)
        from enova.inject.live import LiveView
        with LiveView(setup.duration, len(setup.requests)) as live:
            run = session.execute(setup, workers=workers, shard=_shard(shard), stop=stop, progress=live)
        session.write_result(run, path)
    except EnovaError as exc:
        raise _fail(exc)
    summary = summarize(run)
    if output is Output.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        sys.stdout.write(render_summary(summary))
    _err(f"enova: results written to {path}" + (" (partial: stopped early)" if run.partial else ""))
    if run.partial:
        raise typer.Exit(130)
    if summary.slo_met is False:
        raise typer.Exit(1)


@inject_app.command("report")
def inject_report(
    result: Annotated[Path, typer.Argument(help="A result file of enova inject.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The HTML file (default: beside the result).")] = None,
) -> None:
    """Write one self-contained HTML report with plots (opens offline)."""
    from enova.inject.report import write_report
    from enova.inject.session import read_result
    try:
        path = write_report(read_result(result), out or result.with_suffix(".html"))
    except EnovaError as exc:
        raise _fail(exc)
    print(path)


@inject_app.command("compare")
def inject_compare(
    a: Annotated[Path, typer.Argument(help="The first (baseline) result file.")],
    b: Annotated[Path, typer.Argument(help="The second result file.")],
) -> None:
    """What changed between two runs: each figure, the difference, better or worse."""
    from enova.inject.compare import compare_runs, render_comparison
    from enova.inject.session import read_result
    try:
        sys.stdout.write(render_comparison(compare_runs(read_result(a), read_result(b))))
    except EnovaError as exc:
        raise _fail(exc)


@inject_app.command("merge")
def inject_merge(
    results: Annotated[list[Path], typer.Argument(help="The shard result files of one profile.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The merged result file.")],
) -> None:
    """Join the result files of `--shard i/N` runs into one run."""
    from enova.inject.merge import merge_runs
    from enova.inject.session import read_result, write_result
    try:
        merged = merge_runs([read_result(p) for p in results], names=[str(p) for p in results])
        write_result(merged, out)
    except EnovaError as exc:
        raise _fail(exc)
    print(f"{out}: {len(merged.requests)} requests from {len(results)} shards")


scale_app = typer.Typer(help="The autoscaler: what it sees, what it decided and why.", no_args_is_help=True)
app.add_typer(scale_app, name="scale")


@scale_app.command("status")
def scale_status(
    name: Annotated[Optional[str], typer.Argument(help="One deployment (default: every autoscaled one).")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Per autoscaled deployment: policy, target, replicas ready and starting, the current signals,
    and the last decision with its reason and numbers (as the running reconciler persisted them)."""
    from enova.status.autoscaler import autoscaler_rows
    try:
        rows = autoscaler_rows(_state.settings.state_dir, name)
    except EnovaError as exc:
        raise _fail(exc)
    if output is Output.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("No autoscaled deployments (add `scaling` to a Deployment and run `enova reconcile`).")
    now = time.time()
    for r in rows:
        print(f"{r['deployment']}: policy {r['policy']}, target {r['target']}, {r['ready']} ready, "
              f"{r['starting']} starting" + (f"; a replica starts in {r['start_seconds']:.0f} s"
                                             if r["start_seconds"] else ""))
        sig = r["signals"]
        if sig:
            kv = "-" if sig.get("kv_cache_usage") is None else f"{100 * sig['kv_cache_usage']:.0f}%"
            print(f"  signals {now - sig['at']:.0f} s ago: {sig['rps']:g} req/s, {sig['in_flight']:g} in flight, "
                  f"{sig['queued']:g} queued, {sig['held']:g} held, KV cache {kv}")
        last = r["last_decision"]
        if last:
            print(f"  last decision {now - last['at']:.0f} s ago: {last['previous']} -> {last['target']}: "
                  f"{last['reason']}")


service_app = typer.Typer(help="Run `enova reconcile` as a systemd service.", no_args_is_help=True)
app.add_typer(service_app, name="service")


@service_app.command("install")
def service_install(
    specs: SpecsArg,
    user: Annotated[bool, typer.Option("--user", help="A user unit (~/.config/systemd/user) instead of a system one.")] = False,
    interval: Annotated[str, typer.Option("--interval", help="The reconciler's --interval.")] = "30s",
    run_as: Annotated[str, typer.Option("--run-as", help="The unprivileged user a system unit runs as "
                                        "(created as a system user when missing; never root).")] = "enova",
) -> None:
    """Write enova-reconcile.service (Type=notify, watchdog, KillMode=process so replicas outlive
    the controller) and enable and start it when systemd runs."""
    import os

    from enova.reconcile.service import install_service
    # a system unit keeps its state under /var/lib/enova and /var/cache/enova unless the user chose
    # directories (the invoking user's own, such as root's, are out of the service user's reach)
    chosen_state = user or _state.state_dir_given or bool(os.environ.get("ENOVA_STATE_DIR"))
    chosen_cache = user or bool(os.environ.get("ENOVA_CACHE_DIR"))
    try:
        result = install_service(specs, user=user, interval=_duration(interval, "--interval"),
                                 state_dir=_state.settings.state_dir if chosen_state else None,
                                 cache_dir=_state.settings.cache_dir if chosen_cache else None, run_as=run_as)
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


from enova.commands import app as _app_cmd, mon as _mon_cmd, pilot as _pilot_cmd, webui as _webui_cmd  # noqa: E402

app.add_typer(_mon_cmd.mon_app, name="mon")
app.add_typer(_app_cmd.app_app, name="app")
app.add_typer(_webui_cmd.webui_app, name="webui")
app.add_typer(_pilot_cmd.pilot_app, name="pilot")


@app.command()
def status(specs: Annotated[Optional[Path], typer.Argument(
               help="Specs to compare with (sync status); without them sync is Unknown.")] = None,
           output: OutputOpt = Output.text) -> None:
    """Per deployment: sync status and health status; per replica: where it runs, port, health,
    uptime, config. Without specs, compares with what a running reconciler enforces."""
    from enova.observe.state import StateStore
    from enova.reconcile.controller import read_status
    from enova.status import build_status, render_text
    controller = read_status(_state.settings.state_dir)
    implicit = specs is None and bool(controller and controller.get("alive"))
    if implicit:
        specs = Path(controller["specs"])  # compare with what the running reconciler enforces
    spec_set, spec_error = None, None
    try:
        if specs is not None:
            try:
                spec_set = _load(specs)
            except EnovaError as exc:
                if not implicit:
                    raise
                spec_error = str(exc)  # the reconciler reports the spec error itself (shown below)
        store = StateStore(_state.settings.state_dir)
        view = build_status(store, _runtime(store, spec_set), spec_set, reconciler=controller, spec_error=spec_error,
                            facts=_facts(spec_set) if spec_set is not None else None)
    except EnovaError as exc:
        raise _fail(exc)
    if output is Output.json:
        print(json.dumps(view.to_dict(), indent=2))
    else:
        sys.stdout.write(render_text(view))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
