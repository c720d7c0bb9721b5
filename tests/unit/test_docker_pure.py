"""The Docker runtime's pure parts, for what cannot run here (GPUs, remote engines): the SDK
arguments made from a container description, where a published port is reached, and a remote
engine's GPU list read from nvidia-smi."""

from __future__ import annotations

from enova.engines.container import container_launch, container_spec
from enova.plan.desired import replica_config
from enova.runtime.docker import create_kwargs, endpoint_host, parse_nvidia_smi
from enova.spec.models import DeploymentSpec


def spec_for(**fields):
    config = replica_config(DeploymentSpec.model_validate(fields))
    gpus = ["GPU-aaaa", "GPU-bbbb"][: config["resources"]["gpus"]]
    cpus = [] if gpus else [2, 3][: config["resources"]["cpus"]]
    kind = "hub" if "/" in fields["model"] and not fields["model"].startswith(("/", ".")) else "local"
    launch = container_launch(deployment="m", replica_id="m-abc123", config=config, config_hash="h1",
                              model_kind=kind, model_path=fields["model"], cpus=cpus, gpus=gpus)
    return container_spec(deployment="m", replica_id="m-abc123", config=config, config_hash="h1", launch=launch,
                          model_kind=kind, model_path=fields["model"], host_port=19301, cpus=cpus, gpus=gpus,
                          start_timeout=900, revision="abc1234")


def test_gpu_replicas_get_explicit_device_ids_and_no_cuda_visible_devices():
    spec = spec_for(model="mistralai/Mistral-7B-Instruct-v0.1", runtime="docker", resources={"gpus": 2},
                    docker={"ipc": "host", "shm_size": "16g"})
    kwargs = create_kwargs(spec)
    [request] = kwargs["device_requests"]
    assert request["Driver"] == "nvidia" and request["DeviceIDs"] == ["GPU-aaaa", "GPU-bbbb"]
    assert request["Capabilities"] == [["gpu"]]
    assert "CUDA_VISIBLE_DEVICES" not in kwargs["environment"]
    assert kwargs["ipc_mode"] == "host" and kwargs["shm_size"] == "16g"
    assert "--tensor-parallel-size" in kwargs["command"]
    assert kwargs["image"] == "vllm/vllm-openai:v0.11.0" and kwargs["entrypoint"] == []


def test_ports_are_published_on_loopback_with_no_restart_policy_and_enovas_labels():
    spec = spec_for(model="./model", runtime="docker", image="enova/vllm-cpu:1", resources={"gpus": 0, "cpus": 2})
    kwargs = create_kwargs(spec)
    assert kwargs["ports"] == {"8000/tcp": ("127.0.0.1", 19301)}
    assert kwargs["restart_policy"] == {"Name": "no"}
    assert kwargs["cpuset_cpus"] == "2,3" and "device_requests" not in kwargs
    assert kwargs["labels"]["io.enova.managed-by"] == "enova" and kwargs["labels"]["io.enova.revision"] == "abc1234"
    assert kwargs["labels"]["io.enova.config-hash"] == "h1" and kwargs["labels"]["io.enova.replica"] == "m-abc123"
    [mount] = [m for m in kwargs["mounts"] if m["Target"].startswith("/models/")]
    assert mount["ReadOnly"] is True and mount["Type"] == "bind"
    assert kwargs["command"][kwargs["command"].index("--model") + 1] == "/models/model"
    assert kwargs["healthcheck"]["StartPeriod"] == 900 * 10 ** 9


def test_a_hub_model_shares_one_hugging_face_cache_volume_per_engine():
    spec = spec_for(model="org/model", runtime="docker", resources={"gpus": 1})
    [mount] = create_kwargs(spec)["mounts"]
    assert (mount["Type"], mount["Source"], mount["ReadOnly"]) == ("volume", "enova-hf-cache", False)
    assert "HF_HUB_OFFLINE" not in spec.env
    assert spec.env["HF_HOME"] == mount["Target"]  # the engine looks where the volume is, whatever its user


def test_the_endpoint_is_this_host_for_a_local_engine_and_the_remote_host_otherwise():
    assert endpoint_host("unix:///var/run/docker.sock", "127.0.0.1") == "127.0.0.1"
    assert endpoint_host("unix:///var/run/docker.sock", "0.0.0.0") == "127.0.0.1"
    assert endpoint_host("ssh://ops@gpu-7", "127.0.0.1") == "gpu-7"
    assert endpoint_host("tcp://10.0.0.7:2376", "0.0.0.0") == "10.0.0.7"
    assert endpoint_host("tcp://gpu-7:2376", "10.0.0.7") == "10.0.0.7"


def test_a_remote_engines_gpus_are_read_from_nvidia_smi():
    text = ("0, GPU-8f6b1c2e-0000, NVIDIA A100-SXM4-80GB, 81920, 3\n"
            "1, GPU-8f6b1c2e-0001, NVIDIA A100-SXM4-80GB, 81920, 40000\n")
    inventory = parse_nvidia_smi(text, "nvidia-smi on ssh://gpu-7")
    assert [g.uuid for g in inventory.gpus] == ["GPU-8f6b1c2e-0000", "GPU-8f6b1c2e-0001"]
    assert inventory.gpus[1].memory_used_mib == 40000 and inventory.available
    assert not parse_nvidia_smi("", "nvidia-smi on x").available
