"""The specs folder `enova pilot run` serves: written once from the options, then reused.

`prepare_specs` writes, into a folder the user can commit (default `./enova-pilot/`), one
document per file: a Deployment of the model (engine.args `auto`, so the recommender chooses the
engine settings at plan time for the GPUs found, or for vLLM's CPU build on a host without one;
flags given on the command line are kept as engine args), an SLO, a LoadProfile, a Gateway and a
Monitoring document. An existing folder is reused as it is: options that would change what it
says are refused (exit 2) unless `--force`, which rewrites the files pilot wrote (those carrying
its header line) and leaves the user's own files alone. Either way the folder is loaded with the
real loader, so a folder pilot cannot serve is an error naming file and line.

Called by enova.pilot.run; tests call `prepare_specs` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
import tempfile
from typing import Any

import yaml

from enova.apply.enode import name_for
from enova.errors import EnovaError, SpecError, UsageError
from enova.spec.loader import SpecSet, load_specs
from enova.spec.models import AUTO_ARG, classify_model

HEADER = "# Written by `enova pilot run`"
DEFAULT_GATEWAY_PORT = 9199
DEFAULT_PROMETHEUS_PORT = 9090
SLO_NAME = "chat"
PROFILE_NAME = "chat-poisson"
FILES = ("deployment.yaml", "slo.yaml", "loadprofile.yaml", "gateway.yaml", "monitoring.yaml")


@dataclass(frozen=True)
class PilotOptions:
    """What the command line says about the specs. None: not given (the folder's value, or the
    default when the folder is written)."""

    model: str
    engine_args: Mapping[str, Any]
    model_given: bool = True    # False: the default model, which a reused folder need not serve
    port: int | None = None
    prometheus_port: int | None = None
    force: bool = False


@dataclass(frozen=True)
class GpuChoice:
    """How many GPUs a replica gets and why (the recommender's tensor_parallel_size, or the CPU)."""

    gpus: int
    reason: str


@dataclass(frozen=True)
class PreparedSpecs:
    folder: Path
    specs: SpecSet
    written: bool      # False: an existing folder was reused as it was
    message: str       # one line for the user: written how, or reused


def choose_gpus(model: str, *, cache_dir: Path, base_dir: Path, fixed: Mapping[str, Any],
                inventory: Callable[[], Any] | None = None) -> GpuChoice:
    """GPUs per replica for `model` on this host: none without a GPU (vLLM's CPU build); else the
    tensor_parallel_size the recommender chooses for the GPUs NVML finds (1 when the model's
    config cannot be read now: engine.args auto still sizes the rest at plan time). Blocking:
    NVML, and a hub model's config.json when not cached."""
    from enova.advise import Request, advise
    from enova.observe.gpus import gpu_inventory
    observe = inventory or gpu_inventory
    found = observe()
    if not found.gpus:
        return GpuChoice(0, f"no GPU ({found.reason or 'none found'}): vLLM's CPU build")
    tp = fixed.get("tensor_parallel_size")
    if isinstance(tp, int) and not isinstance(tp, bool) and tp >= 1:
        return GpuChoice(tp, f"--tensor-parallel-size {tp} (given)")
    try:
        rec = advise(Request(model=model, fixed=dict(fixed)), base_dir=base_dir, cache_dir=cache_dir,
                     inventory=lambda: found)
    except EnovaError as exc:
        first = str(exc).splitlines()[0]
        return GpuChoice(1, f"{len(found.gpus)} GPU(s) found; 1 per replica, as the recommender could not "
                            f"size the model now ({first})")
    count = int(rec.args.get("tensor_parallel_size", 1))
    return GpuChoice(count, f"{count} of {len(found.gpus)} GPU(s) per replica: the recommender's "
                            f"tensor_parallel_size for {rec.target}")


def spec_documents(opts: PilotOptions, gpus: GpuChoice) -> dict[str, dict[str, Any]]:
    """The documents pilot writes, by file name. Pure."""
    name = name_for(opts.model)
    hub = classify_model(opts.model) == "hub"
    args = {AUTO_ARG: True, **{k: v for k, v in opts.engine_args.items() if k != AUTO_ARG}}
    deployment = {
        "apiVersion": "enova/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "model": opts.model,
            "engine": {"name": "vllm", "args": args,
                       # a hub model's weights are downloaded by the engine while it starts
                       "startup_timeout": "30m" if hub else "5m"},
            "runtime": "local", "replicas": 1,
            "resources": {"gpus": gpus.gpus, "cpus": 1},
            "slo": SLO_NAME, "serving": {"default": True},
        },
    }
    slo = {"apiVersion": "enova/v1", "kind": "SLO", "metadata": {"name": SLO_NAME},
           "spec": {"ttft_p95_ms": 500, "itl_p95_ms": 50, "e2e_p99_ms": 10000, "max_error_rate": 0.01}}
    profile = {"apiVersion": "enova/v1", "kind": "LoadProfile", "metadata": {"name": PROFILE_NAME},
               "spec": {"target": name, "arrival": {"process": "poisson", "rate": 2}, "duration": "60s",
                        "slo": SLO_NAME}}
    gateway = {"apiVersion": "enova/v1", "kind": "Gateway", "metadata": {"name": "pilot"},
               "spec": {"host": "127.0.0.1", "port": opts.port or DEFAULT_GATEWAY_PORT}}
    monitoring = {"apiVersion": "enova/v1", "kind": "Monitoring", "metadata": {"name": "pilot"},
                  "spec": {"mode": "local", "prometheus": {
                      "host": "127.0.0.1", "port": opts.prometheus_port or DEFAULT_PROMETHEUS_PORT}}}
    return dict(zip(FILES, (deployment, slo, profile, gateway, monitoring)))


