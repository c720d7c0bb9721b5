"""Installing `enova reconcile` as a systemd service: render the unit, write it, enable it.

Called by the CLI (`enova service install specs/ [--user]`, `enova service uninstall [--user]`).
The unit comes from templates/systemd/enova-reconcile.service.j2. Installing writes the unit file
and, where systemd is the running init (/run/systemd/system exists), runs `systemctl daemon-reload`
and `systemctl enable --now`; elsewhere (a container, a build host) it only writes the file and
says what to run. Every path and argument is quoted for systemd's own unit-file syntax, so a
specs directory with spaces (or %, $, quotes) arrives intact; nothing goes through a shell.

A system unit never runs as root: it runs as a dedicated unprivileged user (`enova` unless
`run_as` names another), created at install time when missing (`useradd --system`, an argv
list) and given the GPU device groups (`video`, `render`) that exist on the host. The service's
state and cache are /var/lib/enova and /var/cache/enova (StateDirectory=/CacheDirectory=, which
systemd creates and hands to that user); state or cache directories named elsewhere are created
and chowned to the user at install time. HOME is the state directory and XDG_CACHE_HOME the cache
directory, so the engines' caches (Hugging Face, vLLM, Triton) land where the user can write.
A --user unit runs as the user who installs it.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
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
DEFAULT_RUN_AS = "enova"
GPU_GROUPS = ("video", "render")      # /dev/dri/* and, on some hosts, /dev/nvidia* belong to these
SERVICE_STATE_ROOT = Path("/var/lib")     # what StateDirectory= names are relative to
SERVICE_CACHE_ROOT = Path("/var/cache")   # ... and CacheDirectory= names
NOLOGIN = "/usr/sbin/nologin"
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
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


@dataclass(frozen=True)
class ServiceDirs:
    """Where a system unit keeps its state and cache, and how systemd is told about them."""

    state: Path
    cache: Path
    state_directory: str | None      # StateDirectory= (relative to /var/lib), when the state lives there
    cache_directory: str | None      # CacheDirectory= (relative to /var/cache)
    to_chown: tuple[Path, ...]       # named elsewhere: created and chowned at install, ReadWritePaths=


def service_dirs(state_dir: Path | None, cache_dir: Path | None) -> ServiceDirs:
    """A system unit's directories: those given, or /var/lib/enova and /var/cache/enova. Pure."""
    state = Path(os.path.abspath(state_dir)) if state_dir is not None else SERVICE_STATE_ROOT / "enova"
    cache = Path(os.path.abspath(cache_dir)) if cache_dir is not None else SERVICE_CACHE_ROOT / "enova"
    state_rel, cache_rel = _below(state, SERVICE_STATE_ROOT), _below(cache, SERVICE_CACHE_ROOT)
    to_chown = tuple(p for p, rel in ((state, state_rel), (cache, cache_rel)) if rel is None)
    return ServiceDirs(state, cache, state_rel, cache_rel, to_chown)


def _below(path: Path, root: Path) -> str | None:
    try:
        relative = path.relative_to(root)
    except ValueError:
        return None
    return str(relative) if relative.parts else None


