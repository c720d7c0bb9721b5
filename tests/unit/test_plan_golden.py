"""Golden plans: specs + observed replicas in, text and JSON plans out, compared with
checked-in files. Refresh with `pytest tests/unit/test_plan_golden.py --update-golden`.

Each case is a folder under tests/golden/: specs/ (the desired state), observed.json (what
the runtime reports: replicas per deployment with their config, state, recorded state and
start time, the deployment record's in-place fields under "serving" and "settings", and under
"$gateway" the gateway's config and liveness),
case.json ({"prune": bool, "has_changes": bool, and "scaled": {deployment: the autoscaler's persisted
target} for deployments with `scaling`}), plan.txt and plan.json (the expected renderings).
"""

import json
from pathlib import Path

import pytest

from enova.plan.desired import config_hash, desired_gateway, desired_state
from enova.plan.diff import compute_plan
from enova.plan.model import ObservedDeployment, ObservedGateway, ObservedReplica, ReplicaState
from enova.plan.render import render_json, render_text
from enova.spec.loader import load_specs

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "case.json").exists())


def load_observed(path: Path) -> dict[str, ObservedDeployment]:
    data = json.loads(path.read_text())
    data.pop("$gateway", None)
    out = {}
    for name, dep in data.items():
        replicas = []
        for r in dep["replicas"]:
            replicas.append(ObservedReplica(
                id=r["id"], config=r["config"], config_hash=r.get("config_hash") or config_hash(r["config"]),
                state=ReplicaState(r.get("state", "ready")), started_at=r.get("started_at", 0.0),
                where=f"pid {r['pid']}" if r.get("pid") else "", port=r.get("port"), detail=r.get("detail", ""),
                recorded=r.get("recorded", "")))
        out[name] = ObservedDeployment(name=name, replicas=tuple(replicas), serving=dep.get("serving"),
                                       settings=dep.get("settings"))
    return out


def load_observed_gateway(path: Path) -> ObservedGateway | None:
    gateway = json.loads(path.read_text()).get("$gateway")
    if gateway is None:
        return None
    return ObservedGateway(config_hash=config_hash(gateway["config"]), config=gateway["config"],
                           alive=gateway.get("alive", True), detail=gateway.get("detail", ""))


@pytest.mark.parametrize("case", CASES)
def test_plan_matches_golden_files(case, update_golden, monkeypatch):
    folder = GOLDEN / case
    monkeypatch.chdir(folder)  # spec file names in plans are relative to here
    options = json.loads((folder / "case.json").read_text())
    specs = load_specs(Path("specs"))
    plan = compute_plan(desired_state(specs, options.get("scaled")), load_observed(folder / "observed.json"),
                        prune=options.get("prune", False), gateway=desired_gateway(specs),
                        observed_gateway=load_observed_gateway(folder / "observed.json"))
    # absolute paths (a resolved token_file) are shown relative to the case, so golden files hold anywhere
    outputs = {name: text.replace(str(folder), "<case>")
               for name, text in (("plan.txt", render_text(plan)), ("plan.json", render_json(plan)))}
    for name, text in outputs.items():
        if update_golden:
            (folder / name).write_text(text)
        assert text == (folder / name).read_text(), f"{case}/{name} differs; rerun with --update-golden to accept"
    assert plan.has_changes == options["has_changes"]


def test_every_case_is_checked():
    assert len(CASES) >= 16
