"""gitsource against real git repositories in temporary folders: info, pull, committed snapshot."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from enova.errors import PermanentError, SpecError, TemporaryError
from enova.reconcile.gitsource import committed_snapshot, git_info, pull_fast_forward
from enova.spec.loader import load_specs

GIT_CONFIG = ["-c", "user.name=enova test", "-c", "user.email=test@enova.invalid", "-c", "commit.gpgsign=false",
              "-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main"]

VALID = """apiVersion: enova/v1
kind: Deployment
metadata:
  name: tiny
spec:
  model: builtin:smollm2-135m-instruct
  replicas: 1
"""

INVALID = VALID.replace("replicas: 1", "replicas: two")  # line 7


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *GIT_CONFIG, "-C", str(cwd), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with specs/x.yaml and notes.txt committed on main."""
    root = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    write(root / "specs" / "x.yaml", VALID)
    write(root / "notes.txt", "notes\n")
    write(root / ".gitignore", "*.tmp\n")
    commit_all(root, "first")
    return root


def test_a_folder_outside_any_work_tree_has_no_git_info(tmp_path):
    write(tmp_path / "specs" / "x.yaml", VALID)
    assert git_info(tmp_path / "specs") is None
    assert git_info(tmp_path / "specs" / "x.yaml") is None


def test_a_repository_with_no_commits_has_an_empty_revision_and_its_branch(tmp_path):
    git(tmp_path, "init", "-q", "-b", "main")
    info = git_info(tmp_path)
    assert (info.revision, info.branch, info.dirty, info.short()) == ("", "main", False, "")
    write(tmp_path / "specs" / "x.yaml", VALID)
    assert git_info(tmp_path / "specs").dirty
    assert git_info(tmp_path / "specs").short() == "+dirty"


def test_a_clean_work_tree_gives_the_revision_branch_and_root(repo):
    head = git(repo, "rev-parse", "HEAD")
    info = git_info(repo / "specs")
    assert info.toplevel == repo.resolve()
    assert (info.revision, info.branch, info.dirty) == (head, "main", False)
    assert info.short() == head[:7]


@pytest.mark.parametrize("change", ["modified", "untracked", "staged", "deleted"])
def test_a_change_under_the_specs_path_makes_it_dirty(repo, change):
    if change == "modified":
        write(repo / "specs" / "x.yaml", VALID + "# edited\n")
    elif change == "untracked":
        write(repo / "specs" / "sub" / "new.yaml", VALID)
    elif change == "staged":
        write(repo / "specs" / "x.yaml", VALID + "# edited\n")
        git(repo, "add", "specs/x.yaml")
    else:
        (repo / "specs" / "x.yaml").unlink()
    info = git_info(repo / "specs")
    assert info.dirty
    assert info.short() == git(repo, "rev-parse", "--short=7", "HEAD") + "+dirty"


def test_changes_elsewhere_in_the_repository_and_ignored_files_do_not_count(repo):
    write(repo / "notes.txt", "edited\n")
    write(repo / "elsewhere" / "new.yaml", VALID)
    write(repo / "specs" / "scratch.tmp", "ignored\n")
    git(repo, "add", "notes.txt")
    assert not git_info(repo / "specs").dirty
    assert git_info(repo).dirty  # the repository root as the specs path sees them


def test_a_single_spec_file_is_dirty_only_when_it_changed(repo):
    write(repo / "specs" / "y.yaml", VALID.replace("tiny", "other"))
    assert not git_info(repo / "specs" / "x.yaml").dirty
    write(repo / "specs" / "x.yaml", VALID + "# edited\n")
    assert git_info(repo / "specs" / "x.yaml").dirty


def test_a_detached_head_has_no_branch(repo):
    first = git(repo, "rev-parse", "HEAD")
    write(repo / "notes.txt", "second\n")
    commit_all(repo, "second")
    git(repo, "checkout", "-q", "--detach", first)
    info = git_info(repo / "specs")
    assert (info.revision, info.branch) == (first, None)


def test_relative_and_symlinked_spec_paths_resolve_to_the_same_work_tree(repo, tmp_path, monkeypatch):
    link = tmp_path / "link"
    link.symlink_to(repo, target_is_directory=True)
    monkeypatch.chdir(link)
    for specs in (Path("specs"), link / "specs", Path("specs/x.yaml")):
        info = git_info(specs)
        assert info.toplevel == repo.resolve() and not info.dirty


def test_git_info_is_fast_enough_to_call_every_pass(repo):
    git_info(repo / "specs")
    start = time.perf_counter()
    for _ in range(5):
        git_info(repo / "specs")
    assert (time.perf_counter() - start) / 5 < 0.5


# pull_fast_forward: a bare "remote", an author's clone that pushes, and enova's clone that pulls


@pytest.fixture
def remote_and_clones(repo, tmp_path):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    served = tmp_path / "served"
    git(tmp_path, "clone", "-q", str(remote), str(served))
    return repo, served


def test_pulling_new_commits_fast_forwards_the_work_tree(remote_and_clones):
    author, served = remote_and_clones
    before = git(served, "rev-parse", "HEAD")
    write(author / "specs" / "x.yaml", VALID.replace("replicas: 1", "replicas: 2"))
    pushed = commit_all(author, "scale")
    git(author, "push", "-q", "origin", "main")

    result = pull_fast_forward(served / "specs", "main")

    assert (result.before, result.after, result.changed) == (before, pushed, True)
    assert "replicas: 2" in (served / "specs" / "x.yaml").read_text()
    assert git_info(served / "specs").revision == pushed
    again = pull_fast_forward(served / "specs", "main")
    assert (again.before, again.after, again.changed) == (pushed, pushed, False)


