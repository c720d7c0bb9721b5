"""Forwarding one request to a replica and its answer back to the client: the hot path.

`Proxy.open` takes a slot (`admission`), sends the request over the shared connection pool,
and returns once the replica's response headers arrived. A connection failure before that
(refused, reset, connect timeout) is retried once on another replica; nothing is retried once
a response has started. Connection failures and 5xx answers count toward ejecting the replica.
Then one of three ways back:
  - `buffered`: read the whole answer, count its usage, send it;
  - `passthrough`: an OpenAI SSE stream sent on event by event, timing tokens (TTFT, ITL) by
    substring search, parsing only the usage chunk (and dropping it if the gateway asked for
    it on the client's behalf);
  - `generate_stream`: a completions stream turned into /generate NDJSON (parses each event).
If the client goes away, the upstream connection is closed (the engine aborts the request)
and the slot is freed; if the replica breaks a started stream, an error event ends it.
When the request is traced (`ex.span`, see `tracing`), the request to the replica carries the
span's `traceparent`, and the exchange records why that replica, the queue wait, TTFT and usage.
Called by `server`'s handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from . import errors, sse
from .exchange import Exchange
from .generate import GenerateStream
from .metrics import GatewayMetrics
from .registry import Deployment, Registry
from .router import Replica
from .tracing import upstream_headers

log = logging.getLogger("enova.gateway")

_UPSTREAM_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
# Failures before any byte of the response: safe to send the request elsewhere.
_RETRYABLE = (aiohttp.ConnectionTimeoutError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


def _stream_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "upstream_error", "param": None, "code": "stream_broken"}}


def _routing(pool: Any, replica: Replica, queued: bool, waited: float) -> str:
    """Why a traced request went to `replica`: the router's choice, or the first slot freed."""
    if queued:
        return f"queued {waited * 1000:.1f} ms for a free slot; took the first one freed, on {replica.id}"
    low, tied = pool.last_pick
    why = f"fewest in flight ({low}, limit {replica.view.limit})"
    return why + (f", round-robin among {tied} tied" if tied > 1 else "")


class Upstream:
    """A replica's response with its slot; `close` frees both (idempotent)."""

    __slots__ = ("dep", "replica", "response", "_registry", "_complete", "_closed")

    def __init__(self, registry: Registry, dep: Deployment, replica: Replica, response: aiohttp.ClientResponse):
        self._registry = registry
        self.dep = dep
        self.replica = replica
        self.response = response
        self._complete = False
        self._closed = False

    def completed(self) -> None:
        """The whole body was read: the connection may go back to the pool."""
        self._complete = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._complete:
            self.response.release()
        else:
            self.response.close()       # drops the connection: the engine sees the disconnect
        self._registry.release(self.dep, self.replica)


