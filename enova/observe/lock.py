"""One actor at a time: an exclusive lock on the state directory.

`enova apply`, `enova delete` (and later the reconciler) hold it while they act; a second
one fails at once with a message naming the holder's pid. The lock is an fcntl lock, so
it is released by the kernel when its holder dies; the pid written into the file is only
for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from enova.errors import LockHeldError


class StateLock:
    def __init__(self, state_dir: Path, purpose: str = "enova"):
        self.path = Path(state_dir) / "lock"
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> None:
        """Non-blocking. Raises LockHeldError if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise LockHeldError(
                f"another enova process holds the state lock {self.path}: {holder}; "
                "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({self.purpose})\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "StateLock":
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
