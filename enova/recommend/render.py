"""A Recommendation or a Refusal as text for a terminal and as JSON for `--output json`: one
row per figure (key, human value, reason), then the engine args as YAML a user can paste into a
Deployment's spec. Pure, no I/O; called by the CLI (`enova recommend`) and by `enova diff`
when it shows what `engine.args: auto` chose.
"""

from __future__ import annotations

from typing import Any

import yaml

from enova.recommend.model import GiB, MiB, Figure, Recommendation, Refusal

# the keys every JSON recommendation carries at top level, in this order
SUMMARY_KEYS = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "max_num_seqs",
                "max_num_batched_tokens", "weight_bytes", "kv_cache_bytes_per_token", "kv_cache_tokens",
                "replicas")


def human(value: Any, unit: str = "") -> str:
    """'13.49 GiB', '128.0 KiB', '32,768 tokens', '0.9', '-' for None."""
    if value is None:
        return "-"
    if unit == "bytes" and isinstance(value, (int, float)):
        return human_bytes(value)
    if unit == "tokens" and isinstance(value, (int, float)):
        return f"{value:,.0f} tokens"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def human_bytes(n: float) -> str:
    size = abs(n)
    if size >= GiB:
        return f"{n / GiB:.2f} GiB"
    if size >= MiB:
        return f"{n / MiB:.1f} MiB"
    if size >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n:,.0f} B"


def render_text(rec: Recommendation) -> str:
    """The figures as a table (a `*` marks what the caller set), notes, then engine.args as YAML."""
    lines = [f"model:  {rec.model}", f"target: {rec.target}", ""]
    lines += _table(rec.figures, set(rec.user_set))
    if rec.user_set:
        lines.append("  * set by you, kept as given")
    if rec.notes:
        lines += ["", "notes:"] + [f"  - {note}" for note in rec.notes]
    lines += ["", "engine.args (paste under a Deployment's spec):", args_yaml(rec.args)]
    return "\n".join(lines).rstrip("\n") + "\n"


def args_yaml(args: dict[str, Any]) -> str:
    """`engine: {args: ...}` in block style, the args in the recommendation's order."""
    return yaml.safe_dump({"engine": {"args": dict(args)}}, sort_keys=False, default_flow_style=False).rstrip("\n")


def _table(figures: tuple[Figure, ...], user_set: set[str]) -> list[str]:
    rows = [(f.key + (" *" if f.key in user_set else ""), human(f.value, f.unit), f.reason) for f in figures]
    key_w = max((len(r[0]) for r in rows), default=3)
    val_w = max((len(r[1]) for r in rows), default=5)
    head = f"  {'key':<{key_w}}  {'value':<{val_w}}  reason"
    return [head] + [f"  {k:<{key_w}}  {v:<{val_w}}  {why}" for k, v, why in rows]


def figure_json(f: Figure) -> dict[str, Any]:
    return {"key": f.key, "value": f.value, "unit": f.unit, "reason": f.reason}


def to_json(rec: Recommendation) -> dict[str, Any]:
    """The recommendation as plain data: the summary keys at top level (tensor_parallel_size 1
    and gpu_memory_utilization None on the CPU engine), then args, figures, device, model,
    target, user_set and notes."""
    out: dict[str, Any] = {key: _summary_value(rec, key) for key in SUMMARY_KEYS}
    out.update({
        "device": rec.device, "model": rec.model, "target": rec.target, "args": dict(rec.args),
        "figures": [figure_json(f) for f in rec.figures], "user_set": list(rec.user_set),
        "notes": list(rec.notes),
    })
    return out


def _summary_value(rec: Recommendation, key: str) -> Any:
    if key in rec.args:
        return rec.args[key]
    if key == "tensor_parallel_size" and rec.device == "cpu":
        return 1
    try:
        return rec.value(key)
    except KeyError:
        return None


def refusal_json(refusal: Refusal) -> dict[str, Any]:
    """A refusal as plain data: what does not fit, the arithmetic, what would."""
    return {"refused": True, "model": refusal.model, "target": refusal.target,
            "arithmetic": refusal.arithmetic, "suggestions": list(refusal.suggestions),
            "figures": [figure_json(f) for f in refusal.figures], "message": str(refusal),
            "exit_code": refusal.exit_code}


def render_refusal(refusal: Refusal) -> str:
    """The refusal's message as text (the CLI prints it on stderr and exits 2)."""
    return str(refusal) + "\n"
