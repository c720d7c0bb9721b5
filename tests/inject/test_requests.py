"""Request bodies, lengths and prompt dealing for a run (enova.inject.requests.build_requests)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from enova.errors import UsageError
from enova.gateway.generate import completion_request
from enova.inject.datasets import load_prompts
from enova.inject.model import Arrival
from enova.inject.requests import build_requests

def arrivals(n, **tokens):
    return [Arrival(i, i * 0.1, **tokens) for i in range(n)]


def build(n=5, spec=None, *, seed=1, base_dir=Path("/nonexistent"), tokenizer=None, arrive=None):
    return build_requests(arrive if arrive is not None else arrivals(n), spec or {}, model="smollm2",
                          max_tokens=32, seed=seed, base_dir=base_dir, tokenizer=tokenizer)


def jsonl(tmp_path, *rows):
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return "p.jsonl"


# -- bodies ------------------------------------------------------------------------------------

def test_a_completions_body_names_the_model_prompt_and_max_tokens_and_nothing_unasked():
    [r] = build(1)
    assert r.api == "completions"
    assert set(r.body) == {"model", "prompt", "max_tokens"}
    assert r.body["model"] == "smollm2" and r.body["max_tokens"] == 32 and r.expected_output_tokens == 32
    assert r.index == 0 and r.at == 0.0


def test_a_chat_body_sends_the_prompt_as_one_user_message():
    [r] = build(1, {"api": "chat", "temperature": 0.0, "top_p": 0.9, "ignore_eos": True})
    assert r.body == {"model": "smollm2", "messages": [{"role": "user", "content": r.body["messages"][0]["content"]}],
                      "max_tokens": 32, "temperature": 0.0, "top_p": 0.9, "ignore_eos": True}


def test_a_generate_body_names_no_model_and_the_gateway_accepts_it():
    [r] = build(1, {"api": "generate", "temperature": 0.5, "top_p": 1.0, "ignore_eos": True})
    assert set(r.body) == {"prompt", "max_tokens", "temperature", "top_p", "ignore_eos"}
    payload, stream = completion_request(r.body, "smollm2")
    assert payload["ignore_eos"] is True and payload["max_tokens"] == 32 and stream is False


def test_ignore_eos_false_and_unset_sampling_fields_are_left_out_and_stream_is_never_set():
    for api in ("completions", "chat", "generate"):
        [r] = build(1, {"api": api, "ignore_eos": False, "temperature": None, "stream": True})
        assert not {"ignore_eos", "temperature", "top_p", "stream", "stream_options"} & set(r.body)


def test_an_unknown_api_is_a_usage_error_naming_the_option():
    with pytest.raises(UsageError, match="requests.api: unknown API 'embeddings'"):
        build(1, {"api": "embeddings"})


# -- output lengths ----------------------------------------------------------------------------

def test_the_output_length_comes_from_the_trace_row_then_the_spec_then_the_prompt_then_max_tokens(tmp_path):
    source = jsonl(tmp_path, {"prompt": "own length", "output_tokens": 9})
    arrive = [Arrival(0, 0.0, output_tokens=5), Arrival(1, 0.1)]
    by_spec = build(spec={"prompts": source, "output_tokens": {"distribution": "fixed", "value": 7}},
                    base_dir=tmp_path, arrive=arrive)
    assert [r.body["max_tokens"] for r in by_spec] == [5, 7]
    by_prompt = build(spec={"prompts": source}, base_dir=tmp_path, arrive=arrive)
    assert [r.body["max_tokens"] for r in by_prompt] == [5, 9]
    by_default = build(spec={}, arrive=arrive)
    assert [r.expected_output_tokens for r in by_default] == [5, 32]


def test_drawn_output_lengths_follow_their_distribution():
    reqs = build(2000, {"output_tokens": {"distribution": "uniform", "min": 4, "max": 8}})
    assert {r.body["max_tokens"] for r in reqs} == {4, 5, 6, 7, 8}


def test_a_sharegpt_answer_sets_the_output_length_only_with_a_tokenizer_and_no_output_spec(tmp_path, smollm2):
    conversation = [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "hello world"}]
    (tmp_path / "sg.json").write_text(json.dumps([{"conversations": conversation}]))
    assert build(1, {"prompts": "sg.json"}, base_dir=tmp_path, tokenizer=smollm2)[0].body["max_tokens"] == 2
    assert build(1, {"prompts": "sg.json"}, base_dir=tmp_path)[0].body["max_tokens"] == 32
    fixed = {"prompts": "sg.json", "output_tokens": {"distribution": "fixed", "value": 3}}
    assert build(1, fixed, base_dir=tmp_path, tokenizer=smollm2)[0].body["max_tokens"] == 3


# -- prompts -----------------------------------------------------------------------------------

def test_dataset_prompts_are_dealt_in_a_shuffled_cycle_each_used_once_per_pass():
    n_prompts = len(load_prompts("builtin", Path(".")))
    reqs = build(3 * n_prompts)
    first_pass = [r.body["prompt"] for r in reqs[:n_prompts]]
    assert len(set(first_pass)) == n_prompts
    assert set(Counter(r.body["prompt"] for r in reqs).values()) == {3}
    shipped_order = [p.text for p in load_prompts("builtin", Path("."))]
    assert first_pass != shipped_order


def test_dataset_prompts_are_counted_with_a_tokenizer_and_left_uncounted_without(smollm2):
    with_tok = build(3, tokenizer=smollm2)
    assert [r.input_tokens for r in with_tok] == [len(smollm2(r.body["prompt"])["input_ids"]) for r in with_tok]
    assert [r.input_tokens for r in build(3)] == [None] * 3


def test_input_tokens_with_dataset_prompts_is_a_usage_error():
    with pytest.raises(UsageError, match="requests.input_tokens: only for `prompts: synthetic`"):
        build(1, {"input_tokens": {"distribution": "fixed", "value": 8}})


def test_a_bad_prompt_file_stops_the_build_with_its_line(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(UsageError, match=f"{tmp_path}/p.jsonl:2 prompt"):
        build(1, {"prompts": "p.jsonl"}, base_dir=tmp_path)


def test_synthetic_prompts_have_the_drawn_lengths_and_a_trace_row_overrides_them(smollm2):
    spec = {"prompts": "synthetic", "input_tokens": {"distribution": "normal", "mean": 100, "std": 40, "max": 180}}
    arrive = arrivals(200) + [Arrival(200, 20.0, input_tokens=7)]
    reqs = build(spec=spec, tokenizer=smollm2, arrive=arrive)
    counted = [len(smollm2(r.body["prompt"])["input_ids"]) for r in reqs]
    assert counted == [r.input_tokens for r in reqs]
    assert counted[-1] == 7 and max(counted[:-1]) <= 180 and 80 < sum(counted[:-1]) / 200 < 120


def test_synthetic_prompts_without_a_tokenizer_or_an_input_length_are_usage_errors(smollm2):
    with pytest.raises(UsageError, match="synthetic prompts need the model's tokenizer"):
        build(1, {"prompts": "synthetic", "input_tokens": {"distribution": "fixed", "value": 8}})
    with pytest.raises(UsageError, match="requests.input_tokens: required with `prompts: synthetic`"):
        build(1, {"prompts": "synthetic"}, tokenizer=smollm2)


def test_a_model_dump_of_the_requests_block_with_none_values_is_accepted():
    dump = {"api": None, "prompts": None, "input_tokens": None, "output_tokens": None, "temperature": None,
            "top_p": None, "ignore_eos": False, "stream": True}
    [r] = build(1, dump)
    assert r.api == "completions" and set(r.body) == {"model", "prompt", "max_tokens"}


# -- determinism -------------------------------------------------------------------------------

SPEC = {"output_tokens": {"distribution": "lognormal", "mean": 40, "std": 20}, "temperature": 0.7}


def test_the_same_seed_builds_identical_requests_and_another_seed_different_ones():
    assert build(300, SPEC, seed=5) == build(300, SPEC, seed=5)
    assert [r.body for r in build(300, SPEC, seed=5)] != [r.body for r in build(300, SPEC, seed=6)]


def test_a_worker_building_its_share_of_the_arrivals_gets_exactly_those_requests_of_the_whole():
    whole = build(300, SPEC, seed=5)
    share = build(spec=SPEC, seed=5, arrive=arrivals(300)[1::3])
    assert share == whole[1::3]


def test_synthetic_requests_are_reproducible_and_a_share_matches_the_whole(smollm2):
    spec = {"prompts": "synthetic", "input_tokens": {"distribution": "uniform", "min": 10, "max": 60}}
    whole = build(60, spec, seed=2, tokenizer=smollm2)
    assert whole == build(60, spec, seed=2, tokenizer=smollm2)
    assert build(spec=spec, seed=2, tokenizer=smollm2, arrive=arrivals(60)[0::4]) == whole[0::4]
