"""What the git work tree holding the specs says: revision, branch, dirtiness; pull; committed snapshot.

The reconciler calls `git_info` on every pass to stamp status and events with the revision it
applied, `pull_fast_forward` when it follows a remote branch, and `committed_snapshot` under
`--committed-only` so that it applies what is committed rather than what is being edited.

Everything runs `git -C <dir> ...` as an argv list (never a shell), with a timeout, with
pathspecs taken literally, prompts disabled and messages in English; git's own stderr is
carried in every error. Its process group is killed on timeout, so a hung `ssh` or
credential helper cannot outlive the call.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from enova.errors import PermanentError, TemporaryError

LOCAL_TIMEOUT_S = 10.0  # rev-parse, status, merge, archive: local work, normally a few ms
SHORT = 7  # length of a short revision


class _GitMissing(Exception):
    """The git executable is not installed."""


@dataclass(frozen=True)
class _Done:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape").strip()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")}
    env.update(LC_ALL="C", LANGUAGE="C", GIT_LITERAL_PATHSPECS="1", GIT_TERMINAL_PROMPT="0",
               GIT_MERGE_AUTOEDIT="no")
    return env


def _git(cwd: Path, *args: str, timeout: float = LOCAL_TIMEOUT_S) -> _Done:
    """Run `git -C cwd args...`. Raises _GitMissing, or TemporaryError when it times out."""
    argv = ["git", "--no-optional-locks", "-C", str(cwd), *args]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_env(), start_new_session=True, close_fds=True)
    except FileNotFoundError as error:
        raise _GitMissing(str(error)) from error
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise TemporaryError(f"git {args[0]} in {cwd} timed out after {timeout:g}s") from None
    return _Done(proc.returncode, out, err.decode("utf-8", "replace").strip())


def _message(done: _Done) -> str:
    return done.stderr or done.out or f"exit status {done.returncode}"


@dataclass(frozen=True)
class _Place:
    """Where the specs sit in a work tree: its root and the specs path relative to it ("." for the root)."""

    toplevel: Path
    relative: str

    @property
    def pathspec(self) -> list[str]:
        return ["--"] if self.relative == "." else ["--", self.relative]


def _locate(specs: Path) -> _Place | None:
    """The work tree holding `specs`; None when it is not in one. Raises _GitMissing, TemporaryError,
    PermanentError (git refuses the repository, e.g. one owned by another user)."""
    target = Path(os.path.abspath(os.path.expanduser(specs))).resolve()
    start = target if target.is_dir() else target.parent
    while not start.is_dir():  # the specs path was deleted: ask from the nearest folder that exists
        start = start.parent
    done = _git(start, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        if "not a git repository" in done.stderr:
            return None
        raise PermanentError(f"git cannot read the repository holding {specs}: {_message(done)}")
    if not done.out:  # inside .git or a bare repository: no work tree
        return None
    toplevel = Path(done.out).resolve()
    try:
        relative = target.relative_to(toplevel).as_posix()
    except ValueError:
        return None
    return _Place(toplevel, relative or ".")


def _head(place: _Place) -> str:
    """The full sha of HEAD, "" when the branch has no commits yet."""
    done = _git(place.toplevel, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    return done.out if done.returncode == 0 else ""


def _short(revision: str) -> str:
    return revision[:SHORT]


@dataclass(frozen=True)
class GitInfo:
    """What the work tree holding the specs says."""

    toplevel: Path  # the work tree root
    revision: str  # full commit sha of HEAD ("" in a repository with no commits)
    branch: str | None  # current branch, None when HEAD is detached
    dirty: bool  # uncommitted changes (staged, unstaged or untracked, not ignored) under the specs path

    def short(self) -> str:
        """"abc1234" or "abc1234+dirty" ("" or "+dirty" with no commits)."""
        return _short(self.revision) + ("+dirty" if self.dirty else "")


def git_info(specs: Path) -> GitInfo | None:
    """The revision, branch and dirtiness of the work tree holding `specs` (a folder or a file).

    None when specs is not inside a git work tree or git is not installed. Fast (two git calls,
    a few ms; takes no lock, so it never gets in the way of the user's own git commands):
    the reconciler calls it every pass. Raises TemporaryError when git times out,
    PermanentError when git refuses the repository (say, "dubious ownership")."""
    try:
        place = _locate(specs)
        if place is None:
            return None
        done = _git(place.toplevel, "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal",
                    "--ignored=no", *place.pathspec)
    except _GitMissing:
        return None
    if done.returncode != 0:
        raise PermanentError(f"git status failed in {place.toplevel}: {_message(done)}")
    revision, branch, dirty = "", None, False
    for entry in done.stdout.decode("utf-8", "surrogateescape").split("\0"):
        if entry.startswith("# branch.oid "):
            oid = entry.split(" ", 2)[2]
            revision = "" if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            head = entry.split(" ", 2)[2]
            branch = None if head == "(detached)" else head
        elif entry and not entry.startswith("#"):
            dirty = True
    return GitInfo(place.toplevel, revision, branch, dirty)


@dataclass(frozen=True)
class PullResult:
    """Revisions of HEAD before and after a pull; `changed` when the work tree moved."""

    before: str
    after: str
    changed: bool


def pull_fast_forward(specs: Path, branch: str, remote: str = "origin", timeout: float = 60) -> PullResult:
    """`git fetch <remote> <branch>`, then fast-forward the work tree holding `specs` to what was fetched
    (`git merge --ff-only`). Idempotent; blocks for up to `timeout` seconds on the fetch.

    The work tree must be on `branch`. A local branch ahead of the remote is left as it is.
    Raises TemporaryError when the fetch fails (network, remote down, branch not there yet) or
    git times out or another git command holds the index lock; PermanentError when specs is not
    in a work tree, HEAD is not on `branch`, the local branch diverged from the remote (not a
    fast-forward) or local changes block the merge. Every message carries git's."""
    try:
        place = _locate(specs)
    except _GitMissing as error:
        raise PermanentError(f"cannot pull the specs: git is not installed ({error})") from error
    if place is None:
        raise PermanentError(f"cannot pull the specs: {specs} is not in a git work tree")
    top = place.toplevel
    current = _git(top, "symbolic-ref", "--quiet", "--short", "HEAD")
    if current.returncode != 0 or current.out != branch:
        where = f"on branch {current.out}" if current.returncode == 0 else "on a detached HEAD"
        raise PermanentError(f"cannot pull {remote}/{branch} into {top}: the work tree is {where}, "
                             f"not on {branch}")
    before = _head(place)
    fetched = _git(top, "fetch", "--quiet", "--no-tags", remote, f"refs/heads/{branch}", timeout=timeout)
    if fetched.returncode != 0:
        raise TemporaryError(f"git fetch {remote} {branch} failed in {top}: {_message(fetched)}")
    done = _git(top, "rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}")
    if done.returncode != 0 or not done.out:
        raise TemporaryError(f"git fetch {remote} {branch} in {top} brought no commit: {_message(done)}")
    target = done.out
    if target == before:
        return PullResult(before, before, False)
    merged = _git(top, "merge", "--ff-only", "--quiet", target)
    if merged.returncode != 0:
        text = _message(merged)
        if "index.lock" in text:
            raise TemporaryError(f"cannot fast-forward {top} to {remote}/{branch}: {text}")
        raise PermanentError(f"cannot fast-forward {top} to {remote}/{branch} ({_short(target)}): {text}")
    after = _head(place)
    return PullResult(before, after, after != before)



@dataclass(frozen=True)
class Snapshot:
    """The specs as committed at `revision`, extracted under a temporary folder.

    `path` is the specs path inside it (a folder or a file, as the specs path given was);
    `display_prefix` ("abc1234:") is how messages name the revision, so that
    `abc1234:specs/x.yaml` is also what `git show` takes."""

    path: Path
    revision: str
    display_prefix: str
    root: Path  # the temporary folder, standing for the work tree root

    def rewrite(self, text: str) -> str:
        """`text` with the temporary folder replaced by the revision: `/tmp/enova-.../specs/x.yaml:3`
        becomes `abc1234:specs/x.yaml:3`, so a SpecError from the snapshot names the user's file.
        Also maps the folder as the loader names it when the working directory contains it."""
        forms = {str(self.root), os.path.abspath(self.root)}
        try:
            forms.add(str(self.root.relative_to(Path.cwd().resolve())))
        except (ValueError, OSError):
            pass
        for root in sorted(forms, key=len, reverse=True):  # the longest first: a relative form is a suffix
            text = text.replace(root + os.sep, self.display_prefix).replace(root, self.display_prefix + ".")
        return text


@contextmanager
def committed_snapshot(specs: Path) -> Iterator[Snapshot]:
    """The specs as committed at HEAD, extracted into a temporary folder that is removed on exit
    (`git archive HEAD -- <specs path>`, read with tarfile). Under `--committed-only` the reconciler
    loads these instead of the work tree, so it applies what is committed, not what is being edited.

    Blocks for a few ms. Raises PermanentError when specs is not in a git work tree, the branch has
    no commits, or nothing is committed under the specs path; TemporaryError when git times out."""
    try:
        place = _locate(specs)
    except _GitMissing as error:
        raise PermanentError(f"cannot read the committed specs: git is not installed ({error})") from error
    if place is None:
        raise PermanentError(f"cannot read the committed specs: {specs} is not in a git work tree")
    revision = _head(place)
    if not revision:
        raise PermanentError(f"cannot read the committed specs: {place.toplevel} has no commits yet")
    shown = "the work tree" if place.relative == "." else place.relative
    archive = _git(place.toplevel, "archive", "--format=tar", revision, *place.pathspec)
    if archive.returncode != 0:
        raise PermanentError(f"nothing committed under {shown} at {_short(revision)}: {_message(archive)}")
    root = Path(tempfile.mkdtemp(prefix="enova-snapshot-")).resolve()
    try:
        _extract(archive.stdout, root)
        path = root if place.relative == "." else root / place.relative
        if not path.exists():
            raise PermanentError(f"nothing committed under {shown} at {_short(revision)}")
        yield Snapshot(path=path, revision=revision, display_prefix=f"{_short(revision)}:", root=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _extract(tar_bytes: bytes, into: Path) -> None:
    """Unpack a tar stream from git archive, refusing members that would land outside `into`."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(into, filter="data")
                return
            for member in archive.getmembers():  # Python < 3.10.12: the same checks, by hand
                target = (into / member.name).resolve()
                if not (member.isfile() or member.isdir() or member.issym()) or into not in (target, *target.parents):
                    raise PermanentError(f"refusing to extract {member.name!r} from the committed specs")
                if member.issym():
                    link = (target.parent / member.linkname).resolve()
                    if into not in (link, *link.parents):
                        raise PermanentError(f"refusing to extract {member.name!r}: it links outside the specs")
            archive.extractall(into)
    except (tarfile.TarError, OSError) as error:
        raise PermanentError(f"cannot extract the committed specs: {error}") from error
