"""Drift: how often the rule is right, side by side with Evidently, and how fast it is.

1. **Rates** (the issue's table): seeded samples drawn from the training population
   (reference 15,000 rows; current 3,000 and 100,000 rows; 8 and 50 standard normal
   features), as drawn (false alarms), with feature 0's mean moved 0.3 sd, and with the
   variance of features 1 and 2 multiplied by 1.5 (detection). Per configuration: the share
   of samples where ``check_drift`` finds dataset drift, and the same samples through
   Evidently 0.7's ``Report([DataDriftPreset()])`` (its defaults: per column Wasserstein
   distance >= 0.1 above 1,000 rows), read two ways: its dataset rule (at least half the
   columns drifted) and "any column drifted". Evidently takes 1 to 15 s a report here, so
   it runs on the first ``--evidently-samples`` samples; nbmlops on all ``--samples``. The
   two sides alternate per configuration; median seconds per sample and their ratio are
   printed.
2. **Timing**: ``check_drift`` on 1,000,000 rows x 20 numeric features against
   ``scipy.stats.ks_2samp`` plus PSI by numpy, rounds alternating; the KS statistics and
   PSI of both must agree to 1e-9. Target: under 2 s.

    .venv/bin/python bench/bench_drift.py [--samples 200] [--evidently-samples 10]
        [--no-evidently] [--skip-rates] [--skip-timing] [--rows N] [--rounds R]

Evidently 0.7 does not import with nbmlops' pandas 3.1: it runs in its own virtual
environment (``$NBMLOPS_BENCH_EVIDENTLY_VENV`` or ``/tmp/nbmlops-bench-evidently``), in a
subprocess that draws the same samples from the same seeds (checked by a digest) and
answers in JSON lines.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from nbmlops.monitor.drift import check_drift
from nbmlops.monitor.reference import Reference

EVIDENTLY_VENV = Path(
    os.environ.get("NBMLOPS_BENCH_EVIDENTLY_VENV", "/tmp/nbmlops-bench-evidently")
)
REFERENCE_ROWS = 15_000
CONFIGS = [(3_000, 8), (3_000, 50), (100_000, 8), (100_000, 50)]  # (current rows, features)
SCENARIOS = ("unshifted", "mean 0.3 sd", "variance x1.5")


# The samples, as both sides draw them (their source runs in Evidently's environment too).
def draw(seed: int, rows: int, features: int, scenario: str) -> np.ndarray:
    x = np.random.default_rng([seed, rows, features]).normal(size=(rows, features))
    if scenario == "mean 0.3 sd":
        x[:, 0] += 0.3
    elif scenario == "variance x1.5":
        x[:, 1:3] *= np.sqrt(1.5)
    return x


def reference_data(features: int) -> np.ndarray:
    return np.random.default_rng([2026, features]).normal(size=(REFERENCE_ROWS, features))


def digest(x: np.ndarray) -> float:
    return float(np.round(np.abs(x).sum(), 6))


DRAW = "\n\n".join(inspect.getsource(f) for f in (draw, reference_data, digest))
EVIDENTLY_WORKER = (
    f"import numpy as np\nREFERENCE_ROWS = {REFERENCE_ROWS}\n"
    + DRAW
    + """
import json, sys, time
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset

for line in sys.stdin:
    job = json.loads(line)
    names = [f"f{i}" for i in range(job["features"])]
    ref = pd.DataFrame(reference_data(job["features"]), columns=names)
    x = draw(job["seed"], job["rows"], job["features"], job["scenario"])
    t = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(pd.DataFrame(x, columns=names), ref)
    seconds = time.perf_counter() - t
    count = next(
        m["value"] for m in snapshot.dict()["metrics"]
        if m.get("metric_id", "").endswith("DriftedColumnsCount")
        or "DriftedColumnsCount" in str(m.get("config", {}).get("type", ""))
    )
    print(json.dumps({
        "dataset": count["share"] >= 0.5, "any": count["count"] > 0,
        "seconds": seconds, "digest": digest(x),
    }), flush=True)
