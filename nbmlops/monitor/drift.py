"""Input drift: production inputs against the training data's reference.

``check_drift(reference, current, thresholds)`` is the one core the CLI (and later the
JupyterLab panel and CI) call. Per feature:

- numeric: PSI over the reference's decile bins (plus a missing-value bin when either side
  has missing values) and the two-sample Kolmogorov-Smirnov test (statistic and p-value as
  ``scipy.stats.ks_2samp``) on the non-missing values.
  **Drifted if PSI > thresholds.psi or KS p-value < thresholds.pvalue.**
- categorical: the chi-square test of homogeneity on the reference and current category
  counts (``scipy.stats.chi2_contingency``) and the Jensen-Shannon distance (base 2) of
  the two frequency vectors; categories are the reference's labels, one bucket for labels
  the reference does not list, one for missing values.
  **Drifted if chi-square p-value < thresholds.pvalue or JS distance > thresholds.js.**

Numeric features are computed on a thread per core (numpy releases the GIL in its sorts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbmlops.capture.profile import bin_counts
from nbmlops.monitor import stats
from nbmlops.monitor.errors import MonitorInputError
from nbmlops.monitor.reference import (
    CategoricalReference,
    NumericReference,
    Reference,
    parallel_map,
)
from nbmlops.monitor.thresholds import Thresholds as Thresholds  # here too: drift's API

FORMAT = "nbmlops.drift"  # the JSON report's document format (with "version")
PLOT_BINS = 40
ECDF_POINTS = 101
PLOT_CATEGORIES = 20
OTHER = "(other)"
MISSING = "(missing)"


@dataclass
class FeatureDrift:
    name: str
    kind: str  # "numeric" or "categorical"
    drifted: bool
    reasons: list[str]  # why it drifted, e.g. "PSI 0.31 > 0.2"
    stats: dict[str, Any]
    plot: dict[str, Any]  # compact data the report draws (histogram/ECDF or category shares)


@dataclass
class DriftResult:
    features: list[FeatureDrift]
    thresholds: Thresholds
    reference_rows: int
    current_rows: int
    reference_source: str = "reference"
    current_source: str = "current"
    ks_reference: str = "all rows"
    missing_columns: list[str] = field(default_factory=list)  # in the reference, not current
    new_columns: list[str] = field(default_factory=list)  # in current, not the reference
    skipped: dict[str, str] = field(default_factory=dict)  # feature -> why not compared

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def any_drift(self) -> bool:
        return any(f.drifted for f in self.features)

    def notes(self) -> list[str]:
        """Columns that were not compared, and why (shown under the table and in reports)."""
        notes = []
        if self.missing_columns:
            notes.append("missing from current (not compared): " + ", ".join(self.missing_columns))
        if self.new_columns:
            notes.append("not in the reference (ignored): " + ", ".join(self.new_columns))
        notes += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        return notes

    def summary(self) -> str:
        n, d = len(self.features), len(self.drifted)
        if not d:
            return f"no drift: {n} feature{'s' * (n != 1)} compared, none past the thresholds"
        return f"drift in {d} of {n} features: {', '.join(self.drifted)}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["format"] = FORMAT
        out["version"] = 1
        out["rule"] = self.thresholds.rule()
        out["drifted"] = self.drifted
        out["summary"] = self.summary()
        strict: dict[str, Any] = _finite(out)
        return strict


def check_drift(
    reference: dict[str, Any] | pd.DataFrame | Reference,
    current: pd.DataFrame,
    thresholds: Thresholds | None = None,
    *,
    allow_missing_columns: bool = False,
    reference_source: str = "reference",
    current_source: str = "current",
) -> DriftResult:
    """Compare ``current`` with ``reference`` (a profile from ``build_profile``, a whole
    reference DataFrame, or a :class:`Reference`) feature by feature.

    Raises :class:`MonitorInputError` when ``current`` has no rows, lacks reference features
    (unless ``allow_missing_columns``: they are then listed in ``missing_columns``), or holds
    non-numeric values in a numeric feature.
    """
    th = thresholds or Thresholds()
    if isinstance(reference, Reference):
        ref = reference
    elif isinstance(reference, pd.DataFrame):
        ref = Reference.from_frame(reference)
    else:
        ref = Reference.from_profile(reference)
    if len(current) == 0:
        raise MonitorInputError(current_source, "no rows to compare", "point at logs with data")
    current = current.set_axis([str(c) for c in current.columns], axis=1)
    present = set(current.columns)
    missing = [c for c in ref.columns if c not in present]
    new = [c for c in current.columns if c not in set(ref.columns)]
    if missing and not allow_missing_columns:
        raise MonitorInputError(
            current_source,
            f"{len(missing)} reference feature(s) missing from the current data: "
            f"{', '.join(missing)} (current columns: {', '.join(current.columns)})",
            "log these features in the service, or pass --allow-missing-columns to "
            "compare the others",
        )
    skipped = {
        c: f"kind {ref.kinds[c]!r} is not compared"
        for c in ref.columns
        if c in present and ref.kinds[c] not in ("numeric", "categorical")
    }
    numeric = [c for c in ref.columns if c in present and c in ref.numeric]
    categorical = [c for c in ref.columns if c in present and c in ref.categorical]
    if not numeric and not categorical:
        raise MonitorInputError(
            current_source,
            "no feature in common with the reference "
            f"(reference: {', '.join(ref.columns)}; current: {', '.join(current.columns)})",
            "compare the inputs of the same model",
        )
    values = {c: numeric_values(c, current[c], current_source) for c in numeric}
    by_name: dict[str, FeatureDrift] = dict(
        zip(
            numeric,
            parallel_map(lambda c: numeric_drift(c, ref.numeric[c], values[c], th), numeric),
            strict=True,
        )
    )
    for c in categorical:
        by_name[c] = categorical_drift(c, ref.categorical[c], current[c], th)
    return DriftResult(
        features=[by_name[c] for c in ref.columns if c in by_name],
        thresholds=th,
        reference_rows=ref.rows,
        current_rows=len(current),
        reference_source=reference_source,
        current_source=current_source,
        ks_reference=ref.ks_sample,
        missing_columns=missing,
        new_columns=new,
        skipped=skipped,
    )


def numeric_values(name: str, series: pd.Series, source: str) -> np.ndarray:
    """``series`` as float64 (NaN for missing); numbers written as text are accepted."""
    if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        values: np.ndarray = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return values
    coerced = pd.to_numeric(series, errors="coerce")
    bad = coerced.isna() & series.notna()
    if bad.any():
        examples = ", ".join(repr(v) for v in pd.unique(series[bad])[:3])
        first = series.index[bad.to_numpy()][0]
        raise MonitorInputError(
            source,
            f"column {name!r} is numeric in the reference but holds non-numeric values "
            f"({int(bad.sum())} row(s), e.g. {examples}; first at row {first})",
            f"clean or cast {name!r} to numbers before comparing, and check that the "
            "service logs it as a number",
        )
    parsed: np.ndarray = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    return parsed


def numeric_drift(
    name: str, ref: NumericReference, current: np.ndarray, th: Thresholds
) -> FeatureDrift:
    nan = np.isnan(current)
    cur_missing = int(nan.sum())
    cur = np.sort(current[~nan] if cur_missing else current)
    ref_counts = np.asarray(ref.counts, dtype=np.int64)
    cur_counts = bin_counts(cur, ref.cuts)
    if ref.missing or cur_missing:
        ref_counts = np.append(ref_counts, ref.missing)
        cur_counts = np.append(cur_counts, cur_missing)
    psi_value = stats.psi(ref_counts, cur_counts)
    ks = stats.ks_test(ref.sorted_values, cur) if len(cur) and len(ref.sorted_values) else None
    reasons = []
    if psi_value > th.psi:
        reasons.append(f"PSI {psi_value:.3g} > {th.psi:g}")
    if ks is not None and ks.pvalue < th.pvalue:
        reasons.append(f"KS p {ks.pvalue:.3g} < {th.pvalue:g}")
    n_ref = int(ref.summary.get("count", 0))
    values = {
        "psi": psi_value,
        "ks_statistic": ks.statistic if ks else None,
        "ks_pvalue": ks.pvalue if ks else None,
        "ks_method": ks.method if ks else None,
        "reference_count": n_ref,
        "current_count": len(cur),
        "reference_missing": ref.missing,
        "current_missing": cur_missing,
        "reference_mean": ref.summary.get("mean"),
        "current_mean": float(cur.mean()) if len(cur) else None,
        "reference_std": ref.summary.get("std"),
        "current_std": float(cur.std(ddof=1)) if len(cur) > 1 else None,
    }
    return FeatureDrift(
        name, "numeric", bool(reasons), reasons, values, numeric_plot(ref.sorted_values, cur)
    )


def numeric_plot(ref: np.ndarray, cur: np.ndarray) -> dict[str, Any]:
    """Histogram counts on shared equal-width bins, and both ECDFs on a grid."""
    both = [a for a in (ref, cur) if len(a)]
    if not both:
        return {}
    lows = [_finite_quantile(a, 0.005) for a in both]
    highs = [_finite_quantile(a, 0.995) for a in both]
    lo, hi = min(lows), max(highs)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, PLOT_BINS + 1)
    grid = np.linspace(lo, hi, ECDF_POINTS)

    def hist(a: np.ndarray) -> list[int]:
        pos = np.searchsorted(a, edges, side="left")
        pos[-1] = np.searchsorted(a, edges[-1], side="right")
        return [int(c) for c in np.diff(pos)]

    def ecdf(a: np.ndarray) -> list[float]:
        return [float(v) for v in np.searchsorted(a, grid, side="right") / max(len(a), 1)]

    return {
        "edges": edges.tolist(),
        "reference": hist(ref),
        "current": hist(cur),
        "ecdf_x": grid.tolist(),
        "ecdf_reference": ecdf(ref),
        "ecdf_current": ecdf(cur),
    }


def _finite_quantile(sorted_values: np.ndarray, q: float) -> float:
    finite = (
        sorted_values[np.isfinite(sorted_values)]
        if not np.isfinite(sorted_values[[0, -1]]).all()
        else sorted_values
    )
    if not len(finite):
        return 0.0
    return float(finite[int(q * (len(finite) - 1))])


def categorical_drift(
    name: str, ref: CategoricalReference, series: pd.Series, th: Thresholds
) -> FeatureDrift:
    cur_missing = int(series.isna().sum())
    counts = series.dropna().astype(str).value_counts()
    known = set(ref.labels)
    unknown = counts[~counts.index.isin(known)]
    labels = [*ref.labels, OTHER, MISSING]
    ref_counts = np.array([*ref.counts, ref.other, ref.missing], dtype=np.int64)
    cur_counts = np.array(
        [*(int(counts.get(label, 0)) for label in ref.labels), int(unknown.sum()), cur_missing],
        dtype=np.int64,
    )
    result = stats.categorical_test(ref_counts, cur_counts)
    reasons = []
    if result.chi2_pvalue < th.pvalue:
        reasons.append(f"chi-square p {result.chi2_pvalue:.3g} < {th.pvalue:g}")
    if result.js_distance > th.js:
        reasons.append(f"JS {result.js_distance:.3g} > {th.js:g}")
    values = {
        "chi2_statistic": result.chi2_statistic,
        "chi2_pvalue": result.chi2_pvalue,
        "chi2_dof": result.chi2_dof,
        "js_distance": result.js_distance,
        "reference_count": int(ref.summary.get("count", 0)),
        "current_count": int(counts.sum()),
        "reference_missing": ref.missing,
        "current_missing": cur_missing,
        "new_categories": [str(v) for v in unknown.index[:10]],
    }
    keep = (ref_counts + cur_counts) > 0
    ref_share = ref_counts / max(ref_counts.sum(), 1)
    cur_share = cur_counts / max(cur_counts.sum(), 1)
    order = [i for i in np.argsort(-(ref_share + cur_share), kind="stable") if keep[i]]
    order = order[:PLOT_CATEGORIES]
    plot = {
        "labels": [labels[i] for i in order],
        "reference": [float(ref_share[i]) for i in order],
        "current": [float(cur_share[i]) for i in order],
    }
    return FeatureDrift(name, "categorical", bool(reasons), reasons, values, plot)


def _finite(value: Any) -> Any:
    """NaN and infinities to None, so the JSON is strict."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
