"""A model's geometry read from its Hugging Face config.json, and what its weights weigh.

Pure: takes the parsed config.json (and, when there is one, the parsed
model.safetensors.index.json) as dicts; no file, network or clock. Called by the code that reads
a model folder or a hub cache (the CLI, enova.advise) and by enova.recommend.sizing, which
prices the weights (weight_bytes) and the decode work (active_params).

Rules, mirroring transformers 5.19 (defaults) and vLLM 0.32 (what it builds):
- Architectures: SUPPORTED; anything else is a ConfigError on model_type. Gemma 3's multimodal
  config nests the language model under `text_config`, which hub files write sparsely: missing
  keys take Gemma3TextConfig's defaults (noted); its SigLIP vision tower is counted in params.
- head_dim: config `head_dim`, else hidden_size // num_attention_heads. num_key_value_heads
  defaults to num_attention_heads. MLA models (deepseek_v2/v3) carry an MLA instead.
- dtype: `dtype` (transformers 5) or `torch_dtype`, normalised ("bf16" -> "bfloat16");
  "bfloat16" when absent (noted). vLLM loads a float32 checkpoint as bfloat16 (weight_bytes).
- max_position_embeddings: times the RoPE scaling factor except for the rope types vLLM leaves
  unscaled (llama3, yarn, longrope, ...) and Gemma 3, as vLLM derives its max_model_len.
- layer_windows: the window is `sliding_window` (0 or null: none; the Qwen family only with
  `use_sliding_window`). Layer types come from the config's `layer_types` list, else the list
  transformers derives (gemma2: even layers sliding; gemma3: layer i full when
  (i + 1) % sliding_window_pattern == 0, pattern 6 by default; qwen2/qwen3: layers from
  max_window_layers on; qwen2_moe: its own rule). vLLM's llama (so mistral and phi3), gemma2
  and gemma3 read the list per layer; its other models take one window for every layer, set
  only when the list is absent or all sliding (a config without a list, Mistral-7B-v0.1 or
  Phi-3-mini-4k, slides on every layer). qwen2/qwen3 with some but not all layers sliding is a
  ConfigError: vLLM refuses it.
- params: the safetensors index's total_size / dtype bytes when an index is given and the
  model is not quantized; else counted from the geometry: embeddings (vocab x hidden, twice
  when untied), per layer the q/k/v/o projections (MLA: its low-rank projections and norms),
  biases and q/k norms where the architecture has them, the MLP (gated: 3 x hidden x
  intermediate) or the MoE (experts x 3 x hidden x expert_intermediate, router, shared
  experts), the norms, and the vision tower for Gemma 3.
- quantization_config: fp8 -> 8 bits (a weight_block_size makes its groups); awq/gptq -> bits
  and group_size; bitsandbytes -> 4 or 8; compressed-tensors -> its weights' num_bits when every
  config group agrees. Anything else is a ConfigError naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .model import DTYPE_BYTES, MLA, ConfigError, ModelGeometry, MoE, Quantization

SUPPORTED = ("deepseek_v2", "deepseek_v3", "gemma2", "gemma3", "gemma3_text", "llama", "mistral",
             "mixtral", "phi3", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe")

_QWEN = ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe")
_GEMMA3 = ("gemma3", "gemma3_text")
_DEEPSEEK = ("deepseek_v2", "deepseek_v3")
# vLLM model classes that read `layer_types` per layer (llama.py and its subclasses
# mistral.py, phi3.py; gemma2.py; gemma3.py). The others take cache_config.sliding_window.
_PER_LAYER_WINDOWS = ("llama", "mistral", "phi3", "gemma2", "gemma3", "gemma3_text")
_TIED_BY_DEFAULT = ("gemma2", "gemma3", "gemma3_text")
_QK_NORM = ("qwen3", "qwen3_moe", "gemma3", "gemma3_text")
_FOUR_NORMS = ("gemma2", "gemma3", "gemma3_text")  # pre/post attention and pre/post MLP norms

# transformers 5.19 Gemma3TextConfig / SiglipVisionConfig defaults, for the keys a hub file omits
_GEMMA3_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
    "max_position_embeddings": 131_072, "sliding_window": 4096,
}
_SIGLIP_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_channels": 3,
    "image_size": 224, "patch_size": 16,
}
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "f16": "float16", "half": "float16",
                  "fp32": "float32", "f32": "float32", "float": "float32"}
# RoPE types whose max_position_embeddings vLLM does not multiply by `factor`
_ROPE_UNSCALED = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling")
_LAYER_TYPES = ("full_attention", "sliding_attention")
_MISSING = object()


class _Fields:
    """Typed reads from one config dict; every error names the field, prefixed by where it is."""

    def __init__(self, data: Mapping[str, Any], source: str, prefix: str = ""):
        self.data, self.source, self.prefix = data, source, prefix

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.prefix + key, message)

    def pos_int(self, key: str, default: Any = _MISSING) -> int:
        value = self.data.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, "missing")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(key, f"must be a positive integer (got {value!r})")
        return value

    def count(self, key: str, default: int = 0) -> int:
        """A non-negative integer (a number of layers or experts that may be 0); null -> default."""
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(key, f"must be a non-negative integer (got {value!r})")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false (got {value!r})")
        return value


def parse_config(config: Mapping[str, Any], *, source: str,
                 index: Mapping[str, Any] | None = None) -> ModelGeometry:
    """The geometry of the model whose config.json is `config` (`index`: its parsed
    model.safetensors.index.json, if any). Raises ConfigError naming the field at fault."""
    if not isinstance(config, Mapping):
        raise ConfigError(source, "", "config.json must be a JSON object")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise ConfigError(source, "model_type",
                          f"unsupported architecture: {model_type} (supported: {', '.join(SUPPORTED)})")
    f, notes = _text_fields(config, source)
    layers = f.pos_int("num_hidden_layers")
    hidden = f.pos_int("hidden_size")
    heads = f.pos_int("num_attention_heads")
    mla = _mla(f) if model_type in _DEEPSEEK else None
    head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim if mla else _head_dim(f, hidden, heads)
    dtype, dtype_note = _dtype(config, f)
    moe = _moe(model_type, f, layers)
    quantization = _quantization(config, source)
    max_len, len_note = _max_position_embeddings(model_type, f)
    geometry = ModelGeometry(
        source=source,
        architecture=_architecture(config),
        model_type=model_type,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=f.pos_int("num_key_value_heads", heads),
        head_dim=head_dim,
        intermediate_size=f.pos_int("intermediate_size"),
        vocab_size=f.pos_int("vocab_size"),
        tie_word_embeddings=_tied(config, f, model_type),
        dtype=dtype,
        max_position_embeddings=max_len,
        layer_windows=_layer_windows(model_type, f, layers),
        params=0,
        params_source="geometry",
        moe=moe,
        mla=mla,
        quantization=quantization,
        notes=tuple(n for n in (*notes, dtype_note, len_note) if n),
    )
    return _with_params(geometry, config, f, index)


# --- reading the config ---------------------------------------------------------------------


def _text_fields(config: Mapping[str, Any], source: str) -> tuple[_Fields, tuple[str, ...]]:
    """The fields of the language model: the config itself, or Gemma 3's `text_config` (filled
    with Gemma3TextConfig's defaults where the file is silent)."""
    model_type = config["model_type"]
    if model_type not in _GEMMA3:
        return _Fields(config, source), ()
    text, prefix = config, ""
    if model_type == "gemma3":
        text, prefix = config.get("text_config") or {}, "text_config."
        if not isinstance(text, Mapping):
            raise ConfigError(source, "text_config", f"must be an object (got {text!r})")
    missing = sorted(k for k in _GEMMA3_TEXT_DEFAULTS if text.get(k) is None)
    merged = {**text, **{k: _GEMMA3_TEXT_DEFAULTS[k] for k in missing}}
    note = (f"{prefix.rstrip('.') or 'config'}: transformers' Gemma3TextConfig defaults for "
            f"{', '.join(missing)}" if missing else "")
    return _Fields(merged, source, prefix), (note,) if note else ()


