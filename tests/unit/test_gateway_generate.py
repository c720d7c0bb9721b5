"""The seed's /generate translated to and from /v1/completions, SSE event handling, and the
gateway's error bodies: pure functions, table tests."""

from __future__ import annotations

import json

import pytest

from enova.gateway import errors, sse
from enova.gateway.generate import GenerateStream, completion_request, generate_response


def test_the_seed_request_becomes_a_completions_request_on_the_deployment():
    body = {"prompt": "San Francisco is a", "max_tokens": 1024, "temperature": 0.9, "top_p": 0.9}
    assert completion_request(body, "smollm2") == (
        {"model": "smollm2", "prompt": "San Francisco is a", "max_tokens": 1024, "temperature": 0.9, "top_p": 0.9},
        False)


def test_every_sampling_field_passes_and_a_stream_asks_for_usage():
    fields = {"max_tokens": 5, "temperature": 0, "top_p": 1, "top_k": 5, "min_p": 0.1, "stop": ["\n"], "seed": 7,
              "n": 2, "presence_penalty": 0.1, "frequency_penalty": 0.2, "repetition_penalty": 1.1, "ignore_eos": True}
    payload, stream = completion_request({"prompt": "x", "stream": True, **fields}, "m")
    assert stream is True
    assert payload == {"model": "m", "prompt": "x", **fields, "stream": True, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("body, param, message", [
    ({"prompt": "x", "model": "m"}, "model", "unknown field 'model'"),
    ({"prompt": "x", "b": 1, "a": 2}, "a", "unknown fields 'a', 'b'"),
    ({}, "prompt", "`prompt` is required"),
    ({"prompt": None}, "prompt", "`prompt` is required"),
    ({"prompt": 3}, "prompt", "`prompt` must be a string"),
    ({"prompt": "x", "stream": "yes"}, "stream", "`stream` must be true or false"),
])
def test_bad_generate_requests_are_400_naming_the_field(body, param, message):
    with pytest.raises(errors.GatewayError) as caught:
        completion_request(body, "m")
    err = caught.value
    assert err.status == 400 and err.param == param and message in err.message
    assert err.body() == {"error": {"message": err.message, "type": "invalid_request_error", "param": param,
                                    "code": err.code}}


def test_a_completion_becomes_the_seed_answer():
    completion = {"choices": [{"index": 1, "text": " b", "finish_reason": "stop"},
                              {"index": 0, "text": " a", "finish_reason": "length"}],
                  "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}
    assert generate_response("P", completion, "m") == {
        "text": ["P a", "P b"], "generated_text": " a", "model": "m", "finish_reason": "length",
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}


def chunk(text, index=0, finish=None):
    return {"choices": [{"index": index, "text": text, "finish_reason": finish}]}


def test_a_stream_becomes_ndjson_with_the_text_so_far_and_a_last_line_with_usage():
    gs = GenerateStream("P", "m")
    lines = [gs.event(chunk(" a")), gs.event(chunk("")), gs.event(chunk(" b", finish="length")),
             gs.event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}), gs.final()]
    assert lines[1] == b"" and lines[3] == b""
    assert [json.loads(x) for x in lines if x] == [
        {"text": ["P a"], "delta": " a"}, {"text": ["P a b"], "delta": " b"},
        {"text": ["P a b"], "delta": "", "generated_text": " a b", "model": "m", "finish_reason": "length",
         "usage": {"prompt_tokens": 1, "completion_tokens": 2}}]
    assert all(x.endswith(b"\n") and x.count(b"\n") == 1 for x in lines if x)


def test_a_stream_with_n_choices_keeps_one_text_per_choice_and_says_which_changed():
    gs = GenerateStream("P", "m", n=2)
    assert json.loads(gs.event(chunk(" x", index=1))) == {"text": ["P", "P x"], "delta": " x", "index": 1}
    assert json.loads(gs.event(chunk(" y", index=0))) == {"text": ["P y", "P x"], "delta": " y", "index": 0}
    assert gs.event(chunk(" z", index=5)) == b""


@pytest.mark.parametrize("event, kind", [
    (b'data: {"choices":[{"index":0,"text":" a","finish_reason":null}]}', sse.TOKEN),
    (b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}', sse.OTHER),
    (b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}', sse.TOKEN),
    (b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":8}}', sse.USAGE),
    (b'data: {"choices":[{"text":"a"}],"usage":{"prompt_tokens":4}}', sse.TOKEN),     # continuous usage
    (b"data: [DONE]", sse.DONE),
    (b": keep-alive", sse.OTHER),
])
def test_sse_events_are_classified_without_parsing(event, kind):
    assert sse.kind(event) is kind


def test_the_splitter_returns_whole_events_however_the_bytes_arrive():
    s = sse.Splitter()
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    got = []
    for i in range(0, len(stream), 5):
        got += s.feed(stream[i:i + 5])
    assert got == [b'data: {"a":1}', b'data: {"b":2}', b"data: [DONE]"] and s.rest() == b""
    assert s.feed(b"data: x") == [] and s.rest() == b"data: x"


def test_usage_counts_tolerate_missing_fields():
    assert sse.usage_counts({"prompt_tokens": 3, "completion_tokens": 5}) == (3, 5)
    assert sse.usage_counts(None) == (0, 0) and sse.usage_counts({"prompt_tokens": "3"}) == (0, 0)
    assert sse.data(b'data: {"usage": 1}') == {"usage": 1} and sse.data(b"data: [DONE]") is None


@pytest.mark.parametrize("err, status, type_, code, retry_after", [
    (errors.unknown_model("x", ["a", "b"]), 404, "invalid_request_error", "model_not_found", None),
    (errors.body_too_large(10, 20), 413, "invalid_request_error", "body_too_large", None),
    (errors.method_not_allowed("GET", "/generate", ["POST"]), 405, "invalid_request_error", "method_not_allowed", None),
    (errors.unauthorized("missing bearer token"), 401, "invalid_request_error", "invalid_api_key", None),
    (errors.queue_full("m", 100, 1), 429, "rate_limit_error", "queue_full", "1"),
    (errors.queue_timeout("m", 30.0, 1), 429, "rate_limit_error", "queue_timeout", "1"),
    (errors.no_ready_replica("m", 5), 503, "service_unavailable_error", "no_ready_replica", "5"),
])
def test_error_answers_have_the_openai_shape_and_retry_after_where_retrying_helps(err, status, type_, code,
                                                                                  retry_after):
    assert err.status == status
    body = json.loads(err.body_bytes())
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type_ and body["error"]["code"] == code and body["error"]["message"]
    assert err.headers().get("Retry-After") == retry_after
    assert err.reason in errors.REASONS


def test_error_messages_name_the_problem():
    assert str(errors.unknown_model("llama", ["smollm2"])) == "the model `llama` does not exist; served models: smollm2"
    assert "limit of 1024 bytes (2048 bytes)" in str(errors.body_too_large(1024, 2048))
    assert str(errors.method_not_allowed("GET", "/v1/completions", ["POST"])) == \
        "method GET is not allowed on /v1/completions; use POST"
