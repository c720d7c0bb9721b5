"""Bounded replica and gateway logs: rotation by copy and truncate, under the writers' feet.

Replicas (vLLM) and the gateway write their stdout and stderr straight into files under
`<state_dir>/logs/` (runtime.local, apply.gateway) and outlive enova, which never relays their
output: a relay that died would kill the engine with SIGPIPE. So the files cannot be renamed
away and reopened; instead `rotate_log` copies a file that reached `max_bytes` to `<file>.1`
(after shifting `.1 -> .2 ...` up to `keep`) and truncates the original in place, and the
writer carries on at the new end. Called by the reconciler's timer and by `enova apply`.

Requirement on the writers: the file must be open with O_APPEND (`open(path, "ab")`, as
runtime.local and apply.gateway do). Each write then goes to the current end of the file, which
after the truncate is offset 0. A writer without O_APPEND keeps its own offset and writes past
the new end, leaving a sparse file whose first megabytes read back as NUL bytes.

The cost of copy-and-truncate, shared with logrotate's copytruncate: lines written in the
moment between the last copy and the truncate are lost. The copy is repeated until it has
caught up with the writer, so that moment is as short as a truncate.

Two processes may rotate at once (the reconciler's timer and an `enova apply`): each rotation
holds an exclusive lock on `.rotate.lock` in the log file's own directory (filelock's flock-based
UnixFileLock, which the kernel drops if its holder dies), so a file is rotated by one of them,
once. Everything here blocks on the disk only, and is idempotent: a file below its limit is left
as it is.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from filelock import UnixFileLock

from enova.errors import TemporaryError

MAX_BYTES = 50 * 1024 * 1024     # a live log file is rotated once it holds this much
KEEP = 3                         # rotated copies kept: <file>.1 (newest) ... <file>.3
LOCK_NAME = ".rotate.lock"
_CHUNK = 1024 * 1024
_CATCH_UP_PASSES = 5             # copy passes after the first, to reach the writer's end of a line


def rotate_log(path: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> bool:
    """Rotate `path` if it holds `max_bytes` or more: `<path>.1 ... <path>.<keep-1>` move up by one
    (the oldest is dropped), the contents are copied to `<path>.1` and `path` is truncated to zero
    in place. keep=0 only truncates. Rotated copies numbered above `keep` (left by an earlier,
    larger `keep`) are removed, whether or not the file is rotated this time.

    Returns True when the file was rotated; False when it is below the limit or does not exist.
    Idempotent; blocks while another process rotates in the same directory. Raises TemporaryError,
    naming the file, when the disk refuses (full, permissions), and ValueError for a bad limit."""
    if max_bytes < 1 or keep < 0:
        raise ValueError(f"max_bytes must be >= 1 and keep >= 0 (got {max_bytes}, {keep})")
    path = Path(path)
    try:
        with _directory_lock(path.parent):
            copies = _existing_copies(path)
            for number in copies:
                if number > keep:
                    _copy_name(path, number).unlink(missing_ok=True)
            return _rotate_locked(path, max_bytes, keep, [n for n in copies if n < keep])
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise TemporaryError(f"cannot rotate {path}: {exc.strerror or exc}", delay=60.0) from exc


def rotate_logs(log_dir: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> list[Path]:
    """Rotate every `*.log` file under `log_dir` (recursively; symlinks are not followed) that has
    reached `max_bytes`. Returns the files rotated, sorted. A missing `log_dir` rotates nothing.
    One file's failure does not stop the others: they are all tried, then a TemporaryError names
    every file that failed."""
    root = Path(log_dir)
    if not root.is_dir():
        return []
    rotated: list[Path] = []
    failures: list[str] = []
    for path in sorted(root.rglob("*.log")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            if rotate_log(path, max_bytes=max_bytes, keep=keep):
                rotated.append(path)
        except TemporaryError as exc:
            failures.append(str(exc))
    if failures:
        raise TemporaryError("; ".join(failures), delay=60.0)
    return rotated


# ---- the steps, under the directory's lock ------------------------------------------------

def _rotate_locked(path: Path, max_bytes: int, keep: int, to_shift: list[int]) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_size < max_bytes:
            return False
        if keep == 0:
            os.ftruncate(fd, 0)
            return True
        for number in sorted(to_shift, reverse=True):      # .2 -> .3 (over the oldest), then .1 -> .2
            os.replace(_copy_name(path, number), _copy_name(path, number + 1))
        partial = path.with_name(f".{path.name}.rotating")   # not *.log: never rotated itself
        out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _copy_to_the_end(fd, out)
            os.ftruncate(fd, 0)          # the writer's next O_APPEND write lands at offset 0
        except BaseException:
            os.close(out)
            os.unlink(partial)
            raise
        os.close(out)
        os.replace(partial, _copy_name(path, 1))
        return True
    finally:
        os.close(fd)


def _copy_to_the_end(src: int, dst: int) -> None:
    """Copy `src` from offset 0 to its end while the writer goes on appending: pass after pass
    until a pass finds nothing new, and, for a few passes more, until the copy ends with a
    newline (a write in progress becomes visible to readers a page at a time). A writer that
    leaves a line open (a progress bar drawn with \\r) is not waited for longer than that."""
    offset = 0
    last = b""
    passes = 0
    while True:
        chunk = os.pread(src, _CHUNK, offset)
        if chunk:
            os.write(dst, chunk)        # a regular file: written whole
            offset += len(chunk)
            last = chunk[-1:]
            continue
        if last in (b"", b"\n") or passes >= _CATCH_UP_PASSES:
            return
        passes += 1
        time.sleep(0.001)


def _copy_name(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}")


def _existing_copies(path: Path) -> list[int]:
    """The numbers of the rotated copies of `path` there are now (`<name>.1`, `<name>.2` ...)."""
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]*)")
    found = (pattern.fullmatch(other.name) for other in path.parent.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def _directory_lock(directory: Path) -> UnixFileLock:
    """An exclusive, blocking lock on `<directory>/.rotate.lock` (a context manager): filelock's
    flock lock with no soft fallback, so the kernel drops it if we die. Raises FileNotFoundError
    for a missing directory, which has nothing to rotate (filelock would create it)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"no directory {directory}")
    return UnixFileLock(directory / LOCK_NAME, mode=0o644, fallback_to_soft=False)
