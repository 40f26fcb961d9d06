"""Reference profiles: what production inputs are compared against.

``build_profile(df)`` summarises the training data once (at promotion) into a plain,
JSON-serialisable dict:

```
{"format": "nbmlops.profile", "version": 1, "rows": N, "columns": [...],
 "sample_rows": K, "seed": S,
 "features": {name: {"kind": "numeric"|"categorical"|"other", "dtype": "float64",
                     "summary": {...}, "histogram": {...}, "quantile_means": [...]
                     | "categories": {...}}},
 "sample": {"index": [...], "columns": {name: [values]}}}
```

- numeric: ``summary`` (count, missing, mean, std, min, quantiles, max) and ``histogram``
  with the PSI bins: ``cuts`` (the reference deciles, distinct values; bin 0 is
  ``(-inf, cuts[0]]``, bin j ``(cuts[j-1], cuts[j]]``, the last ``(cuts[-1], +inf)``),
  ``counts`` per bin over the whole data, ``missing``; ``edges`` = ``[min, *cuts, max]``;
  ``quantile_means``: the mean of the values in each 0.1% slice of the sorted data
  (``quantile_means()``, 1,000 numbers: the Wasserstein distance of drift is computed
  from them).
- categorical (bool, object, string, category): ``summary`` (count, missing, unique) and
  ``categories``: the ``TOP_CATEGORIES`` most frequent labels (``str(value)``) with counts,
  ``other`` (rows in the remaining labels), ``missing``.
- ``sample``: up to ``sample_rows`` rows drawn without replacement with a seeded generator
  (the same data and seed give the same rows), kept in their original order; enough for
  the Kolmogorov-Smirnov test and to replay rows through a service. ``sample_frame``
  turns it back into a DataFrame with the original column names and dtypes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbmlops.exceptions import NbmlopsError

FORMAT = "nbmlops.profile"
VERSION = 1
DEFAULT_SAMPLE_ROWS = 5000
DEFAULT_SEED = 20241
PSI_BINS = 10
TOP_CATEGORIES = 50
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# The quantile function is summarised by its mean over this many equal slices of (0, 1).
QUANTILE_SLICES = 1000


class ProfileError(NbmlopsError):
    """A reference profile that is not one nbmlops wrote (or of a newer format), or data
    that cannot be profiled."""

    def __init__(self, source: str, problem: str, fix: str = "") -> None:
        super().__init__(f"{source}: {problem}", fix)
        self.source = source


def feature_kind(series: pd.Series) -> str:
    """``numeric`` (int, float), ``categorical`` (bool, text, category) or ``other``."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(dtype)
        or pd.api.types.is_object_dtype(dtype)
    ):
        return "categorical"
    return "other"


def build_profile(
    df: pd.DataFrame, sample_rows: int = DEFAULT_SAMPLE_ROWS, seed: int = DEFAULT_SEED
) -> dict[str, Any]:
    """The reference profile of ``df`` (training data): see the module docstring."""
    if sample_rows < 1:
        raise ValueError(f"sample_rows must be at least 1, got {sample_rows}")
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise ProfileError("training data", f"duplicate column names {dupes}", "rename the columns")
    frame = df.set_axis(columns, axis=1)
    features = {name: profile_column(frame[name]) for name in columns}
    n = len(frame)
    k = min(n, sample_rows)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=k, replace=False)) if k < n else np.arange(n)
    sample = frame.iloc[rows]
    return {
        "format": FORMAT,
        "version": VERSION,
        "rows": n,
        "columns": columns,
        "sample_rows": k,
        "seed": seed,
        "features": features,
        "sample": {
            "index": [int(i) for i in rows],
            "columns": {name: _json_values(sample[name]) for name in columns},
        },
    }