def _architecture(config: Mapping[str, Any]) -> str:
    names = config.get("architectures")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    return str(config["model_type"])


def _head_dim(f: _Fields, hidden: int, heads: int) -> int:
    if f.data.get("head_dim") is not None:
        return f.pos_int("head_dim")
    return hidden // heads


def _dtype(config: Mapping[str, Any], f: _Fields) -> tuple[str, str]:
    """The weights' dtype, normalised, and a note when it was assumed."""
    for where in (config, f.data):
        for key in ("dtype", "torch_dtype"):
            value = where.get(key)
            if value is None:
                continue
            name = str(value).lower().removeprefix("torch.")
            name = _DTYPE_ALIASES.get(name, name)
            if name not in DTYPE_BYTES:
                raise ConfigError(f.source, key, f"unknown dtype {value!r} (known: {', '.join(sorted(DTYPE_BYTES))})")
            return name, ""
    return "bfloat16", "no dtype/torch_dtype in the config: bfloat16 assumed"


def _tied(config: Mapping[str, Any], f: _Fields, model_type: str) -> bool:
    default = model_type in _TIED_BY_DEFAULT
    if config.get("tie_word_embeddings") is not None:
        return _Fields(config, f.source).flag("tie_word_embeddings", default)
    return f.flag("tie_word_embeddings", default)