class Proxy:
    def __init__(self, registry: Registry, metrics: GatewayMetrics, session: aiohttp.ClientSession, *,
                 retry_after: int = 5, clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.metrics = metrics
        self.session = session
        self.retry_after = retry_after
        self.clock = clock

    async def open(self, ex: Exchange, dep: Deployment, path: str, body: bytes) -> Upstream:
        """Send `body` to a replica of `dep`; return when its response headers arrived.
        Raises GatewayError (429/503 from admission, 502 unreachable, 504 no answer)."""
        traced = ex.span is not None
        if traced:
            pool, began = dep.pool, self.clock()
            picks, queued = pool.picks, dep.admission.depth > 0
        replica = await dep.admission.acquire()
        headers = _UPSTREAM_HEADERS
        if traced:
            ex.queue_wait = self.clock() - began
            ex.routing = _routing(pool, replica, queued or pool.picks != picks + 1, ex.queue_wait)
            headers = upstream_headers(ex.span, _UPSTREAM_HEADERS)
        tried: list[str] = []
        while True:
            ex.replica = replica.id
            try:
                response = await self.session.post(replica.base_url + path, data=body, headers=headers)
            except _RETRYABLE as exc:
                self.registry.record_failure(dep, replica, _describe(exc))
                self.registry.release(dep, replica)
                tried.append(replica.id)
                retry = dep.admission.try_acquire(tuple(tried)) if len(tried) == 1 else None
                if retry is None:
                    why = f"{replica.id}: {_describe(exc)}"
                    if len(tried) == 1:
                        why += "; no other replica free to retry on"
                    raise errors.upstream_unreachable(dep.name, why, self.retry_after) from exc
                log.info("retrying a request to %s on %s: %s failed to connect (%s)", dep.name, retry.id,
                         replica.id, _describe(exc))
                self.metrics.retries.labels(dep.name).inc()
                if traced:
                    ex.routing += f"; {replica.id} failed to connect, retried on {retry.id}"
                replica = retry
                continue
            except asyncio.TimeoutError as exc:     # connected, but no response headers in time
                self.registry.record_failure(dep, replica, "timed out")
                self.registry.release(dep, replica)
                raise errors.upstream_timeout(dep.name, replica.id) from exc
            except aiohttp.ClientError as exc:       # a malformed response: not retried
                self.registry.record_failure(dep, replica, _describe(exc))
                self.registry.release(dep, replica)
                raise errors.upstream_unreachable(dep.name, f"{replica.id}: {_describe(exc)}", self.retry_after) from exc
            except BaseException:
                self.registry.release(dep, replica)
                raise
            if response.status >= 500:
                self.registry.record_failure(dep, replica, f"HTTP {response.status}")
            else:
                self.registry.record_success(replica)
            return Upstream(self.registry, dep, replica, response)

    def _headers(self, up: Upstream, content_type: str | None = None) -> dict[str, str]:
        return {"Content-Type": content_type or up.response.headers.get("Content-Type", "application/json"),
                "X-Enova-Deployment": up.dep.name, "X-Enova-Replica": up.replica.id}

    def _usage(self, ex: Exchange, dep: str, usage: Any) -> None:
        prompt, completion = sse.usage_counts(usage)
        if isinstance(usage, dict):
            ex.input_tokens, ex.output_tokens = prompt, completion
        if prompt:
            self.metrics.prompt_tokens.labels(dep).inc(prompt)
        if completion:
            self.metrics.generation_tokens.labels(dep).inc(completion)

    def _succeeded(self, ex: Exchange, dep: str) -> None:
        ex.succeeded = True
        self.metrics.e2e.labels(dep).observe(self.clock() - ex.started)

    @staticmethod
    def is_stream(up: Upstream) -> bool:
        return up.response.status == 200 and up.response.content_type == "text/event-stream"

    async def buffered(self, ex: Exchange, up: Upstream, translate: Callable[[dict], dict] | None = None
                       ) -> web.Response:
        """Read the replica's whole answer and return it (translated for /generate if 200)."""
        try:
            body = await up.response.read()
            up.completed()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.registry.record_failure(up.dep, up.replica, _describe(exc))
            raise errors.upstream_unreachable(up.dep.name, f"{up.replica.id}: {_describe(exc)}",
                                              self.retry_after) from exc
        finally:
            up.close()
        status = up.response.status
        ex.status = status
        content_type = None
        if status == 200:
            try:
                answer = json.loads(body)
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                self._usage(ex, up.dep.name, answer.get("usage"))
                if translate is not None:
                    body = json.dumps(translate(answer)).encode()
                    content_type = "application/json"
                self._succeeded(ex, up.dep.name)
        ex.response_bytes = len(body)
        return web.Response(body=body, status=status, headers=self._headers(up, content_type))

    async def passthrough(self, request: web.Request, ex: Exchange, up: Upstream, *, drop_usage: bool
                          ) -> web.StreamResponse:
        """Send an SSE stream on as it comes; time its tokens; count (and maybe drop) its usage."""
        def emit(k: str, event: bytes) -> bytes:
            if k is sse.USAGE:
                self._usage(ex, up.dep.name, (sse.data(event) or {}).get("usage"))
                if drop_usage:
                    return b""
            return event + b"\n\n"

        def broken(message: str) -> bytes:
            return b"data: " + json.dumps(_stream_error(message)).encode() + b"\n\n"

        return await self._relay(request, ex, up, None, emit, broken)

    async def generate_stream(self, request: web.Request, ex: Exchange, up: Upstream, gs: GenerateStream
                              ) -> web.StreamResponse:
        """A completions stream as /generate NDJSON lines."""
        def emit(k: str, event: bytes) -> bytes:
            if k is sse.DONE:
                return gs.final()
            parsed = sse.data(event) if k is not sse.OTHER else None
            if parsed is None:
                return b""
            if k is sse.USAGE:
                self._usage(ex, up.dep.name, parsed.get("usage"))
            return gs.event(parsed)

        def broken(message: str) -> bytes:
            return json.dumps(_stream_error(message)).encode() + b"\n"

        return await self._relay(request, ex, up, "application/x-ndjson", emit, broken)

    async def _relay(self, request: web.Request, ex: Exchange, up: Upstream, content_type: str | None,
                     emit: Callable[[str, bytes], bytes], broken: Callable[[str], bytes]) -> web.StreamResponse:
        """The stream loop: split events, time tokens, write what `emit` makes of each event.
        Ends the client's stream with `broken(message)` if the replica fails mid-way; closes the
        upstream connection if the client goes away (CancelledError or a failed write)."""
        dep = up.dep.name
        ttft, itl = self.metrics.ttft.labels(dep), self.metrics.itl.labels(dep)
        resp = web.StreamResponse(status=200, headers=self._headers(up, content_type))
        ex.status = 200
        splitter = sse.Splitter()
        last = None
        done = False
        try:
            await resp.prepare(request)
            try:
                async for chunk in up.response.content.iter_any():
                    events = splitter.feed(chunk)
                    if not events:
                        continue
                    out = []
                    for event in events:
                        k = sse.kind(event)
                        if k is sse.TOKEN:
                            now = self.clock()
                            if last is None:
                                ex.ttft = now - ex.started
                                ttft.observe(ex.ttft)
                            else:
                                itl.observe(now - last)
                            last = now
                        elif k is sse.DONE:
                            done = True
                        out.append(emit(k, event))
                    data = b"".join(out)
                    if data:
                        await resp.write(data)
                        ex.response_bytes += len(data)
                rest = splitter.rest()
                if rest:
                    await resp.write(rest)
                    ex.response_bytes += len(rest)
                up.completed()
            except ConnectionResetError:        # writing to a client that went away
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("replica %s/%s broke a stream: %s", dep, up.replica.id, _describe(exc))
                self.registry.record_failure(up.dep, up.replica, _describe(exc))
                ex.stream_broken = True
                last_words = broken(f"replica {up.replica.id} broke the stream: {_describe(exc)}")
                await resp.write(last_words)
                ex.response_bytes += len(last_words)
            await resp.write_eof()
        except ConnectionResetError:
            ex.client_gone = True
            return resp
        except asyncio.CancelledError:
            ex.client_gone = True
            raise
        finally:
            up.close()
        if done and not ex.stream_broken:
            self._succeeded(ex, dep)
        return resp
