"""Input drift: production inputs against the training data's reference.

``check_drift(reference, current, thresholds)`` is the one core the CLI (and later the
JupyterLab panel and CI) call. A feature drifts when its change is both **large enough to
matter** (an effect size at or above a threshold) and **unlikely to be chance** (its test's
p-value below ``thresholds.pvalue`` after Holm's correction across every test of the
comparison, so 8 or 200 features do not multiply the false alarms):

- numeric: the Wasserstein distance of the non-missing values, in reference standard
  deviations (from both quantile functions' means over 1,000 slices,
  :func:`stats.wasserstein`), and the two-sample Kolmogorov-Smirnov test (statistic and
  p-value as ``scipy.stats.ks_2samp``). PSI over the reference's decile bins (plus a
  missing-value bin) is reported, not used by the rule.
  **Drifted if Wasserstein >= thresholds.wasserstein and KS p (Holm) < thresholds.pvalue.**
- categorical: the Jensen-Shannon distance (base 2) of the two frequency vectors and the
  chi-square test of homogeneity (``scipy.stats.chi2_contingency``); categories are the
  reference's labels, one bucket for labels the reference does not list, one for missing.
  **Drifted if JS >= thresholds.js and chi-square p (Holm) < thresholds.pvalue.**
- missing values, of any feature where either side has some: the absolute change of the
  missing share and the two-proportion z test, in the same Holm family.
  **Drifted if the change >= thresholds.missing and its p (Holm) < thresholds.pvalue.**

Each feature's verdict is ``"drift"`` (one of the above), ``"small"`` (a test is
significant after Holm but its effect is below the threshold: a real change too small to
act on) or ``"none"`` (an effect above the threshold that is not significant is noise of a
small sample: "none", its reason says so). The dataset drifts when any feature does.

Numeric features are computed on a thread per core (numpy releases the GIL in its sorts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbmlops.capture.profile import bin_counts, quantile_means
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
VERSION = 2  # 2: verdicts, effect sizes and Holm-adjusted p-values
PLOT_BINS = 40
ECDF_POINTS = 101
PLOT_CATEGORIES = 20
OTHER = "(other)"
MISSING = "(missing)"
VERDICTS = ("none", "small", "drift")


@dataclass
class Test:
    """One test of the Holm family: a feature's values or its missing share."""

    what: str  # "values" or "missing"
    test: str  # "KS", "chi-square" or "two-proportion"
    effect_name: str  # "Wasserstein", "JS" or "missing share change"
    effect: float
    threshold: float
    pvalue: float
    pvalue_holm: float = 1.0

    def describe(self, alpha: float) -> str:
        unit = " sd" if self.effect_name == "Wasserstein" else ""
        effect = f"{self.effect_name} {_num(self.effect)}{unit}"
        big = self.effect >= self.threshold
        effect += f" {'>=' if big else '<'} {self.threshold:g}"
        sig = self.pvalue_holm < alpha
        p = f"{self.test} p {_num(self.pvalue_holm)} (Holm) {'<' if sig else '>='} {alpha:g}"
        if big and sig:
            return f"{effect}, {p}"
        if sig:
            return f"{p} but {effect}: a real change, too small to act on"
        return f"{effect} but {p}: not distinguishable from chance at this sample size"


@dataclass
class FeatureDrift:
    name: str
    kind: str  # "numeric" or "categorical"
    verdict: str  # "none", "small" or "drift"
    drifted: bool  # verdict == "drift"
    effect: float | None  # Wasserstein in reference sds (numeric) or JS distance
    reasons: list[str]  # how much and why, e.g. "Wasserstein 0.31 sd >= 0.1, KS p ... < 0.01"
    stats: dict[str, Any]
    plot: dict[str, Any]  # compact data the report draws (histogram/ECDF or category shares)
    tests: list[Test] = field(default_factory=list)

    def decide(self, alpha: float) -> None:
        """The verdict from the tests' Holm-adjusted p-values (set by :func:`check_drift`)."""
        sig = [t for t in self.tests if t.pvalue_holm < alpha]
        big = [t for t in sig if t.effect >= t.threshold]
        self.verdict = "drift" if big else "small" if sig else "none"
        self.drifted = bool(big)
        shown = big or sig or [t for t in self.tests if t.effect >= t.threshold]
        self.reasons = [t.describe(alpha) for t in shown]
        for t in self.tests:
            key = "ks" if t.test == "KS" else "chi2" if t.test == "chi-square" else "missing"
            self.stats[f"{key}_pvalue_holm"] = t.pvalue_holm


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
    tests: int = 0  # the size of the Holm family

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def small(self) -> list[str]:
        """Features with a significant change below the effect thresholds."""
        return [f.name for f in self.features if f.verdict == "small"]

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
            small = f"; small changes in {', '.join(self.small)}" if self.small else ""
            return (
                f"no drift: {n} feature{'s' * (n != 1)} compared, none past the thresholds{small}"
            )
        return f"drift in {d} of {n} features: {', '.join(self.drifted)}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["format"] = FORMAT
        out["version"] = VERSION
        out["rule"] = self.thresholds.rule()
        out["drifted"] = self.drifted
        out["small"] = self.small
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
    features = [by_name[c] for c in ref.columns if c in by_name]
    family = [t for f in features for t in f.tests]
    for t, adjusted in zip(family, stats.holm([t.pvalue for t in family]), strict=True):
        t.pvalue_holm = adjusted
    for f in features:
        f.decide(th.pvalue)
    return DriftResult(
        features=features,
        thresholds=th,
        reference_rows=ref.rows,
        current_rows=len(current),
        reference_source=reference_source,
        current_source=current_source,
        ks_reference=ref.ks_sample,
        missing_columns=missing,
        new_columns=new,
        skipped=skipped,
        tests=len(family),
    )


