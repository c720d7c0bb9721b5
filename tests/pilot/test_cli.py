"""`enova pilot` as a user types it: bad input is one line naming the option and exit 2, with
nothing written or started; `pilot stop` with nothing running is not an error."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ENOVA


def enova(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENOVA_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([*ENOVA, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--hf_proxy", "proxy:3128"], "error: --hf_proxy proxy:3128: expected a proxy URL"),
    (["--hf-proxy", "ftp://proxy"], "error: --hf_proxy ftp://proxy: expected a proxy URL"),
    (["--model", "nope::"], "error: --model nope::: must be builtin:<name>"),
    (["--model", "builtin:nope"], "--model: unknown builtin model; known: smollm2-135m-instruct"),
    (["--max-num-seqz", "4"], "--max-num-seqz: unknown vLLM engine argument (did you mean max_num_seqs?)"),
    (["--max-num-seqs", "many"], "--max-num-seqs: must be an integer (got 'many')"),
    (["stray"], "error: unexpected argument 'stray': engine args are --flag [value]"),
])
def test_bad_input_names_the_option_exits_2_and_starts_nothing(tmp_path, args, message):
    run = enova(tmp_path, "pilot", "run", "--port", "19951", *args)
    assert run.returncode == 2, run
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "enova-pilot").exists()
    assert not (tmp_path / "state" / "pilot" / "pilot.json").exists()


def test_a_port_out_of_range_is_refused_by_the_option(tmp_path):
    run = enova(tmp_path, "pilot", "run", "--app-port", "70000")
    assert run.returncode == 2 and "--app-port" in run.stderr


def test_stop_with_no_pilot_says_so_and_exits_0(tmp_path):
    run = enova(tmp_path, "pilot", "stop")
    assert run.returncode == 0 and run.stdout.startswith("no pilot is running with state in")
