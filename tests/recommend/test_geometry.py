"""enova.recommend.geometry: config.json -> ModelGeometry, and the weights' bytes.

The configs are real config.json files (tests/recommend/configs/README.md says where each one
comes from). Parameter counts are checked against the figures their publishers state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enova.recommend.geometry import active_params, parse_config, weight_bytes
from enova.recommend.model import ConfigError, Quantization

CONFIGS = Path(__file__).parent / "configs"


def config(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def geometry(name: str, **overrides: Any):
    return parse_config({**config(name), **overrides}, source=f"{name}.json")


@pytest.mark.parametrize("name, params", [
    # the figures the brief pins (safetensors totals published on the models' hub pages)
    ("mistral-7b-v0.1", 7_241_732_096),
    ("mistral-7b-instruct-v0.1", 7_241_732_096),
    ("llama-3-8b", 8_030_261_248),
    ("llama-3-70b", 70_553_706_496),
    ("smollm2-135m-instruct", 134_515_008),
    # hub model pages ("Model size" of the safetensors) / model cards:
    ("mixtral-8x7b", 46_702_792_704),       # "46.7B params"
    ("phi-3-mini-4k-instruct", 3_821_079_552),  # "3.82B params"
    ("gemma-2-9b-it", 9_241_705_984),       # "9.24B params"
    ("gemma-3-1b-it", 999_885_952),         # "1,000M params"
    ("gemma-3-4b-it", 4_300_079_472),       # "4.3B params", SigLIP tower and projector included
    ("qwen2.5-7b", 7_615_616_512),          # "Number of Parameters: 7.61B"
    ("qwen3-8b", 8_190_735_360),            # "8.2B"
    ("qwen3-30b-a3b", 30_532_122_624),      # "30.5B in total"
    ("qwen1.5-moe-a2.7b", 14_315_784_192),  # "14.3B"
    ("deepseek-v2-lite", 15_706_484_224),   # "15.7B" (model card: 16B total)
    ("deepseek-v3", 671_026_419_200),       # "671B total" (the 14B MTP module is not loaded)
])
def test_params_counted_from_the_geometry_match_the_published_totals(name, params):
    g = geometry(name)
    assert (g.params, g.params_source) == (params, "geometry")


@pytest.mark.parametrize("name, active", [
    # Mixtral: 46,702,792,704 - 32 layers x 6 idle experts x 3 x 4096 x 14336 ("12.9B active")
    ("mixtral-8x7b", 12_879_925_248),
    # Qwen3-30B-A3B: 30,532,122,624 - 48 x 120 x 3 x 2048 x 768 ("3.3B activated")
    ("qwen3-30b-a3b", 3_353_032_704),
    # Qwen1.5-MoE-A2.7B: 14,315,784,192 - 24 x 56 x 3 x 2048 x 1408 ("2.7B activated")
    ("qwen1.5-moe-a2.7b", 2_689_173_504),
    # DeepSeek-V3: 671,026,419,200 - 58 MoE layers x 248 x 3 x 7168 x 2048 ("37B activated")
    ("deepseek-v3", 37_552_297_472),
    ("llama-3-8b", 8_030_261_248),
])
def test_active_params_leave_out_the_experts_a_token_does_not_pick(name, active):
    assert active_params(geometry(name)) == active


@pytest.mark.parametrize("name, layers, kv_heads, head_dim, dtype, max_len", [
    ("mistral-7b-v0.1", 32, 8, 128, "bfloat16", 32768),
    ("llama-3-70b", 80, 8, 128, "bfloat16", 8192),
    ("smollm2-135m-instruct", 30, 3, 64, "bfloat16", 8192),   # transformers 5 writes "dtype"
    ("phi-3-mini-4k-instruct", 32, 32, 96, "bfloat16", 4096),  # 3072 / 32
    ("gemma-2-9b-it", 42, 8, 256, "bfloat16", 8192),         # head_dim given: 3584 / 16 would be 224
    ("qwen3-30b-a3b", 48, 4, 128, "bfloat16", 40960),        # head_dim given: 2048 / 32 would be 64
    ("gemma-3-4b-it", 34, 4, 256, "bfloat16", 131072),       # text_config, Gemma3TextConfig defaults
    ("deepseek-v2-lite", 27, 16, 192, "bfloat16", 163840),   # qk_nope 128 + qk_rope 64; yarn: not scaled
])
def test_the_attention_geometry_is_read_as_vllm_reads_it(name, layers, kv_heads, head_dim, dtype, max_len):
    g = geometry(name)
    assert (g.num_layers, g.num_kv_heads, g.head_dim, g.dtype, g.max_position_embeddings) == (
        layers, kv_heads, head_dim, dtype, max_len)


def test_mistral_instruct_v0_1_has_the_base_models_geometry():
    base, instruct = geometry("mistral-7b-v0.1"), geometry("mistral-7b-instruct-v0.1")
    fields = ("num_layers", "hidden_size", "num_kv_heads", "head_dim", "layer_windows", "params")
    assert [getattr(base, f) for f in fields] == [getattr(instruct, f) for f in fields]


def test_mistral_v0_1_slides_on_every_layer_as_vllm_runs_it():
    assert geometry("mistral-7b-v0.1").layer_windows == (4096,) * 32


def test_phi_3_mini_4k_slides_on_every_layer_with_its_2047_window():
    assert geometry("phi-3-mini-4k-instruct").layer_windows == (2047,) * 32


def test_gemma2_slides_on_even_layers():
    windows = geometry("gemma-2-9b-it").layer_windows
    assert windows[:4] == (4096, None, 4096, None) and windows.count(None) == 21


def test_gemma3_has_a_full_attention_layer_every_sixth_layer():
    windows = geometry("gemma-3-4b-it").layer_windows
    assert [i for i, w in enumerate(windows) if w is None] == [5, 11, 17, 23, 29]
    assert set(windows) == {1024, None}


def test_gemma3_sliding_window_pattern_sets_the_full_layers():
    windows = geometry("gemma-3-1b-it", sliding_window_pattern=2).layer_windows
    assert windows[:4] == (512, None, 512, None)


def test_a_layer_types_list_decides_which_layers_slide():
    types = ["full_attention", "sliding_attention"] * 16
    windows = geometry("mistral-7b-v0.1", layer_types=types).layer_windows
    assert windows[:2] == (None, 4096) and windows.count(None) == 16


def test_llama_without_a_window_is_full_attention_everywhere():
    assert set(geometry("llama-3-8b").layer_windows) == {None}


def test_qwen_slides_only_with_use_sliding_window():
    assert set(geometry("qwen2.5-7b").layer_windows) == {None}  # sliding_window 131072, switched off
    on = geometry("qwen2.5-7b", use_sliding_window=True, sliding_window=4096, max_window_layers=0)
    assert on.layer_windows == (4096,) * 28


def test_qwen2_sliding_on_some_layers_only_is_refused_as_vllm_refuses_it():
    with pytest.raises(ConfigError) as err:
        geometry("qwen2.5-7b", use_sliding_window=True, sliding_window=4096, max_window_layers=14)
    assert err.value.field == "max_window_layers"


def test_gemma3_text_config_defaults_are_noted():
    g = geometry("gemma-3-4b-it")
    assert g.vocab_size == 262_208 and g.tie_word_embeddings
    assert any("text_config" in n and "num_key_value_heads" in n for n in g.notes)


def test_moe_geometry_of_deepseek_counts_the_dense_leading_layers_and_shared_experts():
    g = geometry("deepseek-v2-lite")
    assert g.moe is not None and g.mla is not None
    assert (g.moe.num_experts, g.moe.experts_per_token, g.moe.dense_layers) == (64, 6, 1)
    assert g.moe.shared_intermediate_size == 2 * 1408
    assert (g.mla.kv_lora_rank, g.mla.qk_rope_head_dim, g.mla.q_lora_rank) == (512, 64, None)


def test_dtype_spellings_are_normalised():
    assert geometry("llama-3-8b", torch_dtype="bf16").dtype == "bfloat16"
    assert geometry("llama-3-8b", torch_dtype="torch.float16").dtype == "float16"


def test_a_missing_dtype_is_assumed_bfloat16_and_noted():
    cfg = {k: v for k, v in config("llama-3-8b").items() if k != "torch_dtype"}
    g = parse_config(cfg, source="x")
    assert g.dtype == "bfloat16" and any("bfloat16 assumed" in n for n in g.notes)


def test_linear_rope_scaling_extends_max_position_embeddings_as_vllm_derives_it():
    g = geometry("llama-3-8b", rope_scaling={"rope_type": "linear", "factor": 4.0})
    assert g.max_position_embeddings == 32768
    llama3 = geometry("llama-3-8b", rope_scaling={"rope_type": "llama3", "factor": 8.0})
    assert llama3.max_position_embeddings == 8192


# --- refusals: each names the field -----------------------------------------------------------


def test_an_unknown_architecture_is_refused_naming_model_type():
    with pytest.raises(ConfigError) as err:
        geometry("llama-3-8b", model_type="mamba")
    assert err.value.field == "model_type"
    assert "unsupported architecture: mamba (supported: deepseek_v2," in err.value.message


def test_a_missing_field_is_refused_by_name():
    cfg = {k: v for k, v in config("llama-3-8b").items() if k != "num_hidden_layers"}
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, source="llama.json")
    assert str(err.value) == "llama.json num_hidden_layers: missing"


@pytest.mark.parametrize("value", ["32", 32.5, -1, 0, True])
def test_a_field_that_is_not_a_positive_integer_is_refused_by_name(value):
    with pytest.raises(ConfigError) as err:
        geometry("llama-3-8b", num_key_value_heads=value)
    assert err.value.field == "num_key_value_heads"
    assert err.value.message == f"must be a positive integer (got {value!r})"


def test_a_bad_field_inside_gemma3_text_config_is_named_with_its_path():
    cfg = config("gemma-3-4b-it")
    cfg["text_config"] = {**cfg["text_config"], "num_hidden_layers": "34"}
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, source="gemma.json")
    assert err.value.field == "text_config.num_hidden_layers"


def test_an_unknown_dtype_is_refused_by_name():
    with pytest.raises(ConfigError) as err:
        geometry("llama-3-8b", torch_dtype="float128")
    assert err.value.field == "torch_dtype"


def test_a_layer_types_list_of_the_wrong_length_is_refused():
    with pytest.raises(ConfigError) as err:
        geometry("mistral-7b-v0.1", layer_types=["full_attention"] * 3)
    assert err.value.field == "layer_types"


# --- quantization -------------------------------------------------------------------------------


@pytest.mark.parametrize("qconfig, expected", [
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, Quantization("fp8", 8, 16384)),
    ({"quant_method": "fp8", "activation_scheme": "dynamic"}, Quantization("fp8", 8, None)),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}, Quantization("awq", 4, 128)),
    ({"quant_method": "gptq", "bits": 8, "group_size": -1}, Quantization("gptq", 8, None)),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, Quantization("bitsandbytes", 4, 64)),
    ({"quant_method": "bitsandbytes", "load_in_8bit": True}, Quantization("bitsandbytes", 8, None)),
    ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "targets": ["Linear"], "weights": {"num_bits": 4, "strategy": "group", "group_size": 128}}}},
     Quantization("compressed-tensors", 4, 128)),
    ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "targets": ["Linear"], "weights": {"num_bits": 8, "strategy": "channel", "type": "float"}}}},
     Quantization("compressed-tensors", 8, None)),
])
def test_quantization_config_is_read(qconfig, expected):
    assert geometry("llama-3-8b", quantization_config=qconfig).quantization == expected


def test_compressed_tensors_groups_with_different_bits_are_refused_naming_config_groups():
    groups = {"a": {"weights": {"num_bits": 4}}, "b": {"weights": {"num_bits": 8}}}
    with pytest.raises(ConfigError) as err:
        geometry("llama-3-8b", quantization_config={"quant_method": "compressed-tensors", "config_groups": groups})
    assert err.value.field == "quantization_config.config_groups"


def test_an_unknown_quantization_method_is_refused_naming_quant_method():
    with pytest.raises(ConfigError) as err:
        geometry("llama-3-8b", quantization_config={"quant_method": "hqq"})
    assert err.value.field == "quantization_config.quant_method"


# --- weights ------------------------------------------------------------------------------------


def test_weight_bytes_of_a_bf16_model_are_params_times_two():
    # 7,241,732,096 x 2 = 14,483,464,192
    assert weight_bytes(geometry("mistral-7b-v0.1")) == (14_483_464_192, "7.24 B params × 2 bytes (bfloat16)")


def test_a_float32_checkpoint_is_weighed_as_vllm_loads_it_in_bfloat16():
    size, reason = weight_bytes(geometry("gemma-2-9b-it", torch_dtype="float32"))
    assert size == 9_241_705_984 * 2 and "float32 checkpoint as bfloat16" in reason


def test_the_safetensors_index_gives_params_and_weight_bytes():
    index = {"metadata": {"total_size": 14_483_464_192}, "weight_map": {}}
    g = parse_config(config("mistral-7b-v0.1"), source="m", index=index)
    assert (g.params, g.weight_bytes_from_index) == (7_241_732_096, 14_483_464_192)
    assert g.params_source.startswith("safetensors index")
    assert weight_bytes(g)[0] == 14_483_464_192


def test_a_quantized_model_counts_params_from_the_geometry_but_weighs_by_its_index():
    cfg = {**config("llama-3-8b"), "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}
    g = parse_config(cfg, source="awq", index={"metadata": {"total_size": 5_734_000_000}})
    assert (g.params, g.params_source) == (8_030_261_248, "geometry")
    assert weight_bytes(g)[0] == 5_734_000_000


def test_an_awq_model_without_an_index_weighs_its_linear_layers_at_four_bits_plus_scales():
    g = geometry("llama-3-8b", torch_dtype="float16",
                 quantization_config={"quant_method": "awq", "bits": 4, "group_size": 128})
    # embeddings + lm_head: 2 x 128,256 x 4096 = 1,050,673,152 params x 2 bytes = 2,101,346,304
    # linear: 8,030,261,248 - 1,050,673,152 = 6,979,588,096 params x 0.5 = 3,489,794,048
    # scales: 6,979,588,096 / 128 groups x (2-byte scale + 0.5-byte zero point) = 136,320,080
    size, reason = weight_bytes(g)
    assert size == 2_101_346_304 + 3_489_794_048 + 136_320_080
    assert reason.startswith("6.98 B quantized params × 4 bits (awq, group 128)")


def test_an_invalid_index_total_size_is_refused_by_name():
    with pytest.raises(ConfigError) as err:
        parse_config(config("llama-3-8b"), source="l", index={"metadata": {"total_size": "big"}})
    assert "total_size" in err.value.field
