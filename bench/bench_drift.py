"""Drift on 1,000,000 rows x 20 numeric features: nbmlops' core against scipy.

nbmlops: ``check_drift(reference_df, current_df)`` (PSI, KS with p-values, summaries,
plot data for every feature). Baseline: ``scipy.stats.ks_2samp`` over the 20 columns plus
PSI on the reference deciles computed with numpy. Rounds alternate; medians are printed,
and the KS statistics of both must agree to 1e-9.

    .venv/bin/python bench/bench_drift.py [--rows N] [--features K] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from scipy import stats

from nbmlops.monitor.drift import check_drift


def make_data(rows: int, features: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(features)]
    reference = pd.DataFrame({n: rng.normal(0, 1, rows) for n in names})
    # a quarter of the features drift a little (mean +0.05, or a wider spread)
    current = pd.DataFrame(
        {
            n: rng.normal(0.05 if i % 4 == 0 else 0, 1.1 if i % 4 == 1 else 1, rows)
            for i, n in enumerate(names)
        }
    )
    return reference, current


def baseline(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """scipy's KS statistic and PSI by numpy, per column."""
    out = {}
    for name in reference.columns:
        ref, cur = reference[name].to_numpy(), current[name].to_numpy()
        ks = stats.ks_2samp(ref, cur)
        cuts = np.unique(np.quantile(ref, np.arange(1, 10) / 10))
        p = np.bincount(np.searchsorted(cuts, ref, side="left"), minlength=len(cuts) + 1)
        q = np.bincount(np.searchsorted(cuts, cur, side="left"), minlength=len(cuts) + 1)
        p = np.maximum(p / p.sum(), 1e-4)
        q = np.maximum(q / q.sum(), 1e-4)
        out[name] = (float(ks.statistic), float(np.sum((q - p) * np.log(q / p))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    reference, current = make_data(args.rows, args.features)
    print(f"{args.rows:,} rows x {args.features} numeric features, {args.rounds} rounds each")
    ours: list[float] = []
    theirs: list[float] = []
    result = expected = None
    for i in range(args.rounds):
        t0 = time.perf_counter()
        result = check_drift(reference, current)
        t1 = time.perf_counter()
        expected = baseline(reference, current)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
        print(f"  round {i + 1}: nbmlops {t1 - t0:6.2f} s   scipy+numpy {t2 - t1:6.2f} s")
    assert result is not None and expected is not None
    ks_diff = max(abs(f.stats["ks_statistic"] - expected[f.name][0]) for f in result.features)
    psi_diff = max(abs(f.stats["psi"] - expected[f.name][1]) for f in result.features)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"median: nbmlops check_drift {a:.2f} s   scipy ks_2samp + numpy PSI {b:.2f} s")
    print(f"ratio nbmlops/scipy {a / b:.3f}  (scipy is {b / a:.1f}x the time)")
    print(f"KS statistic max abs difference {ks_diff:.3g}; PSI max abs difference {psi_diff:.3g}")
    print(f"drifted: {len(result.drifted)} of {len(result.features)} features")
    assert ks_diff <= 1e-9, f"KS statistics differ from scipy by {ks_diff}"
    assert psi_diff <= 1e-9, f"PSI differs from numpy by {psi_diff}"
    if a > 3.0:
        print(f"WARNING: above the 3 s target ({a:.2f} s)")


if __name__ == "__main__":
    main()
