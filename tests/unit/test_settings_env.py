"""Settings from ENOVA_* variables: a malformed one is a one-line usage error naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from enova.errors import UsageError
from enova.settings import Settings

ENOVA = Path(sys.executable).with_name("enova")


@pytest.mark.parametrize("raw, expected", [("19200-19999", (19200, 19999)), ("20000", (20000, 20000)),
                                           (" 1 - 65535 ", (1, 65535)), ("", (19200, 19999))])
def test_a_port_range_is_lo_hi_or_one_port(monkeypatch, raw, expected):
    monkeypatch.setenv("ENOVA_PORT_RANGE", raw)
    assert Settings.from_env().port_range == expected


@pytest.mark.parametrize("raw", ["abc", "19999-19200", "0-10", "1-70000", "[1, 2]", "1-2-3"])
def test_a_malformed_port_range_is_a_usage_error_naming_the_variable_and_its_form(monkeypatch, raw):
    monkeypatch.setenv("ENOVA_PORT_RANGE", raw)
    with pytest.raises(UsageError) as caught:
        Settings.from_env()
    assert str(caught.value) == (f"ENOVA_PORT_RANGE={raw}: expected LO-HI, two ports from 1 to 65535 with"
                                 " LO <= HI, such as 19200-19999")


def test_directories_come_from_the_environment_or_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("ENOVA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ENOVA_CACHE_DIR", "~/enova-cache")
    monkeypatch.delenv("ENOVA_PORT_RANGE", raising=False)
    settings = Settings.from_env()
    assert settings.state_dir == tmp_path / "state"
    assert settings.cache_dir == Path.home() / "enova-cache"
    assert Settings.from_env(tmp_path / "given").state_dir == tmp_path / "given"
    monkeypatch.delenv("ENOVA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings.from_env().cache_dir == tmp_path / "xdg" / "enova"


def test_enova_status_with_a_malformed_port_range_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "ENOVA_PORT_RANGE": "abc", "ENOVA_STATE_DIR": str(tmp_path)}
    done = subprocess.run([str(ENOVA), "status"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: ENOVA_PORT_RANGE=abc: expected LO-HI, two ports from 1 to 65535 with LO <= HI, such as 19200-19999"]
