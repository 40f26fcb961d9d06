"""Errors of the monitor stage: inputs that cannot be compared, each naming the fix."""

from __future__ import annotations

from typing import Any

from nbmlops.exceptions import NbmlopsError


class MonitorInputError(NbmlopsError):
    """A reference or current dataset (or a threshold) that cannot be read or compared."""

    def __init__(self, source: str, problem: str, fix: str = "") -> None:
        super().__init__(f"{source}: {problem}", fix)
        self.source = source

    def details(self) -> dict[str, Any]:
        return {"source": self.source}
