"""The gateway: enova's data plane on :9199, one stable endpoint in front of every replica.

Clients call `/generate` (the seed's API) or the OpenAI API (`/v1/completions`,
`/v1/chat/completions`, `/v1/models`); the gateway routes each request by model to a ready
replica with the fewest requests in flight, queues when all are full, retries a failed
connection once elsewhere, ejects replicas that keep failing, and follows its endpoint
source (the state directory that `enova apply` writes), so that replicas come and go (scale,
rolling replace, drain) without a client noticing. A deployment that scales from zero keeps its
route with no replica: its requests are held while the gateway asks the reconciler for one. It measures the seed's API Service metrics at /metrics.

Modules, one purpose each:
  config      GatewayConfig, the token file            errors     OpenAI-style error answers
  membership  endpoint views (snapshot), diffs          source     EndpointSource; the state directory one
  watch       source changes + rescan -> registry
  health      ejection / re-admission state machine     prober     /health probes of ejected replicas
  router      pick the least-loaded routable replica    admission  slots and the bounded FIFO queue
  hold        scale from zero: hold timeout, wake file
  registry    live deployments, default, admin view     exchange   one request's metrics
  proxy       forwarding, retry, streams (hot path)     sse        cheap SSE event handling
  generate    /generate <-> /v1/completions             metrics    Prometheus families
  server      aiohttp app, handlers, lifecycle          admin      client: wait until drained
  __main__    python -m enova.gateway

Entry points: `server.run_gateway(config, stop_event=None)` (blocking), `server.serve` (async),
`server.Gateway` (start/stop in a running loop), `server.build_app(config)` (tests).

Why aiohttp (server and client). Measured on this 2-core machine with
tests/gateway/bench_proxy_machinery.py (an SSE upstream stamping each event, each proxy in
its own process, three runs): the latency a proxy adds per streamed token was below the
noise for both candidates (median +0 to +0.3 ms at 1 and at 16 concurrent paced streams,
for aiohttp and for uvicorn+starlette+httpx alike), but the CPU per token was not: unpaced,
aiohttp relayed 54k-177k events/s at 16 streams against 26k-58k for uvicorn (with uvloop and
httptools) + starlette + httpx, and 53k-106k against 22k-40k for one stream: two to three
times less CPU per token, which matters on a host whose cores also run the engine. uvloop
gave aiohttp no consistent gain, so it is not used. aiohttp also gives true streaming both
ways, one shared pooled client session, and handler cancellation when a client disconnects.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Gateway", "GatewayConfig", "build_app", "run_gateway", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `enova.gateway.admin` (used by apply) does not import the server.
    if name == "GatewayConfig":
        from .config import GatewayConfig
        return GatewayConfig
    if name in ("Gateway", "build_app", "run_gateway", "serve"):
        from . import server
        return getattr(server, name)
    raise AttributeError(name)
