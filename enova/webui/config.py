"""What the web UI server is told: where the gateway is, where to listen, and the gateway's token.

`WebUIConfig` is built by `enova webui run` (enova.commands.webui) and by tests. `TokenFile`
holds the gateway's bearer token read from a file in the gateway's format (one token per line,
`#` comments; the first token is sent) and re-reads it when the file changes, so a rotation
needs no restart. Used by `server` and `relay`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from enova.errors import UsageError
from enova.gateway.config import load_tokens

log = logging.getLogger("enova.webui")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
DEFAULT_SERVING_HOST = "127.0.0.1"
DEFAULT_SERVING_PORT = 9199          # the gateway's default port


@dataclass(frozen=True)
class WebUIConfig:
    serving_host: str = DEFAULT_SERVING_HOST    # the gateway
    serving_port: int = DEFAULT_SERVING_PORT
    host: str = DEFAULT_HOST                    # where the page is served
    port: int = DEFAULT_PORT                    # 0: any free port (tests)
    token_file: Path | None = None              # the gateway's bearer token, read server-side
    connect_timeout: float = 5.0                # to open a connection to the gateway
    # Longest silence accepted from the gateway: it may hold a request while a replica starts
    # (scale from zero, 180 s by default), and the first token of a long prompt takes a while on a CPU.
    read_timeout: float = 300.0
    max_body_bytes: int = 1 << 20               # a chat request from the page

    @property
    def gateway(self) -> str:
        """host:port of the gateway, as the page's messages show it."""
        host = f"[{self.serving_host}]" if ":" in self.serving_host else self.serving_host
        return f"{host}:{self.serving_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway}"

    @property
    def loopback(self) -> bool:
        """Whether the page listens on a loopback address only (then only loopback Host names
        are accepted, which defeats DNS rebinding)."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenFile:
    """The gateway's bearer token from `path`, re-read when the file's inode, size or mtime
    change (checked on each call: one stat). A file that turns bad (emptied, unreadable) keeps
    the last good token and logs why once per change; `load()` at start-up raises instead."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None

    def load(self) -> str:
        """Read the file now. Raises UsageError naming the file if it is missing, unreadable
        or holds no token. Blocks on one small read."""
        stamp = self._stat()
        self._token = load_tokens(self.path)[0]
        self._stamp = stamp
        return self._token

    def token(self) -> str | None:
        """The current token; re-reads the file if it changed since the last read."""
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._token = load_tokens(self.path)[0]
                log.info("token file %s changed; using its new token", self.path)
            except UsageError as exc:
                log.warning("%s; still sending the previous token", exc)
        return self._token

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)