def render_unit(*, specs: Path, user: bool, interval: float, state_dir: Path | None, cache_dir: Path | None,
                executable: Path | None = None, env_path: str | None = None,
                home: Path | None = None, run_as: str = DEFAULT_RUN_AS, group: str | None = None,
                gpu_groups: Sequence[str] | None = None) -> str:
    """The unit file's text. Pure apart from the defaults: `executable` defaults to `default_command()`,
    `env_path` to the executable's directory followed by the system PATH, `home` (--user units) to
    Path.home(), `gpu_groups` to those of GPU_GROUPS that exist on this host.
    A --user unit: state_dir/cache_dir become ENOVA_STATE_DIR/ENOVA_CACHE_DIR when given (pass the
    CLI's settings so the service and `enova status` in a shell share one state directory).
    A system unit runs as `run_as` (group `group`, default the same name) with `service_dirs()`;
    HOME is its state directory and XDG_CACHE_HOME its cache directory. Raises UsageError."""
    if not interval > 0:
        raise UsageError(f"--interval must be a positive number of seconds (got {interval})")
    specs = Path(os.path.abspath(specs))
    command = [str(Path(os.path.abspath(executable)))] if executable else default_command()
    argv = list(command)
    if state_dir is not None:
        argv += ["--state-dir", str(Path(os.path.abspath(state_dir)))]     # a global option: before the command
    argv += ["reconcile", str(specs), "--interval", f"{interval:g}"]

    environment: list[tuple[str, str]] = []
    account: dict[str, object] = {}
    if user:
        if state_dir is not None:
            environment.append(("ENOVA_STATE_DIR", str(Path(os.path.abspath(state_dir)))))
        if cache_dir is not None:
            environment.append(("ENOVA_CACHE_DIR", str(Path(os.path.abspath(cache_dir)))))
    else:
        _check_user_name(run_as)
        dirs = service_dirs(state_dir, cache_dir)
        environment += [("ENOVA_STATE_DIR", str(dirs.state)), ("ENOVA_CACHE_DIR", str(dirs.cache))]
        account = dict(
            run_as=run_as, group=_check_user_name(group or run_as),
            gpu_groups=" ".join(_check_user_name(g) for g in (existing_gpu_groups() if gpu_groups is None
                                                                 else gpu_groups)),
            state_directory=dirs.state_directory and _path_value(Path(dirs.state_directory)),
            cache_directory=dirs.cache_directory and _path_value(Path(dirs.cache_directory)),
            read_write_paths=" ".join(_path_list_quote(p) for p in dirs.to_chown),
        )
    bin_dir = str(Path(command[0]).parent)
    environment.append(("PATH", env_path if env_path is not None else f"{bin_dir}:{SYSTEM_PATH}"))
    if user:
        environment.append(("HOME", str(home if home is not None else Path.home())))
    else:       # the engines' caches: ~/.cache/vllm, ~/.cache/huggingface, ~/.triton, all writable by run_as
        environment += [("HOME", str(dirs.state)), ("XDG_CACHE_HOME", str(dirs.cache))]
    environment.append(("PYTHONUNBUFFERED", "1"))       # log lines reach the journal as they happen

    return render(
        TEMPLATE,
        user=user,
        specs_label=_path_value(specs),
        exec_start=" ".join(exec_quote(a) for a in argv),
        working_directory=_path_value(specs.parent),
        environment=[_environment_quote(k, v) for k, v in environment],
        **account,
    )


def existing_gpu_groups() -> list[str]:
    """Those of GPU_GROUPS that exist on this host (SupplementaryGroups= naming a missing group
    would stop the service from starting)."""
    found = []
    for name in GPU_GROUPS:
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        found.append(name)
    return found


def _check_user_name(name: str) -> str:
    if not _USER_NAME.fullmatch(name) or name == "root":
        raise UsageError(f"--run-as must name an unprivileged user or group, lower case letters, digits, "
                         f"_ and - (got {name!r})")
    return name


