"""The recommender's data: a model's geometry, the hardware it is sized for, the workload, and
the recommendation (or refusal) with a one-line reason per number.

Pure frozen data, no I/O. Built by enova.recommend.geometry (ModelGeometry from a config.json),
enova.recommend.gpus (the GPU catalogue), the drivers that observe a host (NVML, /proc/meminfo)
and the CLI (Workload from a LoadProfile); consumed by enova.recommend.sizing, whose result the
CLI renders and the planner merges into a replica config (`engine.args: auto`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from enova.errors import EnovaError

GiB = 1024 ** 3
MiB = 1024 ** 2

# bytes per element of each dtype a config may name (config.json "torch_dtype" or "dtype")
DTYPE_BYTES: dict[str, float] = {
    "float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "fp8": 1, "int8": 1, "int4": 0.5,
}


class ConfigError(EnovaError):
    """A model's config.json cannot be used: names the source (file or hub id) and the field.
    Exit code 2, like a spec error: the input is wrong, retrying does not help."""

    exit_code = 2

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field, self.message = source, field, message
        super().__init__(f"{source} {field}: {message}" if field else f"{source}: {message}")


@dataclass(frozen=True)
class MoE:
    """Mixture of experts, per MoE layer. shared_intermediate_size: the always-on shared
    expert(s)' total intermediate size (0 if none); dense_layers: how many leading layers use a
    dense MLP of the model's intermediate_size instead (deepseek's first_k_dense_replace)."""

    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    shared_intermediate_size: int = 0
    dense_layers: int = 0


@dataclass(frozen=True)
class MLA:
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds one compressed latent of
    kv_lora_rank plus the rotary key part qk_rope_head_dim per token per layer, shared by all heads."""

    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: Union[int, None] = None


@dataclass(frozen=True)
class Quantization:
    """Weight quantization the config declares (quantization_config). bits: bits per quantized
    weight; group_size: elements per scale (awq/gptq; None for per-tensor/channel)."""

    method: str          # "fp8", "awq", "gptq", "bitsandbytes", "compressed-tensors", ...
    bits: float
    group_size: Union[int, None] = None


@dataclass(frozen=True)
class ModelGeometry:
    """What sizing needs from a model's config.json. `layer_windows[i]` is layer i's sliding
    window in tokens, None for full attention (len == num_layers). `params`: total parameters,
    from the safetensors index when present (params_source says which)."""

    source: str                  # the config's file path or hub id, for messages
    architecture: str            # config "architectures"[0], e.g. "MistralForCausalLM"
    model_type: str              # config "model_type", e.g. "mistral"
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    dtype: str                   # weights' dtype as the config says ("bfloat16"), normalised
    max_position_embeddings: int
    layer_windows: tuple[Union[int, None], ...]
    params: int
    params_source: str           # "safetensors index (model.safetensors.index.json)" or "geometry"
    moe: Union[MoE, None] = None
    mla: Union[MLA, None] = None
    quantization: Union[Quantization, None] = None
    weight_bytes_from_index: Union[int, None] = None  # metadata.total_size of the safetensors index
    notes: tuple[str, ...] = ()  # what was assumed while reading the config (a default dtype, ...)


@dataclass(frozen=True)
class GpuTarget:
    """The GPUs sizing is for: `count` identical devices of `memory_bytes` each."""

    name: str                    # "H100-80GB", "NVIDIA A10G" (from NVML), or "24 GiB GPU"
    memory_bytes: int
    count: int = 1
    bandwidth_gbs: Union[float, None] = None   # memory bandwidth, GB/s
    bf16: bool = True
    fp8: bool = False
    source: str = ""             # where the figures came from (NVML, a cited datasheet, --gpu-memory)
    fixed_count: bool = False    # True: a replica uses exactly `count` GPUs (a spec's resources.gpus);
                                 # False: up to `count` (`enova recommend --gpus N`), the fewest that fit


@dataclass(frozen=True)
class CpuTarget:
    """The host a CPU-engine replica runs on. available_bytes: memory free now (MemAvailable);
    cores: the cores one replica is given (resources.cpus)."""

    total_bytes: int
    available_bytes: int
    cores: int
    source: str = ""             # "/proc/meminfo", "--memory"


Target = Union[GpuTarget, CpuTarget]


@dataclass(frozen=True)
class Lengths:
    """A token-length distribution reduced to what sizing reads: mean and a high quantile (p99,
    or the distribution's max when bounded)."""

    mean: float
    p99: int


@dataclass(frozen=True)
class Workload:
    """The load sized for, from a LoadProfile when one is named. capacity_rps: requests per
    second one replica sustained in a measured run (None when none was measured;
    capacity_source says which run, or why there is none)."""

    name: str = ""
    input_tokens: Union[Lengths, None] = None
    output_tokens: Union[Lengths, None] = None
    rate_rps: Union[float, None] = None
    capacity_rps: Union[float, None] = None
    capacity_source: str = ""


@dataclass(frozen=True)
class Figure:
    """One number of a recommendation and the one-line reason a human would check."""

    key: str                     # "max_model_len", "weight_bytes", ...
    value: Any                   # int/float/str/None (None: not given, reason says why)
    reason: str
    unit: str = ""               # "bytes", "tokens", "" ...


@dataclass(frozen=True)
class Recommendation:
    """Engine settings for one replica and the figures behind them, in the order a reader
    checks them. `args`: the engine args to set (snake_case, vLLM's names): on a GPU
    tensor_parallel_size, gpu_memory_utilization, max_model_len, max_num_seqs,
    max_num_batched_tokens; on the CPU engine kv_cache_memory_bytes, max_model_len,
    max_num_seqs, max_num_batched_tokens. `user_set`: the args the caller fixed (kept as given)."""

    device: Literal["gpu", "cpu"]
    model: str
    target: str                  # one line: what it was sized for
    args: dict[str, Any]
    figures: tuple[Figure, ...]
    user_set: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def figure(self, key: str) -> Figure:
        for fig in self.figures:
            if fig.key == key:
                return fig
        raise KeyError(key)

    def value(self, key: str) -> Any:
        return self.figure(key).value


class Refusal(EnovaError):
    """The model cannot be served on the target: `arithmetic` says needs X GiB, has Y;
    `suggestions` the nearest settings that would fit (more GPUs, a shorter max_model_len, a
    quantized variant). Exit code 2."""

    exit_code = 2

    def __init__(self, model: str, target: str, arithmetic: str, suggestions: tuple[str, ...] = (),
                 figures: tuple[Figure, ...] = ()):
        self.model, self.target, self.arithmetic = model, target, arithmetic
        self.suggestions, self.figures = suggestions, figures
        lines = [f"{model} does not fit {target}: {arithmetic}"]
        lines += [f"  would fit: {s}" for s in suggestions]
        super().__init__("\n".join(lines))
