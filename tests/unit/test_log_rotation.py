"""Log rotation by copy and truncate, against real writer processes that append to the file
(opened with O_APPEND, as runtime.local hands it to vLLM) while it is rotated under them."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from enova.observe.logs import LOCK_NAME, rotate_log, rotate_logs

LINE = re.compile(rb"(\d{12}) x{50}")
LINE_BYTES = 64          # a divisor of the page size: no line straddles a page, so a reader never sees half of one

# Appends numbered 64-byte lines to stdout (a file the parent opened with "ab"), about 10k a second.
WRITER = textwrap.dedent("""
    import os, time
    i = 0
    while True:
        os.write(1, b"%012d %s\\n" % (i, b"x" * 50))
        i += 1
        if i % 4 == 0:
            time.sleep(0.0004)
""")

# Rotates every *.log under argv[1] for argv[2] seconds, as often as it can, so that two of them
# reach a file together; prints how many rotations it did.
ROTATOR = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from enova.observe.logs import rotate_logs
    end = time.monotonic() + float(sys.argv[2])
    count = 0
    while time.monotonic() < end:
        count += len(rotate_logs(Path(sys.argv[1]), max_bytes=int(sys.argv[3]), keep=int(sys.argv[4])))
    print(count)
""")


def start_writer(path: Path) -> subprocess.Popen:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:            # as LocalRuntime.start and spawn_gateway open it
        return subprocess.Popen([sys.executable, "-c", WRITER], stdout=out, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def line_numbers(data: bytes, name: str) -> list[int]:
    """The numbers of the lines in `data`; every line must be whole and well formed."""
    assert b"\0" not in data, f"{name} holds NUL bytes (a sparse file: the writer did not use O_APPEND?)"
    numbers = []
    for line in data.splitlines():
        found = LINE.fullmatch(line)
        assert found, f"{name}: malformed line {line[:80]!r}"
        numbers.append(int(found.group(1)))
    return numbers


def assert_rotated_set_is_sound(path: Path, keep: int) -> int:
    """Each file's lines are in order, and the files follow one another: the highest number is the
    oldest copy, .1 the newest, then the live file. No NUL bytes anywhere, copies numbered 1..n
    with no gap and n <= keep, no partial copy left behind. Returns n."""
    numbered = sorted(int(p.name.rsplit(".", 1)[1]) for p in path.parent.glob(f"{path.name}.*")
                      if p.name.rsplit(".", 1)[1].isdigit())
    assert numbered == list(range(1, len(numbered) + 1)) and len(numbered) <= keep, numbered
    files = [path.with_name(f"{path.name}.{n}") for n in reversed(numbered)] + [path]
    previous = -1
    for f in files:
        numbers = line_numbers(f.read_bytes(), f.name)
        assert numbers == sorted(set(numbers)), f"{f.name}: lines out of order or repeated"
        if numbers:
            assert numbers[0] > previous, f"{f.name} starts at line {numbers[0]}, before the previous file ended"
            previous = numbers[-1]
    assert not list(path.parent.glob(".*.rotating")), "a partial copy was left behind"
    return len(numbered)


def test_a_live_writer_s_file_stays_bounded_across_many_rotations(tmp_path):
    path = tmp_path / "logs" / "llama" / "r1.log"
    max_bytes, keep = 32 * 1024, 3
    writer = start_writer(path)
    rotations, last_seen = 0, -1
    deadline = time.monotonic() + 60
    try:
        while rotations < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
            data = path.read_bytes()
            complete = data[:data.rfind(b"\n") + 1]
            numbers = line_numbers(complete, path.name)
            newest = numbers[-1] if numbers else last_seen
            # What is there now is at most what was left under the limit, plus what was written since the last check.
            assert len(data) <= max_bytes + (newest - last_seen + 1) * LINE_BYTES
            last_seen = newest
            rotations += rotate_log(path, max_bytes=max_bytes, keep=keep)
    finally:
        stop(writer)
    assert rotations >= 40, f"only {rotations} rotations before the deadline"
    assert assert_rotated_set_is_sound(path, keep) == keep
    for n in range(1, keep + 1):       # every copy is a whole rotation's worth of lines
        assert path.with_name(f"{path.name}.{n}").stat().st_size >= max_bytes


def test_two_processes_rotating_at_once_rotate_each_file_once(tmp_path):
    logs = tmp_path / "logs"
    replica, gateway = logs / "llama" / "r1.log", logs / "gateway.log"
    max_bytes, keep = 16 * 1024, 10_000        # every copy is kept, so every rotation is checked
    writers = [start_writer(replica), start_writer(gateway)]
    try:
        rotators = [subprocess.Popen([sys.executable, "-c", ROTATOR, str(logs), "3", str(max_bytes), str(keep)],
                                     stdout=subprocess.PIPE, text=True) for _ in range(2)]
        counts = [int(r.communicate(timeout=60)[0]) for r in rotators]
        assert all(r.returncode == 0 for r in rotators)
    finally:
        for writer in writers:
            stop(writer)
    copies = [assert_rotated_set_is_sound(path, keep) for path in (replica, gateway)]
    assert sum(counts) == sum(copies) and min(copies) >= 10, (counts, copies)
    assert (logs / LOCK_NAME).exists() and (logs / "llama" / LOCK_NAME).exists()


def test_a_file_below_the_limit_is_left_untouched(tmp_path):
    path = tmp_path / "gateway.log"
    path.write_bytes(b"a line\n" * 100)
    before = path.stat()
    assert rotate_log(path, max_bytes=701, keep=3) is False
    assert rotate_logs(tmp_path, max_bytes=701, keep=3) == []
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "gateway.log"]


