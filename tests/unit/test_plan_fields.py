"""Every Deployment spec field is classified as replace / in place / behaviour, exactly once."""

import typing

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
    assert effect_of("replicas") is Effect.IN_PLACE
    assert effect_of("engine.startup_timeout") is Effect.BEHAVIOUR
