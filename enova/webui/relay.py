"""The page's API: `/api/models` and `/api/chat`, relayed to the gateway's OpenAI API.

`/api/chat` checks the page's body (`ChatRequest`: a bad field is a 422 naming it), sends
`/v1/chat/completions` with `stream: true` and relays the gateway's server-sent events to the
browser as they arrive, unchanged. When the browser goes away (the page's Stop aborts its
fetch) the handler is cancelled (the server runs with handler_cancellation) and the upstream
response is closed, so the gateway cancels the engine's request and generation stops.

The bearer token sent upstream: the `Authorization` header the page sent (a token typed in its
settings), else the token file's (`--token-file`), else none.

Anything that is not an answer becomes `{"error": {"kind", "message", "retry_after",
"detail"}}` with a status the page can act on; `message` is plain words for a person:
  unreachable  502  connection refused / reset, no route: "is it running? `enova status`"
  timeout      504  no answer within the read timeout
  unavailable  503  the gateway has no ready replica (Retry-After kept)
  busy         429  the gateway's queue is full or timed out (Retry-After kept)
  unauthorized 401/403  the gateway refused the token
  invalid      4xx  the gateway refused the request (unknown model, too many tokens): its words
  upstream     502  the gateway answered 5xx
A stream the gateway breaks after it started ends with one such error as an SSE event.
Runs on the server's event loop; called by `server`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import TokenFile, WebUIConfig

log = logging.getLogger("enova.webui")

MAX_TOKENS_LIMIT = 32768


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class ChatRequest(BaseModel):
    """What the page sends. Sampling bounds are the OpenAI API's."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=1000)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, le=MAX_TOKENS_LIMIT)

    def upstream_body(self) -> dict[str, Any]:
        return {"model": self.model, "messages": [m.model_dump() for m in self.messages],
                "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "stream": True, "stream_options": {"include_usage": True}}


class Refusal(Exception):
    """An answer the page gets instead of a stream: status, kind, plain message."""

    def __init__(self, status: int, kind: str, message: str, *, retry_after: int | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": {"kind": self.kind, "message": self.message, "retry_after": self.retry_after,
                          "detail": self.detail}}

    def response(self) -> web.Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return web.json_response(self.body(), status=self.status, headers=headers)


def unreachable(config: WebUIConfig, detail: str) -> Refusal:
    return Refusal(502, "unreachable", f"The LLM service at {config.gateway} is not answering — is it running? "
                   "Check with `enova status`.", detail=detail)


def invalid_body(exc: ValidationError) -> Refusal:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    message = f"{field}: {first['msg']}"
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return Refusal(422, "invalid", message)


def _retry_after(value: str | None) -> int | None:
    """Retry-After in whole seconds; the HTTP-date form is not used by the gateway and is ignored."""
    if value is None:
        return None
    try:
        seconds = int(value.strip())
    except ValueError:
        return None
    return max(seconds, 0)


def _gateway_message(raw: bytes) -> str | None:
    """The message of an OpenAI-style error body ({"error": {"message"}}), else a short text."""
    try:
        data = json.loads(raw)
    except ValueError:
        text = raw.decode(errors="replace").strip()
        return text[:500] or None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
    return None


def refusal_from(config: WebUIConfig, status: int, headers: Any, raw: bytes) -> Refusal:
    """The page's answer for a gateway response that is not a 200."""
    retry = _retry_after(headers.get("Retry-After"))
    detail = _gateway_message(raw)
    if status == 503:
        wait = f"retry in {retry} s" if retry is not None else "retry in a moment"
        return Refusal(503, "unavailable", f"The LLM service at {config.gateway} has no model ready to answer "
                       f"right now (starting, or scaled to zero); {wait}.", retry_after=retry, detail=detail)
    if status == 429:
        wait = f"retry in {retry} s" if retry is not None else "retry in a moment"
        return Refusal(429, "busy", f"The LLM service is busy; {wait}.", retry_after=retry, detail=detail)
    if status in (401, 403):
        return Refusal(status, "unauthorized", f"The gateway at {config.gateway} refused the token: enter the "
                       "gateway's token under Settings, or start the web UI with --token-file.", detail=detail)
    if 400 <= status < 500:
        return Refusal(status, "invalid", detail or f"The gateway refused the request (HTTP {status}).",
                       detail=detail)
    return Refusal(502, "upstream", f"The LLM service at {config.gateway} failed (HTTP {status}); "
                   "see `enova status` and the gateway's log.", retry_after=retry, detail=detail)


