"""The step cache and sweeps against plain papermill, alternating, medians and ratios.

Three comparisons on the example notebook (both sides from the command line, in one
project with a warm SQLite MLflow store):

1. re-run with nothing changed: ``nbmlops run`` (every step a cache hit) against
   ``papermill``; target: at least 5x faster;
2. re-run with only the last step's code changed: only that step executes (checked on
   every round) and it is faster than papermill;
3. an 8-point sweep over a parameter the data step does not read (``nbmlops sweep``,
   2 jobs, a cold cache each round) against 8 sequential papermill runs; target: at
   least 2x faster on 2 cores.

    python bench/bench_cache.py [--repeat 5] [--sweep-repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import nbformat
from _common import run, timed

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOTEBOOK = "notebooks/breast_cancer.ipynb"
SWEPT = "n_estimators"
VALUES = [20, 40, 60, 80, 100, 120, 140, 160]


def compare(
    label: str,
    sides: dict[str, Callable[[], object]],
    repeat: int,
    target: str,
    before: dict[str, Callable[[], object]] | None = None,
) -> dict[str, float]:
    """Time the sides alternately; ``before[name]`` runs before a side, outside its timing."""
    print(f"\n{label}: {repeat} rounds, alternating", flush=True)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(repeat):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for name in order:
            if before and name in before:
                before[name]()
            times[name].append(timed(sides[name]))
        print(
            f"  round {i + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in sides),
            flush=True,
        )
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, values in times.items():
        print(
            f"  {name:<28} median {med[name]:7.2f}s  min {min(values):7.2f}s  max {max(values):7.2f}s"
        )
    nb, pm = list(med.values())
    print(f"  speed-up papermill/nbmlops (medians): {pm / nb:.2f}x  (target: {target})", flush=True)
    return med


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sweep-repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nbmlops-bench-cache-"))
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_EXPERIMENT_NAME": "bench-papermill",
    }
    nbmlops = [str(BIN / "nbmlops"), "run", NOTEBOOK, "-q", "--experiment", "bench"]
    papermill = [
        str(BIN / "papermill"),
        NOTEBOOK,
        str(work / "out.ipynb"),
        "--no-progress-bar",
        "--log-level",
        "WARNING",
    ]
    run(nbmlops, work, env)  # fills the cache, warms the store
    run(papermill, work, env)

    def unchanged() -> None:
        out = run(nbmlops, work, env)
        assert out.count("  cached  ") == 4, out

    results = {}
    results["unchanged"] = compare(
        "1. re-run, nothing changed",
        {"nbmlops run (all cached)": unchanged, "papermill": lambda: run(papermill, work, env)},
        args.repeat,
        ">= 5x",
    )

    path = work / NOTEBOOK
    original = nbformat.read(str(path), as_version=4)
    last = max(
        i for i, c in enumerate(original.cells) if "step:evaluate" in c.metadata.get("tags", [])
    )
    edits = iter(range(10_000))

    def edit_last_step() -> None:
        nb = nbformat.read(str(path), as_version=4)
        nb.cells[last].source = original.cells[last].source + f"\n_bench_edit = {next(edits)}"
        nbformat.write(nb, str(path))

    def last_changed() -> None:
        out = run(nbmlops, work, env)
        assert out.count("  cached  ") == 3 and "evaluate  finished" in out, out

    results["last"] = compare(
        "2. re-run, only the last step's code changed (only evaluate executes, checked)",
        {
            "nbmlops run (last step new)": last_changed,
            "papermill": lambda: run(papermill, work, env),
        },
        args.repeat,
        "> 1x",
        before={"nbmlops run (last step new)": edit_last_step},
    )
    nbformat.write(original, str(path))

    grid = ",".join(map(str, VALUES))
    rounds = iter(range(10_000))

    def sweep() -> None:
        cache = work / f"sweep-cache-{next(rounds)}"  # cold: nothing from earlier rounds
        out = run(
            [
                str(BIN / "nbmlops"),
                "sweep",
                NOTEBOOK,
                "-g",
                f"{SWEPT}={grid}",
                "--jobs",
                "2",
                "--metric",
                "accuracy",
                "--cache-dir",
                str(cache),
                "--experiment",
                "bench-sweep",
            ],
            work,
            env,
        )
        assert out.strip().splitlines()[-1].startswith("best run: "), out

    def sequential_papermill() -> None:
        for v in VALUES:
            run([*papermill, "-p", SWEPT, str(v)], work, env)

    results["sweep"] = compare(
        f"3. {len(VALUES)}-point sweep over {SWEPT} (data step shared) vs {len(VALUES)} sequential papermill runs",
        {"nbmlops sweep --jobs 2": sweep, "papermill x8 sequential": sequential_papermill},
        args.sweep_repeat,
        ">= 2x",
    )
    print("\nsummary (medians):")
    for name, med in results.items():
        (a, x), (b, y) = med.items()
        print(f"  {name:<10} {a}: {x:.2f}s   {b}: {y:.2f}s   ratio {y / x:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