def profile_column(series: pd.Series) -> dict[str, Any]:
    """One feature's entry of a profile (kind, dtype, summary, bins or categories)."""
    kind = feature_kind(series)
    entry: dict[str, Any] = {"kind": kind, "dtype": str(series.dtype)}
    if isinstance(series.dtype, pd.CategoricalDtype):
        entry["categories_order"] = [_json_scalar(c) for c in series.cat.categories]
    missing = int(series.isna().sum())
    if kind == "numeric":
        values = np.sort(series.dropna().to_numpy(dtype=np.float64))
        entry["summary"] = numeric_summary(values, missing)
        entry["histogram"] = psi_histogram(values, missing)
        entry["quantile_means"] = [float(v) for v in quantile_means(values)]
    elif kind == "categorical":
        labels = series.dropna().astype(str)
        counts = labels.value_counts(sort=True)
        top = counts.iloc[:TOP_CATEGORIES]
        entry["summary"] = {"count": int(len(labels)), "missing": missing, "unique": len(counts)}
        entry["categories"] = {
            "labels": [str(k) for k in top.index],
            "counts": [int(v) for v in top.to_numpy()],
            "other": int(counts.iloc[TOP_CATEGORIES:].sum()),
            "missing": missing,
        }
    else:
        entry["summary"] = {"count": int(series.notna().sum()), "missing": missing}
    return entry


def numeric_summary(sorted_values: np.ndarray, missing: int) -> dict[str, Any]:
    """count, missing, mean, std (ddof 1), min, quantiles, max of sorted, non-missing values."""
    n = len(sorted_values)
    if n == 0:
        return {"count": 0, "missing": missing}
    return {
        "count": n,
        "missing": missing,
        "mean": float(sorted_values.mean()),
        "std": float(sorted_values.std(ddof=1)) if n > 1 else 0.0,
        "min": float(sorted_values[0]),
        "quantiles": {f"{q:g}": sorted_quantile(sorted_values, q) for q in QUANTILES},
        "max": float(sorted_values[-1]),
    }


def quantile_means(sorted_values: np.ndarray, slices: int = QUANTILE_SLICES) -> np.ndarray:
    """The mean of the empirical quantile function over each of ``slices`` equal slices of
    (0, 1): slice k is ``slices * integral of Q(u) du over [k/slices, (k+1)/slices]``.

    For n sorted values ``Q(u)`` is ``x[floor(u n)]``: a slice holds the values whose whole
    interval lies inside it, and fractions of the one or two values it shares with its
    neighbours. One pass over the values (``np.add.reduceat``), exact.
    """
    n = len(sorted_values)
    if n == 0:
        return np.empty(0)
    x = np.arange(slices + 1) * (n / slices)  # slice boundaries, in values
    whole = np.minimum(x.astype(np.int64), n - 1)
    frac = x - whole  # the share of value whole[k] below boundary k
    frac[-1] = 0.0  # the last boundary is past every value: the total below it
    # reduceat sums whole[k] .. whole[k+1]-1 (the last: to the end); an empty range
    # (equal starts) gives the value itself instead of 0
    starts = whole[:-1]
    sums = np.add.reduceat(sorted_values, starts)
    sums[:-1][starts[1:] == starts[:-1]] = 0.0
    below = np.concatenate(([0.0], np.cumsum(sums)))  # the sum of x[0 .. whole[k]-1]
    integral = (below + frac * sorted_values[whole]) / n
    means: np.ndarray = np.diff(integral) * slices
    return means


def sorted_quantile(sorted_values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear method) of already sorted values, without a sort."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def psi_cuts(sorted_values: np.ndarray, bins: int = PSI_BINS) -> list[float]:
    """The distinct reference deciles (``bins - 1`` inner cut points at most)."""
    if len(sorted_values) == 0:
        return []
    cuts = [sorted_quantile(sorted_values, i / bins) for i in range(1, bins)]
    return sorted(set(cuts))


