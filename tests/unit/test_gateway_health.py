"""Passive health of a replica (enova.gateway.health) with an explicit clock."""

from __future__ import annotations

from enova.gateway.health import Health


def test_three_consecutive_failures_eject_and_a_success_in_between_resets_the_count():
    h = Health(eject_after=3, probe_interval=2.0)
    assert not h.record_failure(0.0) and not h.record_failure(1.0)
    h.record_success(1.5)
    assert not h.record_failure(2.0) and not h.record_failure(3.0)
    assert h.record_failure(4.0) is True
    assert h.ejected and h.ejected_at == 4.0
    assert not h.record_failure(4.5), "an ejected replica is ejected once"


def test_an_ejected_replica_is_probed_every_interval_until_a_probe_passes():
    h = Health(eject_after=1, probe_interval=2.0)
    h.record_failure(10.0)
    assert not h.probe_due(11.9) and h.probe_due(12.0)
    h.probe_started(12.0)
    assert not h.probe_due(13.0)
    assert h.probe_result(False, 12.5) is False and h.ejected
    assert not h.probe_due(14.4) and h.probe_due(14.5)
    assert h.probe_result(True, 14.6) is True
    assert not h.ejected and h.consecutive_failures == 0 and not h.probe_due(100.0)


def test_a_success_does_not_readmit_an_ejected_replica():
    h = Health(eject_after=1)
    h.record_failure(0.0)
    h.record_success(1.0)
    assert h.ejected


def test_after_readmission_it_takes_the_full_count_again_to_eject():
    h = Health(eject_after=2, probe_interval=1.0)
    h.record_failure(0.0)
    h.record_failure(0.1)
    h.probe_result(True, 1.2)
    assert not h.record_failure(2.0)
    assert h.record_failure(2.1)


def test_a_probe_result_for_a_replica_not_ejected_changes_nothing():
    h = Health()
    assert h.probe_result(True, 0.0) is False and h.probe_result(False, 0.0) is False
    assert not h.ejected and h.consecutive_failures == 0