def _max_position_embeddings(model_type: str, f: _Fields) -> tuple[int, str]:
    """vLLM's derived max_model_len: max_position_embeddings (2048 when absent, as vLLM assumes)
    times a RoPE scaling factor it applies."""
    if f.data.get("max_position_embeddings") is None:
        return 2048, "no max_position_embeddings in the config: 2048 assumed, as vLLM does"
    length = f.pos_int("max_position_embeddings")
    rope = f.data.get("rope_parameters") or f.data.get("rope_scaling")
    if model_type in _GEMMA3 or not isinstance(rope, Mapping):
        return length, ""
    rope_type = rope.get("rope_type") or rope.get("type")
    factor = rope.get("factor")
    if rope_type in _ROPE_UNSCALED or not isinstance(factor, (int, float)) or factor <= 1:
        return length, ""
    return int(length * factor), f"max_position_embeddings {length} x RoPE {rope_type} factor {factor:g}"


def _mla(f: _Fields) -> MLA:
    q_lora = f.data.get("q_lora_rank", 1536)  # transformers' default when the key is absent
    return MLA(
        kv_lora_rank=f.pos_int("kv_lora_rank"),
        qk_rope_head_dim=f.pos_int("qk_rope_head_dim"),
        qk_nope_head_dim=f.pos_int("qk_nope_head_dim"),
        v_head_dim=f.pos_int("v_head_dim"),
        q_lora_rank=None if q_lora is None else f.pos_int("q_lora_rank", 1536),
    )


# --- sliding windows -------------------------------------------------------------------------


def _window(model_type: str, f: _Fields) -> int | None:
    if model_type in _QWEN and not f.flag("use_sliding_window", False):
        return None
    if f.data.get("sliding_window") in (None, 0):
        return None
    return f.pos_int("sliding_window")


def _layer_types(model_type: str, f: _Fields, layers: int, window: int | None) -> list[str] | None:
    """The config's `layer_types`, else the list transformers derives (None where it derives none)."""
    given = f.data.get("layer_types")
    if given is not None:
        if not isinstance(given, list) or len(given) != layers or any(t not in _LAYER_TYPES for t in given):
            raise f.error("layer_types", f"must list {layers} entries, each one of {', '.join(_LAYER_TYPES)}")
        return given
    sliding: list[bool] | None = None
    if model_type == "gemma2":
        sliding = [(i + 1) % 2 != 0 for i in range(layers)]
    elif model_type in _GEMMA3:
        pattern = f.pos_int("sliding_window_pattern", 6)  # transformers reads only this key
        sliding = [(i + 1) % pattern != 0 for i in range(layers)]
    elif model_type in ("qwen2", "qwen3"):
        first = f.count("max_window_layers", 28)
        sliding = [window is not None and i >= first for i in range(layers)]
    elif model_type == "qwen2_moe":
        last = f.count("max_window_layers", 28)
        sliding = [window is not None and (i + 1) % 2 != 0 and i < last for i in range(layers)]
    if sliding is None:
        return None
    return ["sliding_attention" if s else "full_attention" for s in sliding]


def _layer_windows(model_type: str, f: _Fields, layers: int) -> tuple[int | None, ...]:
    window = _window(model_type, f)
    types = _layer_types(model_type, f, layers, window)
    if window is None:
        return (None,) * layers
    if model_type in _PER_LAYER_WINDOWS and types is not None:
        return tuple(window if t == "sliding_attention" else None for t in types)
    if types is None or all(t == "sliding_attention" for t in types):
        return (window,) * layers
    if model_type in ("qwen2", "qwen3"):
        raise f.error("max_window_layers", f"vLLM runs a sliding window on all {layers} layers or none, "
                                           f"not from layer {f.data.get('max_window_layers')} on")
    return (None,) * layers


