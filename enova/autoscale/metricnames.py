"""The one table from the autoscaler's signals to the metric names that carry them.

vLLM renames its metrics between versions (v0's `vllm:gpu_cache_usage_perc` became v1's
`vllm:kv_cache_usage_perc`), so each signal lists every name it has been published under, the
newest first; a page is read through the first name it carries. The gateway's names are enova's
own (`enova.gateway.metrics`) and listed here too, so that the scraper and the Prometheus queries
read the same table. Names are as they appear on a /metrics page: counters with `_total`,
histograms by their base name (the scraper reads `_bucket`, `_count` and `_sum`).

Pure data and one lookup; read by `signals` (scraper and Prometheus source).
"""

from __future__ import annotations

from collections.abc import Container

# Signals of one vLLM engine (one replica), labelled by `model_name` (the deployment: enova
# starts vLLM with --served-model-name set to the deployment's name) and `engine` (0 unless
# data parallel).
ENGINE: dict[str, tuple[str, ...]] = {
    # requests in the engine's running batch
    "engine_running": ("vllm:num_requests_running",),
    # requests the engine's scheduler holds waiting for room in the batch
    "engine_waiting": ("vllm:num_requests_waiting",),
    # fraction of the KV cache in use, 0..1 despite the name. v0 called the device's cache
    # `gpu_cache_usage_perc` (on the CPU backend too); its `cpu_cache_usage_perc` was the swap
    # space, a different thing, so it is deliberately not listed.
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
}

# Signals of the gateway, per deployment (label `deployment`; in-flight also by `replica`).
GATEWAY: dict[str, tuple[str, ...]] = {
    "in_flight": ("enova_gateway_requests_in_flight",),
    "queued": ("enova_gateway_queue_depth",),
    "held": ("enova_gateway_requests_held",),          # requests held while scaling from zero
    "arrivals": ("enova_gateway_requests_received_total",),    # by api: summed
    "completed": ("enova_gateway_requests_processed_total",),  # by code: summed (every answer)
    "ttft": ("enova_gateway_time_to_first_token_seconds",),
    "itl": ("enova_gateway_inter_token_latency_seconds",),
    "e2e": ("enova_gateway_e2e_latency_seconds",),
}

TABLE: dict[str, tuple[str, ...]] = {**ENGINE, **GATEWAY}


def names(signal: str) -> tuple[str, ...]:
    """Every name `signal` has been published under, newest first. KeyError for an unknown signal."""
    return TABLE[signal]


def resolve(signal: str, present: Container[str]) -> str | None:
    """The name that carries `signal` among the names `present` on a page (the newest wins when
    a page carries several, as vLLM does for a release or two after a rename); None when none."""
    for name in TABLE[signal]:
        if name in present:
            return name
    return None
