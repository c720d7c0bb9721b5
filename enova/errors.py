"""enova's own exceptions, shared by every layer.

Adapters turn library exceptions (pydantic, yaml, psutil, httpx, subprocess) into these,
so the CLI has one handler: an `EnovaError` becomes one message on stderr and a
non-zero exit code. The kind of error says whether retrying can help.
"""

from __future__ import annotations

from dataclasses import dataclass


class EnovaError(Exception):
    """Base of every error enova reports to a user. `exit_code` is what the CLI exits with."""

    exit_code = 1


@dataclass(frozen=True, order=True)
class SpecIssue:
    """One problem in a spec file, located by file, line and field path."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SpecError(EnovaError):
    """The spec set is invalid. Carries every issue found, sorted by file and line."""

    exit_code = 2

    def __init__(self, issues: list[SpecIssue]):
        self.issues = sorted(issues)
        count = len(self.issues)
        head = f"{count} error{'s' if count != 1 else ''} in the specs"
        super().__init__(head + ":\n" + "\n".join(str(i) for i in self.issues))


class UsageError(EnovaError):
    """The command was called wrongly (a missing directory, an unknown deployment name)."""

    exit_code = 2


class PermanentError(EnovaError):
    """Retrying will not help until something changes (the spec, the host, an install)."""


class TemporaryError(EnovaError):
    """Retrying later may help (a port in use, an engine slow to start). `delay` is a hint in seconds."""

    def __init__(self, message: str, delay: float = 5.0):
        super().__init__(message)
        self.delay = delay


class LockHeldError(EnovaError):
    """Another enova process holds the state lock."""
