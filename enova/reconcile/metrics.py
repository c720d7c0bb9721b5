"""The reconciler's own Prometheus metrics, and the `/metrics` server that shows them.

One registry per Reconciler (never prometheus-client's global default), so tests and two
controllers in one process never collide. The controller counts where it records events:

    enova_reconciler_passes_total{deployment,result}          a pass ended; result = the condition
                                                              it left (Ready, Reconciling, Stalled),
                                                              Error if it raised, Absent if the
                                                              deployment is neither wanted nor running
    enova_reconciler_errors_total{deployment,reason}          a failed pass or a crash loop; reason as
                                                              its Warning event (Retrying, StartFailed,
                                                              CrashLoopBackOff, Stalled)
    enova_reconciler_actions_total{deployment,action}         a change applied (create, scale, replace,
                                                              update, delete)
    enova_reconciler_autoscaler_decisions_total{deployment,direction}   a target changed (up, down)
    enova_reconciler_up                                       1 while the loop runs
    enova_replica_state{deployment,replica,state}             1 for each replica record, labelled with
                                                              its state (starting, ready, draining,
                                                              stopping), read from the state directory
                                                              at scrape time (`watch_replicas`)

and the GPU collector (enova.monitor.gpu_exporter). The gateway's subject is deployment="gateway".
A subject's StartFailed and CrashLoopBackOff error series exist at 0 from its first pass
(`seen`), so that its first failure is an increase Prometheus sees (EnovaReplicaStartFailing),
not a series born at 1. `serve` starts prometheus-client's HTTP server in a daemon thread on
127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from enova.errors import EnovaError
from enova.monitor.gpu_exporter import GpuCollector, nvml_module
from enova.monitor.rules import REPLICA_STATE, START_FAILURES

DEFAULT_METRICS_PORT = 9188
METRICS_HOST = "127.0.0.1"


class _ReplicaStates(Collector):
    """enova_replica_state, from the replica records at each scrape (a few small files)."""

    def __init__(self, records: Callable[[], Iterable]):
        self.records = records

    def collect(self):
        family = GaugeMetricFamily(REPLICA_STATE, "1 for each replica enova records, labelled with its "
                                   "state: starting, ready, draining or stopping.",
                                   labels=["deployment", "replica", "state"])
        try:
            records = sorted(self.records(), key=lambda r: (r.deployment, r.id))
        except (OSError, EnovaError):    # an unreadable record: the reconciler's pass reports it
            records = []
        for r in records:
            family.add_metric([r.deployment, r.id, r.state], 1)
        yield family


class ReconcilerMetrics:
    def __init__(self, *, gpu: GpuCollector | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.passes = Counter("enova_reconciler_passes", "Reconcile passes, by the condition each left.",
                              ["deployment", "result"], registry=r)
        self.errors = Counter("enova_reconciler_errors", "Failed passes and crash loops, by event reason.",
                              ["deployment", "reason"], registry=r)
        self.actions = Counter("enova_reconciler_actions", "Changes applied, by plan action.",
                               ["deployment", "action"], registry=r)
        self.decisions = Counter("enova_reconciler_autoscaler_decisions",
                                 "Autoscaler decisions that changed a deployment's target, by direction.",
                                 ["deployment", "direction"], registry=r)
        self.up = Gauge("enova_reconciler_up", "1 while the reconciler's loop runs.", registry=r)
        r.register(gpu if gpu is not None else GpuCollector(nvml_module()))
        self._server = None
        self._seen: set[str] = set()
        self._states: _ReplicaStates | None = None

    def watch_replicas(self, records: Callable[[], Iterable]) -> None:
        """Export enova_replica_state from `records()` (the state directory's replica records,
        read at scrape time). A second call replaces the source."""
        if self._states is None:
            self._states = _ReplicaStates(records)
            self.registry.register(self._states)
        self._states.records = records

    def seen(self, subject: str) -> None:
        """Create the subject's start-failure error series at 0 (once)."""
        if subject not in self._seen:
            self._seen.add(subject)
            for reason in START_FAILURES:
                self.errors.labels(subject, reason)

    def serve(self, port: int, host: str = METRICS_HOST) -> int:
        """Serve `/metrics` on host:port in a daemon thread; returns the bound port (port 0 is
        not passed here: 0 means disabled to the caller). Raises OSError when the port is taken.
        Not idempotent: call once, then `close`."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return server.server_address[1]

    def close(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