def missing_test(
    ref_missing: int, ref_rows: int, cur_missing: int, cur_rows: int, th: Thresholds
) -> list[Test]:
    """The missing-share test, when either side has missing values (else none)."""
    if not (ref_missing or cur_missing) or not ref_rows or not cur_rows:
        return []
    change = abs(cur_missing / cur_rows - ref_missing / ref_rows)
    p = stats.two_proportions(ref_missing, ref_rows, cur_missing, cur_rows)
    return [Test("missing", "two-proportion", "missing share change", change, th.missing, p)]


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
    """A numeric feature's statistics and tests (the verdict waits for Holm's correction)."""
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
    cur_means = quantile_means(cur)
    distance = stats.wasserstein(ref.quantile_means, cur_means)
    ref_std = float(ref.summary.get("std") or 0.0)
    scaled = distance / ref_std if ref_std > 0 else (0.0 if distance == 0 else float("inf"))
    n_ref = int(ref.summary.get("count", 0))
    tests = []
    if ks is not None and np.isfinite(distance):
        tests.append(Test("values", "KS", "Wasserstein", scaled, th.wasserstein, ks.pvalue))
    tests += missing_test(ref.missing, n_ref + ref.missing, cur_missing, len(current), th)
    values = {
        "wasserstein": distance if np.isfinite(distance) else None,
        "wasserstein_sd": scaled if np.isfinite(distance) else None,
        "ks_statistic": ks.statistic if ks else None,
        "ks_pvalue": ks.pvalue if ks else None,
        "ks_method": ks.method if ks else None,
        "psi": psi_value,
        "reference_count": n_ref,
        "current_count": len(cur),
        "reference_missing": ref.missing,
        "current_missing": cur_missing,
        "missing_share_change": _share(cur_missing, len(current))
        - _share(ref.missing, n_ref + ref.missing),
        "reference_mean": ref.summary.get("mean"),
        "current_mean": float(cur_means.mean()) if len(cur) else None,
        "reference_std": ref.summary.get("std"),
        "current_std": float(cur.std(ddof=1)) if len(cur) > 1 else None,
    }
    effect = scaled if np.isfinite(distance) else None
    plot = numeric_plot(ref.sorted_values, cur)
    return FeatureDrift(name, "numeric", "none", False, effect, [], values, plot, tests)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _num(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else "inf"


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
    ref_rows, cur_rows = int(ref_counts.sum()), len(series)
    tests = [Test("values", "chi-square", "JS", result.js_distance, th.js, result.chi2_pvalue)]
    tests += missing_test(ref.missing, ref_rows, cur_missing, cur_rows, th)
    values = {
        "js_distance": result.js_distance,
        "chi2_statistic": result.chi2_statistic,
        "chi2_pvalue": result.chi2_pvalue,
        "chi2_dof": result.chi2_dof,
        "reference_count": int(ref.summary.get("count", 0)),
        "current_count": int(counts.sum()),
        "reference_missing": ref.missing,
        "current_missing": cur_missing,
        "missing_share_change": _share(cur_missing, cur_rows) - _share(ref.missing, ref_rows),
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
    return FeatureDrift(
        name, "categorical", "none", False, result.js_distance, [], values, plot, tests
    )


def _finite(value: Any) -> Any:
    """NaN and infinities to None, so the JSON is strict."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
