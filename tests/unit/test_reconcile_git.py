"""The reconciler reads specs the way its options say: --committed-only takes HEAD, not the
working copy, and names errors by commit and path; status carries revision and dirtiness."""

import subprocess
import threading
from pathlib import Path

from enova.reconcile.controller import Reconciler
from enova.settings import Settings

SPEC = """apiVersion: enova/v1
kind: Deployment
metadata: {{name: app}}
spec:
  model: org/model
  replicas: {replicas}
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "specs" / "app.yaml").write_text(SPEC.format(replicas=1))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one replica")
    return repo


def reconciler(repo: Path, tmp_path: Path, **kw) -> Reconciler:
    return Reconciler(repo / "specs", Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache"),
                      stop=threading.Event(), **kw)


def test_committed_only_applies_what_is_committed_while_the_working_copy_is_edited(tmp_path):
    repo = make_repo(tmp_path)
    (repo / "specs" / "app.yaml").write_text(SPEC.format(replicas=3))  # uncommitted edit
    committed = reconciler(repo, tmp_path, committed_only=True)
    committed._load_specs("test")
    assert committed.specs.deployments["app"].doc.spec.replicas == 1
    assert committed.git["dirty"] is True and committed.git["revision"] == git(repo, "rev-parse", "HEAD")
    working = reconciler(repo, tmp_path)
    working._load_specs("test")
    assert working.specs.deployments["app"].doc.spec.replicas == 3


def test_a_broken_commit_stalls_with_the_commit_and_path_named_and_keeps_the_last_good_specs(tmp_path):
    repo = make_repo(tmp_path)
    (repo / "specs" / "app.yaml").write_text(SPEC.format(replicas=0))  # in sync with nothing running
    git(repo, "commit", "-q", "-am", "scale to zero")
    rec = reconciler(repo, tmp_path, committed_only=True)
    rec._load_specs("test")
    (repo / "specs" / "app.yaml").write_text(SPEC.format(replicas=-1))
    git(repo, "commit", "-q", "-am", "broken")
    rec._load_specs("test")
    short = git(repo, "rev-parse", "--short=7", "HEAD")
    assert f"{short}:specs/app.yaml:6 spec.replicas: must be >= 0" in rec.spec_error
    assert rec.specs.deployments["app"].doc.spec.replicas == 0  # the last good specs stay enforced
    rec.reconcile_once("app")
    assert rec.statuses["app"].condition == "Stalled" and "must be >= 0" in rec.statuses["app"].message


def test_committed_only_resolves_relative_paths_against_the_specs_folder_and_keeps_the_gateway_hash(tmp_path):
    from enova.plan.desired import desired_gateway, desired_state
    repo = make_repo(tmp_path)
    (repo / "specs" / "token").write_text("secret\n")
    (repo / "specs" / "gateway.yaml").write_text(
        "apiVersion: enova/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {token_file: ./token}\n")
    (repo / "specs" / "local.yaml").write_text(SPEC.replace("app", "local").replace("org/model", "./weights")
                                               .format(replicas=1))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "gateway with a token beside the specs")
    rec = reconciler(repo, tmp_path, committed_only=True, validate=lambda specs: None)
    hashes = []
    for _ in range(3):  # every pass extracts HEAD into a new temporary folder
        rec._load_specs("test")
        assert rec.spec_error is None, rec.spec_error
        gateway = desired_gateway(rec.specs)
        hashes.append(gateway.config_hash)
        assert gateway.config["token_file"] == str(repo / "specs" / "token")
        assert Path(gateway.config["token_file"]).read_text() == "secret\n"   # still there after the pass
        assert desired_state(rec.specs)["local"].base_dir == str((repo / "specs").resolve())
    assert len(set(hashes)) == 1