class Relay:
    """The two API handlers over one pooled client session (opened by `start`, closed by `close`)."""

    def __init__(self, config: WebUIConfig, token_file: TokenFile | None):
        self.config = config
        self.token_file = token_file
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout,
                                        sock_read=self.config.read_timeout)
        # trust_env=False: never route the gateway's traffic (and its token) through a proxy from the environment
        self.session = aiohttp.ClientSession(timeout=timeout, trust_env=False, auto_decompress=False)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _headers(self, request: web.Request) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        given = request.headers.get("Authorization", "").strip()
        if given:
            headers["Authorization"] = given
        elif self.token_file is not None:
            token = self.token_file.token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
        return headers

    def _refusal(self, exc: Exception) -> Refusal:
        if isinstance(exc, asyncio.TimeoutError):
            return Refusal(504, "timeout", f"The LLM service at {self.config.gateway} did not answer within "
                           f"{self.config.read_timeout:g} s.", detail=str(exc) or "timeout")
        return unreachable(self.config, str(exc) or type(exc).__name__)

    async def models(self, request: web.Request) -> web.Response:
        """GET /api/models -> {"models": [id, ...]} (the gateway's /v1/models, in its order)."""
        assert self.session is not None
        try:
            async with self.session.get(self.config.gateway_url + "/v1/models", headers=self._headers(request),
                                        timeout=aiohttp.ClientTimeout(total=30,
                                                                      sock_connect=self.config.connect_timeout)) as up:
                raw = await up.read()
                if up.status != 200:
                    return refusal_from(self.config, up.status, up.headers, raw).response()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return self._refusal(exc).response()
        try:
            data = json.loads(raw)["data"]
            models = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        except (ValueError, KeyError, TypeError):
            return Refusal(502, "upstream", f"The service at {self.config.gateway} did not answer /v1/models as "
                           "an enova gateway does; is that the right --serving-port?").response()
        return web.json_response({"models": models})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST /api/chat (ChatRequest) -> the gateway's SSE stream, relayed as it arrives."""
        assert self.session is not None
        if request.content_type != "application/json":
            return Refusal(415, "invalid", "send the chat request as application/json").response()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return Refusal(413, "invalid", f"the chat request is larger than {self.config.max_body_bytes} bytes; "
                           "clear the conversation or shorten the message").response()
        try:
            body = ChatRequest.model_validate_json(raw)
        except ValidationError as exc:
            return invalid_body(exc).response()
        headers = {**self._headers(request), "Accept": "text/event-stream"}
        try:
            up = await self.session.post(self.config.gateway_url + "/v1/chat/completions",
                                         json=body.upstream_body(), headers=headers)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return self._refusal(exc).response()
        try:
            if up.status != 200:
                try:
                    raw_err = await up.read()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    raw_err = b""
                return refusal_from(self.config, up.status, up.headers, raw_err).response()
            return await self._relay(request, up)
        finally:
            # Reached on success, on a refusal, and on cancellation (the browser went away):
            # closing an unfinished response closes its connection, which the gateway reads as
            # the client leaving and cancels the engine's request.
            up.close()

    async def _relay(self, request: web.Request, up: aiohttp.ClientResponse) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})
        deployment = up.headers.get("X-Enova-Deployment")
        if deployment:
            resp.headers["X-Enova-Deployment"] = deployment
        await resp.prepare(request)
        while True:
            try:
                chunk = await up.content.readany()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # The gateway went away mid-answer: end the stream with an error event the page shows.
                refusal = self._refusal(exc)
                log.warning("the gateway broke a stream: %s", refusal.detail)
                await resp.write(b"\n\ndata: " + json.dumps(refusal.body()).encode() + b"\n\n")
                break
            if not chunk:
                break
            await resp.write(chunk)     # raises if the browser went away; the caller closes upstream
        await resp.write_eof()
        return resp