def _path_list_quote(path: Path) -> str:
    """One entry of ReadWritePaths=: quoted, `-` (ignore if missing) inside the quotes, `%` doubled."""
    text = "-" + _single_line(str(path), "a path").replace("%", "%%")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
                    executable: Path | None = None, systemctl: str = "systemctl", run_as: str = DEFAULT_RUN_AS,
                    useradd: str = "useradd") -> ServiceResult:
    """Write the unit (atomically) into `target_dir` (default `unit_dir(user)`) and, when activating,
    daemon-reload and `enable --now` it (a changed unit: `enable` and `restart`, which the replicas
    survive: KillMode=process). activate=None: only if systemd is running here.
    A system unit runs as `run_as`: the user is created first when missing (`useradd --system`, with
    the GPU groups that exist), never modified when it exists; state/cache directories outside
    /var/lib and /var/cache are created and chowned to it. For a system unit, pass state_dir and
    cache_dir only when the user chose them: None means /var/lib/enova and /var/cache/enova.
    `run_as` is ignored for a --user unit, which runs as the invoking user.
    Idempotent: installing again overwrites the file and reports "updated", and finds the user there.
    Raises UsageError (specs missing, bad interval, a root or malformed --run-as, a path the service
    user cannot reach) and PermanentError (cannot write, useradd or systemctl failed)."""
    specs = Path(os.path.abspath(specs))
    if not specs.exists():
        raise UsageError(f"{specs}: no such spec file or directory")
    created = ""
    group: str | None = None
    if not user:
        _check_user_name(run_as)
        dirs = service_dirs(state_dir, cache_dir)
        command = [str(Path(os.path.abspath(executable)))] if executable else default_command()
        for needed, what in ((specs, "the specs"), (Path(command[0]), "the enova executable"),
                             *((d, "the directory") for d in dirs.to_chown)):
            _check_reachable(needed, what, run_as)
        group, created = ensure_service_user(run_as, home=dirs.state, useradd=useradd)
        for directory in dirs.to_chown:
            _chown_tree(directory, run_as)
    text = render_unit(specs=specs, user=user, interval=interval, state_dir=state_dir, cache_dir=cache_dir,
                       executable=executable, run_as=run_as, group=group)
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
        return ServiceResult(path, True, f"{created}{verb} {path}; {done} {UNIT_NAME}. {_follow_hint(user)}")

    why = "as asked" if systemd_running() else f"systemd is not running here (no {SYSTEMD_RUNNING_MARKER})"
    linger = (f"; `loginctl enable-linger {_user_name()}` keeps it running after you log out" if user else "")
    return ServiceResult(path, False, f"{created}{verb} {path}; not enabled ({why}). On a systemd host run: "
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


# ---- the service user ---------------------------------------------------------------------

def ensure_service_user(name: str, *, home: Path, useradd: str = "useradd") -> tuple[str, str]:
    """Make sure the system user `name` exists. An existing user is left exactly as it is (its
    GPU groups come from the unit's SupplementaryGroups=); a missing one is created with
    `useradd --system --no-create-home --home-dir HOME --shell /usr/sbin/nologin --user-group
    [--groups video,render] NAME` (an argv list; blocks up to a minute). Returns (its primary
    group, a sentence for the message, empty when nothing was created). Raises UsageError for a
    user with uid 0 and PermanentError when useradd fails."""
    _check_user_name(name)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is not None:
        if entry.pw_uid == 0:
            raise UsageError(f"--run-as {name}: that user has uid 0; the service must not run as root")
        try:
            return grp.getgrgid(entry.pw_gid).gr_name, ""
        except KeyError:
            return name, ""
    groups = existing_gpu_groups()
    argv = [useradd, "--system", "--no-create-home", "--home-dir", str(home), "--shell", NOLOGIN, "--user-group",
            *(["--groups", ",".join(groups)] if groups else []), name]
    _run(argv, timeout=60)
    with_groups = f" in groups {', '.join(groups)}" if groups else ""
    return name, f"created system user {name}{with_groups}; "


def _check_reachable(path: Path, what: str, run_as: str) -> None:
    """The service user must be able to walk down to `path`: every directory above it searchable
    by others (a venv or specs under /root, which is 0700, are not). Raises UsageError."""
    for parent in reversed(Path(os.path.abspath(path)).parents):
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            return                   # created below here, by us or by systemd
        if not mode & stat.S_IXOTH:
            raise UsageError(f"{what} {path} is out of reach of the service user {run_as}: {parent} is not "
                             f"searchable by other users (mode {stat.S_IMODE(mode):o}); move it, or make "
                             f"{parent} searchable (chmod o+x)")


def _chown_tree(directory: Path, run_as: str) -> None:
    """Create `directory` and hand it, and everything in it, to `run_as` (symlinks not followed)."""
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError as exc:
        raise PermanentError(f"user {run_as} does not exist after useradd; cannot chown {directory}") from exc
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        for root, dirnames, filenames in os.walk(directory):
            for name in (*dirnames, *filenames):
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    except OSError as exc:
        raise PermanentError(f"cannot hand {directory} to {run_as}: {exc.strerror or exc} "
                             "(run as root, or install a user service with --user)") from exc


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
    _run([systemctl, *args], timeout=120)


def _run(argv: Sequence[str], timeout: float) -> None:
    """Run one program (an argv list, never a shell). Raises PermanentError with its stderr."""
    shown = " ".join(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise PermanentError(f"`{shown}` failed: {argv[0]} not found") from exc
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
