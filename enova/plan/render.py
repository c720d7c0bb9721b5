"""Rendering a Plan: Terraform-style text and a JSON twin. The only place plans are formatted.

Symbols: `+` create, `~` scale or update in place, `-/+` replace, `-` delete, `#` kept orphan
or an in-sync deployment whose replica count the autoscaler manages.
Output is sorted and stable so it can be kept in golden files and diffed.
"""

from __future__ import annotations

import json
from typing import Any

from .model import Action, Change, Plan

SYMBOLS = {Action.CREATE: "+", Action.SCALE: "~", Action.UPDATE: "~", Action.REPLACE: "-/+", Action.DELETE: "-"}
VERBS = {Action.CREATE: "will be created", Action.SCALE: "will be scaled",
         Action.UPDATE: "will be updated in place", Action.REPLACE: "will be replaced",
         Action.DELETE: "will be deleted"}


def _value(v: Any) -> str:
    if v is None:
        return "(unset)"
    return json.dumps(v, sort_keys=True) if not isinstance(v, str) else json.dumps(v)


def _subject(c: Change) -> str:
    return "gateway" if c.kind == "gateway" else f"deployment {c.deployment}"


def _managed(c: Change) -> str:
    return " (managed by the autoscaler)" if c.replicas_from == "autoscaler" else ""


def _change_lines(c: Change) -> list[str]:
    lines = [f"  {SYMBOLS[c.action]} {_subject(c)} {VERBS[c.action]}", f"      # {c.reason}"]
    for f in c.fields:
        lines.append(f"      ~ {f.path}: {_value(f.before)} -> {_value(f.after)}")
    for f in c.update:
        lines.append(f"      ~ {f.path}: {_value(f.before)} -> {_value(f.after)} (in place)")
    if c.kind == "deployment":
        lines.append(f"        replicas: {c.replicas_before} -> {c.replicas_after}{_managed(c)}")
    if c.config_before != c.config_after:
        lines.append(f"        config: {c.config_before or '(none)'} -> {c.config_after or '(none)'}")
    else:
        lines.append(f"        config: {c.config_after}")
    if (c.stop or c.roll) and c.kind == "deployment":
        lines.append(f"        stop: {', '.join(c.stop + c.roll)}")
    if c.wait:
        lines.append(f"        wait for: {', '.join(c.wait)}")
    if c.forget and c.kind == "deployment":
        lines.append(f"        forget exited: {', '.join(c.forget)}")
    return lines


def _auto_lines(plan: Plan, c: Change) -> list[str]:
    """What `engine.args: auto` chose for a deployment, each value with its reason."""
    want = plan.desired.get(c.deployment) if c.kind == "deployment" else None
    if want is None or want.auto is None or not want.auto_chosen:
        return []
    lines = [f"        engine.args chosen by the recommender (auto) for {want.auto.target}:"]
    for key in want.auto_chosen:
        lines.append(f"          {key}: {_value(want.config['engine']['args'].get(key))}  # {_reason(want.auto, key)}")
    return lines


def _reason(rec: Any, key: str) -> str:
    try:
        return str(rec.figure(key).reason)
    except KeyError:
        return "chosen by the recommender"


def auto_dict(plan: Plan, name: str) -> dict[str, Any] | None:
    """The JSON twin of _auto_lines (None when the deployment does not use auto)."""
    want = plan.desired.get(name)
    if want is None or want.auto is None:
        return None
    args = want.config["engine"]["args"]
    return {"target": want.auto.target,
            "chosen": {k: {"value": args.get(k), "reason": _reason(want.auto, k)} for k in want.auto_chosen}}


def render_text(plan: Plan) -> str:
    """The plan as text ending with the summary line (and a newline)."""
    acting = [c for c in plan.changes if c.action is not Action.NOOP]
    in_sync = [c for c in plan.changes if c.action is Action.NOOP and not c.orphaned and not c.blocked]
    out: list[str] = []
    if acting:
        out.append("enova will perform these actions:")
        for c in acting:
            out.append("")
            out.extend(_change_lines(c))
            out.extend(_auto_lines(plan, c))
        out.append("")
    else:
        out.append("No changes. The running deployments match the specs.")
        out.append("")
    if in_sync and acting:
        out.append(f"In sync: {', '.join(_subject(c) for c in in_sync)}.")
        out.append("")
    managed = [c for c in in_sync if c.replicas_from == "autoscaler"]
    for c in managed:  # the count is shown, never planned against spec.replicas
        out.append(f"  # deployment {c.deployment}: replicas: {c.replicas_after}{_managed(c)}")
    if managed:
        out.append("")
    for c in plan.blocked:
        out.append(f"  ! deployment {c.deployment} is blocked: {c.blocked}")
    if plan.blocked:
        out.append("")
    for c in plan.orphans:
        out.append(f"  # deployment {c.deployment} is not in the specs and is kept: "
                   f"{c.replicas_before} replica{'' if c.replicas_before == 1 else 's'} running "
                   "(apply --prune deletes it)")
    if plan.orphans:
        out.append("")
    out.append(plan.summary())
    return "\n".join(out) + "\n"


def render_json(plan: Plan) -> str:
    """The plan as indented JSON (stable key order) ending with a newline."""
    data = plan.to_dict()
    for change in data["changes"]:
        auto = auto_dict(plan, change["deployment"]) if change["kind"] == "deployment" else None
        if auto is not None:
            change["auto"] = auto
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
