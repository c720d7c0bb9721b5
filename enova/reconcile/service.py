"""Installing `enova reconcile` as a systemd service: render the unit, write it, enable it.

Called by the CLI (`enova service install specs/ [--user]`, `enova service uninstall [--user]`).
The unit comes from templates/systemd/enova-reconcile.service.j2. Installing writes the unit file
and, where systemd is the running init (/run/systemd/system exists), runs `systemctl daemon-reload`
and `systemctl enable --now`; elsewhere (a container, a build host) it only writes the file and
says what to run. Every path and argument is quoted for systemd's own unit-file syntax, so a
specs directory with spaces (or %, $, quotes) arrives intact; nothing goes through a shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from enova.engines.templates import render
from enova.errors import PermanentError, UsageError

UNIT_NAME = "enova-reconcile.service"
TEMPLATE = "systemd/enova-reconcile.service.j2"
SYSTEMD_RUNNING_MARKER = Path("/run/systemd/system")     # what sd_booted(3) checks
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+./:=,@")


@dataclass(frozen=True)
class ServiceResult:
    unit_path: Path
    activated: bool          # daemon-reload + enable --now (or disable --now) ran
    message: str             # what happened / what the user should run


# ---- quoting for unit files ---------------------------------------------------------------

def _single_line(value: str, what: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise UsageError(f"{what} contains a newline or NUL, which a systemd unit cannot hold: {value!r}")
    return value


def exec_quote(arg: str) -> str:
    """One word of an Exec*= command line (systemd.service(5) "Command lines"): `%` is a specifier
    and `$` a variable there, so both are doubled; the word is double-quoted, with C escapes, unless
    it holds only safe characters."""
    _single_line(arg, "an ExecStart argument")
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if arg and set(arg) <= _SAFE:
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _environment_quote(name: str, value: str) -> str:
    """One assignment of Environment= (quoted word, C escapes, `%` doubled; no `$` expansion there)."""
    text = f"{name}={_single_line(value, name)}".replace("%", "%%")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _path_value(path: Path) -> str:
    """A path as the whole value of a setting such as WorkingDirectory= (not unquoted by systemd;
    only specifiers are expanded)."""
    return _single_line(str(path), "a path").replace("%", "%%")


# ---- rendering ----------------------------------------------------------------------------

def default_command() -> list[str]:
    """The `enova` script installed next to this Python (a venv's bin/), or `python -m enova.cli`.
    sys.executable is not resolved: a venv's python is a symlink, and following it leaves the venv."""
    python = Path(os.path.abspath(sys.executable))
    script = python.parent / "enova"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "enova.cli"]


def render_unit(*, specs: Path, user: bool, interval: float, state_dir: Path | None, cache_dir: Path | None,
                executable: Path | None = None, env_path: str | None = None,
                home: Path | None = None) -> str:
    """The unit file's text. Pure apart from the defaults: `executable` defaults to `default_command()`,
    `env_path` to the executable's directory followed by the system PATH, `home` to Path.home().
    state_dir/cache_dir become ENOVA_STATE_DIR/ENOVA_CACHE_DIR when given (pass the CLI's settings so
    the service and `enova status` in a shell share one state directory). Raises UsageError."""
    if not interval > 0:
        raise UsageError(f"--interval must be a positive number of seconds (got {interval})")
    specs = Path(os.path.abspath(specs))
    command = [str(Path(os.path.abspath(executable)))] if executable else default_command()
    argv = list(command)
    if state_dir is not None:
        argv += ["--state-dir", str(Path(os.path.abspath(state_dir)))]     # a global option: before the command
    argv += ["reconcile", str(specs), "--interval", f"{interval:g}"]

    environment: list[tuple[str, str]] = []
    if state_dir is not None:
        environment.append(("ENOVA_STATE_DIR", str(Path(os.path.abspath(state_dir)))))
    if cache_dir is not None:
        environment.append(("ENOVA_CACHE_DIR", str(Path(os.path.abspath(cache_dir)))))
    bin_dir = str(Path(command[0]).parent)
    environment.append(("PATH", env_path if env_path is not None else f"{bin_dir}:{SYSTEM_PATH}"))
    environment.append(("HOME", str(home if home is not None else Path.home())))
    environment.append(("PYTHONUNBUFFERED", "1"))       # log lines reach the journal as they happen

    return render(
        TEMPLATE,
        user=user,
        specs_label=_path_value(specs),
        exec_start=" ".join(exec_quote(a) for a in argv),
        working_directory=_path_value(specs.parent),
        environment=[_environment_quote(k, v) for k, v in environment],
    )


def unit_dir(user: bool, env: Mapping[str, str] | None = None) -> Path:
    """Where systemd reads administrator units: /etc/systemd/system, or for --user
    $XDG_CONFIG_HOME/systemd/user (~/.config/systemd/user)."""
    if not user:
        return Path("/etc/systemd/system")
    env = os.environ if env is None else env
    config = env.get("XDG_CONFIG_HOME")
    base = Path(config) if config and os.path.isabs(config) else Path.home() / ".config"
    return base / "systemd" / "user"


def systemd_running() -> bool:
    """True when systemd is this host's init (sd_booted(3))."""
    return SYSTEMD_RUNNING_MARKER.is_dir()


# ---- install / uninstall ------------------------------------------------------------------

