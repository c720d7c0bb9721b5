"""Process identity and the state lock, against real processes."""

import subprocess
import sys

import pytest

from enova.errors import LockHeldError
from enova.observe.lock import StateLock
from enova.observe.processes import check_process, process_start_time


def test_a_live_process_matches_its_start_time_and_a_wrong_time_does_not():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = process_start_time(proc.pid)
        assert check_process(proc.pid, started).alive
        reused = check_process(proc.pid, started - 100)
        assert not reused.alive and "another process" in reused.detail
    finally:
        proc.kill()
        proc.wait()
    gone = check_process(proc.pid, started)
    assert not gone.alive and "exited" in gone.detail


def test_a_second_holder_of_the_state_lock_is_refused_with_the_first_ones_pid(tmp_path):
    code = ("import sys, time; from enova.observe.lock import StateLock; "
            f"l = StateLock(__import__('pathlib').Path({str(tmp_path)!r}), 'holder'); l.acquire(); "
            "print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=f"pid {holder.pid} \\(holder\\)"):
            StateLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with StateLock(tmp_path):  # the kernel released it when the holder died
        pass
