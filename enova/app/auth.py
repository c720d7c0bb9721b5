"""The application server's bearer token: made on first start, kept 0600 in the state directory,
checked on every request that starts, stops or changes anything.

    <state_dir>/app/token     one line: the token (url-safe, 256 bits); mode 0600

`ensure_token` creates it atomically and exactly once (written to a private temporary file, then
hard-linked into place: two servers starting together cannot both create one, and a reader never
sees half a file). An operator may instead name a file (`enova app run --token-file FILE`), read
with the gateway's rules (one token per line, `#` comments; the first token is printed, any is
accepted); that is required to bind beyond loopback, and then reads need the token too.

`require_token` is the FastAPI dependency for mutating routes (401 without a bearer token, 403
with a wrong one; compared in constant time); `require_read_token` the one every other route gets
when `AppContext.reads_need_token` is set. Called by enova.app.server and the `enova app` commands.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from fastapi import Request, Security
from fastapi.exceptions import HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from enova.errors import UsageError

TOKEN_BYTES = 32


def token_path(state_dir: Path) -> Path:
    """Where the server's own token lives: <state_dir>/app/token."""
    return Path(state_dir) / "app" / "token"


def read_token(state_dir: Path) -> str | None:
    """The token in the state directory, None when none was made yet (or the file is empty).
    Raises UsageError when the file exists but cannot be read."""
    return _text(token_path(state_dir))


def _text(path: Path) -> str | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return text.strip() or None


def ensure_token(state_dir: Path) -> tuple[str, bool]:
    """(token, created): the state directory's token, made now (0600, atomically) when there is
    none. Idempotent; safe when several processes call it at once (exactly one creates it, the
    others read that one). Raises UsageError when the file cannot be read or written."""
    path = token_path(state_dir)
    existing = read_token(state_dir)
    if existing:
        return existing, False
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return (token, True) if _create_private(path, token) else (read_token(state_dir) or token, False)


def _create_private(path: Path, token: str) -> bool:
    """Write `token` to `path` mode 0600 unless a file is there already. True when this call
    created it. The bytes go to a temporary file created 0600 (never readable by others, even
    for an instant), then a hard link names it: link() fails if the name exists."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                if _text(path):
                    return False
                os.replace(tmp, path)  # an empty file left by hand: take its place
                return True
            return True
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the app server's token ({exc.strerror or exc})") from None


def token_from_file(path: Path) -> tuple[str, bool]:
    """(token, created) from an operator's `--token-file`: the first token in it (one per line,
    `#` comments, as the gateway reads its token_file), or a new one written there 0600 when the
    file does not exist. Refuses (UsageError) a file that others can read or write: a shared
    token is no token."""
    from enova.gateway.config import load_tokens
    path = Path(path).expanduser()
    if not path.exists():
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if _create_private(path, token):
            return token, True
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UsageError(f"--token-file {path}: mode {mode:04o} lets other users read or change it; "
                         f"chmod 600 {path}")
    return load_tokens(path)[0], False


def tokens_from_file(path: Path) -> tuple[str, ...]:
    """Every token an operator's token file holds (any of them is accepted)."""
    from enova.gateway.config import load_tokens
    return load_tokens(Path(path).expanduser())


_bearer = HTTPBearer(auto_error=False, description="The app server's token: `enova app token` prints it.")


MISSING = "this request needs the app server's token: Authorization: Bearer <token> (`enova app token` prints it)"
WRONG = "wrong token (`enova app token` prints the right one)"


def verdict(ctx, given: str | None) -> tuple[int, str] | None:
    """None when `given` (the bearer token sent, None for none) is accepted, else (401 or 403,
    why). Every accepted token is compared in constant time, so the time taken says nothing of
    which one came close."""
    accepted = ctx.tokens or ((ctx.token,) if ctx.token else ())
    if not given:
        return 401, MISSING
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(given.encode(), token.encode())
    return None if matched else (403, WRONG)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, None otherwise."""
    scheme, _, value = (header or "").strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _check(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    refused = verdict(request.app.state.ctx, credentials.credentials if credentials else None)
    if refused is not None:
        code, why = refused
        raise HTTPException(code, why, headers={"WWW-Authenticate": "Bearer"} if code == 401 else None)


def require_token(request: Request,
                  credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> None:
    """Dependency of every route that starts, stops or changes anything."""
    _check(request, credentials)


def require_read_token(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> None:
    """Dependency of every other route when reads need the token (a bind beyond loopback)."""
    if request.app.state.ctx.reads_need_token:
        _check(request, credentials)
