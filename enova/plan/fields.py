"""Which Deployment fields force a replacement, scale, or change in place: the one table.

Every field under a Deployment's `spec` has exactly one effect, and a path to the running world:
- REPLACE: the field shapes the replica process. `replica_config` is built from exactly these
  paths, so the config hash changes exactly when new processes are needed (start new, wait
  healthy, stop old).
- SCALE: `replicas`, converged by starting or stopping processes.
- UPDATE: written in place to the deployment record, where its reader finds it: `serving.*` is
  read by the gateway, `engine.startup_timeout` by apply and observation (a starting replica
  past it has failed), `slo` and `scaling` by the autoscaler. A change is planned as
  Action.UPDATE; no process restarts. While `scaling` is set, `replicas` only says where the
  count starts: the autoscaler's persisted target, clamped to [min, max], is the desired count.
`tests/unit/test_plan_fields.py` fails when a DeploymentSpec field is not classified here, and
checks that replica_config and the in-place records hold exactly the table's paths.

Called by plan.desired (to build configs, hashes and records) and plan.diff (to explain changes).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple


class Effect(str, Enum):
    REPLACE = "replace"  # new replica processes are needed
    SCALE = "scale"      # converged by starting/stopping replicas
    UPDATE = "update"    # rewritten in place in the deployment record


class Rule(NamedTuple):
    effect: Effect
    target: str  # where the value lives: a replica config path, or "serving.x" / "settings.x" of the record


# Dotted paths under a Deployment's `spec`. A path covers everything below it.
FIELDS: dict[str, Rule] = {
    "model": Rule(Effect.REPLACE, "model"),
    "runtime": Rule(Effect.REPLACE, "runtime"),
    # runtime docker only (absent from the config otherwise, so local replicas' hashes never move)
    "image": Rule(Effect.REPLACE, "image"),
    "docker": Rule(Effect.REPLACE, "docker"),
    "engine.name": Rule(Effect.REPLACE, "engine.name"),
    "engine.args": Rule(Effect.REPLACE, "engine.args"),
    "engine.env": Rule(Effect.REPLACE, "engine.env"),
    "resources.gpus": Rule(Effect.REPLACE, "resources.gpus"),
    "resources.cpus": Rule(Effect.REPLACE, "resources.cpus"),
    "replicas": Rule(Effect.SCALE, "replicas"),
    "engine.startup_timeout": Rule(Effect.UPDATE, "settings.startup_timeout"),
    "slo": Rule(Effect.UPDATE, "settings.slo"),
    # read by the autoscaler; while set, it owns the replica count (plan.desired clamps it to min..max)
    "scaling": Rule(Effect.UPDATE, "settings.scaling"),
    # the effective default is decided over the whole spec set (SpecSet.default_deployment)
    "serving.default": Rule(Effect.UPDATE, "serving.default"),
    "serving.max_concurrency": Rule(Effect.UPDATE, "serving.max_concurrency"),
    "serving.drain_timeout": Rule(Effect.UPDATE, "serving.drain_timeout"),
    # read by the gateway (gateway.hold); absent from the record when unset
    "serving.hold_timeout": Rule(Effect.UPDATE, "serving.hold_timeout"),
}
FIELD_EFFECTS: dict[str, Effect] = {path: rule.effect for path, rule in FIELDS.items()}
REPLACE_FIELDS: tuple[str, ...] = tuple(p for p, r in FIELDS.items() if r.effect is Effect.REPLACE)
UPDATE_FIELDS: tuple[str, ...] = tuple(p for p, r in FIELDS.items() if r.effect is Effect.UPDATE)


def effect_of(path: str) -> Effect | None:
    """The effect of changing `path` (dotted, under spec); the longest classified prefix wins."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        rule = FIELDS.get(".".join(parts[:n]))
        if rule is not None:
            return rule.effect
    return None


def _get(data: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        data = data[key]
    return data


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[last] = value


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    return value


def project(spec: dict[str, Any], effect: Effect) -> dict[str, Any]:
    """The values of every field with `effect`, from a Deployment spec dumped to JSON-able data
    (`DeploymentSpec.model_dump(mode="json")`), placed at their targets."""
    out: dict[str, Any] = {}
    for path, rule in FIELDS.items():
        if rule.effect is effect:
            _put(out, rule.target, _canonical(_get(spec, path)))
    return out
