"""The sd_notify client against real AF_UNIX datagram sockets (a path one and an abstract one)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enova.reconcile.notify import Notifier


class Listener:
    """A bound datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str):
        self.env_value = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(5)

    def receive(self) -> bytes:
        return self.sock.recv(65536)

    def nothing_pending(self) -> bool:
        self.sock.settimeout(0.2)
        try:
            self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return True
        finally:
            self.sock.settimeout(5)
        return False


@pytest.fixture
def path_listener() -> Iterator[Listener]:
    # A short directory: a socket path must fit in 108 bytes, and pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="enova-notify-") as directory:
        listener = Listener(str(Path(directory) / "notify.sock"))
        yield listener
        listener.sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    listener = Listener(f"@enova-test-{secrets.token_hex(6)}")
    yield listener
    listener.sock.close()


def notifier_for(listener: Listener, **extra: str) -> Notifier:
    return Notifier({"NOTIFY_SOCKET": listener.env_value, **extra})


def test_ready_sends_one_datagram_with_the_status(path_listener):
    notifier = notifier_for(path_listener)
    assert notifier.enabled
    notifier.ready("serving 2 deployments")
    assert path_listener.receive() == b"READY=1\nSTATUS=serving 2 deployments\n"
    notifier.ready()
    assert path_listener.receive() == b"READY=1\n"


def test_an_abstract_socket_name_starting_with_at_is_reached(abstract_listener):
    notifier = notifier_for(abstract_listener)
    notifier.status("reconciling smollm2")
    assert abstract_listener.receive() == b"STATUS=reconciling smollm2\n"
    notifier.ready("ok")
    assert abstract_listener.receive() == b"READY=1\nSTATUS=ok\n"


def test_stopping_and_watchdog_send_their_fields(path_listener):
    notifier = notifier_for(path_listener)
    notifier.stopping()
    assert path_listener.receive() == b"STOPPING=1\n"
    notifier.watchdog()
    assert path_listener.receive() == b"WATCHDOG=1\n"


def test_reloading_carries_the_monotonic_clock_in_microseconds(path_listener):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier_for(path_listener).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = path_listener.receive().decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert lines[2:] == [""]
    usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= after


def test_send_keeps_the_field_order_given(path_listener):
    notifier_for(path_listener).send(STATUS="draining", READY="1", ERRNO="0")
    assert path_listener.receive() == b"STATUS=draining\nREADY=1\nERRNO=0\n"


def test_newlines_in_a_status_cannot_start_another_field(path_listener):
    notifier_for(path_listener).status("stalled:\nREADY=1\r\nsecond line")
    assert path_listener.receive() == b"STATUS=stalled: READY=1 second line\n"


def test_without_notify_socket_every_call_is_a_no_op(monkeypatch, path_listener):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for notifier in (Notifier(), Notifier({})):
        assert not notifier.enabled
        notifier.ready("x")
        notifier.status("x")
        notifier.reloading()
        notifier.watchdog()
        notifier.stopping()
        assert notifier.watchdog_interval is None
    assert path_listener.nothing_pending()


def test_the_process_environment_is_read_when_no_mapping_is_given(monkeypatch, path_listener):
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.env_value)
    Notifier().watchdog()
    assert path_listener.receive() == b"WATCHDOG=1\n"


def test_a_relative_socket_path_disables_notification():
    assert not Notifier({"NOTIFY_SOCKET": "notify.sock"}).enabled
    assert not Notifier({"NOTIFY_SOCKET": "@"}).enabled


def test_a_failed_send_never_raises_and_is_logged_once(caplog):
    with tempfile.TemporaryDirectory(prefix="enova-notify-") as directory:
        gone = str(Path(directory) / "gone.sock")       # nobody listens here
        notifier = Notifier({"NOTIFY_SOCKET": gone})
        with caplog.at_level(logging.WARNING, logger="enova.reconcile"):
            notifier.ready("x")
            notifier.watchdog()
            notifier.stopping()
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1
    assert gone in warnings[0].getMessage()


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert Notifier({"WATCHDOG_USEC": "60000000"}).watchdog_interval == 30.0
    assert Notifier({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 30.0
    assert Notifier({"WATCHDOG_USEC": "500000"}).watchdog_interval == 0.25


def test_watchdog_interval_is_none_for_another_pid_or_no_watchdog():
    other = os.getppid() if os.getppid() != os.getpid() else os.getpid() + 1
    assert Notifier({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(other)}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "not-a-pid"}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval is None
