"""Which replica of a deployment gets the next request: the routable one with the fewest
requests in flight, below its limit; ties go round-robin in id order (deterministic).

`Replica` is the gateway's live view of one replica: its record (`view`), the requests it
has in flight, its passive `Health`, and whether its record is gone. A replica is routable
only while its record says `ready` and it is not ejected; a draining, stopping or removed
replica keeps its in-flight requests until they finish, then (if removed) is forgotten.
`Pool` holds a deployment's replicas and follows membership snapshots. Pure and
single-threaded (the gateway's event loop); called by `admission` and `registry`.
"""

from __future__ import annotations

from collections.abc import Iterable

from .health import Health
from .membership import DeploymentView, ReplicaView


class Replica:
    __slots__ = ("view", "in_flight", "health", "gone")

    def __init__(self, view: ReplicaView, health: Health):
        self.view = view
        self.in_flight = 0
        self.health = health
        self.gone = False           # its record disappeared; kept only while requests are in flight

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def deployment(self) -> str:
        return self.view.deployment

    @property
    def base_url(self) -> str:
        host = self.view.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.view.port}"

    @property
    def routable(self) -> bool:
        """May receive new requests (capacity aside)."""
        return not self.gone and self.view.state == "ready" and not self.health.ejected

    @property
    def has_capacity(self) -> bool:
        return self.in_flight < self.view.limit

    @property
    def status(self) -> str:
        """What the admin API shows: gone, the record's state if not ready, ejected, or ready."""
        if self.gone:
            return "gone"
        if self.view.state != "ready":
            return self.view.state
        return "ejected" if self.health.ejected else "ready"


class Pool:
    """The replicas of one deployment."""

    def __init__(self, name: str, *, eject_after: int = 3, probe_interval: float = 2.0):
        self.name = name
        self.replicas: dict[str, Replica] = {}
        self._eject_after = eject_after
        self._probe_interval = probe_interval
        self._rr = 0
        self.picks = 0              # calls to pick (a traced request tells whether it queued by it)
        self.last_pick = (0, 0)     # (in flight on the chosen replica before it, replicas tied for it)

    def sync(self, view: DeploymentView | None) -> list[Replica]:
        """Follow a snapshot (None: the deployment's records are gone). Replicas absent from it
        are marked gone and forgotten once idle. Returns the replicas forgotten now."""
        seen = set()
        for rv in (view.replicas if view else ()):
            seen.add(rv.id)
            current = self.replicas.get(rv.id)
            if current is None:
                self.replicas[rv.id] = Replica(rv, Health(self._eject_after, self._probe_interval))
            else:
                current.view = rv
                current.gone = False
        for rid, replica in self.replicas.items():
            if rid not in seen:
                replica.gone = True
        return self.collect()

    def collect(self) -> list[Replica]:
        """Forget gone replicas with nothing in flight; return them."""
        done = [r for r in self.replicas.values() if r.gone and r.in_flight == 0]
        for r in done:
            del self.replicas[r.id]
        return done

    def has_routable(self, exclude: Iterable[str] = ()) -> bool:
        return any(r.routable and r.id not in exclude for r in self.replicas.values())

    def pick(self, exclude: Iterable[str] = ()) -> Replica | None:
        """The routable replica below its limit with the fewest requests in flight, or None."""
        self.picks += 1
        excluded = set(exclude)
        best: list[Replica] = []
        low = None
        for r in self.replicas.values():
            if not r.routable or not r.has_capacity or r.id in excluded:
                continue
            if low is None or r.in_flight < low:
                low, best = r.in_flight, [r]
            elif r.in_flight == low:
                best.append(r)
        if not best:
            return None
        self.last_pick = (low, len(best))
        if len(best) == 1:
            return best[0]
        best.sort(key=lambda r: r.id)
        chosen = best[self._rr % len(best)]
        self._rr += 1
        return chosen

    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas.values())
