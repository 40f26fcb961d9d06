"""Errors of the monitor stage: inputs that cannot be compared, each naming the fix."""

from __future__ import annotations

from nbmlops.exceptions import NbmlopsError


class MonitorInputError(NbmlopsError):
    """A reference or current dataset that cannot be read or compared."""

    def __init__(self, source: str, problem: str, fix: str = "") -> None:
        self.source = source
        self.problem = problem
        self.fix = fix
        message = f"{source}: {problem}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)


class ProfileError(MonitorInputError):
    """A reference profile that is not one nbmlops wrote (or of a newer format)."""
