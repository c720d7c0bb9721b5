"""Read a model's geometry (its config.json, and the safetensors index when there is one) for
the recommender, without downloading or converting any weights.

- `builtin:<name>`: the converted folder's config.json when it has been prepared, else the copy
  shipped in enova/modelstore/data (the same file, taken from the conversion), so planning never
  waits for a conversion;
- a local folder: its config.json and model.safetensors.index.json;
- a Hugging Face id: from the local Hugging Face cache, else the two small files from the Hub (or
  HF_ENDPOINT), never the weights; HF_HUB_OFFLINE forbids the download.

Called by enova.apply.facts (planning `engine.args: auto`) and the `enova recommend` command.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enova.errors import PermanentError
from enova.modelstore.builtin import builtin_dir, builtin_model
from enova.modelstore.resolve import HUB_TIMEOUT_S, _TRUE, _hf_cache_dir, _local_folder, _query_hub, hub_call
from enova.recommend.geometry import parse_config
from enova.recommend.model import ConfigError, ModelGeometry
from enova.spec.models import classify_model

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
DATA = Path(__file__).with_name("data")


def read_geometry(ref: str, *, base_dir: Path, cache_dir: Path, env: Mapping[str, str] | None = None) -> ModelGeometry:
    """The geometry of model `ref` (as a spec writes it). Blocking: instant for local and builtin
    models and cached hub models, up to ~HUB_TIMEOUT_S per file otherwise. Raises ConfigError
    (exit 2) naming the file and field when the config is unusable, PermanentError when the
    model cannot be found, TemporaryError when the Hub is out of reach."""
    env = os.environ if env is None else env
    try:
        kind = classify_model(ref)
    except ValueError as exc:
        raise PermanentError(f"model {ref!r}: {exc}") from None
    if kind == "builtin":
        name = ref.removeprefix("builtin:")
        model = builtin_model(name)
        prepared = builtin_dir(model.name, cache_dir) / CONFIG
        path = prepared if prepared.is_file() else DATA / f"{model.name}.config.json"
        return parse_config(_read_json(path, str(path)), source=f"{ref} ({path})")
    if kind == "local":
        folder = _local_folder(ref, base_dir)
        index = folder / INDEX
        return parse_config(_read_json(folder / CONFIG, str(folder / CONFIG)), source=str(folder / CONFIG),
                            index=_read_json(index, str(index)) if index.is_file() else None)
    return _hub_geometry(ref, env)


def _read_json(path: Path, source: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PermanentError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(source, "", f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"must be a JSON object (got {type(data).__name__})")
    return data


def _hub_geometry(repo_id: str, env: Mapping[str, str]) -> ModelGeometry:
    config = _hub_file(repo_id, CONFIG, env, required=True)
    assert config is not None
    index = _hub_file(repo_id, INDEX, env, required=False)
    return parse_config(_read_json(config, f"{repo_id}/{CONFIG}"), source=f"{repo_id} (Hugging Face)",
                        index=_read_json(index, f"{repo_id}/{INDEX}") if index else None)


def _hub_file(repo_id: str, filename: str, env: Mapping[str, str], *, required: bool) -> Path | None:
    """A small file of a hub model: from the cache, else downloaded (only that file). None when
    an optional file does not exist in the repository."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    cache = _hf_cache_dir(env)
    try:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
    except ValueError as exc:  # HFValidationError: not a valid repo id
        raise PermanentError(f"model {repo_id!r}: not a valid Hugging Face id ({exc})") from None
    if isinstance(hit, str):
        return Path(hit)
    if hit is not None and not required:  # the cache knows the file does not exist
        return None
    if env.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE:
        if not required:
            return None
        raise PermanentError(
            f"model {repo_id!r}: its {filename} is not in the local Hugging Face cache ({cache}) and "
            f"HF_HUB_OFFLINE is set; fetch it once (hf download {repo_id} {filename}) or point model: at a local folder")

    if required:  # one quick question first: the download's own retries take half a minute to give up
        _query_hub(repo_id, env)

    def fetch() -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=cache, endpoint=env.get("HF_ENDPOINT") or None,
                                        token=env.get("HF_TOKEN") or None, etag_timeout=HUB_TIMEOUT_S - 1))
        except EntryNotFoundError:
            if required:
                raise
            return None

    return hub_call(repo_id, env, fetch)
