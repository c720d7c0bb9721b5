"""The stream parser on answers written byte for byte the way vLLM and the gateway write them."""

from __future__ import annotations

import json

import pytest

from enova.inject.stream import NDJSON, SSE, StreamParser, parse_body

USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def completion_chunk(text: str, finish: str | None = None) -> dict:
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}]}


def chat_chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


COMPLETION = sse(completion_chunk(" a"), completion_chunk(" b"), completion_chunk(" c", "length"),
                 {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m", "choices": [],
                  "usage": USAGE}, b"[DONE]")


def feed_events_one_per_instant(parser: StreamParser, data: bytes) -> None:
    """Each event arrives at its own time: t = 1, 2, 3, ..."""
    for t, event in enumerate(data.split(b"\n\n")[:-1], start=1):
        parser.feed(event + b"\n\n", float(t))
    parser.close(99.0)


def test_completions_stream_times_each_text_event_and_reads_the_usage_chunk():
    p = StreamParser(SSE)
    feed_events_one_per_instant(p, COMPLETION)

    assert p.token_times == [1.0, 2.0, 3.0]
    assert p.tokens() == (5, 3)
    assert p.done
    assert p.problem() is None


def test_chat_stream_role_chunk_is_not_a_token_but_reasoning_content_is():
    data = sse(chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"reasoning_content": "hm"}),
               chat_chunk({"content": "Hi"}), chat_chunk({"content": "!"}, "stop"),
               {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}, b"[DONE]")
    p = StreamParser(SSE)
    feed_events_one_per_instant(p, data)

    assert p.token_times == [2.0, 3.0, 4.0]
    assert p.problem() is None


def test_events_split_anywhere_across_reads_and_crlf_lines_parse_the_same():
    p = StreamParser(SSE)
    data = COMPLETION.replace(b"\n", b"\r\n")
    for i in range(len(data)):
        p.feed(data[i:i + 1], float(i))
    p.close(float(len(data)))

    assert len(p.token_times) == 3
    assert p.tokens() == (5, 3)
    assert p.problem() is None


def test_a_stream_cut_before_done_is_an_error_naming_the_tokens_seen():
    p = StreamParser(SSE)
    p.feed(sse(completion_chunk(" a"), completion_chunk(" b")), 1.0)
    p.close(2.0)

    assert p.problem() == "stream cut before [DONE] after 2 token events"


def test_a_stream_without_usage_report_is_an_error():
    p = StreamParser(SSE)
    p.feed(sse(completion_chunk(" a", "length"), b"[DONE]"), 1.0)
    p.close(1.0)

    assert p.tokens() == (None, None)
    assert "no usage report" in p.problem()


def test_an_error_event_in_a_stream_is_the_requests_error():
    p = StreamParser(SSE)
    p.feed(sse(completion_chunk(" a"), {"error": {"message": "replica went away", "type": "upstream_error",
                                                  "code": "stream_broken"}}, b"[DONE]"), 1.0)
    p.close(1.0)

    assert p.problem() == "replica went away (stream_broken)"


def test_sse_comments_and_other_fields_are_ignored():
    p = StreamParser(SSE)
    p.feed(b": keep-alive\n\nevent: message\nid: 3\n" + COMPLETION, 1.0)
    p.close(1.0)

    assert p.problem() is None
    assert len(p.token_times) == 3


def test_generate_ndjson_counts_delta_lines_and_ends_with_the_line_carrying_usage():
    lines = [{"text": ["Hi a"], "delta": " a"}, {"text": ["Hi a b"], "delta": " b"},
             {"text": ["Hi a b"], "delta": "", "generated_text": " a b", "model": "m", "finish_reason": "length",
              "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}]
    p = StreamParser(NDJSON)
    for t, line in enumerate(lines, start=1):
        p.feed(json.dumps(line).encode() + b"\n", float(t))
    p.close(9.0)

    assert p.token_times == [1.0, 2.0]
    assert p.tokens() == (1, 2)
    assert p.problem() is None


def test_generate_ndjson_cut_before_its_last_line_is_an_error():
    p = StreamParser(NDJSON)
    p.feed(b'{"text": ["Hi a"], "delta": " a"}\n{"text": ["Hi a b"], "del', 1.0)
    p.close(2.0)

    assert p.problem() is not None
    assert p.token_times == [1.0]


def test_a_last_line_without_newline_is_read_at_close():
    p = StreamParser(NDJSON)
    p.feed(b'{"delta": "", "generated_text": "", "finish_reason": "stop", "usage": '
           b'{"prompt_tokens": 1, "completion_tokens": 0}}', 1.0)
    p.close(1.0)

    assert p.problem() is None
    assert p.tokens() == (1, 0)


@pytest.mark.parametrize("body, expected", [
    ({"choices": [{"text": "x"}], "usage": USAGE}, (5, 3, None)),
    ({"choices": [{"text": "x"}]}, (None, None, "no usage report in the answer")),
    ({"error": {"message": "too long", "code": 400}}, (None, None, "too long (400)")),
])
def test_whole_answers_give_tokens_from_usage_or_say_what_is_wrong(body, expected):
    assert parse_body(json.dumps(body).encode()) == expected


def test_an_unreadable_whole_answer_is_an_error():
    assert parse_body(b"<html>bad gateway</html>")[2].startswith("unreadable answer")