# --- mixture of experts ----------------------------------------------------------------------


def _moe(model_type: str, f: _Fields, layers: int) -> MoE | None:
    if model_type == "mixtral":
        return MoE(num_experts=f.pos_int("num_local_experts"), experts_per_token=f.pos_int("num_experts_per_tok"),
                   expert_intermediate_size=f.pos_int("intermediate_size"))
    if model_type in ("qwen2_moe", "qwen3_moe"):
        return _qwen_moe(model_type, f, layers)
    if model_type in _DEEPSEEK:
        return _deepseek_moe(f, layers)
    return None


def _qwen_moe(model_type: str, f: _Fields, layers: int) -> MoE:
    """vLLM's qwen2_moe/qwen3_moe: layer i is MoE unless listed in mlp_only_layers or
    (i + 1) % decoder_sparse_step != 0."""
    step = f.pos_int("decoder_sparse_step", 1)
    dense_only = f.data.get("mlp_only_layers") or []
    if not isinstance(dense_only, list):
        raise f.error("mlp_only_layers", f"must be a list of layer numbers (got {dense_only!r})")
    dense = sum(1 for i in range(layers) if i in dense_only or (i + 1) % step != 0)
    shared = f.count("shared_expert_intermediate_size") if model_type == "qwen2_moe" else 0
    return MoE(num_experts=f.pos_int("num_experts"), experts_per_token=f.pos_int("num_experts_per_tok"),
               expert_intermediate_size=f.pos_int("moe_intermediate_size"),
               shared_intermediate_size=shared, dense_layers=dense)


def _deepseek_moe(f: _Fields, layers: int) -> MoE | None:
    """vLLM's deepseek_v2: layer i is MoE when i >= first_k_dense_replace and
    i % moe_layer_freq == 0; the shared experts are one MLP of n_shared_experts x
    moe_intermediate_size."""
    if f.data.get("n_routed_experts") is None:
        return None
    first, freq = f.count("first_k_dense_replace"), f.pos_int("moe_layer_freq", 1)
    expert = f.pos_int("moe_intermediate_size")
    dense = sum(1 for i in range(layers) if not (i >= first and i % freq == 0))
    return MoE(num_experts=f.pos_int("n_routed_experts"), experts_per_token=f.pos_int("num_experts_per_tok"),
               expert_intermediate_size=expert, shared_intermediate_size=f.count("n_shared_experts") * expert,
               dense_layers=dense)


# --- quantization ----------------------------------------------------------------------------


def _quantization(config: Mapping[str, Any], source: str) -> Quantization | None:
    q = config.get("quantization_config")
    if q is None:
        return None
    if not isinstance(q, Mapping):
        raise ConfigError(source, "quantization_config", f"must be an object (got {q!r})")
    f = _Fields(q, source, "quantization_config.")
    method = q.get("quant_method")
    if method == "fp8":
        block = q.get("weight_block_size")
        group = math.prod(block) if isinstance(block, list) and block else None
        return Quantization("fp8", 8, group)
    if method in ("awq", "gptq"):
        group = q.get("group_size")
        return Quantization(method, f.pos_int("bits"), None if group in (None, -1) else f.pos_int("group_size"))
    if method == "bitsandbytes":
        return _bitsandbytes(f)
    if method == "compressed-tensors":
        return _compressed_tensors(f)
    raise f.error("quant_method", f"unsupported quantization method: {method} "
                                  "(supported: awq, bitsandbytes, compressed-tensors, fp8, gptq)")


def _bitsandbytes(f: _Fields) -> Quantization:
    if f.flag("load_in_4bit", False):
        return Quantization("bitsandbytes", 4, 64)  # absmax per 64 weights, as bitsandbytes blocks them
    if f.flag("load_in_8bit", False):
        return Quantization("bitsandbytes", 8)
    raise f.error("load_in_4bit", "bitsandbytes without load_in_4bit or load_in_8bit")


