"""`enova render --format compose`: golden compose files, validity against the vendored Compose
Specification schema, GPUs never shared, too few GPUs, local deployments skipped, model paths,
`$` kept as written, and the equivalence with the Docker runtime (each service is what
enova.engines.container.container_spec describes). Refresh the golden files with
`pytest tests/unit/test_compose.py --update-golden`.

Each case is a folder under tests/golden_compose/: specs/ and compose.yaml, rendered with the
model store at /var/cache/enova, ports from 19200, no GPU inventory and no --gpus. Spec file
paths in the comments are shown relative to the case (`<case>`), so the files hold anywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from enova.apply.compose import (ComposeBug, check_with_compose_cli, compose_command, compose_schema,
                                 render_compose, validate_compose)
from enova.engines.container import container_launch, container_spec
from enova.errors import UsageError
from enova.modelstore.builtin import builtin_dir
from enova.plan.desired import desired_state
from enova.spec.loader import load_specs

GOLDEN = Path(__file__).resolve().parent.parent / "golden_compose"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "specs").is_dir())
CACHE = Path("/var/cache/enova")
PORT = 19200
_SCRIPT = Path(sys.executable).with_name("enova")
ENOVA = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "enova.cli"]


def render(specs: Path, **options) -> str:
    kwargs = {"cache_dir": CACHE, "inventory_gpu_ids": None, "gpus": None, "port_start": PORT, **options}
    return render_compose(load_specs(specs), **kwargs)


def services(text: str) -> dict:
    return yaml.safe_load(text)["services"]


def deployment(name: str, body: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: enova/v1
        kind: Deployment
        metadata:
          name: {name}
        spec:
        """) + textwrap.indent(textwrap.dedent(body), "  ")


def write_specs(folder: Path, *documents: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.yaml").write_text("---\n".join(documents))
    return folder


GPU_DEPLOYMENT = """\
    model: mistralai/Mistral-7B-Instruct-v0.1
    runtime: docker
    replicas: {replicas}
    resources: {{gpus: {gpus}}}
    """


@pytest.mark.parametrize("case", CASES)
def test_the_rendered_compose_file_matches_its_golden_file(case, update_golden, monkeypatch):
    folder = GOLDEN / case
    monkeypatch.chdir(folder)
    text = render(Path("specs")).replace(str(folder), "<case>")
    if update_golden:
        (folder / "compose.yaml").write_text(text)
    assert text == (folder / "compose.yaml").read_text(), f"{case}/compose.yaml differs; rerun with --update-golden"


@pytest.mark.parametrize("case", CASES)
def test_the_golden_compose_files_are_valid_by_the_compose_specification(case):
    data = yaml.safe_load((GOLDEN / case / "compose.yaml").read_text())
    jsonschema.Draft7Validator(compose_schema()).validate(data)


def test_there_are_gpu_and_cpu_cases():
    assert {"gpu-mistral", "cpu"} <= set(CASES)


def test_the_gpu_case_gives_each_of_two_replicas_its_own_gpu():
    found = services((GOLDEN / "gpu-mistral" / "compose.yaml").read_text())
    devices = {name: s["deploy"]["resources"]["reservations"]["devices"] for name, s in found.items()}
    assert devices == {
        "mistral-7b-1": [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}],
        "mistral-7b-2": [{"driver": "nvidia", "device_ids": ["1"], "capabilities": ["gpu"]}],
    }


def test_no_gpu_is_given_to_two_replicas_when_the_inventory_has_more_than_enough(tmp_path):
    uuids = [f"GPU-{i:08x}-0000-0000-0000-000000000000" for i in range(7)]
    specs = write_specs(tmp_path / "specs", deployment("big", GPU_DEPLOYMENT.format(replicas=3, gpus=2)),
                        deployment("small", GPU_DEPLOYMENT.format(replicas=1, gpus=1)))
    found = services(render(specs, inventory_gpu_ids=uuids))
    ids = {name: s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for name, s in found.items()}
    assert ids == {"big-1": uuids[0:2], "big-2": uuids[2:4], "big-3": uuids[4:6], "small-1": uuids[6:7]}


