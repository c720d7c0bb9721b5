"""`enova enode run`: the seed's single-module command. One deployment described on the command
line, served in the foreground behind the gateway; Ctrl-C (or SIGTERM) drains and stops it.

It is `enova apply` for a spec built from options, in the shared state directory (so `enova
status`, the app server and monitoring see what it runs), with a stop event instead of a return.
It holds the state lock while it runs (no apply or reconciler acts meanwhile) and plans only its
own deployment and the gateway, never pruning others. It refuses (exit 2) to start when the shared
state already has a deployment of that name that another command started, or a live gateway that
serves deployments enode does not own (enode stops its gateway when it stops). What an enode that
was killed left behind (its deployment record names enode as its source) is adopted. Unknown
`--flags` are vLLM engine args (`--max-num-seqs 8` and `--max_num_seqs=8` alike).
Called by the CLI; tests call `run_enode` with their own stop event.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from threading import Event
from typing import Any

import yaml
from pydantic import ValidationError

from enova.errors import EnovaError, UsageError
from enova.observe.state import StateStore
from enova.plan.desired import desired_gateway, desired_state
from enova.plan.diff import compute_plan
from enova.settings import Settings
from enova.spec.loader import Located, SpecSet
from enova.spec.models import Deployment, Gateway, classify_model

from enova.runtime.select import Runtimes, spec_docker_hosts
from enova.runtime.world import observe

from .executor import Applier
from .gateway import stop_gateway
from .facts import gather_facts

Progress = Callable[[str], None]
ENODE_SOURCE = "(enova enode run)"   # the spec "file" of enode's documents: deployment records name it


def parse_engine_args(tokens: list[str]) -> dict[str, Any]:
    """`--max-num-seqs 8 --enforce-eager --dtype=bfloat16` -> {max_num_seqs: 8, enforce_eager: True,
    dtype: "bfloat16"}. Values are read as YAML scalars (8 is an int, 0.9 a float, true a bool,
    '{"a": 1}' a mapping). Raises UsageError for a token that is not a --flag."""
    args: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise UsageError(f"unexpected argument {token!r}: engine args are --flag [value]")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            args[key] = _scalar(value)
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            args[key] = _scalar(tokens[i + 1])
            i += 1
        else:
            args[key] = True
        i += 1
    return args


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, dict, list)) and value is not None else text


def name_for(model: str) -> str:
    """A deployment name (DNS label) from a model reference: org/Mistral-7B-v0.1 -> mistral-7b-v0-1."""
    base = model.removeprefix("builtin:").rstrip("/").split("/")[-1]
    name = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:63].strip("-")
    return name or "model"


def build_specs(*, model: str, name: str | None, replicas: int, cpus: int, gpus: int,
                engine_args: dict[str, Any], host: str, port: int, token_file: str | None) -> SpecSet:
    """The spec set enode runs, validated like files are; errors name the command-line option."""
    try:
        classify_model(model)
    except ValueError as exc:
        raise UsageError(f"--model {model}: {exc}") from None
    name = name or name_for(model)
    deployment = {
        "apiVersion": "enova/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"model": model, "engine": {"name": "vllm", "args": engine_args}, "replicas": replicas,
                 "resources": {"gpus": gpus, "cpus": cpus}, "serving": {"default": True}},
    }
    gateway = {"apiVersion": "enova/v1", "kind": "Gateway", "metadata": {"name": "enode"},
               "spec": {"host": host, "port": port, **({"token_file": token_file} if token_file else {})}}
    problems = []
    docs = []
    for cls, data in ((Deployment, deployment), (Gateway, gateway)):
        try:
            docs.append(cls.model_validate(data))
        except ValidationError as exc:
            problems += [f"{_option(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
    if problems:
        raise UsageError("invalid options:\n  " + "\n  ".join(problems))
    here = Path.cwd() / ENODE_SOURCE
    return SpecSet(root=Path.cwd(), deployments={name: Located(docs[0], here, 0)}, slos={}, load_profiles={},
                   gateway=Located(docs[1], here, 0))


def _option(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    if parts[:3] == ["spec", "engine", "args"] and len(parts) > 3:
        return "--" + parts[3].replace("_", "-")
    if parts[:2] == ["metadata", "name"]:
        return "--name"
    return "--" + parts[-1].replace("_", "-")


def run_enode(specs: SpecSet, settings: Settings, stop: Event, progress: Progress = lambda m: None,
              on_change: Callable[[], None] | None = None) -> None:
    """Start the deployment and the gateway in the shared state directory, serve until `stop` is
    set, then drain and stop both. Blocks. Raises UsageError (exit 2) when the shared state holds
    what enode would take over (see the module docstring), LockHeldError when another enova
    process acts on it, EnovaError if something cannot start (what did start is stopped again).
    `on_change` is called when a replica or the gateway started or stopped (monitoring targets)."""
    store = StateStore(settings.state_dir)
    name = next(iter(specs.deployments))
    from enova.observe.lock import StateLock
    with StateLock(store.root, "enova enode run"):
        _check_shared_state(store, name)
        runtime = Runtimes(store, progress=progress, docker_hosts=lambda: spec_docker_hosts(specs))
        applier = Applier(store=store, settings=settings, runtime=runtime, progress=progress, stop=stop,
                          on_change=on_change)
        gateway_started = False
        try:
            world = observe(store, runtime, now=time.time())
            facts = gather_facts(specs, cache_dir=settings.cache_dir)
            observed = {name: world.deployments[name]} if name in world.deployments else {}
            plan = compute_plan(desired_state(specs, facts=facts), observed, prune=False,
                                gateway=desired_gateway(specs), observed_gateway=world.gateway)
            applier.preflight(plan)
            gateway_started = True  # from here on, the gateway in the store is enode's
            result = applier.apply(plan)
            if result.failed:
                raise EnovaError("; ".join(o.message for o in result.failed))
            gateway = store.read_gateway()
            if gateway is not None:
                progress(f"serving {name} on http://{gateway.config['host']}:{gateway.config['port']} "
                         "(/generate and /v1/*); Ctrl-C drains and stops")
            stop.wait()
        finally:
            progress("stopping: draining requests")
            if store.has_deployment(name):
                applier.delete(name)  # drained through the gateway, which still runs
            gateway = store.read_gateway()
            if gateway_started and gateway is not None:
                stop_gateway(store, gateway)  # it finishes in-flight requests before exiting
                applier.changed()
            progress("stopped")


def _check_shared_state(store: StateStore, name: str) -> None:
    """Refuse to take over what another command started: a deployment of this name (unless an
    enode that was killed left it), or a live gateway serving deployments that are not enode's."""
    from enova.observe.processes import check_process
    others = []
    for other in store.deployment_names():
        record = store.read_deployment(other)
        by_enode = record is not None and record.source.rsplit(":", 1)[0].endswith(ENODE_SOURCE)
        if other == name and not by_enode:
            source = f"the specs at {record.source}" if record is not None and record.source else "another command"
            raise UsageError(f"deployment {name} already runs in {store.root}, started by {source}; stop it "
                             f"(`enova delete {name}`) or choose another --name")
        if other != name and not by_enode:
            others.append(other)
    gateway = store.read_gateway()
    if gateway is not None and others and check_process(gateway.pid, gateway.create_time).alive:
        raise UsageError(f"the gateway in {store.root} (pid {gateway.pid} on {gateway.config.get('host')}:"
                         f"{gateway.config.get('port')}) serves {', '.join(others)}, which enode does not own, and "
                         "enode stops its gateway when it stops; delete those, or give enode another --state-dir")
