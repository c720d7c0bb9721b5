"""The specs folder pilot writes from its options and reuses: loaded by the real loader, never
overwritten without --force, options that contradict a reused folder refused by name."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from enova.errors import SpecError, UsageError
from enova.pilot.specs import FILES, GpuChoice, PilotOptions, choose_gpus, prepare_specs
from enova.spec.loader import load_specs

MODEL = "builtin:smollm2-135m-instruct"
NOW = lambda: datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)  # noqa: E731
CPU = lambda: GpuChoice(0, "no GPU: vLLM's CPU build")  # noqa: E731


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache for the module: vLLM's argument table is built once (seconds), not per test."""
    return tmp_path_factory.mktemp("cache")


def prepare(folder: Path, cache: Path, gpu_choice=CPU, **options):
    opts = PilotOptions(**{"model": MODEL, "engine_args": {}, **options})
    return prepare_specs(folder, opts, cache_dir=cache, gpu_choice=gpu_choice, now=NOW)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_writes_a_deployment_slo_loadprofile_gateway_and_monitoring_that_the_loader_accepts(tmp_path, cache):
    folder = tmp_path / "enova-pilot"
    prepared = prepare(folder, cache, engine_args={"max_num_seqs": 4, "enforce_eager": True},
                       port=19292, prometheus_port=19793)
    assert prepared.written and sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    specs = load_specs(folder)
    [(name, dep)] = specs.deployments.items()
    assert name == "smollm2-135m-instruct"
    spec = dep.doc.spec
    assert spec.model == MODEL and spec.engine.auto
    assert spec.engine.args == {"auto": True, "max_num_seqs": 4, "enforce_eager": True}
    assert (spec.resources.gpus, spec.slo, spec.serving.default) == (0, "chat", True)
    assert specs.slos["chat"].doc.spec.ttft_p95_ms == 500
    assert specs.load_profiles["chat-poisson"].doc.spec.target == name
    assert specs.gateway.doc.spec.port == 19292 and specs.gateway.doc.spec.host == "127.0.0.1"
    assert specs.monitoring.doc.spec.prometheus.port == 19793
    text = (folder / "deployment.yaml").read_text()
    assert text.startswith("# Written by `enova pilot run` on 2026-11-30 12:00 UTC")
    assert "# resources.gpus: no GPU: vLLM's CPU build" in text


def test_the_gpu_count_the_recommender_chose_is_written_for_a_hub_model_with_a_longer_startup(tmp_path, cache):
    folder = tmp_path / "specs"
    prepare(folder, cache, gpu_choice=lambda: GpuChoice(2, "2 of 4 GPU(s) per replica"),
            model="mistralai/Mistral-7B-Instruct-v0.1")
    spec = load_specs(folder).deployments["mistral-7b-instruct-v0-1"].doc.spec
    assert spec.resources.gpus == 2 and spec.engine.auto
    assert spec.engine.startup_timeout == 30 * 60
    assert load_specs(folder).gateway.doc.spec.port == 9199
    assert load_specs(folder).monitoring.doc.spec.prometheus.port == 9090


def test_an_existing_folder_is_reused_byte_for_byte_without_asking_for_gpus(tmp_path, cache):
    folder = tmp_path / "enova-pilot"
    prepare(folder, cache, port=19292)
    before = contents(folder)

    def no_gpu_question():
        raise AssertionError("a reused folder must not be sized again")

    again = prepare(folder, cache, gpu_choice=no_gpu_question, port=19292)
    assert not again.written and "reusing" in again.message
    assert contents(folder) == before


def test_options_that_contradict_a_reused_folder_are_refused_by_name_and_nothing_changes(tmp_path, cache):
    folder = tmp_path / "enova-pilot"
    prepare(folder, cache, engine_args={"max_num_seqs": 4})
    before = contents(folder)
    with pytest.raises(UsageError) as err:
        prepare(folder, cache, port=19000, prometheus_port=19001, engine_args={"max_num_seqs": 8})
    message = str(err.value)
    assert "--port 19000: the folder's gateway port is 9199" in message
    assert "--prometheus-port 19001: the folder's Prometheus port is 9090" in message
    assert "--max-num-seqs 8: the folder's engine.args.max_num_seqs is 4" in message
    assert "--force" in message
    with pytest.raises(UsageError, match="--model Qwen/Qwen2-0.5B: the folder serves builtin:smollm2"):
        prepare(folder, cache, model="Qwen/Qwen2-0.5B")
    assert contents(folder) == before


