"""Prompt sources, drawn lengths and exact-length synthetic prompts (enova.inject.datasets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from enova.errors import UsageError
from enova.inject.datasets import Prompt, SyntheticPrompts, count_tokens, draw_lengths, load_prompts, load_tokenizer

def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- prompt sources ----------------------------------------------------------------------------

def test_the_builtin_prompt_set_has_about_200_distinct_prompts_of_varied_length():
    prompts = load_prompts("builtin", Path("/nonexistent"))
    texts = [p.text for p in prompts]
    assert len(texts) >= 200 and len(set(texts)) == len(texts)
    lengths = sorted(len(t) for t in texts)
    assert lengths[0] < 40 and lengths[-1] > 400


def test_a_jsonl_file_relative_to_the_spec_folder_gives_prompts_and_their_output_lengths(tmp_path):
    write(tmp_path / "p.jsonl", '{"prompt": "a"}\n\n{"prompt": "b", "output_tokens": 7}\n')
    assert load_prompts("p.jsonl", tmp_path) == [Prompt("a"), Prompt("b", 7)]


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "x"', "not a JSON object"),
    ('["x"]', "expected a JSON object"),
    ('{"promt": "x"}', "unknown field 'promt'"),
    ('{"prompt": ""}', "prompt: must be a non-empty string"),
    ('{"prompt": "x", "output_tokens": 0}', "output_tokens: must be a positive integer"),
    ('{"prompt": "x", "output_tokens": true}', "output_tokens: must be a positive integer"),
])
def test_a_bad_jsonl_line_is_an_error_naming_the_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "p.jsonl", '{"prompt": "fine"}\n\n' + line + "\n")
    with pytest.raises(UsageError) as err:
        load_prompts(str(path), tmp_path)
    assert f"{path}:3" in str(err.value) and message in str(err.value)


def test_a_missing_prompt_file_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(UsageError, match=f"no such file: {tmp_path}/missing.jsonl"):
        load_prompts("missing.jsonl", tmp_path)


def test_an_empty_prompt_file_is_an_error(tmp_path):
    write(tmp_path / "p.jsonl", "\n\n")
    with pytest.raises(UsageError, match="no prompts"):
        load_prompts("p.jsonl", tmp_path)


SHAREGPT = [
    {"id": "a", "conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello! How can I help?"},
                                  {"from": "human", "value": "later turn"}]},
    {"id": "empty", "conversations": []},
    {"id": "b", "conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "Question?"}]},
]


def test_a_sharegpt_file_gives_each_conversations_first_human_turn_and_its_answer(tmp_path):
    write(tmp_path / "sg.json", json.dumps(SHAREGPT, indent=1))
    assert load_prompts("sg.json", tmp_path) == [Prompt("Hi there", None, "Hello! How can I help?"),
                                                 Prompt("Question?", None, None)]


@pytest.mark.parametrize("bad", [{"conversation": []}, {"conversations": [{"from": "human"}]}, "text"])
def test_a_bad_sharegpt_entry_is_an_error_naming_its_line(tmp_path, bad):
    entries = [json.dumps(SHAREGPT[0]), json.dumps(SHAREGPT[2]), json.dumps(bad)]
    path = write(tmp_path / "sg.json", "[\n" + ",\n".join(entries) + "\n]\n")
    with pytest.raises(UsageError) as err:
        load_prompts(str(path), tmp_path)
    assert str(err.value).startswith(f"{path}:4")


def test_a_sharegpt_file_that_is_not_valid_json_is_an_error_naming_the_line(tmp_path):
    path = write(tmp_path / "sg.json", '[\n{"conversations": []},\n{"conversations": [}\n]')
    with pytest.raises(UsageError, match=f"{path}:3: not valid JSON"):
        load_prompts(str(path), tmp_path)


# -- lengths -----------------------------------------------------------------------------------

def rng(seed=1):
    return np.random.default_rng(seed)


def test_fixed_lengths_are_all_the_value():
    assert draw_lengths({"distribution": "fixed", "value": 64}, 5, rng()).tolist() == [64] * 5


def test_uniform_lengths_cover_min_to_max_inclusive_with_the_middle_as_mean():
    x = draw_lengths({"distribution": "uniform", "min": 10, "max": 20}, 20_000, rng())
    assert x.min() == 10 and x.max() == 20
    assert abs(x.mean() - 15) < 0.1


def test_normal_lengths_have_the_asked_mean_and_std_and_are_rounded():
    x = draw_lengths({"distribution": "normal", "mean": 200, "std": 30}, 20_000, rng())
    assert x.dtype == np.int64
    assert abs(x.mean() - 200) < 1 and abs(x.std() - 30) < 1


def test_normal_lengths_are_clipped_to_min_and_max_and_never_below_one():
    x = draw_lengths({"distribution": "normal", "mean": 50, "std": 40, "min": 20, "max": 90}, 20_000, rng())
    assert x.min() == 20 and x.max() == 90
    y = draw_lengths({"distribution": "normal", "mean": 3, "std": 10}, 20_000, rng())
    assert y.min() == 1


def test_lognormal_lengths_have_the_asked_mean_and_std_of_the_lengths_themselves():
    x = draw_lengths({"distribution": "lognormal", "mean": 300, "std": 150}, 100_000, rng())
    assert abs(x.mean() - 300) / 300 < 0.01 and abs(x.std() - 150) / 150 < 0.03
    assert np.median(x) < x.mean()          # skewed right, as a lognormal is
    y = draw_lengths({"distribution": "lognormal", "mean": 300, "std": 150, "min": 100, "max": 400}, 10_000, rng())
    assert y.min() == 100 and y.max() == 400


def test_a_model_dump_with_none_for_unset_fields_is_accepted():
    spec = {"distribution": "uniform", "value": None, "min": 1, "max": 3, "mean": None, "std": None}
    assert set(draw_lengths(spec, 1000, rng()).tolist()) == {1, 2, 3}


@pytest.mark.parametrize("spec, message", [
    ({"distribution": "zipf", "mean": 3, "std": 1}, "unknown length distribution 'zipf'"),
    ({"distribution": "normal", "mean": 3}, "needs `std`"),
    ({"distribution": "uniform", "min": 5, "max": 2}, "min <= max"),
    ({"distribution": "fixed", "value": 0}, ">= 1"),
])
def test_a_bad_lengths_spec_is_a_usage_error(spec, message):
    with pytest.raises(UsageError, match=message):
        draw_lengths(spec, 3, rng())


def test_the_same_generator_state_draws_the_same_lengths_and_a_longer_draw_extends_a_shorter_one():
    spec = {"distribution": "lognormal", "mean": 100, "std": 50}
    assert draw_lengths(spec, 50, rng(7)).tolist() == draw_lengths(spec, 80, rng(7))[:50].tolist()


# -- tokenizer and synthetic prompts -----------------------------------------------------------

def test_synthetic_prompts_have_exactly_the_target_token_count_with_smollm2(smollm2):
    targets = [1, 2, 3, 17, 64, 128, 500, 2048] + list(range(5, 400, 7))
    rngs = [rng(i) for i in range(len(targets))]
    texts, counts = SyntheticPrompts(smollm2).make(targets, rngs)
    assert counts == targets
    assert [len(smollm2(t)["input_ids"]) for t in texts] == targets
    assert len(set(texts)) == len(texts)


def test_dataset_prompts_are_counted_as_the_completions_endpoint_counts_them(smollm2):
    assert count_tokens(smollm2, ["hello world", "the"]) == [2, 1]


class PairMergingTokenizer:
    """A real (if tiny) tokenizer that is not additive over words: "the of" is one token, every other
    word one token. Shows the trim/extend loop converging where the one-pass estimate misses."""

    def __call__(self, texts, add_special_tokens=True):
        def encode(text):
            words, ids = text.split(), []
            i = 0
            while i < len(words):
                if words[i] == "the" and i + 1 < len(words) and words[i + 1] == "of":
                    i += 2
                else:
                    i += 1
                ids.append(i)
            return ([0] if add_special_tokens else []) + ids
        return {"input_ids": encode(texts) if isinstance(texts, str) else [encode(t) for t in texts]}


def test_synthetic_prompts_are_corrected_until_exact_for_a_tokenizer_that_merges_words():
    synth = SyntheticPrompts(PairMergingTokenizer())
    synth.words = np.array(["the", "of"])        # force many merges
    targets = [2, 10, 50, 300]
    texts, counts = synth.make(targets, [rng(i) for i in range(4)])
    assert counts == targets
    assert count_tokens(PairMergingTokenizer(), texts) == targets


def test_a_folder_without_a_tokenizer_is_a_usage_error(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(UsageError, match=f"cannot load the tokenizer of {tmp_path}"):
        load_tokenizer(str(tmp_path))
