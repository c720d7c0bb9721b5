"""The systemd unit for `enova reconcile`: rendered, checked by systemd's own tools, installed and removed."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from enova.errors import PermanentError, UsageError
from enova.reconcile import service
from enova.reconcile.service import UNIT_NAME, install_service, render_unit, uninstall_service, unit_dir

SYSTEM_ONLY = ("PrivateTmp", "ProtectSystem", "ProtectControlGroups", "ProtectKernelTunables",
               "ProtectKernelModules", "ProtectKernelLogs", "ProtectClock", "ProtectHostname", "ProtectHome",
               "CapabilityBoundingSet", "User", "Group", "SupplementaryGroups", "StateDirectory", "CacheDirectory",
               "ReadWritePaths")


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A specs directory and an `enova` executable, both under directories with spaces in their names,
    in a folder other users can search (pytest's own tmp_path is not), as a system service needs."""
    base = Path(tempfile.mkdtemp(prefix="enova-service-test-"))
    base.chmod(0o755)
    yield from _layout_in(base)
    shutil.rmtree(base)


def _layout_in(base: Path):
    specs = base / "my specs"
    specs.mkdir()
    (specs / "llama.yaml").write_text("apiVersion: enova/v1\n")
    bin_dir = base / "the venv" / "bin"
    bin_dir.mkdir(parents=True)
    exe = bin_dir / "enova"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    yield {"specs": specs, "exe": exe, "state": base / "state dir", "cache": base / "cache", "base": base}


