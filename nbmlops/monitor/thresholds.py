"""When a feature counts as drifted: the thresholds and their defaults, defined once.

``nbmlops monitor drift``'s options, the ``drift`` table of the project configuration and
:func:`nbmlops.monitor.drift.check_drift` all default to these. This module imports
nothing heavy: the command line reads the defaults when it starts.

The rule needs both an effect large enough to matter and a test that rules out chance
across every test of the comparison (Holm's correction): a large sample alone cannot make
a negligible difference drift, nor many features make chance look like drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbmlops.monitor.errors import MonitorInputError

# numeric: Wasserstein distance, in reference standard deviations, at least this
DEFAULT_WASSERSTEIN = 0.1
# categorical: Jensen-Shannon distance (base 2) at least this
DEFAULT_JS = 0.1
# missing values: the share of missing values moved by at least this (absolute)
DEFAULT_MISSING = 0.05
# and the feature's test (KS, chi-square, two proportions) below this after Holm
DEFAULT_PVALUE = 0.01


@dataclass(frozen=True)
class Thresholds:
    """When a feature counts as drifted (the rule: :meth:`rule`)."""

    wasserstein: float = DEFAULT_WASSERSTEIN
    js: float = DEFAULT_JS
    missing: float = DEFAULT_MISSING
    pvalue: float = DEFAULT_PVALUE

    def __post_init__(self) -> None:
        if not self.wasserstein >= 0:
            raise MonitorInputError(
                "--wasserstein-threshold",
                f"{self.wasserstein} is negative",
                f"use 0 or more, e.g. {DEFAULT_WASSERSTEIN}",
            )
        for option, value, default in (
            ("--js-threshold", self.js, DEFAULT_JS),
            ("--missing-threshold", self.missing, DEFAULT_MISSING),
            ("--pvalue", self.pvalue, DEFAULT_PVALUE),
        ):
            if not 0 <= value <= 1:
                raise MonitorInputError(option, f"{value} is not in 0..1", f"e.g. {default}")

    def rule(self) -> str:
        p = f"p < {self.pvalue:g} after Holm"
        return (
            f"numeric: Wasserstein >= {self.wasserstein:g} sd and KS {p}; "
            f"categorical: JS >= {self.js:g} and chi-square {p}; "
            f"missing share: change >= {self.missing:g} and two-proportion {p}"
        )
