"""The KV cache as vLLM 0.32 counts it, from a ModelGeometry: bytes per token, the
"KV cache size: N tokens" and "Maximum concurrency for L tokens per request" figures it logs
for a given amount of KV memory per worker, and the memory it demands before it will start.

Pure. Called by enova.recommend.sizing (GPU and CPU sizing, and the arithmetic of a refusal).

How vLLM counts (vllm/v1/kv_cache_interface.py, vllm/v1/core/kv_cache_utils.py):
- Page: one layer's block of `block_size` tokens: block_size x kv_heads_per_rank x head_dim x 2
  (K and V) x kv bytes, kv_heads_per_rank = max(1, kv_heads // tp) (heads are replicated when
  there are fewer than ranks). MLA: block_size x (kv_lora_rank + qk_rope_head_dim) x kv bytes,
  one latent shared by all heads and kept whole on every rank.
- Groups: layers whose cache behaves alike (all full attention, or all sliding with the same
  window) form one group of every layer. Mixed (Gemma 2/3): layers are bucketed by window; the
  group size is the smallest bucket's layer count (the largest's when it is under 1.5 x the
  smallest), and each bucket splits into ceil(n / group size) groups, layer i going to group
  i mod that. One block of the shared pool holds a page for each layer of the largest group:
  bytes_per_block = layers in the largest group x page.
- num_blocks = available // bytes_per_block (the null block vLLM keeps is among them).
- One request of max_model_len L takes from the pool, per group, ceil(L / block) blocks (full
  attention) or ceil(min(window - 1 + in_flight, L) / block) + 1 (sliding: the window, the
  tokens scheduled but not yet settled, and one block for a window straddling two blocks).
  in_flight = max_num_batched_tokens x batches in flight: 1 on the CPU backend, 2 with async
  scheduling on a GPU. All groups draw on the one pool, so a request's blocks are their sum.
- Maximum concurrency = num_blocks / blocks per request; the logged "KV cache size" is
  int(concurrency x L). For a model all of full attention whose L is a multiple of the block
  that is num_blocks x block_size; with sliding windows it counts tokens of requests of length
  L, not token slots, so it exceeds the pool's slots (it is not divided by the groups).
- Start-up check: available minus one block (the null block) must hold one request of L, so
  available >= bytes_per_block x (blocks per request + 1); else vLLM refuses "To serve at least
  one request with the model's max seq len ...", estimating the longest L that would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .model import ModelGeometry

DEFAULT_IN_FLIGHT_TOKENS = 2048  # vLLM's default max_num_batched_tokens, one batch in flight


@dataclass(frozen=True)
class KVPool:
    """vLLM's KV cache layout for one worker: `groups` as (window or None, layers in the group)."""

    block_size: int
    page_bytes: int
    groups: tuple[tuple[int | None, int], ...]

    @property
    def bytes_per_block(self) -> int:
        return max(layers for _, layers in self.groups) * self.page_bytes

    def num_blocks(self, available_bytes: int) -> int:
        return max(0, available_bytes) // self.bytes_per_block

    def blocks_per_request(self, max_model_len: int, in_flight_tokens: int = DEFAULT_IN_FLIGHT_TOKENS) -> int:
        return sum(self._group_blocks(window, max_model_len, in_flight_tokens) for window, _ in self.groups)

    def _group_blocks(self, window: int | None, length: int, in_flight: int) -> int:
        if window is None:
            return math.ceil(length / self.block_size)
        return math.ceil(min(window - 1 + in_flight, length) / self.block_size) + 1