def install_service(specs: Path, *, user: bool = False, interval: float = 30.0, state_dir: Path | None = None,
                    cache_dir: Path | None = None, target_dir: Path | None = None, activate: bool | None = None,
                    executable: Path | None = None, systemctl: str = "systemctl") -> ServiceResult:
    """Write the unit (atomically) into `target_dir` (default `unit_dir(user)`) and, when activating,
    daemon-reload and `enable --now` it (a changed unit: `enable` and `restart`, which the replicas
    survive: KillMode=process). activate=None: only if systemd is running here.
    Idempotent: installing again overwrites the file and reports "updated".
    Raises UsageError (specs missing, bad interval) and PermanentError (cannot write, systemctl failed)."""
    specs = Path(os.path.abspath(specs))
    if not specs.exists():
        raise UsageError(f"{specs}: no such spec file or directory")
    text = render_unit(specs=specs, user=user, interval=interval, state_dir=state_dir, cache_dir=cache_dir,
                       executable=executable)
    directory = target_dir if target_dir is not None else unit_dir(user)
    path = directory / UNIT_NAME
    previous = _read(path)
    _write_atomic(path, text, user)
    changed = previous is not None and previous != text
    verb = "installed" if previous is None else ("updated" if changed else "updated (no changes)")
    # A changed unit is restarted rather than only started: the replicas survive (KillMode=process).
    steps = ([["daemon-reload"], ["enable", UNIT_NAME], ["restart", UNIT_NAME]] if changed
             else [["daemon-reload"], ["enable", "--now", UNIT_NAME]])

    if activate is None:
        activate = systemd_running()
    if activate:
        for step in steps:
            _systemctl(systemctl, *_scope(user), *step)
        done = "enabled and restarted" if changed else "enabled and started"
        return ServiceResult(path, True, f"{verb} {path}; {done} {UNIT_NAME}. {_follow_hint(user)}")

    why = "as asked" if systemd_running() else f"systemd is not running here (no {SYSTEMD_RUNNING_MARKER})"
    linger = (f"; `loginctl enable-linger {_user_name()}` keeps it running after you log out" if user else "")
    return ServiceResult(path, False, f"{verb} {path}; not enabled ({why}). On a systemd host run: "
                                      f"{_commands(user, steps)}{linger}")


def uninstall_service(*, user: bool = False, target_dir: Path | None = None, activate: bool | None = None,
                      systemctl: str = "systemctl") -> ServiceResult:
    """Stop and disable the service (when activating), remove the unit file and daemon-reload.
    Replicas the reconciler started keep serving: `enova delete NAME` stops them. Idempotent: with
    no unit file it does nothing and says so. Raises PermanentError (systemctl failed, cannot remove)."""
    directory = target_dir if target_dir is not None else unit_dir(user)
    path = directory / UNIT_NAME
    if not path.exists():
        return ServiceResult(path, False, f"{UNIT_NAME} is not installed in {directory}; nothing to do")
    if activate is None:
        activate = systemd_running()
    if activate:
        _systemctl(systemctl, *_scope(user), "disable", "--now", UNIT_NAME)
    wants = directory / ("default.target.wants" if user else "multi-user.target.wants") / UNIT_NAME
    try:
        if not activate and wants.is_symlink():     # what `disable` would have removed
            wants.unlink()
        path.unlink()
    except OSError as exc:
        raise PermanentError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    keep = "the replicas it started keep serving (`enova delete NAME` stops them)"
    if activate:
        _systemctl(systemctl, *_scope(user), "daemon-reload")
        return ServiceResult(path, True, f"stopped and disabled {UNIT_NAME}, removed {path}; {keep}")
    return ServiceResult(path, False, f"removed {path}; {keep}. If it ran on a systemd host, run: "
                                      f"{_commands(user, [['stop', UNIT_NAME], ['daemon-reload']])}")


# ---- helpers ------------------------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise PermanentError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _write_atomic(path: Path, text: str, user: bool) -> None:
    """Write to a temporary file beside `path`, fsync, rename over it: systemd never reads half a unit."""
    hint = "" if user else " (run as root, or install a user service with --user)"
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{UNIT_NAME}.", suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise PermanentError(f"cannot write {path}: {exc.strerror or exc}{hint}") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _systemctl(systemctl: str, *args: str) -> None:
    """Run one systemctl command (an argv list; blocks up to 2 minutes). Raises PermanentError."""
    argv: Sequence[str] = [systemctl, *args]
    shown = " ".join(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError as exc:
        raise PermanentError(f"`{shown}` failed: {systemctl} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise PermanentError(f"`{shown}` did not finish within {exc.timeout:g} s") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or "no output"
        raise PermanentError(f"`{shown}` failed (exit {done.returncode}): {detail}")


def _scope(user: bool) -> list[str]:
    return ["--user"] if user else []


def _commands(user: bool, steps: list[list[str]]) -> str:
    return " && ".join(" ".join(["systemctl", *_scope(user), *step]) for step in steps)


def _follow_hint(user: bool) -> str:
    scope = "--user " if user else ""
    return (f"Follow it with: journalctl {scope}-u {UNIT_NAME} -f; "
            f"reload the specs with: systemctl {scope}reload {UNIT_NAME}")


def _user_name() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "$USER"
