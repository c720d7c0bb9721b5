"""Server-sent events from a vLLM replica, looked at as cheaply as possible.

The gateway passes streams through byte for byte; it only needs to know, per event, whether
it is a token (for time to first token and inter-token latency), the usage-only chunk (for
token counts, and to drop it when the gateway asked for it on the client's behalf), or the
end (`data: [DONE]`). `Splitter` cuts the byte stream into whole events (vLLM separates them
with a blank line, "\\n\\n"); `kind` classifies one by substring search, without parsing JSON.
Pure; called by `proxy` and `generate`.
"""

from __future__ import annotations

import json
from typing import Any

TOKEN, USAGE, DONE, OTHER = "token", "usage", "done", "other"


class Splitter:
    """Feed bytes as they arrive; get back the complete events (without their blank line)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buf + chunk if self._buf else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buf = data
            return []
        self._buf = data[end + 2:]
        return data[:end].split(b"\n\n")

    def rest(self) -> bytes:
        """What is left when the stream ends (an event without its blank line, or nothing)."""
        rest, self._buf = self._buf, b""
        return rest


def kind(event: bytes) -> str:
    """TOKEN, USAGE (the chunk with `"choices":[]` and usage), DONE or OTHER (comments, the
    chat role chunk that precedes the first token, anything not `data:`)."""
    if not event.startswith(b"data:"):
        return OTHER
    if event.startswith(b"data: [DONE]") or event.startswith(b"data:[DONE]"):
        return DONE
    if b'"choices":[]' in event and b'"usage"' in event:
        return USAGE
    if b'"role":' in event:
        return OTHER
    return TOKEN


def data(event: bytes) -> dict[str, Any] | None:
    """The JSON object of a `data:` event, or None if it is not one."""
    try:
        value = json.loads(event[5:])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def usage_counts(usage: Any) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) from an OpenAI `usage` object; zeros if absent."""
    if not isinstance(usage, dict):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0)
