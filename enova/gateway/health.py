"""Passive health of one replica: ejection after repeated failures, re-admission after a probe.

A replica that fails `eject_after` times in a row (a connection error, or a 5xx from the
engine) is ejected: it gets no new requests. While ejected, its /health is probed every
`probe_interval` seconds; the first probe that passes re-admits it with a clean count. A
success resets the count. Pure: `now` is always passed in (a monotonic clock in the gateway,
a fake one in tests). Used by `router.Replica`; driven by `proxy` and `prober`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Health:
    eject_after: int = 3
    probe_interval: float = 2.0
    consecutive_failures: int = 0
    ejected: bool = False
    ejected_at: float | None = None
    next_probe_at: float | None = None

    def record_success(self, now: float) -> None:
        """A request got a non-5xx answer. Does not re-admit an ejected replica (a probe does)."""
        self.consecutive_failures = 0

    def record_failure(self, now: float) -> bool:
        """A request failed. Returns True when this failure ejected the replica."""
        self.consecutive_failures += 1
        if not self.ejected and self.consecutive_failures >= self.eject_after:
            self.ejected = True
            self.ejected_at = now
            self.next_probe_at = now + self.probe_interval
            return True
        return False

    def probe_due(self, now: float) -> bool:
        return self.ejected and self.next_probe_at is not None and now >= self.next_probe_at

    def probe_started(self, now: float) -> None:
        """A probe is under way; the next one is not due before another interval."""
        self.next_probe_at = now + self.probe_interval

    def probe_result(self, ok: bool, now: float) -> bool:
        """The outcome of a /health probe. Returns True when it re-admitted the replica."""
        if not self.ejected:
            return False
        if ok:
            self.ejected = False
            self.ejected_at = None
            self.next_probe_at = None
            self.consecutive_failures = 0
            return True
        self.next_probe_at = now + self.probe_interval
        return False
