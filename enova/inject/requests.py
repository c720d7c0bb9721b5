"""The requests of a run: a prompt, an output length and a JSON body for every scheduled arrival.
Called by the injector once per run (each worker or shard builds the same list and sends its share).

Rules, given the LoadProfile's `requests` block as a plain dict (every key optional):
  - api: `completions` (default; /v1/completions), `chat` (/v1/chat/completions, one user
    message) or `generate` (the gateway's /generate, which takes its deployment from the
    X-Enova-Deployment header, so its body names no model).
  - prompts: `builtin` (default), a JSONL or ShareGPT file, or `synthetic` (see `datasets`).
    Dataset prompts are dealt to arrivals in a seeded shuffled cycle: arrival i gets
    prompts[order[i mod len]], `order` a seeded permutation.
  - input length, synthetic prompts only: the arrival's (a trace row's) `input_tokens`, else
    one drawn from `input_tokens`. A dataset prompt has its own length (a trace's input
    counts are then not used); it is counted when a tokenizer is given, else left None.
  - output length (`max_tokens` in the body): the arrival's `output_tokens`, else one drawn
    from `output_tokens`, else the prompt's own (a JSONL `output_tokens`, or a ShareGPT
    answer's token count when a tokenizer is given), else the profile's `max_tokens`.
  - sampling: `temperature` and `top_p` when set; `ignore_eos: true` adds vLLM's
    `"ignore_eos": true` (the gateway passes it on). `stream` is not set here: the runner adds
    `stream` and `stream_options`.

Determinism: every random choice comes from `seed` through separate numpy streams (prompt
order, input lengths, output lengths, one per synthetic prompt), and a request depends only on
the seed and its arrival's `index`, never on which other arrivals are in the list: the same
seed gives identical requests, and a worker building its share gets exactly those of the whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from enova.errors import UsageError

from .datasets import SYNTHETIC, Prompt, SyntheticPrompts, count_tokens, draw_lengths, load_prompts, load_tokenizer
from .model import Arrival, Request

__all__ = ["APIS", "body", "build_requests", "load_tokenizer"]  # load_tokenizer: the caller's one import

APIS = ("completions", "chat", "generate")
# Stream ids under the run's seed, so that changing one part of the spec leaves the others' draws alone.
_ORDER, _INPUT, _OUTPUT, _SYNTHETIC = 1, 2, 3, 4


def _generator(root: np.random.SeedSequence, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(root.entropy, spawn_key=key)))


def build_requests(arrivals: list[Arrival], spec: dict[str, Any] | None, *, model: str, max_tokens: int,
                   seed: int | None, base_dir: Path, tokenizer: Any = None) -> list[Request]:
    """One Request per arrival, in the arrivals' order (rules in the module docstring).

    `spec`: the `requests` block as a plain dict (a pydantic `model_dump()`; None values count as
    absent). `model`: the served model name for the body. `seed` None: a fresh random seed.
    `base_dir`: the spec file's folder, for prompt files. `tokenizer`: the model's tokenizer
    (`datasets.load_tokenizer`), required for synthetic prompts.
    Blocking: reads the prompt file; tokenizes when a tokenizer is given (about a second per
    few thousand prompts). Raises UsageError for a bad option or prompt file.
    """
    spec = {k: v for k, v in (spec or {}).items() if v is not None}
    api = spec.get("api", "completions")
    if api not in APIS:
        raise UsageError(f"requests.api: unknown API {api!r}; one of: {', '.join(APIS)}")
    source = spec.get("prompts", "builtin")
    root = np.random.SeedSequence(seed)
    size = max((a.index for a in arrivals), default=-1) + 1

    if source == SYNTHETIC:
        texts, input_counts = _synthetic(arrivals, spec, root, size, tokenizer)
        own_outputs: list[int | None] = [None] * len(arrivals)
    else:
        if "input_tokens" in spec:
            raise UsageError("requests.input_tokens: only for `prompts: synthetic` "
                             f"(the prompts from {source!r} have their own lengths)")
        prompts = load_prompts(source, base_dir)
        order = _generator(root, _ORDER).permutation(len(prompts))
        chosen = [prompts[order[a.index % len(prompts)]] for a in arrivals]
        texts = [p.text for p in chosen]
        input_counts = count_tokens(tokenizer, texts) if tokenizer is not None else [None] * len(arrivals)
        own_outputs = _own_outputs(chosen, tokenizer, "output_tokens" in spec)

    drawn = draw_lengths(spec["output_tokens"], size, _generator(root, _OUTPUT)) if "output_tokens" in spec else None
    sampling = {k: spec[k] for k in ("temperature", "top_p") if k in spec}
    if spec.get("ignore_eos"):
        sampling["ignore_eos"] = True
    requests = []
    for a, text, n_in, own in zip(arrivals, texts, input_counts, own_outputs):
        if a.output_tokens is not None:
            out = a.output_tokens
        elif drawn is not None:
            out = int(drawn[a.index])
        else:
            out = own if own is not None else max_tokens
        requests.append(Request(index=a.index, at=a.at, api=api, body=body(api, model, text, out, sampling),
                                input_tokens=n_in, expected_output_tokens=out))
    return requests


def body(api: str, model: str, prompt: str, max_tokens: int, sampling: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of one request, without `stream` (the runner adds it)."""
    if api == "completions":
        return {"model": model, "prompt": prompt, "max_tokens": max_tokens, **sampling}
    if api == "chat":
        return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                **sampling}
    if api == "generate":
        return {"prompt": prompt, "max_tokens": max_tokens, **sampling}
    raise ValueError(f"unknown api {api!r}")


def _synthetic(arrivals: list[Arrival], spec: dict[str, Any], root: np.random.SeedSequence, size: int,
               tokenizer: Any) -> tuple[list[str], list[int]]:
    if tokenizer is None:
        raise UsageError("requests.prompts: synthetic prompts need the model's tokenizer to count their tokens, "
                         "and none was loaded (give the model's folder)")
    drawn = draw_lengths(spec["input_tokens"], size, _generator(root, _INPUT)) if "input_tokens" in spec else None
    targets = []
    for a in arrivals:
        if a.input_tokens is not None:
            targets.append(int(a.input_tokens))
        elif drawn is not None:
            targets.append(int(drawn[a.index]))
        else:
            raise UsageError("requests.input_tokens: required with `prompts: synthetic` "
                             "(unless every trace row gives its input tokens)")
    rngs = [_generator(root, _SYNTHETIC, a.index) for a in arrivals]
    return SyntheticPrompts(tokenizer).make(targets, rngs)


def _own_outputs(chosen: list[Prompt], tokenizer: Any, spec_sets_output: bool) -> list[int | None]:
    """Each chosen prompt's own output length: its JSONL `output_tokens`, or its ShareGPT answer's
    token count (counted only with a tokenizer, only when the spec sets none, once per prompt)."""
    answers: dict[str, int] = {}
    if tokenizer is not None and not spec_sets_output:
        pending = sorted({p.answer for p in chosen if p.output_tokens is None and p.answer})
        answers = dict(zip(pending, (len(ids) for ids in
                                     tokenizer(pending, add_special_tokens=False)["input_ids"]))) if pending else {}
    return [p.output_tokens if p.output_tokens is not None else answers.get(p.answer or "") or None for p in chosen]
