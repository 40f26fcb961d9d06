"""nbmlops run against plain papermill on the same notebook, alternating, medians and ratio.

Both are run as a user runs them, from the command line, in a project with a warm SQLite
MLflow store: ``nbmlops run NB`` (pipeline + full capture) and ``papermill NB out.ipynb``.
Two notebooks:

* the example as written: under papermill its nbmlops calls log to an interactive MLflow
  run, so both record the same metrics and model;
* the same notebook with every line that mentions nbmlops removed: papermill then records
  nothing, so nbmlops' capture (MLflow runs, hashes, saved outputs) is pure overhead.

Target: ratio <= 1.25 for both.

    python bench/bench_run.py [--notebook notebooks/breast_cancer.ipynb] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import nbformat
from _common import run, timed

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def strip_nbmlops(source: Path, target: Path) -> None:
    """The notebook without any line that mentions nbmlops: what a papermill user runs."""
    nb = nbformat.read(str(source), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = "\n".join(ln for ln in cell.source.splitlines() if "nbmlops" not in ln)
    nbformat.write(nb, str(target))


def compare(label: str, notebook: str, work: Path, env: dict[str, str], repeat: int) -> float:
    commands = {
        # --no-cache: every step executes, as under papermill (bench_cache.py times the cache)
        "nbmlops run": [
            str(BIN / "nbmlops"),
            "run",
            notebook,
            "-q",
            "--no-cache",
            "--experiment",
            "bench",
        ],
        "papermill": [
            str(BIN / "papermill"),
            notebook,
            str(work / "out.ipynb"),
            "--no-progress-bar",
            "--log-level",
            "WARNING",
        ],
    }
    print(f"\n{label}: {notebook}, {repeat} runs each, alternating, after a warm-up", flush=True)
    for cmd in commands.values():
        run(cmd, work, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(repeat):
        order = list(commands) if i % 2 == 0 else list(reversed(commands))
        for name in order:
            cmd = commands[name]
            times[name].append(timed(lambda cmd=cmd: run(cmd, work, env)))  # type: ignore[misc]
        rounds = ", ".join(f"{n} {times[n][-1]:.2f}s" for n in commands)
        print(f"  round {i + 1}: {rounds}", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"  {'command':<14}{'median':>9}{'min':>9}{'max':>9}")
    for name, values in times.items():
        print(f"  {name:<14}{med[name]:>8.2f}s{min(values):>8.2f}s{max(values):>8.2f}s")
    return med["nbmlops run"] / med["papermill"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notebook", default="notebooks/breast_cancer.ipynb")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nbmlops-bench-"))
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_EXPERIMENT_NAME": "bench-papermill",
    }
    plain = work / "notebooks" / "plain.ipynb"
    strip_nbmlops(work / args.notebook, plain)
    cases = {"example as written": args.notebook, "without nbmlops calls": str(plain)}
    ratios = {label: compare(label, nb, work, env, args.repeat) for label, nb in cases.items()}
    print()
    for label, ratio in ratios.items():
        verdict = "met" if ratio <= 1.25 else "NOT met"
        print(
            f"ratio nbmlops/papermill (medians), {label}: {ratio:.3f}  (target <= 1.25: {verdict})"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