def test_a_file_at_the_limit_is_copied_and_truncated_in_place(tmp_path):
    path = tmp_path / "gateway.log"
    path.write_bytes(b"a line\n" * 100)
    inode = path.stat().st_ino
    assert rotate_logs(tmp_path, max_bytes=700, keep=3) == [path]
    assert path.stat().st_ino == inode and path.stat().st_size == 0      # the writer's file, emptied
    assert (tmp_path / "gateway.log.1").read_bytes() == b"a line\n" * 100


@pytest.mark.parametrize("keep", [0, 1, 2, 5])
def test_keep_n_never_leaves_more_than_n_rotated_files(tmp_path, keep):
    path = tmp_path / "r1.log"
    for round_ in range(keep + 4):
        with open(path, "ab") as out:
            out.write(b"round %d\n" % round_ * 20)
        assert rotate_log(path, max_bytes=10, keep=keep)
        copies = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r1.log."))
        assert copies == [f"r1.log.{n}" for n in range(1, min(round_ + 1, keep) + 1)]
    if keep:
        assert (tmp_path / "r1.log.1").read_bytes() == b"round %d\n" % (keep + 3) * 20


def test_lowering_keep_removes_the_copies_above_it(tmp_path):
    path = tmp_path / "r1.log"
    for n in range(1, 6):
        path.with_name(f"r1.log.{n}").write_bytes(b"old\n")
    path.write_bytes(b"small\n")
    assert rotate_log(path, max_bytes=1000, keep=2) is False
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r1.log.")) == ["r1.log.1", "r1.log.2"]


def test_a_last_line_left_open_does_not_hold_up_rotation(tmp_path):
    path = tmp_path / "r1.log"
    path.write_bytes(b"loading: 50%\r")                  # a progress bar, no newline yet
    assert rotate_log(path, max_bytes=5, keep=1)
    assert (tmp_path / "r1.log.1").read_bytes() == b"loading: 50%\r"


def test_a_missing_folder_or_file_rotates_nothing(tmp_path):
    assert rotate_logs(tmp_path / "no logs") == []
    assert rotate_log(tmp_path / "no such.log", max_bytes=1) is False


def test_only_log_files_are_rotated_and_symlinks_are_not_followed(tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"x" * 100)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.log"
    outside.write_bytes(b"x" * 100)
    (tmp_path / "link.log").symlink_to(outside)
    assert rotate_logs(tmp_path, max_bytes=10) == []
    assert outside.stat().st_size == 100