def settings(unit: str) -> dict[str, list[str]]:
    """Setting name -> values, as written (comments and section headers left out)."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def exec_argv(value: str) -> list[str]:
    """Undo the quoting render_unit applies to ExecStart=: double quotes with backslash escapes
    (read the same way by systemd and a POSIX shell for this subset), then `%%` and `$$`."""
    return [word.replace("%%", "%").replace("$$", "$") for word in shell_words(value)]


def shell_words(text: str) -> list[str]:
    """Split a POSIX-shell-quoted line (as systemd prints command lines: `\\$` inside double quotes,
    which shlex does not undo)."""
    words: list[str] = []
    word: list[str] = []
    quote, started, i = "", False, 0
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                word.append(c)
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c == "\\" and text[i + 1:i + 2] in ("$", "`", '"', "\\"):
                i += 1
                word.append(text[i])
            else:
                word.append(c)
        elif c in " \t":
            if started:
                words.append("".join(word))
            word, started = [], False
        elif c in "'\"":
            quote, started = c, True
        elif c == "\\":
            i += 1
            word.append(text[i])
            started = True
        else:
            word.append(c)
            started = True
        i += 1
    if started:
        words.append("".join(word))
    return words


def render(layout, *, user: bool, **overrides) -> str:
    options = dict(specs=layout["specs"], user=user, interval=30.0, state_dir=layout["state"],
                   cache_dir=layout["cache"], executable=layout["exe"], gpu_groups=["video", "render"])
    options.update(overrides)
    return render_unit(**options)


# ---- rendering ----------------------------------------------------------------------------

@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_exec_start_keeps_paths_with_spaces_as_single_arguments(layout, user):
    unit = settings(render(layout, user=user))
    assert exec_argv(unit["ExecStart"][0]) == [
        str(layout["exe"]), "--state-dir", str(layout["state"]),
        "reconcile", str(layout["specs"]), "--interval", "30",
    ]
    assert unit["WorkingDirectory"] == [str(layout["specs"].parent)]


def test_specifier_and_variable_characters_are_escaped_in_exec_start(layout, tmp_path):
    odd = tmp_path / 'we ird $HOME "q" \\b %n'
    odd.mkdir()
    unit = settings(render(layout, user=False, specs=odd, state_dir=None, interval=2.5))
    assert exec_argv(unit["ExecStart"][0]) == [str(layout["exe"]), "reconcile", str(odd), "--interval", "2.5"]
    assert unit["WorkingDirectory"] == [str(tmp_path).replace("%", "%%")]


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_the_unit_is_a_notify_service_that_leaves_replicas_running(layout, user):
    unit = settings(render(layout, user=user))
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["KillMode"] == ["process"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["WatchdogSec"] == ["60s"]
    assert unit["TimeoutStopSec"] == ["60s"]
    for forbidden in ("MemoryDenyWriteExecute", "PrivateDevices", "PrivateTmp", "ProtectClock"):
        assert forbidden not in unit


def environment(unit: dict[str, list[str]]) -> dict[str, str]:
    return dict(shell_words(value)[0].replace("%%", "%").split("=", 1) for value in unit["Environment"])


def test_the_environment_points_at_the_state_cache_venv_and_home(layout):
    env = environment(settings(render(layout, user=True, home=Path("/home/someone"))))
    assert env["ENOVA_STATE_DIR"] == str(layout["state"])
    assert env["ENOVA_CACHE_DIR"] == str(layout["cache"])
    assert env["PATH"].split(":")[0] == str(layout["exe"].parent)
    assert "/usr/bin" in env["PATH"].split(":")
    assert env["HOME"] == "/home/someone"


def test_a_system_unit_runs_as_the_service_user_never_root(layout):
    unit = settings(render(layout, user=False, state_dir=None, cache_dir=None))
    assert unit["User"] == ["enova"] and unit["Group"] == ["enova"]
    assert unit["SupplementaryGroups"] == ["video render"]
    assert unit["StateDirectory"] == ["enova"] and unit["CacheDirectory"] == ["enova"]
    assert "ReadWritePaths" not in unit
    assert unit["CapabilityBoundingSet"] == [""] and unit["AmbientCapabilities"] == [""]
    assert unit["ProtectHome"] == ["read-only"]
    # The engines' caches go where the service user can write: not /root, not a home it lacks.
    env = environment(unit)
    assert env["ENOVA_STATE_DIR"] == env["HOME"] == "/var/lib/enova"
    assert env["ENOVA_CACHE_DIR"] == env["XDG_CACHE_HOME"] == "/var/cache/enova"


def test_run_as_and_the_gpu_groups_are_what_the_unit_names(layout):
    unit = settings(render(layout, user=False, run_as="llm-svc", group="gpu-users", gpu_groups=[]))
    assert unit["User"] == ["llm-svc"] and unit["Group"] == ["gpu-users"]
    assert "SupplementaryGroups" not in unit


def test_state_and_cache_named_outside_var_are_read_write_paths(layout):
    unit = settings(render(layout, user=False))
    assert "StateDirectory" not in unit and "CacheDirectory" not in unit
    assert shell_words(unit["ReadWritePaths"][0]) == [f"-{layout['state']}", f"-{layout['cache']}"]
    env = environment(unit)
    assert env["HOME"] == str(layout["state"]) and env["XDG_CACHE_HOME"] == str(layout["cache"])


def test_state_and_cache_under_var_become_state_and_cache_directories(layout):
    unit = settings(render(layout, user=False, state_dir=Path("/var/lib/llm/enova"),
                           cache_dir=Path("/var/cache/llm")))
    assert unit["StateDirectory"] == ["llm/enova"] and unit["CacheDirectory"] == ["llm"]
    assert "ReadWritePaths" not in unit


@pytest.mark.parametrize("name", ["root", "Enova", "-enova", "en ova", "a" * 33, ""])
def test_run_as_root_or_a_malformed_name_is_refused(layout, name):
    with pytest.raises(UsageError, match="--run-as"):
        render(layout, user=False, run_as=name)


def test_a_user_unit_runs_as_the_invoking_user(layout):
    unit = settings(render(layout, user=True, run_as="someone-else"))
    for name in ("User", "Group", "SupplementaryGroups", "StateDirectory", "CacheDirectory"):
        assert name not in unit, name


def test_system_units_are_hardened_and_user_units_leave_out_root_only_options(layout):
    system = settings(render(layout, user=False))
    user = settings(render(layout, user=True))
    assert system["ProtectSystem"] == ["full"]
    for name in ("NoNewPrivileges", "ProtectControlGroups", "ProtectKernelTunables", "ProtectKernelModules",
                 "ProtectKernelLogs", "RestrictSUIDSGID", "LockPersonality", "RestrictRealtime",
                 "ProtectHostname", "RestrictNamespaces"):
        assert system[name] == ["yes"], name
    for name in SYSTEM_ONLY:
        assert name not in user, name
    for name in ("NoNewPrivileges", "RestrictSUIDSGID", "LockPersonality", "RestrictRealtime", "RestrictNamespaces"):
        assert user[name] == ["yes"], name
    assert system["WantedBy"] == ["multi-user.target"]
    assert user["WantedBy"] == ["default.target"]
    assert not any("modprobe@" in v for v in user.get("Wants", []))


def test_the_executable_defaults_to_the_enova_script_beside_this_python(layout):
    unit = settings(render(layout, user=False, executable=None))
    argv = exec_argv(unit["ExecStart"][0])
    script = Path(os.path.abspath(sys.executable)).parent / "enova"
    assert argv[:1] == [str(script)] if script.exists() else argv[:3] == [os.path.abspath(sys.executable), "-m",
                                                                          "enova.cli"]


def test_a_non_positive_interval_is_a_usage_error(layout):
    with pytest.raises(UsageError, match="interval"):
        render(layout, user=False, interval=0)


def test_unit_dir_is_etc_for_system_and_xdg_config_for_user(tmp_path):
    assert unit_dir(False) == Path("/etc/systemd/system")
    assert unit_dir(True, {"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "systemd" / "user"
    assert unit_dir(True, {}) == Path.home() / ".config" / "systemd" / "user"


# ---- systemd's own checks -----------------------------------------------------------------

def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip("systemd-analyze is not installed (apt-get install -y systemd provides it)")
    return found


@pytest.mark.parametrize(("user", "dirs"), [(False, "named"), (False, "default"), (True, "named")],
                         ids=["system", "system-var-dirs", "user"])
def test_the_unit_passes_systemd_analyze_verify(layout, tmp_path, user, dirs):
    analyze = _systemd_analyze()
    unit_file = tmp_path / "units" / UNIT_NAME
    unit_file.parent.mkdir()
    defaults = dict(state_dir=None, cache_dir=None) if dirs == "default" else {}
    unit_file.write_text(render(layout, user=user, **defaults))
    runtime = tmp_path / "runtime"        # a --user verify needs a runtime directory
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    done = subprocess.run([analyze, *(["--user"] if user else []), "verify", str(unit_file)],
                          capture_output=True, text=True, env=env, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not [line for line in output.splitlines() if UNIT_NAME in line or str(unit_file) in line], output


def test_systemd_parses_exec_start_into_the_intended_words(layout, tmp_path):
    """systemd itself (in --test mode, which dumps each loaded unit's command lines) reads back the
    argv. It needs root for a private mount namespace, where a fresh /run holds /run/systemd/system so
    that systemd runs at all; the host's /run is not touched."""
    systemd = Path("/lib/systemd/systemd")
    if os.geteuid() != 0 or not systemd.exists() or not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("needs root, /lib/systemd/systemd, unshare and setpriv")
    odd = tmp_path / 'we ird $x "q" \\b %n'
    odd.mkdir()
    # The unit must be readable by `nobody` (systemd refuses --test as root), and pytest's tmp_path is not.
    with tempfile.TemporaryDirectory(prefix="enova-unit-") as directory:
        units = Path(directory)
        units.chmod(0o755)
        (units / UNIT_NAME).write_text(render(layout, user=False, specs=odd))
        (units / UNIT_NAME).chmod(0o644)
        done = _systemd_test(systemd, units)
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"cannot make a mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    ours = done.stdout.split(f"-> Unit {UNIT_NAME}:", 1)[1].split("-> Unit ", 1)[0]
    command = next(line.split("Command Line: ", 1)[1] for line in ours.splitlines() if "Command Line: " in line)
    # systemd prints the stored words shell-quoted; `$$` becomes `$` only when it executes them.
    words = [w.replace("$$", "$") for w in shell_words(command)]
    assert words == [str(layout["exe"]), "--state-dir", str(layout["state"]), "reconcile", str(odd),
                     "--interval", "30"]
    assert f"WorkingDirectory: {tmp_path}" in ours
    assert "KillMode: process" in ours
    assert "User: enova" in ours and "Group: enova" in ours and "SupplementaryGroups: video render" in ours
    assert f"ReadWritePaths: -{layout['state']} -{layout['cache']}" in ours      # two paths, spaces intact


def _systemd_test(systemd: Path, units: Path) -> subprocess.CompletedProcess:
    script = ("mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && cd / && "
              f"exec setpriv --reuid=65534 --regid=65534 --clear-groups {systemd} --test --system "
              f"--unit={UNIT_NAME} --log-target=console")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})