def test_too_few_gpus_is_an_error_naming_how_many_are_needed(tmp_path):
    specs = write_specs(tmp_path / "specs", deployment("mistral", GPU_DEPLOYMENT.format(replicas=2, gpus=2)))
    with pytest.raises(UsageError, match=r"need 4 GPU\(s\) \(mistral: 2 x 2\).*--gpus 3 gives 3"):
        render(specs, gpus=3)
    with pytest.raises(UsageError, match=r"need 4 GPU\(s\).*this host has 1 \(NVML\) gives 1"):
        render(specs, inventory_gpu_ids=["GPU-only-one"])


def test_gpus_renders_for_another_host_with_indices_instead_of_this_hosts_uuids(tmp_path):
    specs = write_specs(tmp_path / "specs", deployment("mistral", GPU_DEPLOYMENT.format(replicas=2, gpus=1)))
    found = services(render(specs, gpus=4, inventory_gpu_ids=["GPU-a", "GPU-b"]))
    assert [s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for s in found.values()] == [["0"], ["1"]]


def test_local_deployments_are_skipped_and_named_in_the_header():
    text = (GOLDEN / "cpu" / "compose.yaml").read_text()
    assert set(services(text)) == {"smollm2-1", "smollm2-2"}
    header = text.split("\nname:")[0]
    assert '# skipped: "smollm2-local" ("runtime local:' in header


def test_specs_with_only_local_deployments_are_a_usage_error(tmp_path):
    specs = write_specs(tmp_path / "specs", deployment("here", "model: builtin:smollm2-135m-instruct\n"))
    with pytest.raises(UsageError, match=r"no deployment with runtime docker to render \(local deployments: here\)"):
        render(specs)


def test_every_service_is_what_container_spec_describes_for_that_replica(monkeypatch):
    """The equivalence with the Docker runtime: command, env, labels, image, port, mounts, GPUs,
    shm, ipc and health check of each service are the ContainerSpec's, built here directly."""
    folder = GOLDEN / "gpu-mistral"
    monkeypatch.chdir(folder)
    specs = load_specs(Path("specs"))
    found = services(render(Path("specs"), revision="abc1234"))
    want = desired_state(specs)["mistral-7b"]
    for n, gpu in ((1, "0"), (2, "1")):
        replica_id = f"mistral-7b-{n}"
        common = dict(deployment="mistral-7b", replica_id=replica_id, config=want.config, config_hash=want.config_hash,
                      model_kind="hub", model_path="mistralai/Mistral-7B-Instruct-v0.1", cpus=[], gpus=[gpu])
        spec = container_spec(launch=container_launch(**common), host_port=PORT + n - 1,
                              start_timeout=want.start_timeout, revision="abc1234", **common)
        service = found[replica_id]
        assert service["command"] == list(spec.command)
        assert service["entrypoint"] == []
        assert service["environment"] == spec.env
        assert service["labels"] == spec.labels
        assert service["labels"]["io.enova.revision"] == "abc1234"
        assert (service["container_name"], service["image"]) == (spec.name, spec.image)
        assert service["ports"] == [{"target": spec.container_port, "published": spec.host_port,
                                     "host_ip": spec.bind, "protocol": "tcp"}]
        assert [(m["source"], m["target"], m["read_only"]) for m in service["volumes"]] == \
            [(m.source, m.target, m.read_only) for m in spec.mounts]
        assert service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == list(spec.gpu_ids)
        assert (service["shm_size"], service["ipc"], service["networks"]) == (spec.shm_size, spec.ipc, [spec.network])
        assert service["healthcheck"]["test"] == list(spec.healthcheck.test)
        assert service["restart"] == "no"


def test_a_builtin_model_is_mounted_from_its_model_store_folder_and_cores_count_up_from_0():
    found = services((GOLDEN / "cpu" / "compose.yaml").read_text())
    folder = str(builtin_dir("smollm2-135m-instruct", CACHE))
    for n, service in enumerate(found.values()):
        assert service["volumes"][0] == {"type": "bind", "source": folder,
                                         "target": "/models/" + os.path.basename(folder), "read_only": True}
        assert service["command"][service["command"].index("--model") + 1] == "/models/" + os.path.basename(folder)
        assert service["cpuset"] == str(n)
        assert service["environment"]["VLLM_CPU_OMP_THREADS_BIND"] == str(n)
        assert "deploy" not in service


