"""enova.recommend.render: human values, the text table, the YAML a user pastes, the JSON twins."""

from __future__ import annotations

import json

import pytest
import yaml

from enova.recommend.model import GiB, MiB, Figure, Recommendation, Refusal
from enova.recommend.render import human, refusal_json, render_text, to_json

REC = Recommendation(
    device="gpu", model="m.json", target="1 x L4-24GB",
    args={"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": 8192, "max_num_seqs": 40,
          "max_num_batched_tokens": 2048, "enable_prefix_caching": True},
    figures=(Figure("weight_bytes", 14_483_464_192, "7.24 B params x 2 bytes", "bytes"),
             Figure("kv_cache_bytes_per_token", 131_072, "32 layers ...", "bytes"),
             Figure("gpu_memory_utilization", 0.9, "vLLM's default"),
             Figure("max_model_len", 8192, "set by you", "tokens"),
             Figure("kv_cache_tokens", 43_920, "estimate", "tokens"),
             Figure("replicas", None, "not given: no request rate")),
    user_set=("enable_prefix_caching", "max_model_len"), notes=("a note",))


@pytest.mark.parametrize("value, unit, text", [
    (14_483_464_192, "bytes", "13.49 GiB"), (512 * MiB, "bytes", "512.0 MiB"), (131_072, "bytes", "128.0 KiB"),
    (900, "bytes", "900 B"), (32768, "tokens", "32,768 tokens"), (0.9, "", "0.9"), (1024, "", "1,024"),
    (None, "bytes", "-"), ("fp8", "", "fp8"), (True, "", "True"),
])
def test_values_are_shown_in_the_unit_a_human_reads(value, unit, text):
    assert human(value, unit) == text


def test_the_text_is_a_table_of_figures_then_notes_then_pasteable_yaml():
    text = render_text(REC)
    lines = text.splitlines()
    assert lines[0] == "model:  m.json" and lines[1] == "target: 1 x L4-24GB"
    assert lines[3].split() == ["key", "value", "reason"]
    assert "  max_model_len *" in text and "* set by you, kept as given" in text
    assert "  - a note" in text
    pasted = yaml.safe_load(text.split("engine.args (paste under a Deployment's spec):\n", 1)[1])
    assert pasted == {"engine": {"args": REC.args}}
    assert list(pasted["engine"]["args"]) == list(REC.args)          # the recommendation's order


def test_to_json_has_the_summary_then_everything_and_survives_json():
    data = json.loads(json.dumps(to_json(REC)))
    assert data["tensor_parallel_size"] == 1 and data["max_num_seqs"] == 40
    assert data["weight_bytes"] == 14_483_464_192 and data["kv_cache_tokens"] == 43_920
    assert data["replicas"] is None
    assert data["figures"][0] == {"key": "weight_bytes", "value": 14_483_464_192, "unit": "bytes",
                                  "reason": "7.24 B params x 2 bytes"}
    assert data["user_set"] == ["enable_prefix_caching", "max_model_len"]


def test_refusal_json_carries_the_arithmetic_and_the_suggestions():
    refusal = Refusal("big.json", "1 x L4", "needs 131.42 GiB, has 19.83 GiB", ("8 x L4",),
                      (Figure("weight_bytes", 131 * GiB, "w", "bytes"),))
    data = refusal_json(refusal)
    assert data["refused"] is True and data["exit_code"] == 2
    assert data["arithmetic"] == "needs 131.42 GiB, has 19.83 GiB"
    assert data["suggestions"] == ["8 x L4"]
    assert data["message"].startswith("big.json does not fit 1 x L4: needs 131.42 GiB")
