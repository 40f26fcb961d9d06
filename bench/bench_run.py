"""nbmlops run against plain papermill, as users run them: alternating, medians, ratios.

Both sides run from the command line in a project with a warm SQLite MLflow store:
``nbmlops run NB`` (pipeline, full capture, step cache) and ``papermill NB out.ipynb``.

1. **Overhead by data size.** A notebook as people write it (``pd.read_parquet``, a
   scaling step, a summary) on 10k, 100k and 1M rows of 20 float columns, with fresh data
   before every run (so nothing is a cache hit); papermill runs the same notebook without
   its nbmlops lines. Also the step cache's growth: bytes added to ``.nbmlops/objects``
   per run, against the input's size. Target: ratio <= 1.10.
2. **The examples**, every step executed (``--no-cache``): the notebook as written (under
   papermill its nbmlops calls log to an interactive MLflow run) and without its nbmlops
   lines. Target: ratio <= 1.25.
3. **A fully cached re-run** of each example (nothing changed: every step a hit) against
   papermill. Target: at least 5x faster.

    python bench/bench_run.py [--rows 10000,100000,1000000] [--repeat 5] [--skip-sizes]
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
NBMLOPS = str(BIN / "nbmlops")
PAPERMILL = [str(BIN / "papermill")]
COLUMNS = 20

SCALING = [
    ("import numpy as np\nimport pandas as pd\nimport nbmlops", None),
    ("data = 'data/table.parquet'", "parameters"),
    ("df = pd.read_parquet(data)\nprint(df.shape)", "step:load"),
    ("scaled = (df - df.mean()) / df.std()", "step:scale"),
    (
        "summary = scaled.describe()\n"
        "nbmlops.log_metric('max_z', float(scaled.max().max()))\n"
        "summary.iloc[:, :3]",
        "step:summarize",
    ),
]


def strip_nbmlops(source: Path, target: Path) -> None:
    """The notebook without any line that mentions nbmlops: what a papermill user runs."""
    nb = nbformat.read(str(source), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = "\n".join(ln for ln in cell.source.splitlines() if "nbmlops" not in ln)
    nbformat.write(nb, str(target))


def write_scaling_notebook(path: Path) -> None:
    cells = []
    for source, tag in SCALING:
        cell = nbformat.v4.new_code_cell(source)
        if tag:
            cell.metadata["tags"] = [tag]
        cells.append(cell)
    nb = nbformat.v4.new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(nb, str(path))


def fresh_data(path: Path, rows: int, round_: int) -> int:
    """New values (a new seed each round) in ``path``; its size in bytes."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1000 + round_)
    frame = pd.DataFrame(rng.normal(size=(rows, COLUMNS)), columns=[f"x{i}" for i in range(20)])
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    return int(frame.memory_usage(index=False).sum())


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def alternate(
    label: str,
    sides: dict[str, Callable[[], object]],
    repeat: int,
    before: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Time the sides alternately (``before(round)`` runs untimed before each side)."""
    print(f"\n{label}: {repeat} rounds, alternating", flush=True)
    times: dict[str, list[float]] = {name: [] for name in sides}
    step = 0
    for i in range(repeat):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for name in order:
            if before:
                before(step)
                step += 1
            times[name].append(timed(sides[name]))
        print("  round " + f"{i + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in sides))
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, values in times.items():
        print(
            f"  {name:<26} median {med[name]:7.2f}s  min {min(values):7.2f}s  max {max(values):7.2f}s"
        )
    return med


def sizes(work: Path, env: dict[str, str], rows: list[int], repeat: int) -> list[str]:
    project = work / "scaling"
    project.mkdir()
    write_scaling_notebook(project / "scale.ipynb")
    strip_nbmlops(project / "scale.ipynb", project / "plain.ipynb")
    nbmlops = [NBMLOPS, "run", "scale.ipynb", "-q", "--experiment", "bench-scale"]
    papermill = [
        *PAPERMILL,
        "plain.ipynb",
        "out.ipynb",
        "--no-progress-bar",
        "--log-level",
        "ERROR",
    ]
    data = project / "data" / "table.parquet"
    lines = []
    for n in rows:
        input_bytes = fresh_data(data, n, 0)
        run(nbmlops, project, env)  # warm-up: kernel, store, imports
        run(papermill, project, env)
        growth: list[int] = []

        def timed_nbmlops(growth: list[int] = growth) -> None:
            before = folder_size(project / ".nbmlops" / "objects")
            run(nbmlops, project, env)
            growth.append(folder_size(project / ".nbmlops" / "objects") - before)

        def new_data(round_: int, n: int = n) -> None:
            fresh_data(data, n, round_ + 1)

        med = alternate(
            f"1. {n:,} rows x {COLUMNS} floats, fresh data every run",
            {"nbmlops run": timed_nbmlops, "papermill": lambda: run(papermill, project, env)},
            repeat,
            before=new_data,
        )
        ratio = med["nbmlops run"] / med["papermill"]
        per_run = statistics.median(growth)
        verdict = "met" if ratio <= 1.10 else "NOT met"
        lines.append(
            f"{n:>9,} rows: nbmlops {med['nbmlops run']:.2f}s, papermill {med['papermill']:.2f}s, "
            f"ratio {ratio:.3f} (target <= 1.10: {verdict}); step cache +{per_run / 1e6:.1f} MB "
            f"per run ({per_run / input_bytes:.2f}x the input's {input_bytes / 1e6:.1f} MB)"
        )
        print("  " + lines[-1], flush=True)
    return lines


def examples(work: Path, env: dict[str, str], repeat: int) -> list[str]:
    lines = []
    for name in ("breast_cancer", "diabetes"):
        notebook = f"notebooks/{name}.ipynb"
        plain = work / "notebooks" / f"{name}_plain.ipynb"
        papermill = [*PAPERMILL, notebook, "out.ipynb", "--no-progress-bar", "--log-level", "ERROR"]
        cases = [("as written", notebook, papermill)]
        if name == "breast_cancer":  # diabetes reads its data through nbmlops.read_csv
            strip_nbmlops(work / notebook, plain)
            cases.append(
                ("without nbmlops calls", str(plain), [*PAPERMILL, str(plain), *papermill[2:]])
            )
        for label, nb_path, pm in cases:
            nbmlops = [NBMLOPS, "run", nb_path, "-q", "--no-cache", "--experiment", f"bench-{name}"]
            run(nbmlops, work, env)
            run(pm, work, env)
            med = alternate(
                f"2. {name}, {label}, every step executed (--no-cache)",
                {
                    "nbmlops run --no-cache": lambda c=nbmlops: run(c, work, env),  # type: ignore[misc]
                    "papermill": lambda c=pm: run(c, work, env),  # type: ignore[misc]
                },
                repeat,
            )
            ratio = med["nbmlops run --no-cache"] / med["papermill"]
            verdict = "met" if ratio <= 1.25 else "NOT met"
            lines.append(f"{name}, {label}: ratio {ratio:.3f} (target <= 1.25: {verdict})")
            print("  " + lines[-1], flush=True)

        cached = [NBMLOPS, "run", notebook, "-q", "--experiment", f"bench-{name}-cached"]
        run(cached, work, env)  # fills the cache

        def all_hits(c: list[str] = cached) -> None:
            out = run(c, work, env)
            steps = [ln for ln in out.splitlines() if ln.startswith("  ") and " run " in ln]
            assert steps and all("  cached  " in ln for ln in steps), out

        med = alternate(
            f"3. {name}, re-run with nothing changed (every step a cache hit)",
            {
                "nbmlops run (all cached)": all_hits,
                "papermill": lambda c=papermill: run(c, work, env),  # type: ignore[misc]
            },
            repeat,
        )
        speedup = med["papermill"] / med["nbmlops run (all cached)"]
        verdict = "met" if speedup >= 5 else "NOT met"
        lines.append(
            f"{name}, fully cached re-run: {speedup:.2f}x faster (target >= 5x: {verdict})"
        )
        print("  " + lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-sizes", action="store_true")
    parser.add_argument("--skip-examples", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nbmlops-bench-"))
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_EXPERIMENT_NAME": "bench-papermill",
    }
    summary = []
    if not args.skip_sizes:
        summary += sizes(work, env, [int(r) for r in args.rows.split(",")], args.repeat)
    if not args.skip_examples:
        summary += examples(work, env, args.repeat)
    print("\nsummary (medians):")
    for line in summary:
        print("  " + line)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