def test_a_local_model_folder_is_mounted_from_its_path_resolved_against_the_spec_file(tmp_path):
    write_specs(tmp_path / "specs" / "team", deployment("tiny", """\
        model: ../models/tiny
        runtime: docker
        image: enova/vllm-cpu:test
        """))
    service = services(render(tmp_path / "specs"))["tiny-1"]
    assert service["volumes"] == [{"type": "bind", "source": str(tmp_path / "specs" / "models" / "tiny"),
                                   "target": "/models/tiny", "read_only": True}]


def test_ports_count_up_from_the_port_range_start_in_deployment_order(tmp_path):
    cpu = "model: builtin:smollm2-135m-instruct\nruntime: docker\nimage: enova/vllm-cpu:test\nreplicas: 2\n"
    specs = write_specs(tmp_path / "specs", deployment("zeta", cpu), deployment("alpha", cpu))
    found = services(render(specs, port_start=20000))
    assert {name: s["ports"][0]["published"] for name, s in found.items()} == {
        "alpha-1": 20000, "alpha-2": 20001, "zeta-1": 20002, "zeta-2": 20003}
    assert {name: s["cpuset"] for name, s in found.items()} == {"alpha-1": "0", "alpha-2": "1", "zeta-1": "2", "zeta-2": "3"}


def test_dollar_signs_from_a_spec_reach_the_container_as_written(tmp_path):
    specs = write_specs(tmp_path / "specs", deployment("cpu", """\
        model: builtin:smollm2-135m-instruct
        engine:
          env: {GREETING: "costs $5 or ${HOME}"}
        runtime: docker
        image: enova/vllm-cpu:test
        """))
    service = services(render(specs))["cpu-1"]
    # compose reads `$$` as a literal `$`, so the container gets the value as the spec wrote it
    assert service["environment"]["GREETING"] == "costs $$5 or $${HOME}"


def test_a_spec_value_cannot_change_the_shape_of_the_file(tmp_path):
    specs = write_specs(tmp_path / "specs", deployment("cpu", """\
        model: builtin:smollm2-135m-instruct
        engine:
          env: {NOTE: "x\\"\\n    privileged: true\\n#"}
        runtime: docker
        image: "enova/vllm-cpu:test\\n    privileged: true"
        """))
    service = services(render(specs))["cpu-1"]
    assert "privileged" not in service
    assert service["environment"]["NOTE"] == 'x"\n    privileged: true\n#'


def test_a_schema_error_is_reported_as_a_bug_with_its_path():
    broken = 'name: "enova"\nservices:\n  "a-1":\n    image: "x"\n    ports:\n      - {target: 8000, bogus: 1}\n'
    with pytest.raises(ComposeBug, match=r"enova bug: .*services\.a-1\.ports\[0\]: .bogus. does not match"):
        validate_compose(broken)


@pytest.mark.skipif(compose_command() is None, reason="Docker Compose v2 is not installed")
@pytest.mark.parametrize("case", CASES)
def test_docker_compose_accepts_the_golden_files(case):
    check_with_compose_cli((GOLDEN / case / "compose.yaml").read_text())


def test_enova_render_writes_compose_yaml_into_the_out_folder_and_prints_its_path(tmp_path):
    specs = write_specs(tmp_path / "specs", deployment("mistral", GPU_DEPLOYMENT.format(replicas=1, gpus=1)))
    env = {**os.environ, "ENOVA_STATE_DIR": str(tmp_path / "state"), "ENOVA_CACHE_DIR": str(tmp_path / "cache"),
           "ENOVA_PORT_RANGE": "21000-21099"}
    done = subprocess.run([*ENOVA, "render", str(specs), "--format", "compose", "-o", str(tmp_path / "out"),
                           "--gpus", "1"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "out" / "compose.yaml")
    written = (tmp_path / "out" / "compose.yaml").read_text()
    assert written == render(specs, gpus=1, port_start=21000, cache_dir=tmp_path / "cache")

    too_few = subprocess.run([*ENOVA, "render", str(specs), "--format", "compose", "--gpus", "0"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert too_few.returncode == 2
    assert "need 1 GPU(s)" in too_few.stderr and not too_few.stdout
