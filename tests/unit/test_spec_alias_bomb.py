"""YAML aliases are bounded: a "billion laughs" file is a spec error in milliseconds, not an
out-of-memory hours later, while specs that share settings through a few anchors still load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from enova.errors import SpecError
from enova.spec import load_specs

BOMB = Path(__file__).parent / "spec_cases" / "alias_bomb.yaml"
ENOVA = Path(sys.executable).with_name("enova")


def test_an_alias_bomb_is_refused_by_load_specs_at_the_anchor_that_grows_too_big(tmp_path, monkeypatch):
    monkeypatch.chdir(BOMB.parent)
    with pytest.raises(SpecError) as caught:
        load_specs(BOMB.name)
    [issue] = caught.value.issues
    assert (issue.file, issue.line, issue.field) == ("alias_bomb.yaml", 11, "spec.engine.args.d")
    assert "alias bomb" in issue.message


def test_enova_validate_reports_an_alias_bomb_as_a_spec_error_without_running_out_of_memory(tmp_path):
    # Before the bound this ran until memory ran out; the timeout turns a hang into a failure.
    done = subprocess.run([str(ENOVA), "validate", str(BOMB)], capture_output=True, text=True, timeout=30,
                          cwd=BOMB.parent)
    assert done.returncode == 2, done.stderr
    assert "alias_bomb.yaml:11 spec.engine.args.d: invalid YAML: aliases expand past" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bomb_through_merge_keys_is_refused_too(tmp_path):
    levels = ["a0: &a0 {x: 1, y: 2, z: 3}"]
    for level in range(1, 12):
        merged = ", ".join(f"*a{level - 1}" for _ in range(4))
        levels.append(f"a{level}: &a{level} {{k{level}: [{merged}], <<: *a{level - 1}}}")
    (tmp_path / "bomb.yaml").write_text(
        "apiVersion: enova/v1\nkind: Deployment\nmetadata: {name: lol}\n"
        "spec:\n  model: org/model\n  engine:\n    args:\n" + "".join(f"      {line}\n" for line in levels))
    with pytest.raises(SpecError, match="alias bomb"):
        load_specs(tmp_path / "bomb.yaml")


def test_a_spec_sharing_engine_args_through_many_aliases_still_loads(tmp_path):
    # 50 mappings merging the same anchor in one document: far below the bound
    refs = "".join(f"      d{i}: {{<<: *common, dtype: bfloat16}}\n" for i in range(50))
    (tmp_path / "many.yaml").write_text(
        "apiVersion: enova/v1\nkind: Deployment\nmetadata: {name: many}\n"
        "spec:\n  model: org/model\n  engine:\n    args:\n"
        "      common: &common {max_num_seqs: 16, enforce_eager: true}\n" + refs)
    args = load_specs(tmp_path).deployments["many"].doc.spec.engine.args
    assert args["d49"] == {"max_num_seqs": 16, "enforce_eager": True, "dtype": "bfloat16"}
