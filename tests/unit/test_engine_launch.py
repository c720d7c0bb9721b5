"""Rendering vLLM launches from templates: CPU pinning, GPU mapping, argument spelling.
GPU launches are checked here by rendering, since no GPU is needed to render them."""

import pytest

from enova.engines.vllm import engine_args, omp_bind, render_launch

CPU = {"model": "builtin:x", "runtime": "local",
       "engine": {"name": "vllm", "args": {"max_num_seqs": 8, "enable_prefix_caching": False,
                                           "served_model_name_suffix": "a b; rm -rf /"},
                  "env": {"OMP_DISPLAY_ENV": "true"}},
       "resources": {"gpus": 0, "cpus": 2}}
GPU = {"model": "mistralai/Mistral-7B-Instruct-v0.1", "runtime": "local",
       "engine": {"name": "vllm", "args": {"max_model_len": 8192, "override_generation_config": {"top_k": 5}},
                  "env": {}},
       "resources": {"gpus": 2, "cpus": 1}}


def _launch(config, **kw):
    defaults = dict(deployment="d", replica_id="d-abc123", config=config, config_hash="h",
                    model_path="/models/x", offline=True, host="127.0.0.1", port=19200, cpus=[], gpus=[],
                    python="/py")
    return render_launch(**{**defaults, **kw})


def test_cpu_launch_is_pinned_and_uses_cpu_defaults():
    launch = _launch(CPU, cpus=[0, 1])
    assert launch.device == "cpu"
    assert launch.argv[:6] == ["/py", "-m", "enova.engines.pin", "--cpus", "0,1", "--"]
    argv = launch.argv[6:]
    assert argv[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(argv[3::1], argv[4::1]))
    assert pairs["--model"] == "/models/x" and pairs["--served-model-name"] == "d"
    assert pairs["--port"] == "19200" and pairs["--host"] == "127.0.0.1"
    assert "--enforce-eager" in argv and pairs["--dtype"] == "bfloat16"
    assert "--no-enable-prefix-caching" in argv
    assert pairs["--max-num-seqs"] == "8"
    # a spec value stays one argv element, whatever characters it holds
    assert "a b; rm -rf /" in argv
    assert launch.env["VLLM_CPU_OMP_THREADS_BIND"] == "0,1"
    assert launch.env["HF_HUB_OFFLINE"] == "1"
    assert launch.env["OMP_DISPLAY_ENV"] == "true"
    assert launch.env["ENOVA_REPLICA_ID"] == "d-abc123"
    assert "CUDA_VISIBLE_DEVICES" not in launch.env


def test_gpu_launch_maps_gpus_by_uuid_and_sets_tensor_parallelism():
    launch = _launch(GPU, gpus=["GPU-1111", "GPU-2222"], offline=False)
    assert launch.device == "gpu"
    assert launch.argv[0] == "/py" and "enova.engines.pin" not in launch.argv
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "GPU-1111,GPU-2222"
    assert launch.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "HF_HUB_OFFLINE" not in launch.env
    assert "VLLM_CPU_OMP_THREADS_BIND" not in launch.env
    i = launch.argv.index("--tensor-parallel-size")
    assert launch.argv[i + 1] == "2"
    assert "--enforce-eager" not in launch.argv
    j = launch.argv.index("--override-generation-config")
    assert launch.argv[j + 1] == '{"top_k": 5}'


def test_gpu_launch_refuses_a_wrong_number_of_gpus_with_an_enova_error():
    from enova.errors import PermanentError
    with pytest.raises(PermanentError, match="2 GPU"):
        _launch(GPU, gpus=["GPU-1111"])


def test_spec_args_override_device_defaults():
    config = {**CPU, "engine": {**CPU["engine"], "args": {"enforce_eager": False, "dtype": "float32"}}}
    args = engine_args(config)
    assert args["enforce_eager"] is False and args["dtype"] == "float32"


def test_omp_bind_splits_cores_per_tensor_parallel_rank():
    assert omp_bind([0, 1, 2, 3], 2) == "0,1|2,3"
    assert omp_bind([5], 1) == "5"
    with pytest.raises(ValueError):
        omp_bind([0], 2)
