"""One actor at a time: an exclusive lock on the state directory.

`enova apply`, `enova delete`, `enova enode run` and the reconciler hold it while they act; a
second one fails at once with a message naming the holder's pid and purpose.

The lock is filelock's flock-based `UnixFileLock` on `<state_dir>/lock`, with its soft
(existence-file) fallback turned off, so the kernel releases it when its holder dies, however
it dies. The file `lock` belongs to filelock (some of its releases truncate it on every
attempt), so who holds the lock is written, after acquiring, into its sibling `lock.holder`
("pid N (purpose)"), only for the message. The kernel lock is the truth: `lock.holder` is read
only when the kernel refuses the lock, so one left behind by a holder that was killed never
makes a free lock look held; the next holder overwrites it.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from filelock import Timeout, UnixFileLock

from enova.errors import LockHeldError

HOLDER_NAME = "lock.holder"


class StateLock:
    def __init__(self, state_dir: Path, purpose: str = "enova"):
        self.path = Path(state_dir) / "lock"
        self.holder_path = self.path.with_name(HOLDER_NAME)
        self.purpose = purpose
        # thread_local=False: like the descriptor it replaces, the hold belongs to this object,
        # not to the thread that took it.
        self._lock = UnixFileLock(self.path, mode=0o644, thread_local=False, fallback_to_soft=False)

    def acquire(self) -> None:
        """Non-blocking: one attempt, no waiting. Not reentrant: a second acquire, by this object
        or by another StateLock on the same directory in this process, is refused like one from
        another process. Raises LockHeldError naming the holder's pid and purpose."""
        if self._lock.is_locked:
            raise self._held()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            raise self._held() from None
        try:
            self.holder_path.write_text(f"pid {os.getpid()} ({self.purpose})\n")
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        """Idempotent. The holder file goes first, while we still hold the lock, so that it is
        never a later holder's file that is removed."""
        if self._lock.is_locked:
            try:
                self.holder_path.unlink(missing_ok=True)
            finally:
                self._lock.release()

    def _held(self) -> LockHeldError:
        try:
            holder = self.holder_path.read_bytes()[:200].decode(errors="replace").strip()
        except FileNotFoundError:
            holder = ""
        return LockHeldError(
            f"another enova process holds the state lock {self.path}: {holder or 'an unknown process'}; "
            "wait for it to finish or stop it")

    def __enter__(self) -> "StateLock":
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
