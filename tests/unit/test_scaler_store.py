"""The autoscaler's files in the state directory (enova.observe.scaler.ScalerStore): persisted
state per deployment, the targets diff/apply/status plan with, and the gateway's wake requests."""

from __future__ import annotations

import json

import pytest

from enova.errors import PermanentError
from enova.observe.scaler import ScalerStore


def test_state_written_is_read_back_and_named_by_the_pinned_path(tmp_path):
    store = ScalerStore(tmp_path)
    data = {"target": 2, "last_up": 10.0, "start_seconds": 41.5, "updated_at": 12.0, "learned": {"in_flight": 6.0}}
    store.write("smollm2", data)
    assert store.read("smollm2") == data
    assert json.loads((tmp_path / "autoscaler" / "smollm2.json").read_text()) == data
    assert store.read("other") is None


def test_a_write_leaves_no_temporary_file_behind(tmp_path):
    store = ScalerStore(tmp_path)
    store.write("a", {"target": 1})
    store.write("a", {"target": 3})
    assert sorted(p.name for p in (tmp_path / "autoscaler").iterdir()) == ["a.json"]


def test_targets_maps_each_deployment_to_its_persisted_count(tmp_path):
    store = ScalerStore(tmp_path)
    assert store.targets() == {}
    store.write("b", {"target": 0})
    store.write("a", {"target": 2, "policy": "slo"})
    assert store.targets() == {"a": 2, "b": 0}
    store.remove("a")
    store.remove("a")  # idempotent
    assert store.targets() == {"b": 0}


@pytest.mark.parametrize("target", [-1, 1.5, "2", True, None])
def test_a_target_that_is_not_a_count_is_a_permanent_error_naming_the_file(tmp_path, target):
    store = ScalerStore(tmp_path)
    store.write("a", {"target": target})
    with pytest.raises(PermanentError, match=r"autoscaler/a\.json: target must be a whole number >= 0"):
        store.targets()


def test_an_unreadable_state_file_is_a_permanent_error(tmp_path):
    (tmp_path / "autoscaler").mkdir()
    (tmp_path / "autoscaler" / "a.json").write_text("{not json")
    with pytest.raises(PermanentError, match="unreadable autoscaler state"):
        ScalerStore(tmp_path).read("a")


def test_a_wake_request_is_written_with_its_time_and_cleared(tmp_path):
    store = ScalerStore(tmp_path)
    assert store.wakes() == {}
    store.wake("smollm2", 100.5)
    assert store.wake_path("smollm2") == tmp_path / "autoscaler" / "wake" / "smollm2"
    assert store.wakes() == {"smollm2": 100.5}
    assert store.targets() == {}  # wake requests are not states
    store.clear_wake("smollm2")
    store.clear_wake("smollm2")  # idempotent
    assert store.wakes() == {}


def test_a_wake_request_renewed_after_the_one_acted_on_is_kept(tmp_path):
    store = ScalerStore(tmp_path)
    store.wake("smollm2", 100.0)
    seen = store.wakes()["smollm2"]
    store.wake("smollm2", 101.0)  # the gateway asks again while the reconciler acts
    store.clear_wake("smollm2", seen=seen)
    assert store.wakes() == {"smollm2": 101.0}
    store.clear_wake("smollm2", seen=101.0)
    assert store.wakes() == {}


def test_a_wake_file_written_by_hand_counts_from_its_modification_time(tmp_path):
    store = ScalerStore(tmp_path)
    store.wake_dir.mkdir(parents=True)
    store.wake_path("smollm2").write_text("please\n")
    mtime = store.wake_path("smollm2").stat().st_mtime
    assert store.wakes() == {"smollm2": mtime}