def test_a_local_branch_ahead_of_the_remote_is_left_alone(remote_and_clones):
    _, served = remote_and_clones
    write(served / "notes.txt", "local\n")
    local = commit_all(served, "local")
    result = pull_fast_forward(served, "main")
    assert (result.before, result.after, result.changed) == (local, local, False)


def test_a_diverged_branch_is_a_permanent_error_with_gits_message(remote_and_clones):
    author, served = remote_and_clones
    write(author / "notes.txt", "theirs\n")
    commit_all(author, "theirs")
    git(author, "push", "-q", "origin", "main")
    write(served / "notes.txt", "ours\n")
    ours = commit_all(served, "ours")

    with pytest.raises(PermanentError, match="fast-forward") as caught:
        pull_fast_forward(served / "specs", "main")
    assert "Not possible to fast-forward" in str(caught.value)
    assert git(served, "rev-parse", "HEAD") == ours


def test_local_changes_that_block_the_merge_are_a_permanent_error(remote_and_clones):
    author, served = remote_and_clones
    write(author / "specs" / "x.yaml", VALID.replace("replicas: 1", "replicas: 2"))
    commit_all(author, "scale")
    git(author, "push", "-q", "origin", "main")
    write(served / "specs" / "x.yaml", VALID.replace("replicas: 1", "replicas: 3"))

    with pytest.raises(PermanentError, match="local changes"):
        pull_fast_forward(served / "specs", "main")
    assert "replicas: 3" in (served / "specs" / "x.yaml").read_text()


def test_an_unreachable_remote_is_a_temporary_error(remote_and_clones, tmp_path):
    _, served = remote_and_clones
    git(served, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    with pytest.raises(TemporaryError, match="git fetch origin main failed.*gone.git"):
        pull_fast_forward(served / "specs", "main")


def test_pulling_a_branch_other_than_the_checked_out_one_is_refused(remote_and_clones):
    _, served = remote_and_clones
    git(served, "checkout", "-q", "-b", "feature")
    with pytest.raises(PermanentError, match="on branch feature, not on main"):
        pull_fast_forward(served, "main")


def test_pulling_outside_a_work_tree_is_a_permanent_error(tmp_path):
    with pytest.raises(PermanentError, match="not in a git work tree"):
        pull_fast_forward(tmp_path, "main")


# committed_snapshot


def test_the_snapshot_holds_the_committed_specs_not_the_edited_ones(repo):
    write(repo / "specs" / "x.yaml", VALID.replace("replicas: 1", "replicas: 5"))
    write(repo / "specs" / "new.yaml", VALID.replace("tiny", "new"))
    head = git(repo, "rev-parse", "HEAD")
    with committed_snapshot(repo / "specs") as snapshot:
        assert snapshot.revision == head
        assert snapshot.display_prefix == f"{head[:7]}:"
        assert sorted(p.name for p in snapshot.path.iterdir()) == ["x.yaml"]
        assert (snapshot.path / "x.yaml").read_text() == VALID
        assert list(load_specs(snapshot.path).deployments) == ["tiny"]
        folder = snapshot.path
    assert not folder.exists()


@pytest.mark.parametrize("cwd", ["here", "root"])
def test_a_spec_error_in_the_snapshot_names_the_users_file_and_line(repo, cwd, monkeypatch):
    write(repo / "specs" / "x.yaml", INVALID)
    head = commit_all(repo, "break it")
    write(repo / "specs" / "x.yaml", VALID)  # fixed in the work tree, not committed
    if cwd == "root":  # as a service started in /: the loader names the snapshot relative to it
        monkeypatch.chdir("/")
    with committed_snapshot(repo / "specs") as snapshot:
        with pytest.raises(SpecError) as caught:
            load_specs(snapshot.path)
        text = snapshot.rewrite(str(caught.value))
    assert f"{head[:7]}:specs/x.yaml:7 spec.replicas: must be an integer (got 'two')" in text
    assert "enova-snapshot" not in text


def test_a_snapshot_of_a_single_file_or_the_whole_repository(repo, monkeypatch):
    head = git(repo, "rev-parse", "HEAD")
    with committed_snapshot(repo / "specs" / "x.yaml") as snapshot:
        assert snapshot.path.is_file() and snapshot.path.read_text() == VALID
        assert snapshot.rewrite(f"{snapshot.path}:3") == f"{head[:7]}:specs/x.yaml:3"
    monkeypatch.chdir(repo)
    with committed_snapshot(Path(".")) as snapshot:
        assert (snapshot.path / "specs" / "x.yaml").read_text() == VALID
        assert (snapshot.path / "notes.txt").exists()


def test_a_snapshot_needs_a_work_tree_commits_and_something_committed_under_the_path(repo, tmp_path):
    with pytest.raises(PermanentError, match="not in a git work tree"):
        with committed_snapshot(tmp_path):
            pass
    empty = tmp_path / "empty"
    git(tmp_path, "init", "-q", "-b", "main", str(empty))
    write(empty / "specs" / "x.yaml", VALID)
    with pytest.raises(PermanentError, match="no commits"):
        with committed_snapshot(empty / "specs"):
            pass
    write(repo / "drafts" / "x.yaml", VALID)
    with pytest.raises(PermanentError, match="nothing committed under drafts"):
        with committed_snapshot(repo / "drafts"):
            pass
