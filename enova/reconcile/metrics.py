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

and the GPU collector (enova.monitor.gpu_exporter). The gateway's subject is deployment="gateway".
`serve` starts prometheus-client's HTTP server in a daemon thread on 127.0.0.1.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from enova.monitor.gpu_exporter import GpuCollector, nvml_module

DEFAULT_METRICS_PORT = 9188
METRICS_HOST = "127.0.0.1"


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
