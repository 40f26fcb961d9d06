"""What drift is measured against: a reference profile, or a whole reference DataFrame.

Both become a :class:`Reference`: per feature its kind, the sorted values the KS test
uses (the profile's row sample, or every value of a DataFrame), the quantile function's
slice means the Wasserstein distance uses and the PSI bins and counts (both over the whole
training data; a profile written before it stored slice means has them from its sample),
and the category counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from nbmlops.capture import profile as prof

T = TypeVar("T")


@dataclass
class NumericReference:
    sorted_values: np.ndarray  # non-missing, sorted: the KS sample
    quantile_means: np.ndarray  # prof.quantile_means over the whole reference
    cuts: list[float]  # PSI bin cut points
    counts: np.ndarray  # PSI bin counts over the whole reference
    missing: int
    summary: dict[str, Any]


@dataclass
class CategoricalReference:
    labels: list[str]
    counts: np.ndarray
    other: int  # rows in labels beyond the profile's top categories
    missing: int
    summary: dict[str, Any]


@dataclass
class Reference:
    rows: int
    columns: list[str]
    kinds: dict[str, str]
    numeric: dict[str, NumericReference] = field(default_factory=dict)
    categorical: dict[str, CategoricalReference] = field(default_factory=dict)
    ks_sample: str = "all rows"  # or "a sample of N rows"

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> Reference:
        prof.check_profile(profile)
        sample = prof.sample_frame(profile)
        ref = cls(
            rows=int(profile["rows"]),
            columns=list(profile["columns"]),
            kinds={n: f["kind"] for n, f in profile["features"].items()},
            ks_sample=f"a sample of {len(sample)} rows"
            if len(sample) < int(profile["rows"])
            else "all rows",
        )
        for name in ref.columns:
            entry = profile["features"][name]
            if entry["kind"] == "numeric":
                hist = entry["histogram"]
                values = np.sort(sample[name].dropna().to_numpy(dtype=np.float64))
                means = entry.get("quantile_means")
                ref.numeric[name] = NumericReference(
                    sorted_values=values,
                    quantile_means=np.asarray(means, dtype=np.float64)
                    if means
                    else prof.quantile_means(values),
                    cuts=[float(c) for c in hist["cuts"]],
                    counts=np.asarray(hist["counts"], dtype=np.int64),
                    missing=int(hist["missing"]),
                    summary=entry["summary"],
                )
            elif entry["kind"] == "categorical":
                ref.categorical[name] = _categorical(entry)
        return ref

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Reference:
        """Every row of ``df`` is the reference (drift between two files)."""
        columns = [str(c) for c in df.columns]
        frame = df.set_axis(columns, axis=1)
        ref = cls(
            rows=len(frame),
            columns=columns,
            kinds={n: prof.feature_kind(frame[n]) for n in columns},
        )
        numeric = [n for n in columns if ref.kinds[n] == "numeric"]
        for name, built in zip(
            numeric, parallel_map(lambda n: _numeric_from_series(frame[n]), numeric), strict=True
        ):
            ref.numeric[name] = built
        for name in columns:
            if ref.kinds[name] == "categorical":
                ref.categorical[name] = _categorical(prof.profile_column(frame[name]))
        return ref


def _categorical(entry: dict[str, Any]) -> CategoricalReference:
    """A categorical feature's reference from its profile entry."""
    cats = entry["categories"]
    return CategoricalReference(
        labels=list(cats["labels"]),
        counts=np.asarray(cats["counts"], dtype=np.int64),
        other=int(cats["other"]),
        missing=int(cats["missing"]),
        summary=entry["summary"],
    )


def _numeric_from_series(col: pd.Series) -> NumericReference:
    values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    nan = np.isnan(values)
    missing = int(nan.sum())
    if missing:
        values = values[~nan]
    return numeric_reference(np.sort(values), missing)


def parallel_map(fn: Callable[[str], T], names: list[str]) -> list[T]:
    """``[fn(n) for n in names]`` on a thread per core: numpy's sorts release the GIL."""
    workers = min(len(names), os.cpu_count() or 1)
    if workers <= 1:
        return [fn(n) for n in names]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nbmlops-drift") as pool:
        return list(pool.map(fn, names))


def numeric_reference(sorted_values: np.ndarray, missing: int) -> NumericReference:
    cuts = prof.psi_cuts(sorted_values)
    return NumericReference(
        sorted_values=sorted_values,
        quantile_means=prof.quantile_means(sorted_values),
        cuts=cuts,
        counts=prof.bin_counts(sorted_values, cuts),
        missing=missing,
        summary=prof.numeric_summary(sorted_values, missing),
    )
