"""Impossible resources are found before any allocation (launch_problems, called by the applier's
preflight) and, as a backstop, refused by render_launch with a PermanentError, not a ValueError."""

from __future__ import annotations

import pytest

from enova.engines.vllm import launch_problems, render_launch
from enova.errors import PermanentError


def config(args: dict, *, gpus: int = 0, cpus: int = 1) -> dict:
    return {"model": "org/m", "runtime": "local", "engine": {"name": "vllm", "args": args, "env": {}},
            "resources": {"gpus": gpus, "cpus": cpus}}


@pytest.mark.parametrize("args, gpus, cpus", [
    ({}, 0, 1),
    ({"tensor_parallel_size": 2}, 0, 2),
    ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, 0, 5),
    ({}, 4, 1),  # tensor_parallel_size follows resources.gpus
    ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, 4, 1),
])
def test_parallelism_that_fits_the_resources_has_no_problem(args, gpus, cpus):
    assert launch_problems(config(args, gpus=gpus, cpus=cpus)) == []


@pytest.mark.parametrize("args, gpus, cpus, expected", [
    ({"tensor_parallel_size": 4}, 0, 2,
     "engine.args: tensor_parallel_size 4 is 4 rank(s), each bound to its own CPU core, but resources.cpus is 2;"
     " raise resources.cpus to at least 4"),
    ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, 0, 3,
     "engine.args: tensor_parallel_size 2 x pipeline_parallel_size 2 is 4 rank(s), each bound to its own CPU core,"
     " but resources.cpus is 3; raise resources.cpus to at least 4"),
    ({"tensor_parallel_size": 2}, 4, 1,
     "engine.args: tensor_parallel_size 2 uses 2 GPU(s) per replica, but resources.gpus is 4; make them equal"),
    ({"pipeline_parallel_size": 2}, 2, 1,
     "engine.args: tensor_parallel_size 2 (from resources.gpus) x pipeline_parallel_size 2 uses 4 GPU(s) per"
     " replica, but resources.gpus is 2; make them equal"),
    ({"tensor_parallel_size": 0}, 0, 1, "engine.args.tensor_parallel_size: must be a whole number >= 1 (got 0)"),
    ({"pipeline_parallel_size": "2"}, 0, 2,
     "engine.args.pipeline_parallel_size: must be a whole number >= 1 (got '2')"),
])
def test_impossible_parallelism_is_reported_in_words_naming_the_field(args, gpus, cpus, expected):
    assert launch_problems(config(args, gpus=gpus, cpus=cpus)) == [expected]


def launch(cfg: dict, cpus: list[int], gpus: list[str]):
    return render_launch(deployment="d", replica_id="d-1", config=cfg, config_hash="h", model_path="/m",
                         offline=False, host="127.0.0.1", port=19200, cpus=cpus, gpus=gpus)


def test_render_launch_refuses_more_tensor_parallel_ranks_than_cores_with_a_permanent_error():
    with pytest.raises(PermanentError, match=r"^d: engine.args: tensor_parallel_size 4 is 4 rank\(s\)"):
        launch(config({"tensor_parallel_size": 4}, cpus=2), cpus=[0, 1], gpus=[])


def test_render_launch_refuses_parallelism_that_does_not_use_every_gpu_with_a_permanent_error():
    with pytest.raises(PermanentError, match="resources.gpus is 4"):
        launch(config({"tensor_parallel_size": 2}, gpus=4), cpus=[], gpus=["GPU-a", "GPU-b", "GPU-c", "GPU-d"])


def test_cpu_pipeline_ranks_each_get_their_own_cores():
    env = launch(config({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, cpus=4), [0, 1, 2, 3], []).env
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1|2|3"