_NOTES = {
    "deployment.yaml": "engine.args auto: enova's recommender chooses what is not set here for this host's "
                       "GPUs (or its CPU) when it plans; `enova diff {folder}` shows what it chose and why.",
    "slo.yaml": "The latency and error objectives the deployment is held to (alerts, `enova inject`).",
    "loadprofile.yaml": "`enova inject {folder} -p chat-poisson` sends this load and judges it by the SLO.",
    "gateway.yaml": "The LLM service: /generate and the OpenAI API on this address.",
    "monitoring.yaml": "Prometheus, run by the reconciler, scraping the gateway and every replica.",
}


def render_file(file: str, doc: dict[str, Any], folder: Path, why: str, now: datetime) -> str:
    head = [f"{HEADER} on {now.strftime('%Y-%m-%d %H:%M UTC')}; edit freely: a running pilot applies",
            "# saved changes, and `enova pilot run` reuses this folder (`--force` rewrites pilot's files).",
            f"# {_NOTES[file].format(folder=folder)}"]
    if file == "deployment.yaml":
        head.append(f"# resources.gpus: {why}")
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


def prepare_specs(folder: Path, opts: PilotOptions, *, cache_dir: Path,
                  gpu_choice: Callable[[], GpuChoice] | None = None,
                  now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> PreparedSpecs:
    """Write the specs into `folder` (or reuse what is there) and load them. Raises UsageError
    (exit 2) for a bad --model, an option the reused folder contradicts, a folder that cannot be
    written; SpecError (exit 2) for a folder the loader refuses."""
    try:
        classify_model(opts.model)
    except ValueError as exc:
        raise UsageError(f"--model {opts.model}: {exc}") from None
    folder = folder.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--specs {folder}: exists and is not a folder")
    existing = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(folder).parts)) \
        if folder.is_dir() else []
    if existing and not opts.force:
        specs = _load(folder, cache_dir)
        _check_reuse(folder, specs, opts)
        return PreparedSpecs(folder, specs, False, f"reusing the specs in {folder} as they are "
                                                   "(--force rewrites them from the options)")
    choice = gpu_choice() if gpu_choice else choose_gpus(opts.model, cache_dir=cache_dir, base_dir=Path.cwd(),
                                                         fixed=opts.engine_args)
    docs = spec_documents(opts, choice)
    stamp = now()
    texts = {file: render_file(file, doc, folder, choice.reason, stamp) for file, doc in docs.items()}
    _check_options(texts, folder, cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path in existing:  # --force: pilot's own files go; the user's stay
            if path.read_text(errors="replace").startswith(HEADER):
                path.unlink()
        for file, text in texts.items():
            tmp = folder / f".{file}.tmp"
            tmp.write_text(text)
            tmp.replace(folder / file)
    except OSError as exc:
        raise UsageError(f"--specs {folder}: cannot write the specs: {exc}") from None
    specs = _load(folder, cache_dir)
    return PreparedSpecs(folder, specs, True, f"wrote the specs for {opts.model} to {folder} "
                                              f"({', '.join(FILES)}); resources.gpus: {choice.reason}")


def _check_options(texts: Mapping[str, str], folder: Path, cache_dir: Path) -> None:
    """Load the documents from a scratch folder before anything is written, so a bad engine arg
    is an error naming the option and leaves no folder behind. Raises UsageError."""
    with tempfile.TemporaryDirectory(prefix="enova-pilot-") as scratch:
        for file, text in texts.items():
            (Path(scratch) / file).write_text(text)
        try:
            _load(Path(scratch), cache_dir, present_as=folder)
        except SpecError as exc:
            raise UsageError("invalid options:\n  " + "\n  ".join(
                f"{_option(issue.field)}: {issue.message}" for issue in exc.issues)) from None


def _option(field: str) -> str:
    prefix = "spec.engine.args."
    if field.startswith(prefix):
        return "--" + field[len(prefix):].replace("_", "-")
    return {"spec.model": "--model", "spec.port": "--port"}.get(field, field)


def _load(folder: Path, cache_dir: Path, present_as: Path | None = None) -> SpecSet:
    """The folder as `enova validate` reads it: the schema, then engine args by vLLM's parser."""
    from enova.engines.argspec import validate_engine_args
    specs = load_specs(folder, present_as=present_as)
    validate_engine_args(specs, cache_dir)
    if not specs.deployments:
        raise UsageError(f"--specs {folder}: holds no Deployment; pass --force to write pilot's specs into it")
    return specs


def _check_reuse(folder: Path, specs: SpecSet, opts: PilotOptions) -> None:
    """Options given on the command line must agree with the folder being reused."""
    problems = []
    models = sorted({d.doc.spec.model for d in specs.deployments.values()})
    if opts.model_given and opts.model not in models:
        problems.append(f"--model {opts.model}: the folder serves {', '.join(models)}")
    elif opts.engine_args:
        dep = next((d.doc.spec for d in specs.deployments.values() if d.doc.spec.model == opts.model),
                   next(iter(specs.deployments.values())).doc.spec)
        for key, value in sorted(opts.engine_args.items()):
            if dep.engine.args.get(key) != value:
                problems.append(f"--{key.replace('_', '-')} {value}: the folder's engine.args.{key} is "
                                f"{dep.engine.args.get(key, 'not set')}")
    gateway_port = specs.gateway.doc.spec.port if specs.gateway else DEFAULT_GATEWAY_PORT
    if opts.port is not None and opts.port != gateway_port:
        problems.append(f"--port {opts.port}: the folder's gateway port is {gateway_port}")
    if opts.prometheus_port is not None:
        have = specs.monitoring.doc.spec.prometheus.port if specs.monitoring else None
        if have != opts.prometheus_port:
            problems.append(f"--prometheus-port {opts.prometheus_port}: the folder's Prometheus port is "
                            f"{have if have is not None else 'not set (no Monitoring document)'}")
    if problems:
        raise UsageError(f"--specs {folder} exists and is reused as it is, but the options differ:\n  "
                         + "\n  ".join(problems)
                         + "\nedit the folder, drop those options, or pass --force to rewrite pilot's files")
