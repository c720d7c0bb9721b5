"""The event log on real files: round trip, rotation, concurrent writers (threads and a process), follow."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from enova.reconcile.events import Event, EventLog


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_recorded_events_read_back_in_order_with_every_field(tmp_path):
    log = EventLog(tmp_path / "state" / "events.jsonl", clock=FakeClock())
    first = log.record("Normal", "Created", "deployment/smollm2", "1 replica", revision="abc1234")
    second = log.record("Warning", "CrashLoopBackOff", "deployment/other", "exited 3 times\nlast: oom")
    assert log.read() == [first, second]
    assert first == Event(1_700_000_001.0, "Normal", "Created", "deployment/smollm2", "1 replica", "abc1234")
    assert log.read(subject="deployment/other") == [second]
    assert log.read(since=first.time + 0.5) == [second]
    assert log.read(limit=1) == [second] and log.read(limit=0) == []
    lines = (tmp_path / "state" / "events.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["message"] == "exited 3 times\nlast: oom"


def test_an_event_survives_json_and_unknown_keys_are_ignored():
    event = Event(1.5, "Normal", "Scaled", "deployment/é", "1 -> 2 replicas", "abc")
    assert Event.from_json(event.to_json()) == event
    assert "\n" not in event.to_json()
    assert Event.from_json('{"time": 2, "type": "Normal", "reason": "R", "subject": "s", "message": "m", "x": 1}') \
        == Event(2.0, "Normal", "R", "s", "m", "")
    for bad in ("[]", '{"time": "now", "type": "Normal", "reason": "R", "subject": "s", "message": "m"}',
                '{"time": 1, "type": "Normal", "reason": "R", "subject": "s"}', "{not json"):
        with pytest.raises(ValueError):
            Event.from_json(bad)


def test_format_is_one_human_line():
    event = Event(1795482123.0, "Normal", "Scaled", "deployment/smollm2", "1 -> 2 replicas")
    assert event.format() == "2026-11-24T01:02:03Z Normal   Scaled  deployment/smollm2  1 -> 2 replicas"
    warning = Event(1795482123.0, "Warning", "SpecInvalid", "specs", "2 errors:\r\nx.yaml:3 a\nx.yaml:4 b", "abc1234")
    assert warning.format() == ("2026-11-24T01:02:03Z Warning  SpecInvalid  specs  2 errors: | x.yaml:3 a | x.yaml:4 b"
                                "  [abc1234]")


def test_only_normal_and_warning_are_event_types(tmp_path):
    with pytest.raises(ValueError, match="Normal, Warning"):
        EventLog(tmp_path / "events.jsonl").record("Error", "Failed", "specs", "x")


def test_corrupt_lines_are_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, clock=FakeClock())
    first = log.record("Normal", "Created", "gateway", "started")
    with open(path, "ab") as fh:
        fh.write(b'{"time": 1, "type": "Nor\n\xff\xfe\n[1, 2]\n\n')
    second = log.record("Normal", "Deleted", "gateway", "stopped")
    assert log.read() == [first, second]


def test_rotation_keeps_the_order_across_files_and_only_the_newest_backups(tmp_path):
    path = tmp_path / "events.jsonl"
    line = len(Event(1_700_000_001.0, "Normal", "Scaled", "deployment/x", "step 00").to_json()) + 1
    log = EventLog(path, max_bytes=3 * line, backups=2, clock=FakeClock())
    recorded = [log.record("Normal", "Scaled", "deployment/x", f"step {n:02d}") for n in range(10)]

    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert all(p.stat().st_size <= 3 * line for p in tmp_path.iterdir())
    # 10 events, 3 per file: the current file has the last one, the two backups the six before it
    assert log.read() == recorded[3:]
    assert [e.message for e in log.read(limit=2)] == ["step 08", "step 09"]


def test_a_line_longer_than_max_bytes_still_gets_written(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", max_bytes=10, backups=1, clock=FakeClock())
    events = [log.record("Normal", "Created", "gateway", "x" * 50) for _ in range(3)]
    assert log.read() == events[1:]


def test_no_backups_means_rotation_starts_the_file_over(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", max_bytes=200, backups=0, clock=FakeClock())
    events = [log.record("Normal", "Created", "gateway", f"n{n}") for n in range(10)]
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]
    assert log.read() == events[-len(log.read()):] and 0 < len(log.read()) < 10


WRITER = """
import sys
from pathlib import Path
from enova.reconcile.events import EventLog
log = EventLog(Path(sys.argv[1]), max_bytes=int(sys.argv[2]), backups=200)
for n in range(int(sys.argv[3])):
    log.record("Normal", "Scaled", "process", f"{n:05d} " + "p" * (n % 37))
