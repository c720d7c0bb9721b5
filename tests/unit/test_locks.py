"""enova's file locks (filelock's flock-based UnixFileLock) against a real second process.

The state lock (enova.observe.lock), the builtin model's conversion lock
(enova.modelstore.builtin) and the log rotation lock (enova.observe.logs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from enova.errors import LockHeldError
from enova.modelstore import builtin_dir, resolve_model
from enova.observe.lock import StateLock
from enova.observe.logs import rotate_log

SMOL = "smollm2-135m-instruct"

STATE_LOCK_HOLDER = """
import sys, time
from pathlib import Path
from enova.observe.lock import StateLock
lock = StateLock(Path(sys.argv[1]), "holder")  # kept: a dropped lock object lets go
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""

# Holds the builtin model's lock, as a second enova preparing the same model would, until told to
# finish; then leaves the model complete, as that process would, and lets the lock go.
BUILTIN_HOLDER = """
import sys
from pathlib import Path
from enova.modelstore.builtin import _exclusive_lock
final, name = Path(sys.argv[1]), sys.argv[2]
final.parent.mkdir(parents=True, exist_ok=True)
with _exclusive_lock(final.parent / f"{name}.lock", name, lambda line: None):
    print("held", flush=True)
    sys.stdin.readline()
    final.mkdir()
    (final / "config.json").write_text("{}")
    (final / ".complete").write_text("{}")
print("released", flush=True)
"""


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


def _kill(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()


def test_a_second_acquirer_of_the_state_lock_fails_at_once_naming_the_holders_pid(tmp_path: Path) -> None:
    holder = _start(STATE_LOCK_HOLDER, str(tmp_path))
    try:
        started = time.monotonic()
        with pytest.raises(LockHeldError, match=f"state lock {tmp_path / 'lock'}: pid {holder.pid} \\(holder\\); "
                                                "wait for it to finish or stop it"):
            StateLock(tmp_path, "second").acquire()
        assert time.monotonic() - started < 1.0
    finally:
        _kill(holder)


def test_the_state_lock_is_free_at_once_after_its_holder_is_killed_though_its_holder_file_is_stale(
    tmp_path: Path,
) -> None:
    holder = _start(STATE_LOCK_HOLDER, str(tmp_path))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder_file = tmp_path / "lock.holder"
    assert holder_file.read_text() == f"pid {holder.pid} (holder)\n"   # nobody cleaned it up

    started = time.monotonic()
    lock = StateLock(tmp_path, "next")
    lock.acquire()
    try:
        assert time.monotonic() - started < 1.0
        assert holder_file.read_text() == f"pid {os.getpid()} (next)\n"
    finally:
        lock.release()
    assert not holder_file.exists()


def test_the_state_lock_refuses_a_second_acquire_in_the_same_process(tmp_path: Path) -> None:
    with StateLock(tmp_path, "first") as first:
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()} \\(first\\)"):
            StateLock(tmp_path, "second").acquire()
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()} \\(first\\)"):
            first.acquire()
    with StateLock(tmp_path, "again"):
        pass


def test_the_builtin_model_lock_waits_for_another_process_and_says_so(tmp_path: Path) -> None:
    final = builtin_dir(SMOL, tmp_path)
    holder = _start(BUILTIN_HOLDER, str(final), SMOL)
    progress: list[str] = []
    result: list[object] = []
    waiter = threading.Thread(target=lambda: result.append(resolve_model(
        f"builtin:{SMOL}", base_dir=tmp_path, cache_dir=tmp_path, progress=progress.append)))
    try:
        waiter.start()
        deadline = time.monotonic() + 10
        while not progress and time.monotonic() < deadline:
            time.sleep(0.01)
        assert progress == [f"waiting for another enova process preparing builtin:{SMOL}…"]
        time.sleep(0.3)
        assert waiter.is_alive()                  # still waiting while the other process holds it
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("finish\n")
        holder.stdin.flush()
        waiter.join(timeout=10)
        assert not waiter.is_alive()
        assert holder.stdout.readline().strip() == "released"
    finally:
        _kill(holder)
        waiter.join(timeout=10)
    [resolved] = result
    assert resolved.path == str(final) and resolved.cached is True   # the other process's work
    assert progress == [f"waiting for another enova process preparing builtin:{SMOL}…"]


def test_rotating_a_log_in_a_missing_folder_creates_neither_the_folder_nor_a_lock(tmp_path: Path) -> None:
    assert rotate_log(tmp_path / "gone" / "r1.log", max_bytes=1) is False
    assert not (tmp_path / "gone").exists()
