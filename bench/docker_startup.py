"""Benchmark: container create-to-first-completion under `runtime: docker`, against the same
engine started as a local process, and what enova adds in each.

Four measurements per run, alternated so machine noise hits all alike (same model, same argv
template, one core each):
- process alone: the argv enova renders for a local replica, spawned directly;
- enova, local: `enova apply` of a local spec in a fresh state directory;
- container alone: the container enova would create (the same ContainerSpec: image, argv,
  mounts, cpuset, published port) created and started directly with the Docker SDK;
- enova, docker: `enova apply` of the same spec with `runtime: docker`.
Each is timed to the first successful completion. enova's own share is read from its records
(apply start to spawn or container create, and healthy to recorded ready), as in
bench/apply_startup.py, whose helpers it reuses.

It needs a Docker engine and an image that runs this checkout's vLLM CPU build with no registry:
it starts the private test engine and builds the test image the docker tests use
(tests/docker/engine.py, tests/docker/image.py), because no image can be pulled here.

    .venv/bin/python bench/docker_startup.py [--runs 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from apply_startup import SPEC, engine_alone, enova_apply, first_completion  # noqa: E402

from enova.engines.container import container_launch, container_spec  # noqa: E402
from enova.modelstore import resolve_model  # noqa: E402
from enova.plan.desired import config_hash, replica_config  # noqa: E402
from enova.runtime.docker import create_kwargs  # noqa: E402
from enova.settings import Settings  # noqa: E402
from enova.spec.loader import load_specs  # noqa: E402
from tests.docker.engine import Dockerd  # noqa: E402
from tests.docker.image import ensure_image, venv_volume  # noqa: E402


def docker_spec(image: str, host: str) -> str:
    return SPEC.replace("  replicas: 1\n", f"  replicas: 1\n  runtime: docker\n  image: {image}\n"
                        f"  docker: {{host: {host}, shm_size: 1g, volumes: [\"{venv_volume()}\"]}}\n")


def container_alone(spec_dir: Path, client, port: int) -> float:
    specs = load_specs(spec_dir)
    config = replica_config(specs.deployments["smollm2"].doc.spec)
    model = resolve_model("builtin:smollm2-135m-instruct", base_dir=spec_dir, cache_dir=Settings.from_env().cache_dir)
    launch = container_launch(deployment="smollm2", replica_id="bench", config=config, config_hash=config_hash(config),
                              model_kind=model.kind, model_path=model.path, cpus=[0], gpus=[])
    spec = container_spec(deployment="smollm2", replica_id="bench-alone", config=config,
                          config_hash=config_hash(config), launch=launch, model_kind=model.kind,
                          model_path=model.path, host_port=port, cpus=[0], gpus=[], start_timeout=300)
    began = time.monotonic()
    container = client.containers.create(**create_kwargs(spec))
    container.start()
    try:
        first_completion(port, began + 300)
        return time.monotonic() - began
    finally:
        container.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    engine = Dockerd()
    host = engine.start()
    try:
        client = engine.client()
        with tempfile.TemporaryDirectory() as tmp:
            image = ensure_image(client, Path(tmp)).tag
            local_dir, docker_dir = Path(tmp) / "local", Path(tmp) / "docker"
            local_dir.mkdir()
            docker_dir.mkdir()
            (local_dir / "smollm2.yaml").write_text(SPEC)
            (docker_dir / "smollm2.yaml").write_text(docker_spec(image, host))
            env = {**__import__("os").environ, "ENOVA_PORT_RANGE": "19500-19599", "DOCKER_HOST": host}
            rows: dict[str, list] = {"process": [], "local": [], "container": [], "docker": []}
            for i in range(args.runs):
                rows["process"].append(engine_alone(local_dir, 19600 + i))
                rows["local"].append(enova_apply(local_dir, {**env, "ENOVA_STATE_DIR": f"{tmp}/local-{i}"}))
                rows["container"].append(container_alone(docker_dir, client, 19610 + i))
                rows["docker"].append(enova_apply(docker_dir, {**env, "ENOVA_STATE_DIR": f"{tmp}/docker-{i}"}))
                print(f"run {i + 1}: process alone {rows['process'][-1]:.2f} s, enova local "
                      f"{rows['local'][-1]['total']:.2f} s, container alone {rows['container'][-1]:.2f} s, "
                      f"enova docker {rows['docker'][-1]['total']:.2f} s", flush=True)
    finally:
        engine.stop()
    med = statistics.median
    for alone, mine, label in (("process", "local", "local runtime"), ("container", "docker", "docker runtime")):
        base, total = med(rows[alone]), med(r["total"] for r in rows[mine])
        before, lag = med(r["before_spawn"] for r in rows[mine]), med(r["detect_lag"] for r in rows[mine])
        print(f"{label}: engine alone {base:.2f} s, enova apply {total:.2f} s ({total / base:.3f}x); enova's own "
              f"share: before spawn {before:.3f} s + readiness detection {lag:.3f} s = {before + lag:.3f} s "
              f"(target under 1 s: {'met' if before + lag < 1 else 'NOT met'})")
    c, p = med(rows["container"]), med(rows["process"])
    print(f"container alone vs process alone (the container's own cost): {c:.2f} s vs {p:.2f} s ({c / p:.3f}x)")


if __name__ == "__main__":
    main()
