"""The planner: (desired, observed, prune) -> Plan. Pure and deterministic.

Rules, per deployment name in desired ∪ observed, sorted by name:
- desired only                      -> CREATE, start `replicas`.
- live (starting or ready) replicas whose config hash differs from the desired one -> REPLACE:
  start new replicas up to `replicas`, stop the stale ones; apply never stops a ready replica
  before a replacement is ready.
- exited, failed (alive but failing health checks too long, or never healthy within its start
  timeout) or stopping (left draining by an interrupted apply) replicas, or a live count
  different from `replicas` -> SCALE: start what is missing, stop the surplus (not-ready first,
  then the newest), the failed and the stopping ones, forget exited records.
- in-place fields (plan.fields UPDATE: serving, startup timeout, slo) differing from the
  deployment record, or replicas of the current config still starting -> UPDATE: rewrite the
  record, wait for the starting replicas and record them ready. No process restarts.
  (REPLACE and SCALE carry the same `update` and `wait`.)
- blocked (the desired config cannot be computed: `engine.args: auto` unresolvable) -> NOOP
  marked `blocked`: whatever runs is kept as it is, nothing is started.
- observed only: with prune -> DELETE; without -> NOOP marked `orphaned` (reported, kept).
- otherwise NOOP.
`replicas` is the desired count whoever owns it: spec.replicas, or, for a deployment with
`scaling`, the autoscaler's target clamped to [min, max] (plan.desired); such changes carry
replicas_from "autoscaler", so a spec.replicas that differs from the autoscaler's count is no
change at all (GitOps and the autoscaler never fight over it).
The gateway is planned first: wanted while it is enabled and any deployment remains (in the
specs, or kept as an orphan); CREATE when not running; REPLACE (start on the new address, then
stop the old) when host or port changed; UPDATE (reload in place) when only other fields
changed; DELETE when no longer wanted.
Called by the CLI (diff, apply), enode, enova.status and the reconciler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .fields import FIELDS, UPDATE_FIELDS, Effect, effect_of
from .model import (
    GATEWAY,
    Action,
    Change,
    DesiredDeployment,
    DesiredGateway,
    FieldChange,
    ObservedDeployment,
    ObservedGateway,
    ObservedReplica,
    Plan,
    ReplicaState,
)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


_ABSENT = None


def field_changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[FieldChange, ...]:
    """Leaf-level differences between two replica configs, sorted by path."""
    flat_before, flat_after = _flatten(before), _flatten(after)
    changes = []
    for path in sorted(set(flat_before) | set(flat_after)):
        b, a = flat_before.get(path, _ABSENT), flat_after.get(path, _ABSENT)
        if b != a or (path in flat_before) != (path in flat_after):
            changes.append(FieldChange(path=path, before=b, after=a))
    return tuple(changes)


def _stop_order(replicas: list[ObservedReplica]) -> list[ObservedReplica]:
    """Which replicas to stop first when there are too many: not ready before ready,
    then the newest first (long-running replicas are warm), then by id for determinism."""
    return sorted(
        replicas,
        key=lambda r: (r.state is ReplicaState.READY, -r.started_at, r.id),
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _in_place_changes(want: DesiredDeployment, have: ObservedDeployment) -> tuple[FieldChange, ...]:
    """In-place fields whose recorded value differs from the desired one, named by spec path."""
    recorded = {"serving": have.serving or {}, "settings": have.settings or {}}
    wanted = {"serving": want.serving, "settings": want.settings}
    out = []
    for path in sorted(UPDATE_FIELDS):
        section, key = FIELDS[path].target.split(".", 1)
        before, after = recorded[section].get(key, _ABSENT), wanted[section].get(key, _ABSENT)
        # a field enova learnt after the record was written (scaling) reads as unset there
        learnt_since = after is None and key not in recorded[section] and bool(recorded[section])
        if before != after or ((key in recorded[section]) != (key in wanted[section]) and not learnt_since):
            if isinstance(before, dict) and isinstance(after, dict):  # scaling: name the leaves that changed
                out.extend(FieldChange(f"{path}.{f.path}", f.before, f.after) for f in field_changes(before, after))
            else:
                out.append(FieldChange(path, before, after))
    return tuple(out)


def _owner(want: DesiredDeployment) -> str:
    """How the desired count was reached, for reasons, when the autoscaler owns it."""
    return f" ({want.replicas_why})" if want.replicas_from == "autoscaler" and want.replicas_why else ""


def _plan_one(name: str, want: DesiredDeployment | None, have: ObservedDeployment | None,
              prune: bool) -> Change:
    replicas = list(have.replicas) if have else []
    live = [r for r in replicas if r.serving]
    exited = sorted((r for r in replicas if not r.alive), key=lambda r: r.id)
    failed = sorted((r for r in replicas if r.state is ReplicaState.FAILED), key=lambda r: r.id)
    # draining or stopping records left by an interrupted apply: finish stopping them
    stopping = sorted((r for r in replicas if r.state is ReplicaState.STOPPING), key=lambda r: r.id)
    given_up = tuple(r.id for r in failed) + tuple(r.id for r in stopping)
    forget = tuple(r.id for r in exited)
    live_hashes = sorted({r.config_hash for r in live})
    before_hash = live_hashes[0] if len(live_hashes) == 1 else (None if not live_hashes else "mixed")

    if want is None:
        if not prune:
            return Change(name, Action.NOOP,
                          f"not in the specs; {_plural(len(live), 'replica')} kept running "
                          "(apply --prune deletes it)",
                          len(live), len(live), before_hash, None, orphaned=True)
        return Change(name, Action.DELETE,
                      f"not in the specs; delete {_plural(len(live), 'replica')} (prune)",
                      len(live), 0, before_hash, None,
                      stop=given_up + tuple(r.id for r in _stop_order(live)), forget=forget)

    if want.blocked:
        kept = f"{_plural(len(live), 'replica')} kept as they run" if have else "not created"
        return Change(name, Action.NOOP, f"blocked: {want.blocked}; {kept}", len(live), len(live), before_hash,
                      before_hash, blocked=want.blocked)

    if have is None:
        return Change(name, Action.CREATE, f"new deployment; start {_plural(want.replicas, 'replica')}{_owner(want)}",
                      0, want.replicas, None, want.config_hash, start=want.replicas,
                      replicas_from=want.replicas_from)

    update = _in_place_changes(want, have)
    current = [r for r in live if r.config_hash == want.config_hash]
    stale = [r for r in live if r.config_hash != want.config_hash]
    surplus = _stop_order(current)[: max(0, len(current) - want.replicas)]
    surplus_ids = {r.id for r in surplus}
    # starting replicas of the current config (an interrupted apply or reconciler left them):
    # adopted and waited for, never stopped while they may still become ready
    wait = tuple(sorted(r.id for r in current if r.id not in surplus_ids and (
        r.state is ReplicaState.STARTING or (r.state is ReplicaState.READY and r.recorded == "starting"))))
    start = max(0, want.replicas - len(current))
    waiting = f"; wait for {_plural(len(wait), 'starting replica')}" if wait else ""
    if stale:
        reference = min(stale, key=lambda r: r.id)
        fields = tuple(f for f in field_changes(reference.config, want.config)
                       if effect_of(f.path) is Effect.REPLACE)
        changed = (", ".join(f.path for f in fields) or "replica config") + " changed"
        if len({r.config_hash for r in stale}) > 1:
            changed += f" (replicas run {len({r.config_hash for r in stale})} older configs)"
        return Change(name, Action.REPLACE,
                      f"{changed}; replace {_plural(len(stale), 'replica')}{waiting}",
                      len(live), want.replicas, before_hash, want.config_hash, fields,
                      start=start, stop=given_up + tuple(r.id for r in surplus), forget=forget, wait=wait,
                      roll=tuple(r.id for r in _stop_order(stale)), update=update,
                      replicas_from=want.replicas_from)

    if exited or failed or stopping or len(current) != want.replicas:
        parts = []
        if exited:
            gone = ", ".join(f"{r.id}" + (f" ({r.detail})" if r.detail else "") for r in exited)
            parts.append(f"{_plural(len(exited), 'replica')} exited: {gone}")
        if failed:
            sick = ", ".join(f"{r.id}" + (f" ({r.detail})" if r.detail else "") for r in failed)
            parts.append(f"{_plural(len(failed), 'replica')} failed: {sick}")
        if stopping:
            parts.append(f"finish stopping {', '.join(r.id for r in stopping)}")
        if start:
            parts.append(f"start {start}")
        if surplus:
            parts.append(f"stop {len(surplus)}")
        return Change(name, Action.SCALE,
                      f"{len(current)} of {want.replicas} running{_owner(want)}; " + "; ".join(parts) + waiting,
                      len(live), want.replicas, before_hash, want.config_hash,
                      start=start, stop=given_up + tuple(r.id for r in surplus), forget=forget,
                      wait=wait, update=update, replicas_from=want.replicas_from)

    if update or wait:
        parts = []
        if have.serving is None:
            parts.append("deployment record missing; write it")
        elif update:
            parts.append(f"{', '.join(f.path for f in update)} changed; update in place")
        if wait:
            parts.append(f"{_plural(len(wait), 'replica')} still starting ({', '.join(wait)}); wait until ready")
        return Change(name, Action.UPDATE, "; ".join(parts), len(live), want.replicas, before_hash,
                      want.config_hash, wait=wait, update=update, replicas_from=want.replicas_from)

    return Change(name, Action.NOOP, f"in sync: {_plural(len(current), 'replica')} running{_owner(want)}",
                  len(live), want.replicas, before_hash, want.config_hash, replicas_from=want.replicas_from)


def _plan_gateway(want: DesiredGateway | None, have: ObservedGateway | None, needed: bool) -> Change | None:
    if want is None or not needed:
        if have is None:
            return None
        why = "disabled in the specs" if want is None else "no deployment left to serve"
        if not have.alive:
            return Change(GATEWAY, Action.NOOP, f"{why}; forget its exited record", 0, 0, have.config_hash,
                          None, forget=(GATEWAY,), kind=GATEWAY)
        return Change(GATEWAY, Action.DELETE, f"{why}; stop it", 1, 0, have.config_hash, None,
                      stop=(GATEWAY,), kind=GATEWAY)
    where = f"{want.config['host']}:{want.config['port']}"
    if have is None or not have.alive:
        reason = "not running" if have is None else f"exited ({have.detail})"
        return Change(GATEWAY, Action.CREATE, f"{reason}; start it on {where}", 0, 1,
                      have.config_hash if have else None, want.config_hash, start=1,
                      forget=(GATEWAY,) if have else (), kind=GATEWAY)
    if have.config_hash != want.config_hash:
        fields = field_changes(have.config, want.config)
        changed = ", ".join(f.path for f in fields)
        if any(f.path in ("host", "port") for f in fields):
            return Change(GATEWAY, Action.REPLACE, f"{changed} changed; start it on {where}, then stop the old one",
                          1, 1, have.config_hash, want.config_hash, fields, start=1, stop=(GATEWAY,), kind=GATEWAY)
        return Change(GATEWAY, Action.UPDATE, f"{changed} changed; reload in place (no connection refused)",
                      1, 1, have.config_hash, want.config_hash, fields, kind=GATEWAY)
    return Change(GATEWAY, Action.NOOP, f"in sync: listening on {where}", 1, 1, have.config_hash,
                  want.config_hash, kind=GATEWAY)


def compute_plan(desired: Mapping[str, DesiredDeployment],
                 observed: Mapping[str, ObservedDeployment], *, prune: bool = False,
                 gateway: DesiredGateway | None = None,
                 observed_gateway: ObservedGateway | None = None) -> Plan:
    """Plan the changes that make `observed` match `desired`. Deterministic: the result
    depends only on the inputs, never on dict order or the clock."""
    names = sorted(set(desired) | set(observed))
    changes = tuple(_plan_one(n, desired.get(n), observed.get(n), prune) for n in names)
    kept = any(c.orphaned and c.replicas_before for c in changes)
    gateway_change = _plan_gateway(gateway, observed_gateway, bool(desired) or kept)
    if gateway_change is not None:
        changes = (gateway_change, *changes)
    return Plan(changes=changes, prune=prune, desired=dict(desired), gateway=gateway)
