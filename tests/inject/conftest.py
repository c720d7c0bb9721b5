"""Fixtures shared by the injector's tests."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from enova.errors import EnovaError, UsageError
from enova.inject.datasets import load_tokenizer

MODELS = Path.home() / ".cache" / "enova" / "models"


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer_or_reason():
    """The builtin SmolLM2's tokenizer (found in enova's cache, or resolved: converted on first
    use), or the reason it cannot be had."""
    folders = sorted(p for p in MODELS.glob("smollm2-135m-instruct-*") if (p / "tokenizer.json").is_file())
    if not folders:
        from enova.modelstore import resolve_model
        try:
            folders = [Path(resolve_model("builtin:smollm2-135m-instruct", base_dir=Path.cwd(),
                                          cache_dir=Path.home() / ".cache" / "enova").path)]
        except EnovaError as exc:
            return None, f"the builtin SmolLM2 model is not in {MODELS} and cannot be made here: {exc}"
    try:
        return load_tokenizer(str(folders[0])), ""
    except UsageError as exc:
        return None, str(exc)


@pytest.fixture
def smollm2():
    tokenizer, reason = smollm2_tokenizer_or_reason()
    if tokenizer is None:
        pytest.skip(reason)
    return tokenizer


