"""The app server's token: made 0600 once, atomically, whoever asks at the same time; read back; an
operator's token file is used as it is, made private when missing, refused when others can read it."""

from __future__ import annotations

import os
import stat
import threading
from types import SimpleNamespace

import pytest

from enova.app.auth import bearer, ensure_token, read_token, token_from_file, token_path, verdict
from enova.errors import UsageError


def test_ensure_token_creates_it_0600_once_and_then_reads_it(tmp_path):
    assert read_token(tmp_path) is None
    token, created = ensure_token(tmp_path)
    assert created and len(token) >= 40
    assert stat.S_IMODE(token_path(tmp_path).stat().st_mode) == 0o600
    assert ensure_token(tmp_path) == (token, False)
    assert read_token(tmp_path) == token


def test_concurrent_first_starts_agree_on_one_token(tmp_path):
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def start():
        barrier.wait()
        results.append(ensure_token(tmp_path))
    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({token for token, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert [p.name for p in token_path(tmp_path).parent.iterdir()] == ["token"]  # no temporary file left


def test_an_empty_token_file_left_by_hand_is_replaced(tmp_path):
    token_path(tmp_path).parent.mkdir(parents=True)
    token_path(tmp_path).write_text("\n")
    token, created = ensure_token(tmp_path)
    assert created and read_token(tmp_path) == token


def test_an_operator_token_file_is_made_private_used_and_refused_when_shared(tmp_path):
    path = tmp_path / "tok"
    token, created = token_from_file(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_from_file(path) == (token, False)
    os.chmod(path, 0o640)
    with pytest.raises(UsageError, match="chmod 600"):
        token_from_file(path)


def test_tokens_are_compared_whole_and_a_missing_one_is_401():
    ctx = SimpleNamespace(tokens=("alpha-token", "beta-token"), token="alpha-token")
    assert verdict(ctx, "beta-token") is None and verdict(ctx, "alpha-token") is None
    assert verdict(ctx, "alpha-toke")[0] == 403 and verdict(ctx, "alpha-token ")[0] == 403
    assert verdict(ctx, None)[0] == 401 and verdict(ctx, "")[0] == 401
    assert bearer("Bearer  abc ") == "abc" and bearer("bearer abc") == "abc"
    assert bearer("Basic abc") is None and bearer("abc") is None and bearer(None) is None
