"""Every Deployment spec field is classified as replace / scale / update in place, exactly once,
and the replica config and the in-place records are built from exactly that table."""


from pydantic import BaseModel

from enova.plan.fields import FIELD_EFFECTS, Effect, effect_of
from enova.spec.models import DeploymentSpec


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths.extend(_leaf_paths(ann, path + "."))
        else:
            paths.append(path)
    return paths


def test_every_deployment_spec_field_has_a_declared_effect():
    unclassified = [p for p in _leaf_paths(DeploymentSpec) if effect_of(p) is None]
    assert not unclassified, f"classify these in enova/plan/fields.py: {unclassified}"


def test_the_table_names_only_fields_that_exist():
    leaves = _leaf_paths(DeploymentSpec)
    for path in FIELD_EFFECTS:
        assert any(leaf == path or leaf.startswith(path + ".") for leaf in leaves), path


def test_engine_args_force_a_replace_and_replicas_do_not():
    assert effect_of("engine.args.max_num_seqs") is Effect.REPLACE
    assert effect_of("replicas") is Effect.SCALE
    assert effect_of("engine.startup_timeout") is Effect.UPDATE
    assert effect_of("serving.max_concurrency") is Effect.UPDATE


def _leaves(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("args", "env"):
            out |= _leaves(value, path + ".")
        else:
            out.add(path)
    return out


def test_replica_config_holds_exactly_the_replace_fields_and_records_the_update_fields():
    from enova.plan.desired import in_place, replica_config
    from enova.plan.fields import FIELDS
    from enova.plan.desired import OPTIONAL_REPLACE
    spec = DeploymentSpec(model="builtin:smollm2-135m-instruct")
    replace = {p for p, r in FIELDS.items() if r.effect is Effect.REPLACE}
    update = {r.target for r in FIELDS.values() if r.effect is Effect.UPDATE}
    # a local deployment's config leaves the container-only fields out (its hash never moved)...
    assert _leaves(replica_config(spec)) == replace - set(OPTIONAL_REPLACE)
    # ...and a container deployment's holds them all
    docker = DeploymentSpec(model="org/m", runtime="docker", resources={"gpus": 1}, image="vllm/vllm-openai:v1",
                            docker={"shm_size": "4g"})
    assert {p.split(".")[0] for p in _leaves(replica_config(docker))} >= set(OPTIONAL_REPLACE)
    assert _leaves(in_place(spec, False)) == update - {"serving.hold_timeout"}   # unset: left out of the record
    held = DeploymentSpec(model="builtin:smollm2-135m-instruct", serving={"hold_timeout": "1m"})
    assert _leaves(in_place(held, False)) == update
    scale = {p for p, r in FIELDS.items() if r.effect is Effect.SCALE}
    assert scale == {"replicas"}
    # every leaf of the spec is in exactly one of the three
    leaves = set(_leaf_paths(DeploymentSpec))
    covered = replace | scale | {p for p, r in FIELDS.items() if r.effect is Effect.UPDATE}
    assert {leaf for leaf in leaves if not any(leaf == c or leaf.startswith(c + ".") for c in covered)} == set()


def test_a_change_to_any_replace_field_changes_the_config_hash_and_no_other_field_does():
    from enova.plan.desired import config_hash, replica_config
    base = DeploymentSpec(model="builtin:smollm2-135m-instruct")
    h = config_hash(replica_config(base))
    changed = {
        "model": {"model": "./other-model"},
        "engine.args": {"engine": {"args": {"max_num_seqs": 4}}},
        "engine.env": {"engine": {"env": {"VLLM_LOGGING_LEVEL": "DEBUG"}}},
        "resources.cpus": {"resources": {"cpus": 2}},
        "resources.gpus": {"resources": {"gpus": 1}},
        "runtime": {"runtime": "docker", "image": "enova/vllm-cpu:1"},
    }
    for path, update in changed.items():
        spec = DeploymentSpec.model_validate({"model": "builtin:smollm2-135m-instruct", **update})
        assert config_hash(replica_config(spec)) != h, path
    same = {"replicas": {"replicas": 5}, "serving": {"serving": {"max_concurrency": 3}},
            "engine.startup_timeout": {"engine": {"startup_timeout": "1m"}}, "slo": {"slo": "chat"}}
    for path, update in same.items():
        spec = DeploymentSpec.model_validate({"model": "builtin:smollm2-135m-instruct", **update})
        assert config_hash(replica_config(spec)) == h, path


def test_a_change_to_the_image_or_docker_settings_replaces_containers():
    from enova.plan.desired import config_hash, replica_config
    base = {"model": "org/m", "runtime": "docker", "resources": {"gpus": 1}}
    h = config_hash(replica_config(DeploymentSpec.model_validate(base)))
    for update in ({"image": "vllm/vllm-openai:v0.12.0"}, {"docker": {"shm_size": "8g"}},
                   {"docker": {"volumes": ["/data:/data:ro"]}}, {"docker": {"host": "ssh://gpu-1"}}):
        assert config_hash(replica_config(DeploymentSpec.model_validate({**base, **update}))) != h, update


def test_scaling_is_updated_in_place_and_never_changes_the_config_hash():
    from enova.plan.desired import config_hash, in_place, replica_config
    assert effect_of("scaling") is Effect.UPDATE and effect_of("scaling.min") is Effect.UPDATE
    base = DeploymentSpec(model="builtin:smollm2-135m-instruct", slo="chat")
    scaled = DeploymentSpec.model_validate({"model": "builtin:smollm2-135m-instruct", "slo": "chat",
                                            "scaling": {"min": 0, "max": 4, "scale_to_zero_after": "10m"}})
    assert config_hash(replica_config(scaled)) == config_hash(replica_config(base))
    assert in_place(base, False)["settings"]["scaling"] is None
    assert in_place(scaled, False)["settings"]["scaling"] == scaled.scaling.model_dump(mode="json")