# ---- install / uninstall ------------------------------------------------------------------

EXISTING_USER = "nobody"          # there on every Debian-like host; never created or changed here


def install(layout, target: Path, **overrides):
    """A system install as `nobody`, with /var/lib/enova and /var/cache/enova (left to systemd), so
    that nothing on this host is created or chowned; `useradd` must not run."""
    options = dict(target_dir=target, activate=False, executable=layout["exe"], run_as=EXISTING_USER,
                   useradd=str(target / "useradd-must-not-run"))
    options.update(overrides)
    return install_service(layout["specs"], **options)


def primary_group(name: str) -> str:
    return grp.getgrgid(pwd.getpwnam(name).pw_gid).gr_name


def recording_program(path: Path, calls: Path, exit_code: int = 0) -> str:
    """A stand-in program that writes each argument on a line of its own to `calls`."""
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{calls}"\necho "stand-in failed" >&2\nexit {exit_code}\n'
                    if exit_code else f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{calls}"\n')
    path.chmod(0o755)
    return str(path)


def test_install_writes_the_unit_and_a_second_install_updates_it(layout, tmp_path):
    target = tmp_path / "etc" / "systemd" / "system"
    first = install(layout, target)
    assert first.unit_path == target / UNIT_NAME
    assert not first.activated
    assert first.message.startswith(f"installed {target / UNIT_NAME}")
    assert "systemctl daemon-reload && systemctl enable --now enova-reconcile.service" in first.message
    text = first.unit_path.read_text()
    assert text == render(layout, user=False, state_dir=None, cache_dir=None, run_as=EXISTING_USER,
                          group=primary_group(EXISTING_USER), gpu_groups=None)
    assert stat.S_IMODE(first.unit_path.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.iterdir()) == [UNIT_NAME]        # no temporary file left over

    again = install(layout, target)
    assert again.message.startswith(f"updated (no changes) {target / UNIT_NAME}")
    changed = install(layout, target, interval=10)
    assert changed.message.startswith(f"updated {target / UNIT_NAME}")
    assert "systemctl restart enova-reconcile.service" in changed.message
    assert "--interval 10" in changed.unit_path.read_text()


