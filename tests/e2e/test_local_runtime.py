"""End to end, through the CLI as a subprocess, with vLLM's CPU build and SmolLM2-135M.

One scenario walks the whole loop a platform engineer uses: apply, serve, diff, change an
engine arg (replace), scale, lose a replica, see it in status and diff, heal, delete.
"""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from .conftest import complete, process_tree, write_spec

pytestmark = pytest.mark.slow


def test_apply_replace_scale_heal_delete_with_the_real_engine(cli, tmp_path):
    specs = write_spec(tmp_path / "specs")

    # apply -> a completion answers -> diff exits 0
    began = time.monotonic()
    run = cli("apply", str(specs), check=0)
    assert "Plan: 2 to create, 0 to replace, 0 to scale, 0 to update in place, 0 to delete." in run.out  # the gateway too
    [first] = cli.replicas("smollm2", specs)
    assert first["health"] == "healthy"
    complete(first["port"])
    print(f"apply -> first completion: {time.monotonic() - began:.1f} s")
    assert cli("diff", str(specs)).code == 0

    # a second apply from a fresh process adopts the replica and changes nothing
    run = cli("apply", str(specs), check=0)
    assert "No changes" in run.out
    assert [r["pid"] for r in cli.replicas("smollm2", specs)] == [first["pid"]]

    # an invalid spec set never touches what runs
    (specs / "broken.yaml").write_text("apiVersion: enova/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: -1}\n")
    run = cli("apply", str(specs))
    assert run.code == 2 and "broken.yaml:4" in run.err
    assert psutil.pid_exists(first["pid"])
    (specs / "broken.yaml").unlink()

    # change max_num_seqs -> diff shows one replace and exits 1
    write_spec(specs, max_num_seqs=8)
    run = cli("diff", str(specs))
    assert run.code == 1, run.out + run.err
    assert "Plan: 0 to create, 1 to replace, 0 to scale, 0 to update in place, 0 to delete." in run.out
    assert "~ engine.args.max_num_seqs: 16 -> 8" in run.out
    plan = json.loads(cli("diff", str(specs), "--output", "json").out)
    assert plan["summary"]["replace"] == 1
    old_tree = process_tree(first["pid"])

    # apply -> the new replica answers and the old process tree is gone
    cli("apply", str(specs), check=0)
    [second] = cli.replicas("smollm2", specs)
    assert second["pid"] != first["pid"] and second["health"] == "healthy"
    complete(second["port"])
    assert not [p for p in old_tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert cli("diff", str(specs)).code == 0

    # scale to 2 -> both answer, on different cores
    write_spec(specs, max_num_seqs=8, replicas=2)
    run = cli("diff", str(specs))
    assert run.code == 1 and "Plan: 0 to create, 0 to replace, 1 to scale, 0 to update in place, 0 to delete." in run.out
    cli("apply", str(specs), check=0)
    pair = cli.replicas("smollm2", specs)
    assert len(pair) == 2 and all(r["health"] == "healthy" for r in pair)
    assert second["pid"] in [r["pid"] for r in pair], "scaling up must keep the running replica"
    assert sorted(c for r in pair for c in r["cpus"]) == [0, 1]
    for r in pair:
        complete(r["port"])

    # kill one replica by hand -> status reports it, diff plans its restart
    victim = pair[1]
    os.killpg(victim["pid"], signal.SIGKILL)
    psutil.wait_procs(process_tree(victim["pid"]), timeout=10)
    status = cli.status(specs)["deployments"][0]
    assert status["health"]["status"] == "Degraded"
    assert status["sync"]["status"] == "OutOfSync"
    assert any(r["health"] == "exited" and r["id"] == victim["id"] for r in status["replica_details"])
    run = cli("diff", str(specs))
    assert run.code == 1 and "1 to scale" in run.out and victim["id"] in run.out and "exited" in run.out

    # apply heals it
    cli("apply", str(specs), check=0)
    healed = cli.replicas("smollm2", specs)
    assert len(healed) == 2 and all(r["health"] == "healthy" for r in healed)
    assert victim["id"] not in [r["id"] for r in healed]

    # delete -> no process left
    trees = [p for r in healed for p in process_tree(r["pid"])]
    run = cli("delete", "smollm2", check=0)
    gone, alive = psutil.wait_procs(trees, timeout=15)
    assert not alive, f"processes left after delete: {alive}"
    status = cli.status()
    assert status["deployments"] == [] and status["gateway"] is None, "the last delete stops the gateway too"


def test_a_misspelt_engine_arg_is_refused_before_any_engine_starts(cli, tmp_path):
    specs = write_spec(tmp_path / "specs", extra_args=", not_a_vllm_flag: 1")
    run = cli("apply", str(specs))
    assert run.code == 2, run.err
    assert "smollm2.yaml:7 spec.engine.args.not_a_vllm_flag: unknown vLLM engine argument" in run.err
    assert "starting replica" not in run.err and not (cli.state / "deployments").exists()


def test_a_replica_that_never_becomes_healthy_is_stopped_and_its_log_shown(cli, tmp_path):
    # a valid argument vLLM refuses only at start (fewer batched tokens than max_model_len)
    specs = write_spec(tmp_path / "specs", extra_args=", max_num_batched_tokens: 1")
    run = cli("apply", str(specs))
    assert run.code == 1, run.err
    assert "exited before becoming healthy" in run.err
    assert "max_num_batched_tokens" in run.err  # vLLM's own complaint, from the replica's log
    assert cli.replicas("smollm2", specs) == []


def test_an_unresolvable_model_fails_before_anything_starts(cli, tmp_path):
    specs = write_spec(tmp_path / "specs", model="./no-such-model")
    run = cli("apply", str(specs))
    assert run.code == 1
    assert "no-such-model" in run.err and "cannot apply" in run.err
    assert "starting replica" not in run.err
    assert cli.replicas("smollm2", specs) == []
