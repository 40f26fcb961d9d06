"""Drift on 1,000,000 rows x 20 numeric features: nbmlops' core against scipy.

nbmlops: ``check_drift(reference_df, current_df)`` (PSI, KS with p-values, summaries,
plot data for every feature). Baseline: ``scipy.stats.ks_2samp`` over the 20 columns plus
PSI on the reference deciles computed with numpy. Rounds alternate; medians are printed,
and the KS statistics of both must agree to 1e-9.

    .venv/bin/python bench/bench_drift.py [--rows N] [--features K] [--rounds R] [--evidently]

``--evidently`` also times Evidently 0.7 (``Report([DataDriftPreset(method=...)])``) on the
same data, once per method, in a throwaway virtual environment (Evidently 0.7 does not
import with the pandas 3.1 of nbmlops' venv): ``$NBMLOPS_BENCH_EVIDENTLY_VENV`` or
``/tmp/nbmlops-bench-evidently``, created with ``evidently==0.7.23 "pandas<3.1"`` if missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


EVIDENTLY_RUN = """
import json, sys, time
import numpy as np, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
folder, method = sys.argv[1], sys.argv[2]
names = json.loads(open(folder + "/names.json").read())
ref = pd.DataFrame(np.load(folder + "/reference.npy"), columns=names)
cur = pd.DataFrame(np.load(folder + "/current.npy"), columns=names)
t = time.perf_counter()
snapshot = Report([DataDriftPreset(method=method)]).run(cur, ref)
seconds = time.perf_counter() - t
values = {}
for metric in snapshot.dict()["metrics"]:
    config = metric.get("config", {})
    if config.get("type", "").endswith("ValueDrift"):
        values[config["column"]] = float(metric["value"])
print(json.dumps({"seconds": seconds, "values": values}))
"""


def evidently_python() -> Path:
    venv = Path(os.environ.get("NBMLOPS_BENCH_EVIDENTLY_VENV", "/tmp/nbmlops-bench-evidently"))
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with evidently==0.7.23 and pandas<3.1 ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "evidently==0.7.23", "pandas<3.1"],
            check=True,
        )
    return python


def time_evidently(
    reference: pd.DataFrame, current: pd.DataFrame, methods: list[str]
) -> dict[str, dict]:
    python = evidently_python()
    out = {}
    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-") as folder:
        np.save(f"{folder}/reference.npy", reference.to_numpy())
        np.save(f"{folder}/current.npy", current.to_numpy())
        Path(folder, "names.json").write_text(json.dumps(list(reference.columns)))
        for method in methods:
            done = subprocess.run(
                [str(python), "-c", EVIDENTLY_RUN, folder, method],
                check=True,
                capture_output=True,
                text=True,
            )
            out[method] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--evidently", action="store_true", help="Also time Evidently 0.7.")
    args = parser.parse_args()

    reference, current = make_data(args.rows, args.features)
    print(f"{args.rows:,} rows x {args.features} numeric features, {args.rounds} rounds each")
    ours: list[float] = []
    theirs: list[float] = []
    result = expected = None
    for i in range(args.rounds):
        c0, t0 = time.process_time(), time.perf_counter()
        result = check_drift(reference, current)
        t1, cpu = time.perf_counter(), time.process_time() - c0
        expected = baseline(reference, current)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
        print(
            f"  round {i + 1}: nbmlops {t1 - t0:6.2f} s (CPU {cpu:5.2f} s on {os.cpu_count()} "
            f"cores)   scipy+numpy {t2 - t1:6.2f} s"
        )
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
    if args.evidently:
        print("Evidently 0.7.23 (pandas 3.0), one run per method, same data:")
        for method, got in time_evidently(reference, current, ["ks", "psi"]).items():
            line = f"  DataDriftPreset(method={method!r}) {got['seconds']:6.2f} s"
            line += f"   ratio nbmlops/evidently {a / got['seconds']:.3f}"
            if method == "ks":
                ours_p = {f.name: f.stats["ks_pvalue"] for f in result.features}
                diff = max(abs(ours_p[n] - v) for n, v in got["values"].items())
                line += f"   KS p-value max abs difference {diff:.3g}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