"""
)


class Evidently:
    """Evidently in its own environment: one process, a job per line."""

    def __init__(self) -> None:
        python = EVIDENTLY_VENV / "bin" / "python"
        if not python.exists():
            sys.exit(
                f"no Evidently environment at {EVIDENTLY_VENV}: create it with\n"
                f"  python3 -m venv {EVIDENTLY_VENV}\n"
                f'  {EVIDENTLY_VENV}/bin/pip install "evidently==0.7.*" "pandas==3.0.*"\n'
                "(or set NBMLOPS_BENCH_EVIDENTLY_VENV), or pass --no-evidently"
            )
        self.proc = subprocess.Popen(
            [str(python), "-c", EVIDENTLY_WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, seed: int, rows: int, features: int, scenario: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        job = {"seed": seed, "rows": rows, "features": features, "scenario": scenario}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        answer: dict = json.loads(self.proc.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def rates(samples: int, evidently_samples: int, use_evidently: bool) -> None:
    evidently = Evidently() if use_evidently else None
    header = f"{'current rows':>12} {'features':>8} {'case':<14} {'nbmlops':>8}"
    if evidently:
        header += f" {'Evidently dataset':>18} {'Evidently any col':>18}"
    k = evidently_samples if evidently else 0
    print(f"drift rates: nbmlops on {samples} samples, Evidently on the first {k} of them")
    print(header)
    times: dict[tuple[int, int], dict[str, list[float]]] = {}
    try:
        for rows, features in CONFIGS:
            names = [f"f{i}" for i in range(features)]
            ref = Reference.from_frame(pd.DataFrame(reference_data(features), columns=names))
            spent: dict[str, list[float]] = {"nbmlops": [], "evidently": []}
            for scenario in SCENARIOS:
                ours = theirs_dataset = theirs_any = 0
                for seed in range(samples):
                    x = draw(seed, rows, features, scenario)
                    t = time.perf_counter()
                    ours += check_drift(ref, pd.DataFrame(x, columns=names)).any_drift
                    spent["nbmlops"].append(time.perf_counter() - t)
                    if evidently and seed < k:
                        got = evidently.run(seed, rows, features, scenario)
                        assert got["digest"] == digest(x), "Evidently drew another sample"
                        theirs_dataset += got["dataset"]
                        theirs_any += got["any"]
                        spent["evidently"].append(got["seconds"])
                line = f"{rows:>12,} {features:>8} {scenario:<14} {ours / samples:>8.1%}"
                if evidently:
                    line += f" {theirs_dataset / k:>18.1%} {theirs_any / k:>18.1%}"
                print(line, flush=True)
            times[rows, features] = spent
    finally:
        if evidently:
            evidently.close()
    print("median seconds per sample (the reference is built once per configuration):")
    for (rows, features), spent in times.items():
        a = statistics.median(spent["nbmlops"])
        line = f"  {rows:>7,} rows x {features:>2} features: nbmlops {a:.4f} s"
        if spent["evidently"]:
            b = statistics.median(spent["evidently"])
            line += f"   Evidently {b:.3f} s   ratio nbmlops/Evidently {a / b:.4f}"
        print(line)


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


def timing(rows: int, features: int, rounds: int) -> None:
    reference, current = make_data(rows, features)
    print(f"{rows:,} rows x {features} numeric features, {rounds} rounds each")
    ours: list[float] = []
    theirs: list[float] = []
    result = expected = None
    for i in range(rounds):
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
    print(f"verdicts: {len(result.drifted)} drift, {len(result.small)} small, of {features}")
    assert ks_diff <= 1e-9, f"KS statistics differ from scipy by {ks_diff}"
    assert psi_diff <= 1e-9, f"PSI differs from numpy by {psi_diff}"
    if a > 2.0:
        print(f"WARNING: above the 2 s target ({a:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--evidently-samples", type=int, default=10)
    parser.add_argument("--no-evidently", action="store_true", help="nbmlops' rates only.")
    parser.add_argument("--skip-rates", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--rows", type=int, default=1_000_000, help="timing: rows")
    parser.add_argument("--features", type=int, default=20, help="timing: features")
    parser.add_argument("--rounds", type=int, default=5, help="timing: rounds")
    args = parser.parse_args()
    if not args.skip_rates:
        rates(args.samples, min(args.evidently_samples, args.samples), not args.no_evidently)
    if not args.skip_timing:
        timing(args.rows, args.features, args.rounds)


if __name__ == "__main__":
    main()
