"""When a feature counts as drifted: the thresholds and their defaults, defined once.

``nbmlops monitor drift``'s options, the ``drift`` table of the project configuration and
:func:`nbmlops.monitor.drift.check_drift` all default to these. This module imports
nothing heavy: the command line reads the defaults when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbmlops.monitor.errors import MonitorInputError

DEFAULT_PSI = 0.2  # a numeric feature drifted if its PSI is above this
DEFAULT_PVALUE = 0.05  # a feature drifted if its KS / chi-square p-value is below this
DEFAULT_JS = 0.1  # a categorical feature drifted if its Jensen-Shannon distance is above this


@dataclass(frozen=True)
class Thresholds:
    """When a feature counts as drifted (the rule: :meth:`rule`)."""

    psi: float = DEFAULT_PSI
    pvalue: float = DEFAULT_PVALUE
    js: float = DEFAULT_JS

    def __post_init__(self) -> None:
        if not self.psi >= 0:
            raise MonitorInputError("--psi-threshold", f"{self.psi} is negative", "use 0 or more")
        if not 0 <= self.pvalue <= 1:
            raise MonitorInputError(
                "--ks-pvalue", f"{self.pvalue} is not in 0..1", f"e.g. {DEFAULT_PVALUE}"
            )
        if not 0 <= self.js <= 1:
            raise MonitorInputError(
                "--js-threshold", f"{self.js} is not in 0..1", f"e.g. {DEFAULT_JS}"
            )

    def rule(self) -> str:
        return (
            f"numeric: PSI > {self.psi:g} or KS p < {self.pvalue:g}; "
            f"categorical: chi-square p < {self.pvalue:g} or JS distance > {self.js:g}"
        )
