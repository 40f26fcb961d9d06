"""``nbmlops status`` says which steps a run would execute and why, running nothing; a run
prints the same reason for each step it executes and records it on the step run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import code, pipeline_runs, step_runs, write_notebook

CELLS = [
    code("import nbmlops\nfrom features import build"),
    code("C = 1.0\nn = 3\nseed = 7", "parameters"),
    code("data = list(range(n))", "step:load"),
    code("X = [build(v) for v in data]", "step:features"),
    code("model = sum(X) * C\nnbmlops.log_metric('model', model)", "step:train"),
    code("text = open('data/x.csv').read()", "step:report"),
    code("y = eval('model + 1')", "step:odd"),
]


def _project(root: Path) -> None:
    (root / "features.py").write_text("def build(v):\n    return v * 2\n")
    (root / "data").mkdir()
    (root / "data" / "x.csv").write_text("x\n1\n")
    write_notebook(root / "pipe.ipynb", CELLS)


def _status(nbmlops: Any, *args: str) -> dict[str, list[str]]:
    """step -> its reasons ([] when it would come from the cache)."""
    result = nbmlops("status", "pipe.ipynb", "--json", *args, check=True)
    return {s["step"]: s["reasons"] for s in json.loads(result.stdout)["steps"]}


def _records(project: Path, client: Any, experiment: str) -> tuple[int, int]:
    """How many MLflow runs the experiment has, and how many run folders exist."""
    exp = client.get_experiment_by_name(experiment)
    runs = len(client.search_runs([exp.experiment_id])) if exp else 0
    folders = project / ".nbmlops" / "runs"
    return runs, len(list(folders.iterdir())) if folders.exists() else 0


OPAQUE = "its result depends on what the code does not show (eval() in cell 7, line 1)"


def test_status_names_what_changed_and_runs_nothing(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    _project(project)
    never = _status(nbmlops)
    assert never["load"] == ["never ran"] and never["odd"] == ["never ran", OPAQUE]
    assert _records(project, client, experiment) == (0, 0)  # no run, no experiment, no folder
    nbmlops("run", "pipe.ipynb", "--experiment", experiment, "-q", check=True)
    before = _records(project, client, experiment)

    assert _status(nbmlops) == {s: [] for s in ("load", "features", "train", "report", "odd")}

    changed = _status(nbmlops, "-p", "C=2.0")
    assert changed["load"] == changed["features"] == changed["report"] == []
    assert changed["train"] == ["parameter C"]
    # An opaque step is keyed on every parameter and every earlier output.
    assert changed["odd"] == [
        "input model (from step train, which runs)",
        "parameter C",
        OPAQUE,
    ]

    (project / "features.py").write_text("def build(v):\n    return v * 3\n")
    (project / "data" / "x.csv").write_text("x\n2\n")
    moved = _status(nbmlops)
    assert moved["load"] == []
    assert moved["features"] == ["module features.py"]
    # X, a list, might hold the module's functions: the module counts for train too.
    assert moved["train"] == ["input X (from step features, which runs)", "module features.py"]
    assert moved["report"] == [f"file {Path('data') / 'x.csv'}"]

    cells = [*CELLS]
    cells[0] = code("import nbmlops\nfrom features import build\nLIMIT = 1")
    cells[2] = code("data = list(range(n + 1))", "step:load")
    write_notebook(project / "pipe.ipynb", cells)
    edited = _status(nbmlops, "--seed", "8")
    assert edited["load"] == ["code changed", "seed", "setup cells"]
    assert edited["report"] == [f"file {Path('data') / 'x.csv'}", "seed", "setup cells"]
    assert _records(project, client, experiment) == before


def test_a_run_prints_and_records_why_each_step_executes(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    _project(project)
    nbmlops("run", "pipe.ipynb", "--experiment", experiment, "-q", check=True)
    result = nbmlops("run", "pipe.ipynb", "--experiment", experiment, "-p", "C=2.0", check=True)
    assert "step 3/5 train: started (parameter C)" in result.stdout
    assert "step 1/5 load: started" not in result.stdout  # a hit is not executed
    parent = pipeline_runs(client, experiment)[0]
    tags = {name: run.data.tags for name, run in step_runs(client, parent).items()}
    assert tags["train"]["nbmlops.cache_reason"] == "parameter C"
    assert tags["odd"]["nbmlops.cache_reason"] == (
        f"input model (from step train, which runs); parameter C; {OPAQUE}"
    )
    assert "nbmlops.cache_reason" not in tags["load"]  # a hit has no reason
    forced = nbmlops(
        "run", "pipe.ipynb", "--experiment", experiment, "--refresh", "load", "--events", "ev"
    )
    assert forced.returncode == 0, forced.stderr
    refreshed = step_runs(client, pipeline_runs(client, experiment)[0])
    assert refreshed["load"].data.tags["nbmlops.cache_reason"] == "--refresh"
    events = [json.loads(line) for line in (project / "ev").read_text().splitlines()]
    started = {e["step"]: e["reason"] for e in events if e["event"] == "step_started"}
    assert started == {"load": "--refresh"}  # the other steps came from the cache
