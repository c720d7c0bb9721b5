"""Which Deployment fields change in place and which force a replacement: the one table.

A replica process is started from a *replica config*: the spec fields that shape the
process. Changing any of them means new processes (start new, wait healthy, stop old).
`replicas` is changed in place by starting or stopping processes. A few fields steer
how enova acts and never touch a running process. `tests/unit/test_plan_fields.py` fails
when a DeploymentSpec field is added without being classified here.

Called by plan.desired (to build configs and hashes) and plan.diff (to explain changes).
"""

from __future__ import annotations

from enum import Enum


class Effect(str, Enum):
    REPLACE = "replace"    # new replica processes are needed
    IN_PLACE = "in_place"  # converged by starting/stopping replicas
    BEHAVIOUR = "behaviour"  # how enova acts (timeouts, links); no process changes


# Dotted paths under a Deployment's `spec`. A path covers everything below it.
FIELD_EFFECTS: dict[str, Effect] = {
    "model": Effect.REPLACE,
    "runtime": Effect.REPLACE,
    "engine.name": Effect.REPLACE,
    "engine.args": Effect.REPLACE,
    "engine.env": Effect.REPLACE,
    "resources.gpus": Effect.REPLACE,
    "resources.cpus": Effect.REPLACE,
    "replicas": Effect.IN_PLACE,
    "engine.startup_timeout": Effect.BEHAVIOUR,
    "slo": Effect.BEHAVIOUR,
    "serving": Effect.BEHAVIOUR,  # read by the gateway from the deployment record
}

REPLACE_FIELDS: tuple[str, ...] = tuple(p for p, e in FIELD_EFFECTS.items() if e is Effect.REPLACE)


def effect_of(path: str) -> Effect | None:
    """The effect of changing `path` (dotted, under spec); the longest classified prefix wins."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        effect = FIELD_EFFECTS.get(".".join(parts[:n]))
        if effect is not None:
            return effect
    return None
