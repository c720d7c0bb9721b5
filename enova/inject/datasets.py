"""Where the injector's prompts come from, and how long they are: the shipped prompt set, a JSONL
file, a ShareGPT file, or synthetic prompts of an exact token length; drawn token lengths; the
model's tokenizer. Called by `requests.build_requests`.

Sources (`requests.prompts` in a LoadProfile; relative paths against the spec file's folder):
  - `builtin`: `enova/inject/data/prompts.jsonl`, ~200 prompts written for enova (questions,
    instructions, short tasks of varied length), so a run needs no download.
  - a JSONL file: one object per line, `{"prompt": str}` with an optional `"output_tokens": int`
    (that prompt's output length). Blank lines are skipped; anything else wrong is an error
    naming `file:line`.
  - a ShareGPT file (a JSON array, told from JSONL by its first character `[`): each entry's
    `conversations` list of `{"from", "value"}`; the first human (`human`|`user`) turn is the
    prompt and the first answer after it (`gpt`|`chatgpt`|`assistant`) its reference answer.
    Decision: as in `vllm bench serve`, the answer's length in the model's tokens is the
    prompt's output length when a tokenizer is given and the spec sets no `output_tokens`
    (counted lazily, only for prompts a run uses); without a tokenizer it is not used.
    Entries without a human turn are skipped (real ShareGPT dumps have empty ones); an entry of
    the wrong shape is an error naming `file:line` of the entry.
  - `synthetic`: `SyntheticPrompts` (below).

Lengths (`input_tokens`, `output_tokens`): `draw_lengths` for fixed {value}, uniform {min, max}
(inclusive), normal {mean, std[, min, max]} and lognormal {mean, std[, min, max]}; normal and
lognormal are rounded and clipped to [min or 1, max or unbounded]; lognormal's mean and std are
those of the lengths themselves (converted to the underlying mu and sigma).

Token counts are the completions endpoint's: `len(tokenizer(text).input_ids)`, special tokens
included (a BOS token if the model adds one). The chat API adds its template's tokens on top.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from enova.errors import UsageError

BUILTIN = "builtin"
SYNTHETIC = "synthetic"
DISTRIBUTIONS = ("fixed", "uniform", "normal", "lognormal")
_HUMAN = frozenset({"human", "user"})
_ANSWER = frozenset({"gpt", "chatgpt", "assistant"})
_JSONL_KEYS = frozenset({"prompt", "output_tokens"})


@dataclass(frozen=True)
class Prompt:
    """One prompt. `output_tokens`: its own output length (a JSONL field), if any. `answer`: a
    ShareGPT reference answer, whose token count can stand for the output length."""

    text: str
    output_tokens: int | None = None
    answer: str | None = None


# -- prompt sources ----------------------------------------------------------------------------

def load_prompts(source: str, base_dir: Path) -> list[Prompt]:
    """The prompts of `source`: "builtin" or a JSONL/ShareGPT file (relative to `base_dir`).
    Not for "synthetic" (see `SyntheticPrompts`). Reads the file once; no network.
    Raises UsageError naming the file (and line) for a missing, unreadable or malformed file."""
    if source == SYNTHETIC:
        raise ValueError("synthetic prompts are made by SyntheticPrompts, not loaded")
    if source == BUILTIN:
        text = resources.files("enova.inject").joinpath("data", "prompts.jsonl").read_text(encoding="utf-8")
        return _parse_jsonl(text, "builtin prompts (enova/inject/data/prompts.jsonl)")
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"requests.prompts: no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"requests.prompts: cannot read {path}: {exc}") from None
    if text.lstrip()[:1] == "[":
        prompts = _parse_sharegpt(text, str(path))
    else:
        prompts = _parse_jsonl(text, str(path))
    if not prompts:
        raise UsageError(f"{path}: no prompts in the file")
    return prompts


def _parse_jsonl(text: str, where: str) -> list[Prompt]:
    prompts = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{where}:{lineno}: not a JSON object: {exc}") from None
        if not isinstance(row, dict):
            raise UsageError(f"{where}:{lineno}: expected a JSON object like {{\"prompt\": \"...\"}}, "
                             f"got {type(row).__name__}")
        unknown = sorted(set(row) - _JSONL_KEYS)
        if unknown:
            raise UsageError(f"{where}:{lineno}: unknown field{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; accepted: prompt, output_tokens")
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise UsageError(f"{where}:{lineno} prompt: must be a non-empty string")
        out = row.get("output_tokens")
        if out is not None and (not isinstance(out, int) or isinstance(out, bool) or out < 1):
            raise UsageError(f"{where}:{lineno} output_tokens: must be a positive integer (got {out!r})")
        prompts.append(Prompt(prompt, out))
    return prompts


def _parse_sharegpt(text: str, where: str) -> list[Prompt]:
    """Walks the top-level array entry by entry, so that an error names the entry's line."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line, counted = 1, 0

    def line_at(p: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, p)
        counted = p
        return line

    def skip(p: int) -> int:
        while p < len(text) and text[p] in " \t\r\n":
            p += 1
        return p

    prompts: list[Prompt] = []
    pos = skip(pos)
    if text[pos:pos + 1] == "]":
        return prompts
    while True:
        try:
            entry, end = decoder.raw_decode(text, pos)
        except ValueError as exc:
            lineno = getattr(exc, "lineno", None) or line_at(pos)
            raise UsageError(f"{where}:{lineno}: not valid JSON: {getattr(exc, 'msg', exc)}") from None
        prompt = _sharegpt_entry(entry, f"{where}:{line_at(pos)}")
        if prompt is not None:
            prompts.append(prompt)
        pos = skip(end)
        if text[pos:pos + 1] == ",":
            pos = skip(pos + 1)
        elif text[pos:pos + 1] == "]":
            if text[pos + 1:].strip():
                raise UsageError(f"{where}:{line_at(pos)}: text after the end of the array")
            return prompts
        else:
            raise UsageError(f"{where}:{line_at(pos)}: expected ',' or ']' after an entry")