def bin_counts(sorted_values: np.ndarray, cuts: list[float]) -> np.ndarray:
    """Counts in ``(-inf, c0], (c0, c1], ..., (c_last, +inf)`` of sorted values."""
    inner = np.searchsorted(sorted_values, np.asarray(cuts, dtype=np.float64), side="right")
    return np.diff(np.concatenate(([0], inner, [len(sorted_values)])))


def psi_histogram(sorted_values: np.ndarray, missing: int) -> dict[str, Any]:
    cuts = psi_cuts(sorted_values)
    counts = bin_counts(sorted_values, cuts)
    edges = [float(sorted_values[0]), *cuts, float(sorted_values[-1])] if len(cuts) else []
    return {
        "cuts": cuts,
        "edges": edges,
        "counts": [int(c) for c in counts],
        "missing": missing,
    }


def sample_frame(profile: dict[str, Any]) -> pd.DataFrame:
    """The profile's sampled reference rows, with the original column names and dtypes."""
    check_profile(profile)
    sample = profile["sample"]
    data: dict[str, pd.Series] = {}
    for name in profile["columns"]:
        entry = profile["features"][name]
        data[name] = _restore(pd.Series(sample["columns"][name], dtype=object), entry)
    frame = pd.DataFrame(data, columns=profile["columns"])
    frame.index = pd.Index(sample.get("index", range(len(frame))))
    return frame


def check_profile(profile: Any, source: str = "reference profile") -> dict[str, Any]:
    """``profile`` if it is a profile nbmlops can read, else :class:`ProfileError`."""
    if not isinstance(profile, dict) or profile.get("format") != FORMAT:
        raise ProfileError(
            source,
            "not an nbmlops reference profile",
            "build one with nbmlops.capture.profile.build_profile(training_df)",
        )
    if profile.get("version", 0) > VERSION:
        raise ProfileError(
            source,
            f"profile format version {profile['version']} is newer than this nbmlops reads "
            f"({VERSION})",
            "upgrade nbmlops",
        )
    return profile


def save_profile(profile: dict[str, Any], path: str | Path) -> Path:
    """Write ``profile`` as JSON (NaN-free; ``allow_nan=False`` checks it)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(profile, allow_nan=False, separators=(",", ":")))
    return target


def load_profile(path: str | Path) -> dict[str, Any]:
    source = Path(path)
    try:
        profile = json.loads(source.read_text())
    except FileNotFoundError:
        raise ProfileError(str(source), "no such file") from None
    except (OSError, ValueError) as exc:
        raise ProfileError(str(source), f"cannot read the profile: {exc}") from None
    return check_profile(profile, str(source))


def _json_scalar(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, pd.Timestamp | np.datetime64):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, pd.Timedelta | np.timedelta64):
        return pd.Timedelta(value).isoformat()
    if isinstance(value, str):
        return value
    return str(value)


def _json_values(series: pd.Series) -> list[Any]:
    if feature_kind(series) == "numeric" and not isinstance(series.dtype, pd.CategoricalDtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if pd.api.types.is_integer_dtype(series.dtype):
            return [None if math.isnan(v) else int(v) for v in values]
        return [None if math.isnan(v) else float(v) for v in values]
    return [_json_scalar(v) for v in series.tolist()]


def _restore(values: pd.Series, entry: dict[str, Any]) -> pd.Series:
    dtype = entry["dtype"]
    if dtype == "category":
        order = entry.get("categories_order")
        return values.astype(pd.CategoricalDtype(order) if order is not None else "category")
    if dtype.startswith(("datetime64", "timedelta64")):
        convert = pd.to_datetime if dtype.startswith("datetime64") else pd.to_timedelta
        return convert(values).astype(dtype)
    if dtype == "object":
        return values
    if dtype in ("int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8"):
        return values.astype(dtype) if values.notna().all() else values.astype("float64")
    if dtype == "bool":
        return values.astype(bool) if values.notna().all() else values.astype("boolean")
    return values.astype(dtype)
