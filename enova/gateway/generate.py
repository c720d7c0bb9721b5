"""The seed's `/generate` API, translated to and from vLLM's `/v1/completions`.

Request: a JSON object with `prompt` (a string) and sampling fields; any other key is a 400
that names it. It becomes a completions request on the chosen deployment (whose name is the
served model id). Answer: `{"text": [prompt + generated], "generated_text", "model",
"finish_reason", "usage"}` (`text` keeps vLLM's legacy /generate shape: one entry per choice).
Streamed (`stream: true`): NDJSON, one `{"text": [prompt + text so far], "delta"}` per token
event (with `"index"` when n > 1) and a last line that adds `finish_reason`, `usage`, `model`
and `generated_text`. With n > 1, `generated_text` and `finish_reason` are the first choice's.
Pure; called by `proxy`.
"""

from __future__ import annotations

import json
from typing import Any

from . import errors

SAMPLING_FIELDS = frozenset({
    "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed", "n", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "ignore_eos"})
FIELDS = SAMPLING_FIELDS | {"prompt", "stream"}


def completion_request(body: dict[str, Any], model: str) -> tuple[dict[str, Any], bool]:
    """(the /v1/completions payload, whether the client wants a stream). Raises GatewayError 400."""
    unknown = sorted(k for k in body if k not in FIELDS)
    if unknown:
        raise errors.bad_request(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)} in /generate; "
            f"accepted: prompt, stream, {', '.join(sorted(SAMPLING_FIELDS))}", param=unknown[0], code="unknown_field")
    prompt = body.get("prompt")
    if prompt is None:
        raise errors.bad_request("`prompt` is required", param="prompt", code="missing_field")
    if not isinstance(prompt, str):
        raise errors.bad_request("`prompt` must be a string", param="prompt")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise errors.bad_request("`stream` must be true or false", param="stream")
    payload = {"model": model, "prompt": prompt, **{k: v for k, v in body.items() if k in SAMPLING_FIELDS}}
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload, stream


def _choices(completion: dict[str, Any]) -> list[dict[str, Any]]:
    choices = completion.get("choices")
    if not isinstance(choices, list):
        return []
    return sorted((c for c in choices if isinstance(c, dict)), key=lambda c: c.get("index", 0))


def generate_response(prompt: str, completion: dict[str, Any], model: str) -> dict[str, Any]:
    """The /generate answer for a (non-streamed) completions answer."""
    choices = _choices(completion)
    texts = [c.get("text") or "" for c in choices]
    first = choices[0] if choices else {}
    return {"text": [prompt + t for t in texts], "generated_text": texts[0] if texts else "",
            "model": model, "finish_reason": first.get("finish_reason"), "usage": completion.get("usage")}


class GenerateStream:
    """Turns completions stream events (parsed JSON) into /generate NDJSON lines."""

    def __init__(self, prompt: str, model: str, n: int = 1):
        self.prompt = prompt
        self.model = model
        self.n = max(1, n)
        self.texts = [""] * self.n
        self.finish: list[str | None] = [None] * self.n
        self.usage: dict[str, Any] | None = None

    def event(self, chunk: dict[str, Any]) -> bytes:
        """NDJSON lines for one completions chunk (b"" if it carries no text)."""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        out = []
        for choice in _choices(chunk):
            i = choice.get("index", 0)
            if not isinstance(i, int) or not 0 <= i < self.n:
                continue
            if choice.get("finish_reason"):
                self.finish[i] = choice["finish_reason"]
            delta = choice.get("text") or ""
            if not delta:
                continue
            self.texts[i] += delta
            line: dict[str, Any] = {"text": [self.prompt + t for t in self.texts], "delta": delta}
            if self.n > 1:
                line["index"] = i
            out.append(json.dumps(line).encode() + b"\n")
        return b"".join(out)

    def final(self) -> bytes:
        line = {"text": [self.prompt + t for t in self.texts], "delta": "", "generated_text": self.texts[0],
                "model": self.model, "finish_reason": self.finish[0], "usage": self.usage}
        return json.dumps(line).encode() + b"\n"