def _sharegpt_entry(entry: Any, where: str) -> Prompt | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("conversations"), list):
        raise UsageError(f"{where}: expected a ShareGPT entry {{\"conversations\": [{{\"from\": ..., "
                         f"\"value\": ...}}, ...]}}")
    turns = entry["conversations"]
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
            raise UsageError(f"{where} conversations[{i}]: expected {{\"from\": str, \"value\": str}}")
    for i, turn in enumerate(turns):
        if turn["from"] in _HUMAN and turn["value"]:
            answer = next((t["value"] for t in turns[i + 1:] if t["from"] in _ANSWER), None)
            return Prompt(turn["value"], None, answer or None)
    return None


# -- lengths -----------------------------------------------------------------------------------

def draw_lengths(spec: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` token lengths (int64, each >= 1) drawn from a lengths spec such as
    {"distribution": "normal", "mean": 64, "std": 8, "min": 16}. Keys that are None count as
    absent (a pydantic model_dump). Pure given `rng`. Raises UsageError for an unknown
    distribution or a missing or invalid parameter."""
    spec = {k: v for k, v in spec.items() if v is not None}
    kind = spec.get("distribution", "fixed")

    def need(key: str) -> float:
        if key not in spec:
            raise UsageError(f"a {kind} length distribution needs `{key}`")
        return float(spec[key])

    if kind == "fixed":
        value = int(need("value"))
        if value < 1:
            raise UsageError(f"a fixed length must be >= 1 (got {value})")
        return np.full(n, value, dtype=np.int64)
    if kind == "uniform":
        low, high = int(need("min")), int(need("max"))
        if not 1 <= low <= high:
            raise UsageError(f"a uniform length needs 1 <= min <= max (got min {low}, max {high})")
        return rng.integers(low, high + 1, size=n, dtype=np.int64)
    if kind not in DISTRIBUTIONS:
        raise UsageError(f"unknown length distribution {kind!r}; one of: {', '.join(DISTRIBUTIONS)}")
    mean, std = need("mean"), need("std")
    if mean <= 0 or std < 0:
        raise UsageError(f"a {kind} length needs mean > 0 and std >= 0 (got mean {mean}, std {std})")
    low = max(1, int(spec.get("min", 1)))
    high = spec.get("max")
    if high is not None and int(high) < low:
        raise UsageError(f"a {kind} length needs min <= max (got min {low}, max {high})")
    if kind == "normal":
        values = rng.normal(mean, std, size=n)
    else:
        sigma2 = math.log1p((std / mean) ** 2)
        values = rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), size=n)
    values = np.clip(np.rint(values), low, np.inf if high is None else int(high))
    return values.astype(np.int64)


# -- tokenizer ---------------------------------------------------------------------------------

def load_tokenizer(model_path: str) -> Any:
    """The model's tokenizer, from a local folder enova resolved (transformers' AutoTokenizer;
    imported here because transformers takes seconds to import). Blocking, a few seconds.
    Raises UsageError when transformers is missing or the folder holds no usable tokenizer."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UsageError("counting tokens needs the `transformers` package (it comes with vLLM: "
                         "pip install 'enova[cpu]' or pip install transformers)") from None
    try:
        return AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for a bad folder
        raise UsageError(f"cannot load the tokenizer of {model_path}: {exc}") from None


def count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts of `texts` as the completions endpoint counts them (special tokens included)."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


# -- synthetic prompts -------------------------------------------------------------------------

# Ordinary English words. Each synthetic prompt is a seeded random sequence of them.
WORDS = tuple("""
the of and to in is that for it as was with be by on not he this are or his from at which but have
an they you were her she there one all we their been has when who will more no if out so said what
up its about into than them can only other new some could time these two may then do first any my
now such like our over man me even most made after also did many before must through back years where
much your way well down should because each just those people how too little state good very make
world still own see men work long get here between both life being under never day same another know
while last might us great old year off come since against go came right used take three states
himself few house use during without again place around however home small found thought went say
part once general high upon school every does got united left number course war until always away
something fact though water less public put think almost hand enough far took head yet government
system better set told nothing night end why called didn find going look asked later knew point next
city business give group toward young days let room president side social given present several order
national possible rather second face per among form important often things looked early white case
john become large big need four within felt along children saw best church ever least power development
light thing seemed family interest want members mind country area others done turned although open
""".split())


class SyntheticPrompts:
    """Prompts of an exact token count for one tokenizer.

    Method: keep the WORDS that are one token both alone and after a space (for byte-level BPE
    and SentencePiece tokenizers the count of "w1 w2 ... wk" is then k plus the special tokens);
    for a target of t tokens, draw t - specials words with the request's own generator and join
    them with spaces; count all prompts in one batched tokenizer call, and for any prompt whose
    count is off (a tokenizer that merges across words), drop or add words and count again, up
    to 16 rounds. Random words make each prompt distinct, so the server's prefix cache does not
    shorten prefill. The shortest prompt is one word: a target below specials + 1 gets that.
    A prompt that still misses after 16 rounds keeps its actual count, which the caller records.
    Fast: thousands of prompts of hundreds of tokens in well under a second after loading.
    """

    ROUNDS = 16

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.specials = len(tokenizer("")["input_ids"])
        single = [w for w in WORDS
                  if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1
                  and len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
        self.words = np.array(single if len(single) >= 32 else list(WORDS))

    def make(self, targets: list[int], rngs: list[np.random.Generator]) -> tuple[list[str], list[int]]:
        """(texts, their token counts) for the target counts, one generator per prompt."""
        words = [list(self.words[rng.integers(0, len(self.words), size=max(1, t - self.specials))])
                 for t, rng in zip(targets, rngs)]
        counts = count_tokens(self.tokenizer, [" ".join(w) for w in words])
        todo = [i for i, c in enumerate(counts) if c != targets[i]]
        for _ in range(self.ROUNDS):
            if not todo:
                break
            for i in todo:
                diff = targets[i] - counts[i]
                if diff > 0:
                    words[i].extend(self.words[rngs[i].integers(0, len(self.words), size=diff)])
                elif len(words[i]) > 1:
                    del words[i][max(1, len(words[i]) + diff):]
            fixed = count_tokens(self.tokenizer, [" ".join(words[i]) for i in todo])
            for i, c in zip(todo, fixed):
                counts[i] = c
            todo = [i for i in todo if counts[i] != targets[i] and (counts[i] < targets[i] or len(words[i]) > 1)]
        return [" ".join(w) for w in words], counts