def _compressed_tensors(f: _Fields) -> Quantization:
    groups = f.data.get("config_groups")
    if not isinstance(groups, Mapping) or not groups:
        raise f.error("config_groups", "missing")
    schemes = set()
    for name, group in groups.items():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        bits = weights.get("num_bits") if isinstance(weights, Mapping) else None
        if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
            raise f.error(f"config_groups.{name}.weights.num_bits", f"must be a positive integer (got {bits!r})")
        size = weights.get("group_size") if weights.get("strategy") == "group" else None
        schemes.add((bits, size))
    if len(schemes) != 1:
        raise f.error("config_groups", f"weight schemes differ between groups ({sorted(schemes, key=str)}): "
                                       "the weight size cannot be read from the config alone")
    bits, size = schemes.pop()
    return Quantization("compressed-tensors", bits, size)


# --- parameters ------------------------------------------------------------------------------


def _with_params(g: ModelGeometry, config: Mapping[str, Any], f: _Fields,
                 index: Mapping[str, Any] | None) -> ModelGeometry:
    total = _index_total_size(index, g.source) if index is not None else None
    if total is not None and g.quantization is None:
        return replace(g, params=int(total // DTYPE_BYTES[g.dtype]), weight_bytes_from_index=total,
                       params_source="safetensors index (model.safetensors.index.json)")
    return replace(g, params=_count_params(g, config, f), weight_bytes_from_index=total)


def _index_total_size(index: Mapping[str, Any], source: str) -> int:
    metadata = index.get("metadata") if isinstance(index, Mapping) else None
    total = metadata.get("total_size") if isinstance(metadata, Mapping) else None
    if isinstance(total, float) and total.is_integer():
        total = int(total)
    if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
        raise ConfigError(source, "model.safetensors.index.json metadata.total_size",
                          f"must be a positive integer (got {total!r})")
    return total


def _count_params(g: ModelGeometry, config: Mapping[str, Any], f: _Fields) -> int:
    embeddings = g.vocab_size * g.hidden_size * (1 if g.tie_word_embeddings else 2)
    norms = g.hidden_size * (4 if g.model_type in _FOUR_NORMS else 2)
    attention = _mla_params(g) if g.mla else _attention_params(g, f)
    layers = g.num_layers * (attention + norms) + _mlp_params(g, f)
    vision = _gemma3_vision_params(config, g) if g.model_type == "gemma3" else 0
    return embeddings + layers + g.hidden_size + vision


def _attention_params(g: ModelGeometry, f: _Fields) -> int:
    q, kv = g.num_attention_heads * g.head_dim, g.num_kv_heads * g.head_dim
    weights = g.hidden_size * (q + 2 * kv) + q * g.hidden_size
    bias = f.flag("attention_bias", False)
    qkv_bias = q + 2 * kv if bias or g.model_type in ("qwen2", "qwen2_moe") else 0
    o_bias = g.hidden_size if bias and g.model_type not in _QWEN else 0
    qk_norm = 2 * g.head_dim if g.model_type in _QK_NORM else 0
    return weights + qkv_bias + o_bias + qk_norm


def _mla_params(g: ModelGeometry) -> int:
    """DeepSeek's q (or q_a/q_a_layernorm/q_b), kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj."""
    mla, hidden, heads = g.mla, g.hidden_size, g.num_attention_heads
    assert mla is not None
    q_out = heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim)
    if mla.q_lora_rank:
        q = hidden * mla.q_lora_rank + mla.q_lora_rank + mla.q_lora_rank * q_out
    else:
        q = hidden * q_out
    kv = (hidden * (mla.kv_lora_rank + mla.qk_rope_head_dim) + mla.kv_lora_rank
          + mla.kv_lora_rank * heads * (mla.qk_nope_head_dim + mla.v_head_dim))
    return q + kv + heads * mla.v_head_dim * hidden


def _mlp_params(g: ModelGeometry, f: _Fields) -> int:
    """Every layer's MLP: gated (gate, up, down) dense layers, and MoE layers."""
    dense = 3 * g.hidden_size * g.intermediate_size + (
        2 * g.intermediate_size + g.hidden_size if f.flag("mlp_bias", False) else 0)
    if g.moe is None:
        return g.num_layers * dense
    moe, hidden = g.moe, g.hidden_size
    router = hidden * moe.num_experts + (moe.num_experts if f.data.get("topk_method") == "noaux_tc" else 0)
    shared_gate = hidden if g.model_type == "qwen2_moe" and moe.shared_intermediate_size else 0
    per_moe_layer = (moe.num_experts * 3 * hidden * moe.expert_intermediate_size + router
                     + 3 * hidden * moe.shared_intermediate_size + shared_gate)
    return moe.dense_layers * dense + (g.num_layers - moe.dense_layers) * per_moe_layer


