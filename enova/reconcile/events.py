"""Every action the reconciler takes, as an event: one JSON object per line, in rotated files.

The reconciler's worker threads and `enova apply` (possibly in another process) call
`EventLog.record`; `enova events` reads them with `read` and `follow`. Each event is appended
with a single write under an exclusive `flock` on the current file, so concurrent writers never
interleave lines and rotation (`events.jsonl -> events.jsonl.1 -> ...`) happens exactly once
however many processes write. Readers skip lines they cannot parse.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

TYPES = ("Normal", "Warning")


@dataclass(frozen=True)
class Event:
    """One thing the reconciler did or found, in the manner of a Kubernetes event."""

    time: float  # wall clock, seconds since the epoch
    type: str  # "Normal" | "Warning"
    reason: str  # CamelCase: Created, Scaled, Replaced, Deleted, SpecInvalid, ApplyFailed, ...
    subject: str  # "deployment/smollm2", "gateway", "specs", "reconciler"
    message: str
    revision: str = ""  # git revision of the specs, if any

    def to_json(self) -> str:
        """One line of JSON (no newline in it; non-ASCII escaped)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Event:
        """The event written by `to_json`. Ignores unknown keys; raises ValueError on anything else."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("an event is a JSON object")
        when = data.get("time")
        if isinstance(when, bool) or not isinstance(when, (int, float)):
            raise ValueError(f"event time must be a number, got {when!r}")
        fields = {}
        for name in ("type", "reason", "subject", "message", "revision"):
            value = data.get(name, "" if name == "revision" else None)
            if not isinstance(value, str):
                raise ValueError(f"event {name} must be a string, got {value!r}")
            fields[name] = value
        return cls(time=float(when), **fields)

    def format(self) -> str:
        """One human line: `2026-11-24T01:02:03Z Normal   Scaled  deployment/smollm2  1 -> 2 replicas`,
        followed by `  [abc1234]` when the revision is known. Line breaks in the message become ` | `."""
        stamp = datetime.fromtimestamp(self.time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = " | ".join(part for part in self.message.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
        line = f"{stamp} {self.type:<8} {self.reason}  {self.subject}  {message}"
        return line + (f"  [{self.revision}]" if self.revision else "")


def _parse(raw: bytes) -> Event | None:
    try:
        return Event.from_json(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (it was not rotated or removed meanwhile)."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)


class EventLog:
    """Events appended to `path` (JSON lines), rotated to `path.1` ... `path.<backups>` when the next
    line would take the file past `max_bytes`. Thread-safe and safe across processes."""

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5,
                 clock: Callable[[], float] = time.time):
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be > 0 and backups >= 0")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.clock = clock
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        """The log's files, oldest first (those that may exist: `path.<backups>` ... `path.1`, `path`)."""
        return [self._backup(n) for n in range(self.backups, 0, -1)] + [self.path]

    def _backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def record(self, type: str, reason: str, subject: str, message: str, revision: str = "") -> Event:
        """Append one event stamped with the clock's time and return it. Blocks only while another
        writer appends (microseconds). Raises ValueError for a type other than Normal or Warning,
        OSError when the file cannot be written."""
        if type not in TYPES:
            raise ValueError(f"event type must be one of {', '.join(TYPES)}, got {type!r}")
        event = Event(self.clock(), type, reason, subject, message, revision)
        self._append((event.to_json() + "\n").encode("utf-8"))
        return event

    def _append(self, data: bytes) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if not _same_file(fd, self.path):
                        continue  # another writer rotated it while we waited: open the new file
                    size = os.fstat(fd).st_size
                    if size > 0 and size + len(data) > self.max_bytes:
                        self._rotate()
                        continue
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    return
                finally:
                    os.close(fd)  # releases the flock

    def _rotate(self) -> None:
        """path -> path.1 -> ... -> path.<backups>; the oldest is dropped. Called holding the
        exclusive lock on the current file, so only one writer rotates it."""
        if self.backups == 0:
            self.path.unlink()
            return
        for n in range(self.backups - 1, 0, -1):
            try:
                os.replace(self._backup(n), self._backup(n + 1))
            except FileNotFoundError:
                pass
        os.replace(self.path, self._backup(1))

    def read(self, since: float | None = None, subject: str | None = None, limit: int | None = None) -> list[Event]:
        """Events oldest first across the rotated files: those at or after `since`, about `subject`
        (exact match), the last `limit` of them. Skips lines that do not parse. Holds a shared lock
        on the current file while reading, so a concurrent rotation cannot skip or repeat a file."""
        events: list[Event] = []
        current = self._open_locked()
        try:
            for file in self.files()[:-1]:
                try:
                    with open(file, "rb") as fh:
                        events += self._select(fh, since, subject)
                except FileNotFoundError:
                    continue
            if current is not None:
                events += self._select(current, since, subject)
        finally:
            if current is not None:
                current.close()
        if limit is not None:
            events = events[-limit:] if limit > 0 else []
        return events

    def _open_locked(self) -> BinaryIO | None:
        """The current file, open and share-locked (None when there is none), so no writer rotates
        it until it is closed."""
        while True:
            try:
                fh = open(self.path, "rb")
            except FileNotFoundError:
                return None
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            if _same_file(fh.fileno(), self.path):
                return fh
            fh.close()  # rotated between open and lock: take the new one

    @staticmethod
    def _select(fh: BinaryIO, since: float | None, subject: str | None) -> list[Event]:
        found = []
        for raw in fh.read().split(b"\n"):
            event = _parse(raw) if raw.strip() else None
            if event is None or (since is not None and event.time < since):
                continue
            if subject is None or event.subject == subject:
                found.append(event)
        return found

    def follow(self, stop: threading.Event, poll: float = 0.2, subject: str | None = None) -> Iterator[Event]:
        """Events appended from now on (the end of the current file is taken when follow is called,
        not at the first `next`), as they come, like `tail -F`: it keeps going across rotations
        and waits for the file when it does not exist yet. Checks every `poll` seconds; returns
        when `stop` is set. Skips lines that do not parse."""
        tail = _Tail(self, subject)
        tail.open_at_end()
        return tail.run(stop, poll)


