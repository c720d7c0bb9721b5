"""A `runtime: docker` deployment through the same plan and apply path as a local one, on
in-memory runtimes: the launch is rendered for a container (no pinning trampoline, bound to
0.0.0.0:8000 inside, the model at its mount point), the runtime's own preflight decides (the
local engine build is not required), each replica goes to the runtime its spec names, and
adoption of an unrecorded replica is planned as no action."""

from __future__ import annotations

import pytest

from enova.apply.executor import Applier
from enova.errors import PermanentError
from enova.plan.model import Action
from enova.runtime.memory import MemoryRuntime
from enova.runtime.select import Runtimes
from enova.plan.desired import desired_state
from enova.plan.diff import compute_plan
from enova.runtime.world import observe
from enova.spec.loader import load_specs

from .memworld import MemWorld, deployment_doc


class DockerLike(MemoryRuntime):
    name = "docker"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = []

    def start(self, request):
        self.requests.append(request)
        return super().start(request)


def docker_doc(name: str, **kw) -> dict:
    doc = deployment_doc(name, **kw)
    doc["spec"].update({"runtime": "docker", "image": "enova/vllm-cpu:test",
                        "docker": {"shm_size": "1g", "volumes": ["/opt/venv:/opt/venv:ro"]}})
    return doc


@pytest.fixture
def w(tmp_path) -> MemWorld:
    return MemWorld(tmp_path)


def applier(w: MemWorld, runtimes: Runtimes, **overrides) -> Applier:
    return Applier(store=w.store, settings=w.settings, runtime=runtimes, clock=w.clock,
                   **{**w.applier_options(), **overrides})


def runtimes(w: MemWorld) -> tuple[Runtimes, MemoryRuntime, DockerLike]:
    local, docker = MemoryRuntime(w.store, clock=w.clock), DockerLike(w.store, clock=w.clock)
    return Runtimes(w.store, runtimes={"local": local, "docker": docker}), local, docker


def test_a_docker_replica_is_launched_for_a_container_by_the_docker_runtime(w):
    w.write(docker_doc("smol"), deployment_doc("plain"))
    both, local, docker = runtimes(w)
    plan = w.plan()
    a = applier(w, both)
    a.preflight(plan)
    result = a.apply(plan)
    assert not result.failed
    [request] = docker.requests
    argv = list(request.launch.argv)
    assert argv[:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]  # no pinning trampoline
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "8000"
    assert argv[argv.index("--model") + 1] == "/models/fake"
    assert "CUDA_VISIBLE_DEVICES" not in request.launch.env
    assert request.model_kind == "builtin" and request.serving and request.settings
    assert request.endpoint.host == "127.0.0.1" and request.endpoint.port != 8000
    assert [r.runtime for r in w.store.replicas("smol")] == ["docker"]
    assert [r.runtime for r in w.store.replicas("plain")] == ["memory"] and local.running("plain")


def test_the_docker_runtimes_preflight_decides_and_nothing_starts_when_it_refuses(w):
    w.write(docker_doc("smol"))
    both, _, docker = runtimes(w)
    docker.problems["docker"] = ["the image enova/vllm-cpu:test is not on the Docker engine; `docker pull ...`"]
    plan = w.plan()
    with pytest.raises(PermanentError) as caught:
        applier(w, both).preflight(plan)
    assert "docker pull" in str(caught.value)
    assert docker.requests == [] and w.store.replicas("smol") == []


def test_a_container_does_not_need_the_local_engine_build(w):
    w.write(docker_doc("smol"))
    both, _, docker = runtimes(w)
    plan = w.plan()
    a = applier(w, both, engine_check=lambda device: "vLLM is not installed here")
    a.preflight(plan)
    assert not a.apply(plan).failed and len(docker.requests) == 1


def test_an_unrecorded_replica_the_runtime_owns_is_adopted_with_no_action(w):
    w.write(docker_doc("smol"))
    both, _, docker = runtimes(w)
    plan = w.plan()
    a = applier(w, both)
    a.preflight(plan)
    a.apply(plan)
    [record] = w.store.replicas("smol")
    serving, settings = dict(w.store.read_deployment("smol").serving), dict(w.store.read_deployment("smol").settings)
    # a fresh state directory: the records are gone, the container still runs and is labelled
    w.store.remove_replica("smol", record.id)
    w.store.remove_deployment("smol")
    record.state = "starting"  # Docker's own health check had not yet run when the label was read
    docker.plant(record, serving=serving, settings=settings)
    world = observe(w.store, both, now=w.clock(), probe_health=True)
    assert [r.id for r in world.deployments["smol"].replicas] == [record.id]
    assert w.store.read_deployment("smol").serving == serving
    assert [r.state for r in w.store.replicas("smol")] == ["ready"]  # it answered /health when adopted
    again = compute_plan(desired_state(load_specs(w.specs_dir)), world.deployments)
    [change] = again.deployment_changes
    assert change.action is Action.NOOP, change
