"""The sd_notify protocol: tell systemd that the reconciler is ready, reloading, stopping or alive.

systemd (Type=notify) passes the address of a datagram socket in $NOTIFY_SOCKET; each message is
one datagram of newline-separated KEY=VALUE lines (sd_notify(3)). This is those few lines of
protocol, with no dependency. The CLI builds one `Notifier` from the environment and hands it to
the controller; outside systemd the variable is unset and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("enova.reconcile")

# The variables systemd sets for the main process. A process the reconciler starts (a replica, the
# gateway) is not the main process and should not inherit them.
ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(raw: str) -> bytes | None:
    """The socket address of $NOTIFY_SOCKET: a filesystem path, or an abstract name written '@name'."""
    if raw.startswith("/"):
        return os.fsencode(raw)
    if raw.startswith("@") and len(raw) > 1:
        return b"\0" + os.fsencode(raw[1:])
    return None


def _clean(value: object) -> str:
    """One line: a newline inside a value would start a new KEY=VALUE field."""
    return " ".join(str(value).replace("\0", " ").splitlines())


class Notifier:
    """Sends sd_notify messages to $NOTIFY_SOCKET (a path or an abstract '@name' socket). A no-op when
    the variable is unset. Never raises (a failed send is logged once).

    Each send opens a socket, sends one datagram and closes it: it does not block on systemd and
    holds no descriptor a child process could inherit."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _address(raw)
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET=%r is not a socket path or an abstract '@name'; "
                        "not notifying systemd", raw)
        self._watchdog_usec = _positive_int(env.get("WATCHDOG_USEC"))
        pid = env.get("WATCHDOG_PID")
        self._watchdog_pid = _positive_int(pid) if pid else None
        self._watchdog_pid_bad = bool(pid) and self._watchdog_pid is None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> None:
        """Send the fields as one datagram, in the order given: send(READY="1", STATUS="x") sends
        b"READY=1\\nSTATUS=x\\n". Values are made single-line."""
        if self._address is None or not fields:
            return
        message = "".join(f"{key}={_clean(value)}\n" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8", "replace"), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s (further failures are not logged)",
                            self._address.replace(b"\0", b"@", 1).decode(errors="replace"), exc)

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is finished."""
        if status is None:
            self.send(READY="1")
        else:
            self.send(READY="1", STATUS=status)

    def status(self, text: str) -> None:
        """A one-line status that `systemctl status` shows."""
        self.send(STATUS=text)

    def reloading(self) -> None:
        """A reload started; `ready()` ends it. systemd >= 253 wants the CLOCK_MONOTONIC time with it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(RELOADING="1", MONOTONIC_USEC=str(usec))

    def stopping(self) -> None:
        """Shutdown started."""
        self.send(STOPPING="1")

    def watchdog(self) -> None:
        """Still alive: must come more often than WatchdogSec, or systemd restarts the service."""
        self.send(WATCHDOG="1")

    @property
    def watchdog_interval(self) -> float | None:
        """How often to call `watchdog()`, in seconds: half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
        advises. None when there is no watchdog, or when WATCHDOG_PID names another process."""
        if self._watchdog_usec is None or self._watchdog_pid_bad:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000


def _positive_int(raw: str | None) -> int | None:
    try:
        value = int(raw) if raw else 0
    except ValueError:
        return None
    return value if value > 0 else None