def kv_bytes_per_token_per_layer(g: ModelGeometry, *, kv_dtype_bytes: float, tp: int = 1) -> tuple[int, ...]:
    """Bytes one token occupies in each layer's cache on one rank."""
    if g.mla is not None:
        per_layer = (g.mla.kv_lora_rank + g.mla.qk_rope_head_dim) * kv_dtype_bytes
    else:
        per_layer = 2 * max(1, g.num_kv_heads // tp) * g.head_dim * kv_dtype_bytes
    return (int(per_layer),) * g.num_layers


def kv_cache_bytes_per_token(g: ModelGeometry, *, kv_dtype_bytes: float, tp: int = 1,
                             max_model_len: int | None = None) -> int:
    """What one more token of context costs on one rank, summed over layers. A sliding layer
    holds at most `window` tokens, so with max_model_len L given it is amortised over a request
    of L: its share is min(window, L) / L of a full layer's (without L, a full layer's: the
    cost while within the window). Rounded up."""
    total = 0.0
    per_layers = kv_bytes_per_token_per_layer(g, kv_dtype_bytes=kv_dtype_bytes, tp=tp)
    for window, per_layer in zip(g.layer_windows, per_layers):
        share = 1.0 if window is None or max_model_len is None else min(window, max_model_len) / max_model_len
        total += per_layer * share
    return math.ceil(total)


def kv_pool(g: ModelGeometry, *, block_size: int, kv_dtype_bytes: float, tp: int = 1) -> KVPool:
    """The groups and page size vLLM lays the cache out with (all layers share one page size)."""
    page = block_size * kv_bytes_per_token_per_layer(g, kv_dtype_bytes=kv_dtype_bytes, tp=tp)[0]
    buckets: dict[int | None, int] = {}
    for window in g.layer_windows:
        buckets[window] = buckets.get(window, 0) + 1
    if len(buckets) == 1:
        return KVPool(block_size, page, ((g.layer_windows[0], g.num_layers),))
    smallest, largest = min(buckets.values()), max(buckets.values())
    size = largest if largest < smallest * 1.5 else smallest
    groups: list[tuple[int | None, int]] = []
    for window, layers in buckets.items():
        count = math.ceil(layers / size)
        groups += [(window, len(range(i, layers, count))) for i in range(count)]
    return KVPool(block_size, page, tuple(groups))


def max_concurrency(g: ModelGeometry, available_bytes: int, *, max_model_len: int, block_size: int,
                    kv_dtype_bytes: float, tp: int = 1, in_flight_tokens: int = DEFAULT_IN_FLIGHT_TOKENS) -> float:
    """vLLM's "Maximum concurrency for {max_model_len} tokens per request" for that many bytes
    of KV memory per worker (get_max_concurrency_for_kv_cache_config)."""
    pool = kv_pool(g, block_size=block_size, kv_dtype_bytes=kv_dtype_bytes, tp=tp)
    return pool.num_blocks(available_bytes) / pool.blocks_per_request(max_model_len, in_flight_tokens)


def kv_cache_tokens(g: ModelGeometry, available_bytes: int, *, block_size: int, kv_dtype_bytes: float,
                    tp: int = 1, max_model_len: int | None = None,
                    in_flight_tokens: int = DEFAULT_IN_FLIGHT_TOKENS) -> int:
    """vLLM's "KV cache size: N tokens" for that many bytes of KV memory per worker:
    int(max concurrency x max_model_len); max_model_len defaults to the model's
    max_position_embeddings, vLLM's default."""
    length = max_model_len or g.max_position_embeddings
    concurrency = max_concurrency(g, available_bytes, max_model_len=length, block_size=block_size,
                                  kv_dtype_bytes=kv_dtype_bytes, tp=tp, in_flight_tokens=in_flight_tokens)
    return int(concurrency * length)


def min_kv_bytes_for(g: ModelGeometry, max_model_len: int, *, block_size: int, kv_dtype_bytes: float,
                     tp: int = 1, in_flight_tokens: int = DEFAULT_IN_FLIGHT_TOKENS) -> int:
    """The least KV memory per worker with which vLLM starts at this max_model_len: one
    request's blocks plus the null block."""
    pool = kv_pool(g, block_size=block_size, kv_dtype_bytes=kv_dtype_bytes, tp=tp)
    return pool.bytes_per_block * (pool.blocks_per_request(max_model_len, in_flight_tokens) + 1)


def max_model_len_for(g: ModelGeometry, available_bytes: int, *, block_size: int, kv_dtype_bytes: float,
                      tp: int = 1, in_flight_tokens: int = DEFAULT_IN_FLIGHT_TOKENS,
                      limit: int | None = None) -> int:
    """The longest max_model_len (at most `limit`, default max_position_embeddings) that this
    much KV memory per worker lets vLLM start with; 0 when not even one token fits. vLLM's
    estimate in its refusal, by the same binary search."""
    pool = kv_pool(g, block_size=block_size, kv_dtype_bytes=kv_dtype_bytes, tp=tp)
    usable = available_bytes - pool.bytes_per_block

    def fits(length: int) -> bool:
        return pool.bytes_per_block * pool.blocks_per_request(length, in_flight_tokens) <= usable

    low, high, best = 1, limit or g.max_position_embeddings, 0
    while low <= high:
        mid = (low + high) // 2
        if fits(mid):
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best


def default_block_size(g: ModelGeometry, device: Literal["gpu", "cpu"]) -> tuple[int, str]:
    """The block size vLLM picks when none is given, and why."""
    if device == "cpu" and g.mla is not None:
        return 16, "vLLM's CPU MLA kernel works in blocks of 16 tokens (AMX-capable CPUs excepted)"
    if device == "cpu":
        return 128, "vLLM's CPU backend default block size"
    return 16, "vLLM's default block size (an attention backend may ask for a larger one)"
