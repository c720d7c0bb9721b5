"""Reading an answer as it arrives: when each piece of generated text came, the server's usage
report, and whether the answer was complete. Pure (bytes and times in, figures out); called by
`runner` for every request.

Streams:
  - SSE (`/v1/completions`, `/v1/chat/completions` with `stream: true`): `data: {...}` events;
    a token event is one whose choices carry text (`text`, or `delta.content` /
    `delta.reasoning_content` for chat); the usage report is the chunk with a `usage` object
    (asked for with `stream_options.include_usage`); `data: [DONE]` ends it.
  - NDJSON (the seed's `/generate`, see enova/gateway/generate.py): one object a line; a token
    event has a non-empty `delta`; the last line carries `generated_text`, `finish_reason` and
    `usage`.
Events that arrive in one read share its arrival time (a gap of 0 between them), as in
`vllm bench serve`.
An event with an `error` object (vLLM's and the gateway's way of breaking a started stream) makes
the answer an error. So does a stream that ends before [DONE] (SSE) or its last line (NDJSON), or
one with no usage report: then the output token count is unknown.
"""

from __future__ import annotations

import json
from typing import Any

SSE = "sse"
NDJSON = "ndjson"


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message") or json.dumps(error)
        code = error.get("code") or error.get("type")
        return f"{message} ({code})" if code else str(message)
    return str(error)


def _choice_text(choice: Any) -> str:
    if not isinstance(choice, dict):
        return ""
    text = choice.get("text")
    if text:
        return text if isinstance(text, str) else ""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return (delta.get("content") or "") + (delta.get("reasoning_content") or "")
    return ""


def _tokens(usage: Any) -> tuple[int | None, int | None]:
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else None, completion if isinstance(completion, int) else None)


class StreamParser:
    """Fed a streamed answer's bytes chunk by chunk, each with the time it arrived.

    After `close()`: `token_times` (arrival time of each event carrying generated text), `usage`,
    `done` (the stream's end marker was seen) and `problem()` (None for a complete answer, else
    why it is not one). Not thread-safe; one per request."""

    __slots__ = ("kind", "buf", "token_times", "usage", "done", "error", "events", "closed")

    def __init__(self, kind: str = SSE):
        if kind not in (SSE, NDJSON):
            raise ValueError(f"unknown stream kind {kind!r}")
        self.kind = kind
        self.buf = b""
        self.token_times: list[float] = []
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.error: str | None = None
        self.events = 0
        self.closed = False

    def feed(self, data: bytes, now: float) -> None:
        """Take the next bytes of the answer, which arrived at `now`."""
        buf = self.buf + data if self.buf else data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            self._line(buf[start:end], now)
            start = end + 1
        self.buf = buf[start:]

    def close(self, now: float) -> None:
        """The answer ended (a last line without a newline is still read)."""
        if self.buf:
            self._line(self.buf, now)
            self.buf = b""
        self.closed = True

    def _line(self, line: bytes, now: float) -> None:
        line = line.strip()
        if not line:
            return
        if self.kind == SSE:
            if not line.startswith(b"data:"):
                return                      # comments, `event:`/`id:` fields: nothing to measure
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                return
        else:
            payload = line
        self.events += 1
        try:
            event = json.loads(payload)
        except ValueError:
            self.error = self.error or f"unreadable stream event: {payload[:120].decode(errors='replace')}"
            return
        if not isinstance(event, dict):
            self.error = self.error or f"unexpected stream event: {payload[:120].decode(errors='replace')}"
            return
        if event.get("error"):
            self.error = self.error or _error_text(event["error"])
            return
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        if self.kind == SSE:
            choices = event.get("choices")
            if isinstance(choices, list) and any(_choice_text(c) for c in choices):
                self.token_times.append(now)
        else:
            delta = event.get("delta")
            if isinstance(delta, str) and delta:
                self.token_times.append(now)
            if "generated_text" in event or "finish_reason" in event:
                self.done = True

    def tokens(self) -> tuple[int | None, int | None]:
        """(prompt tokens, output tokens) from the usage report; None where not reported."""
        return _tokens(self.usage)

    def problem(self) -> str | None:
        """Why the answer is not a complete one, or None."""
        if self.error:
            return self.error
        if not self.done:
            end = "[DONE]" if self.kind == SSE else "its last line"
            return f"stream cut before {end} after {len(self.token_times)} token events"
        if self.tokens()[1] is None:
            return "no usage report in the stream (the server ignored stream_options.include_usage)"
        return None


def parse_body(data: bytes) -> tuple[int | None, int | None, str | None]:
    """A whole (non-streamed) answer: (prompt tokens, output tokens, problem or None)."""
    try:
        body = json.loads(data)
    except ValueError:
        return None, None, f"unreadable answer: {data[:120].decode(errors='replace')}"
    if not isinstance(body, dict):
        return None, None, f"unexpected answer: {data[:120].decode(errors='replace')}"
    if body.get("error"):
        return None, None, _error_text(body["error"])
    prompt, output = _tokens(body.get("usage"))
    if output is None:
        return prompt, None, "no usage report in the answer"
    return prompt, output, None
