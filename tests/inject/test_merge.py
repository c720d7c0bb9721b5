"""merge_runs on hand-made shard results: one run back, or a refusal that names what differs."""

from __future__ import annotations

import pytest

from enova.errors import UsageError
from enova.inject.merge import merge_runs
from enova.inject.model import RequestResult, RunResult


def shard_run(i: int, n: int, count: int = 10, *, partial: bool = False, started_at: float = 100.0,
              **changes) -> RunResult:
    requests = [RequestResult(index=k, scheduled=k * 0.1, sent=k * 0.1, ok=True, status=200)
                for k in range(count) if k % n == i]
    values = dict(profile={"target": "smol", "arrival": {"process": "poisson", "rate": 10}}, target="http://h:9199",
                  model="smol", api="completions", seed=1, started_at=started_at, duration=1.0, requests=requests,
                  partial=partial, workers=2, shard=(i, n), name="chat")
    values.update(changes)
    return RunResult(**values)


def test_shards_join_into_one_run_sorted_by_index():
    merged = merge_runs([shard_run(2, 3, started_at=101.0), shard_run(0, 3), shard_run(1, 3, started_at=100.5)])

    assert [r.index for r in merged.requests] == list(range(10))
    assert merged.shard == (0, 1)
    assert merged.workers == 6
    assert merged.started_at == 100.0
    assert not merged.partial


def test_the_merged_run_is_partial_if_any_shard_was():
    assert merge_runs([shard_run(0, 2), shard_run(1, 2, partial=True)]).partial


def test_a_merged_run_survives_its_json_round_trip():
    merged = merge_runs([shard_run(0, 2), shard_run(1, 2)])

    assert RunResult.from_dict(merged.to_dict()) == merged


@pytest.mark.parametrize("field, value, shown", [
    ("seed", 2, "(1 vs 2)"),
    ("duration", 2.0, "(1.0 vs 2.0)"),
    ("model", "other", '("smol" vs "other")'),
    ("profile", {"target": "smol"}, "vs {\"target\": \"smol\"}"),
])
def test_runs_of_different_profiles_are_refused_naming_what_differs(field, value, shown):
    with pytest.raises(UsageError, match="not shards of one run") as err:
        merge_runs([shard_run(0, 2), shard_run(1, 2, **{field: value})], names=["a.json", "b.json"])

    assert f"a.json and b.json are not shards of one run: their {field} differs" in str(err.value)
    assert shown in str(err.value)


def test_a_missing_shard_is_refused():
    with pytest.raises(UsageError, match=r"shard 2/3 missing"):
        merge_runs([shard_run(0, 3), shard_run(1, 3)])


def test_the_same_shard_twice_is_refused():
    with pytest.raises(UsageError, match=r"a.json and b.json are both shard 0/2"):
        merge_runs([shard_run(0, 2), shard_run(0, 2)], names=["a.json", "b.json"])


def test_shards_of_different_splits_are_refused():
    with pytest.raises(UsageError, match=r"split the schedule differently \(run 1: 0/2, run 2: 1/3\)"):
        merge_runs([shard_run(0, 2), shard_run(1, 3)])


def test_a_request_in_two_shards_is_refused():
    a, b = shard_run(0, 2), shard_run(1, 2)
    b.requests.append(RequestResult(index=4, scheduled=0.4))

    with pytest.raises(UsageError, match="request 4 is in both run 1 and run 2"):
        merge_runs([a, b])


def test_nothing_to_merge_is_refused():
    with pytest.raises(UsageError, match="nothing to merge"):
        merge_runs([])