"""


def test_concurrent_threads_and_a_process_never_corrupt_or_lose_a_line(tmp_path):
    path = tmp_path / "events.jsonl"
    per_writer, per_process, max_bytes = 400, 1500, 4096
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(max_bytes), str(per_process)])
    log = EventLog(path, max_bytes=max_bytes, backups=200)
    wait_for(lambda: path.exists() or process.poll() is not None)  # the threads write alongside the process

    def write(name: str) -> None:
        for n in range(per_writer):
            log.record("Warning", "ApplyFailed", name, f"{n:05d} " + "t" * (n % 53))

    threads = [threading.Thread(target=write, args=(f"thread-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert process.wait(timeout=60) == 0

    files = [p for p in log.files() if p.exists()]
    assert len(files) > 5  # it rotated, many times
    raw = [line for p in files for line in p.read_bytes().split(b"\n") if line]
    assert len(raw) == 4 * per_writer + per_process
    events = [Event.from_json(line.decode()) for line in raw]  # raises on a corrupt line
    assert all(p.stat().st_size <= max_bytes for p in files)
    for writer, count in [("process", per_process)] + [(f"thread-{i}", per_writer) for i in range(4)]:
        numbers = [int(e.message.split()[0]) for e in events if e.subject == writer]
        assert numbers == list(range(count)), writer  # each writer's events in order, across files
    assert log.read() == events
    process_at = [i for i, e in enumerate(events) if e.subject == "process"]
    assert any(e.subject != "process" for e in events[process_at[0]:process_at[-1]])  # they did interleave


def collect(log: EventLog, stop: threading.Event, into: list[Event], **options) -> threading.Thread:
    events = log.follow(stop, poll=0.01, **options)  # the starting point is taken here, not in the thread
    thread = threading.Thread(target=lambda: into.extend(events), daemon=True)
    thread.start()
    return thread


def wait_for(condition, timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("timed out")


def test_follow_yields_only_new_events_and_keeps_going_across_rotations(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=400, backups=3, clock=FakeClock())
    log.record("Normal", "Created", "gateway", "before follow")
    seen: list[Event] = []
    stop = threading.Event()
    thread = collect(log, stop, seen)

    recorded = []
    for n in range(12):  # several rotations, some faster than follow polls
        recorded.append(log.record("Normal", "Scaled", "deployment/x", f"after {n}"))
        if n % 3 == 0:
            wait_for(lambda: len(seen) == len(recorded))
    wait_for(lambda: len(seen) == len(recorded))
    assert path.with_name("events.jsonl.1").exists()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert seen == recorded


def test_follow_waits_for_the_file_and_filters_by_subject(tmp_path):
    log = EventLog(tmp_path / "state" / "events.jsonl", clock=FakeClock())
    seen: list[Event] = []
    stop = threading.Event()
    thread = collect(log, stop, seen, subject="deployment/a")
    log.record("Normal", "Created", "deployment/b", "not this one")
    wanted = log.record("Normal", "Created", "deployment/a", "this one")
    wait_for(lambda: seen == [wanted])
    stop.set()
    thread.join(timeout=5)
    assert seen == [wanted]


def test_follow_survives_rotation_with_no_backups(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", max_bytes=300, backups=0, clock=FakeClock())
    log.record("Normal", "Created", "gateway", "before follow")
    seen: list[Event] = []
    stop = threading.Event()
    thread = collect(log, stop, seen)
    recorded = []
    for n in range(8):
        recorded.append(log.record("Normal", "Scaled", "deployment/x", f"after {n}"))
        wait_for(lambda: len(seen) == len(recorded))
    stop.set()
    thread.join(timeout=5)
    assert seen == recorded
