"""`engine.args: auto` in the plan: resolved from the observed inventory into the replica config
(so a different inventory is a visible replace), the spec's own args kept, a deployment that
cannot be resolved blocked with what runs kept, and the choice stable while replicas run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from enova.plan.auto import GpuFact, HostFacts, PlanFacts, model_key
from enova.plan.desired import desired_state
from enova.plan.diff import compute_plan
from enova.plan.model import Action, ObservedDeployment, ObservedReplica, ReplicaState
from enova.plan.render import render_json, render_text
from enova.recommend.geometry import parse_config
from enova.spec.loader import load_specs

CONFIGS = Path(__file__).resolve().parents[1] / "recommend" / "configs"
GiB = 1024 ** 3
SMOL = "builtin:smollm2-135m-instruct"
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.1"


def geometry(name: str, source: str):
    return parse_config(json.loads((CONFIGS / f"{name}.json").read_text()), source=source)


CPU_HOST = HostFacts(memory_total=24 * GiB, memory_available=20 * GiB, cores=2, gpu_reason="no GPU (test)",
                     source="/proc/meminfo")
A10G_HOST = HostFacts(gpus=(GpuFact(0, "NVIDIA A10G", 23028 * 1024 ** 2),), memory_total=64 * GiB,
                      memory_available=60 * GiB, cores=8, source="NVML")
FACTS = {SMOL: geometry("smollm2-135m-instruct", SMOL), MISTRAL: geometry("mistral-7b-instruct-v0.1", MISTRAL)}


def write(folder: Path, *, model: str = SMOL, args: object = "auto", gpus: int = 0, env: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"apiVersion": "enova/v1", "kind": "Deployment", "metadata": {"name": "chat"},
           "spec": {"model": model, "engine": {"args": args, "env": env or {}}, "replicas": 1,
                    "resources": {"gpus": gpus, "cpus": 1}}}
    (folder / "chat.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def desired(folder: Path, host: HostFacts, models: dict | None = None):
    return desired_state(load_specs(folder), facts=PlanFacts(host=host, models=FACTS if models is None else models))["chat"]


def running(want, state: ReplicaState = ReplicaState.READY) -> ObservedDeployment:
    replica = ObservedReplica(id="r1", config_hash=want.config_hash, config=want.config, state=state,
                              started_at=1.0, where="pid 1", port=19300, healthy=True, recorded="ready")
    return ObservedDeployment(name="chat", replicas=(replica,), serving=want.serving, settings=want.settings)


def test_auto_on_a_cpu_host_fills_the_engine_args_and_never_passes_auto(tmp_path: Path) -> None:
    want = desired(write(tmp_path), CPU_HOST)
    args = want.config["engine"]["args"]
    assert "auto" not in args
    assert {"max_model_len", "max_num_seqs", "kv_cache_memory_bytes"} <= set(args)
    assert set(want.auto_chosen) == set(args)
    assert want.auto.device == "cpu" and not want.blocked


def test_the_same_spec_gives_gpu_settings_on_a_gpu_host(tmp_path: Path) -> None:
    want = desired(write(tmp_path, model=MISTRAL, gpus=1), A10G_HOST)
    args = want.config["engine"]["args"]
    assert want.auto.device == "gpu"
    assert args["tensor_parallel_size"] == 1 and 0 < args["gpu_memory_utilization"] < 1
    assert "kv_cache_memory_bytes" not in args


def test_values_the_spec_sets_are_kept_and_not_chosen(tmp_path: Path) -> None:
    want = desired(write(tmp_path, args={"auto": True, "max_model_len": 1024, "max_num_seqs": 4}), CPU_HOST)
    args = want.config["engine"]["args"]
    assert args["max_model_len"] == 1024 and args["max_num_seqs"] == 4
    assert "max_model_len" not in want.auto_chosen and "max_num_seqs" not in want.auto_chosen


def test_a_kv_space_from_the_environment_is_sized_for_and_not_passed_as_an_arg(tmp_path: Path) -> None:
    want = desired(write(tmp_path, env={"VLLM_CPU_KVCACHE_SPACE": "1"}), CPU_HOST)
    assert "kv_cache_memory_bytes" not in want.config["engine"]["args"]
    assert want.auto.value("kv_cache_tokens") == 46592  # 1 GiB / (30 layers x 128 tokens x 768 B) blocks x 128


def test_the_choice_does_not_move_with_the_memory_running_replicas_take(tmp_path: Path) -> None:
    folder = write(tmp_path)
    before = desired(folder, CPU_HOST)
    after = desired(folder, replace(CPU_HOST, memory_available=12 * GiB))
    assert after.config_hash == before.config_hash


def test_a_different_inventory_is_a_visible_replace(tmp_path: Path) -> None:
    folder = write(tmp_path, model=MISTRAL, gpus=1)
    small = desired(folder, A10G_HOST)
    big = desired(folder, replace(A10G_HOST, gpus=(GpuFact(0, "NVIDIA H100 80GB HBM3", 81559 * 1024 ** 2),)))
    if small.config_hash == big.config_hash:
        pytest.fail(f"an A10G and an H100 got the same settings: {big.config['engine']['args']}")
    plan = compute_plan({"chat": big}, {"chat": running(small)})
    [change] = plan.changes
    assert change.action is Action.REPLACE
    assert any(f.path.startswith("engine.args.") for f in change.fields)


def test_diff_text_and_json_show_the_chosen_values_with_reasons(tmp_path: Path) -> None:
    want = desired(write(tmp_path), CPU_HOST)
    plan = compute_plan({"chat": want}, {})
    text = render_text(plan)
    assert "engine.args chosen by the recommender (auto)" in text
    for key in want.auto_chosen:
        assert f"          {key}: " in text
    change = next(c for c in json.loads(render_json(plan))["changes"] if c["kind"] == "deployment")
    assert set(change["auto"]["chosen"]) == set(want.auto_chosen)
    assert all(v["reason"] for v in change["auto"]["chosen"].values())


def test_an_unreadable_model_blocks_the_deployment_and_keeps_what_runs(tmp_path: Path) -> None:
    folder = write(tmp_path)
    good = desired(folder, CPU_HOST)
    blocked = desired(folder, CPU_HOST, models={SMOL: "the Hub could not be reached"})
    assert "the Hub could not be reached" in blocked.blocked
    plan = compute_plan({"chat": blocked}, {"chat": running(good)})
    [change] = plan.changes
    assert change.action is Action.NOOP and change.blocked and not change.stop and not change.start
    assert plan.blocked == (change,)
    assert "deployment chat is blocked" in render_text(plan)
    fresh = compute_plan({"chat": blocked}, {})
    assert fresh.changes[0].action is Action.NOOP and fresh.changes[0].start == 0


def test_too_few_gpus_block_with_the_count(tmp_path: Path) -> None:
    want = desired(write(tmp_path, model=MISTRAL, gpus=2), A10G_HOST)
    assert "needs 2 GPU(s)" in want.blocked and "1 GPU(s)" in want.blocked


def test_a_model_that_does_not_fit_blocks_with_the_arithmetic(tmp_path: Path) -> None:
    models = {**FACTS, MISTRAL: geometry("llama-3-70b", MISTRAL)}
    want = desired(write(tmp_path, model=MISTRAL, gpus=1), A10G_HOST, models)
    assert want.blocked and "GiB" in want.blocked


def test_without_facts_an_auto_deployment_is_blocked_and_others_are_planned(tmp_path: Path) -> None:
    folder = write(tmp_path)
    (folder / "other.yaml").write_text(yaml.safe_dump({
        "apiVersion": "enova/v1", "kind": "Deployment", "metadata": {"name": "other"},
        "spec": {"model": SMOL, "engine": {"args": {"max_num_seqs": 8}}, "resources": {"gpus": 0, "cpus": 1}}}))
    wants = desired_state(load_specs(folder))
    assert wants["chat"].blocked and not wants["other"].blocked
    assert wants["other"].config["engine"]["args"] == {"max_num_seqs": 8}


def test_model_keys_place_local_folders_relative_to_the_spec(tmp_path: Path) -> None:
    assert model_key("./models/x", "/specs") == "/specs/models/x"
    assert model_key(SMOL, "/specs") == SMOL and model_key(MISTRAL, "/specs") == MISTRAL
