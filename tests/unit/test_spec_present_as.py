"""load_specs(path, present_as=...): a snapshot in a temporary folder is read as if it were the
folder it was taken from, so names, errors and relative paths do not change from pass to pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from enova.errors import SpecError
from enova.plan.desired import desired_gateway
from enova.spec import load_specs

SPECS = {
    "gateway.yaml": "apiVersion: enova/v1\nkind: Gateway\nmetadata: {name: gw}\n"
                    "spec: {host: 0.0.0.0, token_file: secrets/token}\n",
    "models/app.yaml": "apiVersion: enova/v1\nkind: Deployment\nmetadata: {name: app}\nspec: {model: ./model}\n",
}


def copy_of_specs(folder: Path) -> Path:
    for name, text in SPECS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_two_snapshots_presented_as_the_repository_give_the_same_gateway_config(tmp_path):
    repo = tmp_path / "repo" / "specs"
    first = load_specs(copy_of_specs(tmp_path / "snap-1"), present_as=repo)
    second = load_specs(copy_of_specs(tmp_path / "snap-2"), present_as=repo)
    shutil.rmtree(tmp_path / "snap-1")  # the snapshot is deleted after loading; nothing points into it
    assert desired_gateway(first).config_hash == desired_gateway(second).config_hash
    assert desired_gateway(first).config["token_file"] == str(repo / "secrets" / "token")
    assert first.root == repo
    assert first.deployments["app"].file == repo / "models" / "app.yaml"
    assert first.gateway.file == repo / "gateway.yaml"


def test_errors_in_a_snapshot_name_the_presented_files(tmp_path, monkeypatch):
    snapshot = copy_of_specs(tmp_path / "snap")
    (snapshot / "models" / "app.yaml").write_text(SPECS["models/app.yaml"].replace("{model", "{replicas: -1, model"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_specs(snapshot, present_as=tmp_path / "repo")
    assert [str(i) for i in caught.value.issues] == ["repo/models/app.yaml:4 spec.replicas: must be >= 0 (got -1)"]


def test_a_single_file_is_presented_as_a_file(tmp_path):
    snapshot = copy_of_specs(tmp_path / "snap")
    specs = load_specs(snapshot / "gateway.yaml", present_as=tmp_path / "repo" / "gw.yaml")
    assert specs.gateway.file == tmp_path / "repo" / "gw.yaml"
    assert desired_gateway(specs).config["token_file"] == str(tmp_path / "repo" / "secrets" / "token")


def test_a_missing_snapshot_is_named_as_presented(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_specs(tmp_path / "gone", present_as=tmp_path / "repo")
    assert [str(i) for i in caught.value.issues] == ["repo: no such file or directory"]


def test_located_documents_give_the_line_of_any_key_path(tmp_path):
    specs = load_specs(copy_of_specs(tmp_path))
    gateway = specs.gateway
    assert gateway.line_of(("spec", "token_file")) == 4
    assert gateway.line_of(("spec", "queue_size")) == 4  # not written: its mapping's line
    issue = gateway.issue(("spec", "host"), "a message")
    assert (issue.file, issue.line, issue.field) == (str(tmp_path / "gateway.yaml"), 4, "spec.host")