def test_without_model_a_reused_folder_serves_whatever_model_it_names(tmp_path, cache):
    folder = tmp_path / "enova-pilot"
    prepare(folder, cache, gpu_choice=lambda: GpuChoice(1, "1 GPU"), model="Qwen/Qwen2-0.5B")
    again = prepare(folder, cache, model=MODEL, model_given=False)
    assert not again.written and list(again.specs.deployments) == ["qwen2-0-5b"]


def test_force_rewrites_pilots_files_and_keeps_the_users_own(tmp_path, cache):
    folder = tmp_path / "enova-pilot"
    prepare(folder, cache, engine_args={"max_num_seqs": 4})
    mine = folder / "extra-slo.yaml"
    mine.write_text("apiVersion: enova/v1\nkind: SLO\nmetadata: {name: strict}\nspec: {ttft_p95_ms: 100}\n")
    rewritten = prepare(folder, cache, force=True, engine_args={"max_num_seqs": 8}, port=19300)
    assert rewritten.written
    specs = load_specs(folder)
    assert next(iter(specs.deployments.values())).doc.spec.engine.args["max_num_seqs"] == 8
    assert specs.gateway.doc.spec.port == 19300
    assert "strict" in specs.slos and mine.exists()


def test_a_bad_engine_arg_names_the_option_and_writes_nothing(tmp_path, cache):
    folder = tmp_path / "enova-pilot"
    with pytest.raises(UsageError) as err:
        prepare(folder, cache, engine_args={"max_num_seqz": 4})
    assert "--max-num-seqz: unknown vLLM engine argument (did you mean max_num_seqs?)" in str(err.value)
    assert not folder.exists()


def test_a_bad_model_reference_names_the_option(tmp_path, cache):
    with pytest.raises(UsageError, match="--model nope::"):
        prepare(tmp_path / "enova-pilot", cache, model="nope::")


def test_a_reused_folder_the_loader_refuses_is_a_spec_error_with_file_and_line(tmp_path, cache):
    folder = tmp_path / "enova-pilot"
    prepare(folder, cache)
    (folder / "slo.yaml").write_text("apiVersion: enova/v1\nkind: SLO\nmetadata: {name: chat}\nspec: {ttft_p95_ms: -1}\n")
    with pytest.raises(SpecError, match=r"slo.yaml:4 spec.ttft_p95_ms"):
        prepare(folder, cache)


def test_a_folder_without_a_deployment_is_refused_unless_forced(tmp_path, cache):
    folder = tmp_path / "enova-pilot"
    folder.mkdir()
    (folder / "slo.yaml").write_text("apiVersion: enova/v1\nkind: SLO\nmetadata: {name: chat}\nspec: {ttft_p95_ms: 5}\n")
    with pytest.raises(UsageError, match="holds no Deployment"):
        prepare(folder, cache)


def test_on_this_host_without_a_gpu_the_cpu_engine_is_chosen(tmp_path, cache):
    from enova.observe.gpus import gpu_inventory
    if gpu_inventory().gpus:
        pytest.skip("this host has a GPU")
    choice = choose_gpus(MODEL, cache_dir=tmp_path, base_dir=tmp_path, fixed={})
    assert choice.gpus == 0 and "CPU build" in choice.reason


def gpus(count: int, mib: int):
    from enova.observe.gpus import Gpu, GpuInventory
    return lambda: GpuInventory(gpus=tuple(Gpu(i, f"GPU-{i}", "NVIDIA L4", mib, 0) for i in range(count)))


def test_with_gpus_the_recommender_chooses_how_many_a_replica_gets(tmp_path, cache):
    choice = choose_gpus(MODEL, cache_dir=cache, base_dir=tmp_path, fixed={}, inventory=gpus(4, 23034))
    assert choice.gpus == 1 and choice.reason.startswith("1 of 4 GPU(s) per replica: the recommender's")


def test_a_given_tensor_parallel_size_is_the_gpu_count(tmp_path, cache):
    choice = choose_gpus(MODEL, cache_dir=cache, base_dir=tmp_path, fixed={"tensor_parallel_size": 2},
                         inventory=gpus(4, 23034))
    assert (choice.gpus, choice.reason) == (2, "--tensor-parallel-size 2 (given)")


def test_a_model_the_recommender_cannot_read_gets_one_gpu_and_says_why(tmp_path, cache):
    choice = choose_gpus(str(tmp_path / "no-such-model"), cache_dir=cache, base_dir=tmp_path, fixed={},
                         inventory=gpus(2, 23034))
    assert choice.gpus == 1 and "could not size the model now" in choice.reason
