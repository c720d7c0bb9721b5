"""An `enova apply` interrupted while its replica loads leaves the replica loading; the next apply
adopts it instead of starting another, and records it ready once it answers (real engine)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import psutil
import pytest

from .conftest import ENOVA, complete, write_spec

pytestmark = [pytest.mark.slow, pytest.mark.one_core]


def test_ctrl_c_during_apply_leaves_the_replica_starting_and_the_next_apply_adopts_it(cli, tmp_path):
    specs = write_spec(tmp_path / "specs")
    proc = subprocess.Popen([*ENOVA, "apply", str(specs)], env=cli.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    records = cli.state / "deployments" / "smollm2" / "replicas"
    deadline = time.monotonic() + 240   # a cold cache converts the builtin model first
    while time.monotonic() < deadline and not list(records.glob("*.json")):
        time.sleep(0.1)
    [path] = list(records.glob("*.json"))
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)                 # Ctrl-C while vLLM loads (it takes ~20 s here)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert time.monotonic() - began < 15, "Ctrl-C must not wait for the engine"
    assert "left for the next apply to adopt" in err
    record = json.loads(path.read_text())
    assert record["state"] == "starting"
    pid = record["handle"]["pid"]
    assert psutil.pid_exists(pid), "the loading replica must be left running"

    diff = cli("diff", str(specs))
    assert diff.code == 1 and f"wait for: {record['id']}" in diff.out, diff.out

    cli("apply", str(specs), check=0)
    [row] = cli.replicas("smollm2", specs)
    assert (row["id"], row["pid"], row["health"]) == (record["id"], pid, "healthy"), row
    assert json.loads(path.read_text())["state"] == "ready"
    assert complete(row["port"])
    assert cli("diff", str(specs)).code == 0
    cli("delete", "smollm2", check=0)