def test_install_with_user_says_how_to_enable_the_user_unit(layout, tmp_path):
    result = install(layout, tmp_path / "user", user=True)
    assert "systemctl --user enable --now enova-reconcile.service" in result.message
    assert "loginctl enable-linger" in result.message
    assert "WantedBy=default.target" in result.unit_path.read_text()


def test_install_stores_the_specs_as_an_absolute_path(layout, tmp_path, monkeypatch):
    monkeypatch.chdir(layout["specs"].parent)
    result = install_service(Path("my specs"), target_dir=tmp_path / "units", activate=False,
                             executable=layout["exe"], run_as=EXISTING_USER,
                             useradd=str(tmp_path / "useradd-must-not-run"))
    argv = exec_argv(settings(result.unit_path.read_text())["ExecStart"][0])
    assert argv[argv.index("reconcile") + 1] == str(layout["specs"])


def test_install_refuses_missing_specs(layout, tmp_path):
    missing = tmp_path / "no such specs"
    with pytest.raises(UsageError, match="no such specs"):
        install_service(missing, target_dir=tmp_path / "units", activate=False)
    assert not (tmp_path / "units").exists()


def test_install_into_an_unwritable_place_is_a_permanent_error(layout, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    with pytest.raises(PermanentError, match="cannot write"):
        install(layout, blocker / "units")


def test_uninstall_removes_the_unit_and_its_enablement_and_is_idempotent(layout, tmp_path):
    target = tmp_path / "units"
    unit = install(layout, target).unit_path
    wants = target / "multi-user.target.wants"
    wants.mkdir()
    (wants / UNIT_NAME).symlink_to(unit)
    result = uninstall_service(target_dir=target, activate=False)
    assert result.unit_path == unit and not result.activated
    assert not unit.exists()
    assert not (wants / UNIT_NAME).is_symlink()
    assert "replicas it started keep serving" in result.message
    again = uninstall_service(target_dir=target, activate=False)
    assert "is not installed" in again.message


def test_activation_runs_systemctl_in_order(layout, tmp_path):
    """A stand-in `systemctl` program records each argv it is run with (systemd is not PID 1 here)."""
    calls = tmp_path / "calls"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n')
    systemctl.chmod(0o755)
    target = tmp_path / "units"

    fresh = install(layout, target, activate=True, systemctl=str(systemctl))
    assert fresh.activated and "enabled and started" in fresh.message
    changed = install(layout, target, activate=True, systemctl=str(systemctl), interval=5)
    assert "enabled and restarted" in changed.message
    removed = uninstall_service(target_dir=target, activate=True, systemctl=str(systemctl))
    assert removed.activated and not (target / UNIT_NAME).exists()
    assert calls.read_text().splitlines() == [
        "daemon-reload", f"enable --now {UNIT_NAME}",
        "daemon-reload", f"enable {UNIT_NAME}", f"restart {UNIT_NAME}",
        f"disable --now {UNIT_NAME}", "daemon-reload",
    ]

    user_calls = install(layout, tmp_path / "user units", user=True, activate=True, systemctl=str(systemctl))
    assert user_calls.activated
    assert calls.read_text().splitlines()[-2:] == ["--user daemon-reload", f"--user enable --now {UNIT_NAME}"]


def test_a_failing_systemctl_is_a_permanent_error_with_its_stderr(layout, tmp_path):
    systemctl = tmp_path / "systemctl"
    systemctl.write_text('#!/bin/sh\necho "System has not been booted with systemd as init system" >&2\nexit 1\n')
    systemctl.chmod(0o755)
    with pytest.raises(PermanentError, match="daemon-reload.*exit 1.*not been booted with systemd"):
        install(layout, tmp_path / "units", activate=True, systemctl=str(systemctl))
    with pytest.raises(PermanentError, match="not found"):
        install(layout, tmp_path / "units", activate=True, systemctl=str(tmp_path / "no-systemctl"))


def test_activation_is_automatic_only_where_systemd_runs(layout, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "SYSTEMD_RUNNING_MARKER", tmp_path / "no-run-systemd-system")
    result = install(layout, tmp_path / "units", activate=None, systemctl=str(tmp_path / "must-not-run"))
    assert not result.activated
    assert "systemd is not running here" in result.message


# ---- the service user ---------------------------------------------------------------------

def test_install_creates_a_missing_service_user_with_a_useradd_argv(layout, tmp_path):
    name = "enova-test-nouser"
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    calls = tmp_path / "useradd-calls"
    useradd = recording_program(tmp_path / "useradd", calls)
    result = install(layout, tmp_path / "units", run_as=name, useradd=useradd)
    groups = service.existing_gpu_groups()
    assert calls.read_text().splitlines() == [
        "--system", "--no-create-home", "--home-dir", "/var/lib/enova", "--shell", "/usr/sbin/nologin",
        "--user-group", *(["--groups", ",".join(groups)] if groups else []), name]
    assert result.message.startswith(f"created system user {name}")
    unit = settings(result.unit_path.read_text())
    assert unit["User"] == [name] and unit["Group"] == [name]


def test_an_existing_user_is_not_re_created_or_changed(layout, tmp_path):
    calls = tmp_path / "useradd-calls"
    result = install(layout, tmp_path / "units", useradd=recording_program(tmp_path / "useradd", calls))
    assert not calls.exists()
    assert "created" not in result.message
    unit = settings(result.unit_path.read_text())
    assert unit["User"] == [EXISTING_USER] and unit["Group"] == [primary_group(EXISTING_USER)]


def test_a_failing_useradd_is_a_permanent_error_and_writes_no_unit(layout, tmp_path):
    calls = tmp_path / "useradd-calls"
    useradd = recording_program(tmp_path / "useradd", calls, exit_code=9)
    with pytest.raises(PermanentError, match="useradd.*exit 9.*stand-in failed"):
        install(layout, tmp_path / "units", run_as="enova-test-nouser", useradd=useradd)
    assert not (tmp_path / "units").exists()


def test_a_uid_0_user_is_refused_whatever_its_name(layout, tmp_path, monkeypatch):
    zero = pwd.getpwuid(0)
    monkeypatch.setattr(service.pwd, "getpwnam", lambda name: zero)
    with pytest.raises(UsageError, match="uid 0"):
        install(layout, tmp_path / "units", run_as="toor")


@pytest.mark.skipif(os.geteuid() != 0, reason="handing directories to another user needs root")
def test_state_and_cache_named_elsewhere_are_created_and_handed_to_the_user(layout, tmp_path):
    state, cache = layout["state"], layout["cache"] / "deep"
    (state / "logs").mkdir(parents=True)
    (state / "logs" / "gateway.log").write_text("old\n")
    install(layout, tmp_path / "units", state_dir=state, cache_dir=cache)
    owner = pwd.getpwnam(EXISTING_USER).pw_uid
    for path in (state, state / "logs", state / "logs" / "gateway.log", cache):
        assert path.stat().st_uid == owner, path


def test_a_path_the_service_user_cannot_reach_is_refused_before_anything_is_done(layout, tmp_path):
    private = layout["base"] / "private"
    (private / "specs").mkdir(parents=True)
    private.chmod(0o700)
    calls = tmp_path / "useradd-calls"
    with pytest.raises(UsageError, match=f"out of reach of the service user.*{private}"):
        install_service(private / "specs", target_dir=tmp_path / "units", activate=False,
                        executable=layout["exe"], run_as="enova-test-nouser",
                        useradd=recording_program(tmp_path / "useradd", calls))
    assert not calls.exists() and not (tmp_path / "units").exists()


def test_a_user_install_neither_creates_a_user_nor_names_one(layout, tmp_path):
    calls = tmp_path / "useradd-calls"
    result = install(layout, tmp_path / "units", user=True, run_as="enova-test-nouser",
                     useradd=recording_program(tmp_path / "useradd", calls))
    assert not calls.exists()
    assert "User" not in settings(result.unit_path.read_text())