def _gemma3_vision_params(config: Mapping[str, Any], g: ModelGeometry) -> int:
    """The SigLIP vision tower (biased q/k/v/o and fc1/fc2, two layer norms per layer, patch and
    position embeddings, post layer norm) and Gemma 3's projector into the text model."""
    given = config.get("vision_config") or {}
    v = _Fields({**_SIGLIP_DEFAULTS, **{k: x for k, x in given.items() if x is not None}}, g.source, "vision_config.")
    hidden, inter = v.pos_int("hidden_size"), v.pos_int("intermediate_size")
    patch, channels = v.pos_int("patch_size"), v.pos_int("num_channels")
    per_layer = 4 * (hidden * hidden + hidden) + 2 * hidden * inter + inter + hidden + 4 * hidden
    patches = (v.pos_int("image_size") // patch) ** 2
    embeddings = channels * patch * patch * hidden + hidden + patches * hidden
    projector = hidden * g.hidden_size + hidden
    return v.pos_int("num_hidden_layers") * per_layer + embeddings + 2 * hidden + projector


# --- weights ---------------------------------------------------------------------------------

_SCALE_BYTES = {"awq": 2.0, "gptq": 2.0, "fp8": 4.0, "bitsandbytes": 4.0, "compressed-tensors": 2.0}


def runtime_dtype(g: ModelGeometry) -> str:
    """The dtype vLLM loads unquantized weights in ("auto"): the config's, but float32
    checkpoints are cast down to bfloat16."""
    return "bfloat16" if g.dtype in ("float32", "float") else g.dtype


def weight_bytes(g: ModelGeometry) -> tuple[int, str]:
    """Bytes of the weights once loaded, and the one-line reason a human would check."""
    dtype = runtime_dtype(g)
    size = DTYPE_BYTES[dtype]
    if g.quantization is None:
        reason = f"{_billions(g.params)} params × {size:g} bytes ({dtype})"
        if dtype != g.dtype:
            return int(g.params * size), reason + f": vLLM loads the {g.dtype} checkpoint as {dtype}"
        if g.weight_bytes_from_index:
            return g.weight_bytes_from_index, reason + " = the safetensors index's total_size"
        return int(g.params * size), reason
    q = g.quantization
    if g.weight_bytes_from_index:
        return g.weight_bytes_from_index, (f"the safetensors index's total_size ({q.method}, "
                                           f"{q.bits:g}-bit weights)")
    return _quantized_bytes(g, dtype)


def _quantized_bytes(g: ModelGeometry, dtype: str) -> tuple[int, str]:
    """Quantized linear layers at bits/8 plus one scale (and an awq/gptq zero point) per group;
    embeddings and lm_head at the dtype. Norms, biases and routers are counted with the linear
    layers (under 0.1% of the weights); per-channel or per-tensor scales are left out."""
    q = g.quantization
    assert q is not None
    unquantized = g.vocab_size * g.hidden_size * (1 if g.tie_word_embeddings else 2)
    linear = g.params - unquantized
    scales = 0.0
    if q.group_size:
        per_group = _SCALE_BYTES.get(q.method, 2.0) + (q.bits / 8 if q.method in ("awq", "gptq") else 0)
        scales = linear / q.group_size * per_group
    total = int(linear * q.bits / 8 + scales + unquantized * DTYPE_BYTES[dtype])
    group = f", group {q.group_size}" if q.group_size else ""
    return total, (f"{_billions(linear)} quantized params × {q.bits:g} bits ({q.method}{group})"
                   f" + {scales / 2**30:.2f} GiB scales; {_billions(unquantized)} embedding params"
                   f" × {DTYPE_BYTES[dtype]:g} bytes ({dtype})")


def active_params(g: ModelGeometry) -> int:
    """Parameters one token's forward pass reads: all of a dense model; a MoE model without the
    routed experts it does not pick."""
    if g.moe is None:
        return g.params
    moe = g.moe
    idle = (moe.num_experts - moe.experts_per_token) * 3 * g.hidden_size * moe.expert_intermediate_size
    return g.params - (g.num_layers - moe.dense_layers) * idle


def _billions(n: float) -> str:
    return f"{n / 1e9:.2f} B"