class _Tail:
    """The reading side of `EventLog.follow`: an open file, the bytes of a line not yet complete."""

    def __init__(self, log: EventLog, subject: str | None):
        self.log = log
        self.subject = subject
        self.fh: BinaryIO | None = None
        self.partial = b""

    def open_at_end(self) -> None:
        try:
            self.fh = open(self.log.path, "rb")
        except FileNotFoundError:
            return
        self.fh.seek(0, os.SEEK_END)

    def run(self, stop: threading.Event, poll: float) -> Iterator[Event]:
        try:
            while not stop.is_set():
                events = self._drain()
                if events is None:
                    events = self._switch()
                yield from (e for e in events if self.subject is None or e.subject == self.subject)
                if not events:
                    stop.wait(poll)
        finally:
            if self.fh is not None:
                self.fh.close()

    def _drain(self) -> list[Event] | None:
        """New complete lines of the open file; None when there is nothing new and the path now
        names another file (rotated) or none, or no file is open yet."""
        if self.fh is None:
            return None
        if os.fstat(self.fh.fileno()).st_size < self.fh.tell():  # truncated in place: start over
            self.fh.seek(0)
            self.partial = b""
        data = self.fh.read()
        if not data:
            return [] if _same_file(self.fh.fileno(), self.log.path) else None
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return [e for e in map(_parse, lines) if e is not None]

    def _switch(self) -> list[Event]:
        """Move to the current file after a rotation, reading whole every file written in between:
        those newer than the one we had open (all of them when it was rotated out of the set)."""
        files = self.log.files()
        start = len(files) - 1  # no file was open: what the backups hold came before follow started
        if self.fh is not None:
            start = 0  # unless found below, the file we had was rotated out: every backup is newer
            mine = os.fstat(self.fh.fileno())
            for index, file in enumerate(files[:-1]):
                try:
                    st = os.stat(file)
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                    start = index + 1
            self.fh.close()
            self.fh = None
        self.partial = b""  # a fragment left in a rotated file will never be completed
        events: list[Event] = []
        for file in files[start:-1]:
            try:
                with open(file, "rb") as fh:
                    events += [e for e in map(_parse, fh.read().split(b"\n")) if e is not None]
            except FileNotFoundError:
                continue
        try:
            self.fh = open(self.log.path, "rb")
        except FileNotFoundError:
            return events
        return events + (self._drain() or [])
