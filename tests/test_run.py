"""`nbmlops run` end to end: a real kernel, a real MLflow store, asserting what was recorded."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from conftest import code, markdown, pipeline_runs, step_runs, write_notebook

from nbmlops.cache.store import StepCache
from nbmlops.capture.hashing import hash_data, hash_file
from nbmlops.notebook.pipeline import load_pipeline

PIPELINE = [
    markdown("# A small pipeline"),
    code("import numpy as np\nimport pandas as pd\nimport nbmlops"),
    code("alpha = 1.0\nrows = 20000\nseed = 3", "parameters"),
    code(
        "rng = np.random.default_rng(seed)\n"
        "pd.DataFrame({'x': rng.normal(size=rows), 'y': rng.integers(0, 5, rows)}).to_csv('data.csv', index=False)\n"
        "df = nbmlops.read_csv('data.csv', name='raw')\n"
        "print('rows', len(df))",
        "step:load",
    ),
    code("df['z'] = df['x'] * alpha\nsummary = float(df['z'].mean())", "step:features"),
    code(
        "# score it\nnbmlops.log_metric('score', summary)\nnbmlops.log_metrics({'rows': len(df)})\nprint('score', summary)",
        "step:evaluate",
    ),
]


@pytest.fixture
def git_project(project: Path) -> Path:
    write_notebook(project / "pipe.ipynb", PIPELINE)
    for args in (
        ["init", "-q"],
        ["add", "pipe.ipynb"],
        ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "nb"],
    ):
        subprocess.run(["git", *args], cwd=project, check=True)
    return project


def test_run_records_parent_steps_params_hashes_metrics_and_notebooks(
    git_project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    notebook = git_project / "pipe.ipynb"
    before = notebook.read_bytes()
    result = nbmlops(
        "run",
        "pipe.ipynb",
        "-p",
        "alpha=2",
        "--experiment",
        experiment,
        "--output-dir",
        "out",
        check=True,
    )
    assert "score" in result.stdout and "finished" in result.stdout
    assert notebook.read_bytes() == before, "the source notebook must never be modified"

    [parent] = pipeline_runs(client, experiment)
    tags, params, metrics = parent.data.tags, parent.data.params, parent.data.metrics
    assert parent.info.status == "FINISHED" and parent.info.run_name == "pipe"
    assert params == {"alpha": "2.0", "rows": "20000", "seed": "3"}
    assert tags["nbmlops.kind"] == "pipeline"
    assert tags["nbmlops.notebook"] == "pipe.ipynb"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=git_project, capture_output=True, text=True
    ).stdout.strip()
    assert tags["nbmlops.git_commit"] == head
    assert tags["nbmlops.git_dirty"] == "false"
    assert tags["nbmlops.seed"] == "3" and tags["nbmlops.seed_source"] == "parameter"
    assert len(tags["nbmlops.env_hash"]) == 32
    requirements = client.download_artifacts(
        parent.info.run_id, "environment/requirements.txt", str(git_project)
    )
    assert "mlflow==" in Path(requirements).read_text()

    # Full-content hashes: the file as read, and the DataFrame handed on to later steps.
    csv = git_project / "data.csv"
    assert tags["nbmlops.data.raw"] == hash_file(csv)
    frame = pd.read_csv(csv)
    changed = frame.assign(z=frame["x"] * 2.0)  # what step features made of df
    assert tags["nbmlops.data.df"] == hash_data(changed)  # the parent keeps the latest
    digests = {(d.dataset.name, d.dataset.digest) for d in parent.inputs.dataset_inputs}
    assert {
        ("raw", hash_file(csv)),
        ("df", hash_data(frame)),
        ("df", hash_data(changed)),
    } <= digests

    assert metrics["score"] == pytest.approx(2 * frame["x"].mean())
    assert metrics["rows"] == 20000

    steps = step_runs(client, parent)
    assert set(steps) == {"load", "features", "evaluate"}
    pipeline = load_pipeline(notebook)
    for name, run in steps.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["nbmlops.kind"] == "step"
        assert run.data.tags["nbmlops.code_hash"] == pipeline.step(name).code_hash
        assert "nbmlops.cell_seconds" in run.data.metrics
        artifacts = [f.path for f in client.list_artifacts(run.info.run_id, "notebook")]
        assert artifacts == [f"notebook/{name}.ipynb"]
    assert steps["evaluate"].data.metrics["score"] == metrics["score"]
    assert steps["load"].data.tags["nbmlops.data.raw"] == hash_file(csv)
    assert steps["load"].data.tags["nbmlops.data.df"] == hash_data(frame)
    history = client.get_metric_history(steps["load"].info.run_id, "nbmlops.cell_seconds")
    assert [m.step for m in history] == [4]  # one per code cell, by its number (from 1)

    # Which variables each step produced (the step boundary the cache restores from).
    outputs_file = client.download_artifacts(
        steps["features"].info.run_id, "outputs.json", str(git_project)
    )
    produced = {o["name"]: o for o in json.loads(Path(outputs_file).read_text())["outputs"]}
    assert set(produced) == {"df", "summary"}  # df changed in place, summary is new
    assert produced["df"]["digest"] == hash_data(changed)
    # ... and each was saved once, content-addressed, sealed with the user's key, and
    # loads back to the same content (the DataFrame as Arrow, the float as a pickle that a
    # sealed cache entry vouches for).
    cache = StepCache(git_project / ".nbmlops")
    assert (produced["df"]["format"], produced["summary"]["format"]) == ("arrow", "pickle")
    df = cache.load_output(produced["df"]["digest"], lambda v: hash_data(v) == hash_data(changed))
    assert hash_data(df) == produced["df"]["digest"]
    summary = cache.load_output(produced["summary"]["digest"], lambda v: True)
    assert summary == pytest.approx(2 * frame["x"].mean())

    # The executed notebook: papermill's injected parameters and metadata.
    out = nbformat.read(str(git_project / "out" / "pipe.ipynb"), as_version=4)
    injected = [c for c in out.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "alpha = 2.0" in injected[0].source
    assert out.metadata.papermill.parameters == {"alpha": 2.0}
    assert not (git_project / "out" / "pipe.partial.ipynb").exists()
    logged = [f.path for f in client.list_artifacts(parent.info.run_id, "notebook")]
    assert logged == ["notebook/pipe.ipynb"]


def test_steps_command_prints_the_pipeline(project: Path, nbmlops: Any) -> None:
    write_notebook(project / "pipe.ipynb", PIPELINE)
    result = nbmlops("steps", "pipe.ipynb", check=True)
    assert "alpha = 1.0  (float)" in result.stdout
    assert (
        "1. load" in result.stdout
        and "3. evaluate" in result.stdout
        and "after features" in result.stdout
    )
    described = json.loads(nbmlops("steps", "pipe.ipynb", "--json", check=True).stdout)
    assert [s["name"] for s in described["steps"]] == ["load", "features", "evaluate"]


def test_dirty_checkout_is_recorded(
    git_project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    nb = nbformat.read(str(git_project / "pipe.ipynb"), as_version=4)
    nb.cells[2].source = "alpha = 3.0\nrows = 100\nseed = 3"
    nbformat.write(nb, str(git_project / "pipe.ipynb"))
    nbmlops("run", "pipe.ipynb", "--experiment", experiment, "-q", check=True)
    [parent] = pipeline_runs(client, experiment)
    assert parent.data.tags["nbmlops.git_dirty"] == "true"
    assert parent.data.params["rows"] == "100"


def test_reused_output_dir_records_only_the_new_run(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", PIPELINE)
    nbmlops(
        "run",
        "pipe.ipynb",
        "-p",
        "rows=100",
        "--experiment",
        experiment,
        "--output-dir",
        "out",
        "-q",
        check=True,
    )
    nbmlops(
        "run",
        "pipe.ipynb",
        "-p",
        "rows=200",
        "--experiment",
        experiment,
        "--output-dir",
        "out",
        "-q",
        check=True,
    )
    second, first = pipeline_runs(client, experiment)
    assert first.data.metrics["rows"] == 100 and second.data.metrics["rows"] == 200
    history = client.get_metric_history(second.info.run_id, "rows")
    assert [m.value for m in history] == [200.0]


def test_runs_and_show_print_what_was_recorded(
    project: Path, nbmlops: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", PIPELINE)
    nbmlops("run", "pipe.ipynb", "-p", "rows=100", "--experiment", experiment, "-q", check=True)
    listed = nbmlops("runs", "--experiment", experiment, check=True).stdout
    assert "finished" in listed and "pipe.ipynb" in listed and "score" in listed
    shown = nbmlops("show", "last", "--experiment", experiment, check=True).stdout
    assert "seed 3" in shown and "parameters: alpha=1.0, rows=100, seed=3" in shown
    for step in ("load", "features", "evaluate"):
        assert f" {step} " in shown
    assert "raw " in shown and "BLAKE3" in shown
    missing = nbmlops("show", "last", "--experiment", "no-such-experiment")
    assert missing.returncode == 2 and "no experiment 'no-such-experiment'" in missing.stderr


def test_the_plan_decides_the_run_and_starts_or_writes_nothing(project: Path) -> None:
    from nbmlops.run.plan import plan_run

    write_notebook(project / "pipe.ipynb", PIPELINE)
    store = project / "store" / "mlflow.db"
    plan = plan_run(
        "pipe.ipynb",
        {"alpha": "2"},
        tracking_uri=f"sqlite:///{store}",
        output_dir="out",
        refresh=("features",),
    )
    assert plan.injected == {"alpha": 2.0}  # the seed parameter keeps its default, 3
    assert plan.values == {"alpha": 2.0, "rows": 20000, "seed": 3}
    assert (plan.seed, plan.seed_source) == (3, "parameter")
    assert plan.experiment == "pipe" and plan.notebook_label == "pipe.ipynb"
    assert plan.run_dir == project / "out" and plan.cache.root == project / ".nbmlops"
    assert plan.final_notebook == project / "out" / "pipe.ipynb"
    assert plan.refresh == frozenset({"features"}) and plan.use_cache
    tags = plan.record("env").tags()
    assert json.loads(tags["nbmlops.injected"]) == {"alpha": "2.0"}
    assert tags["nbmlops.seed"] == "3" and tags["nbmlops.steps"] == "load,features,evaluate"
    # Nothing was created: no store, no output folder, no project state.
    assert [p.name for p in project.iterdir()] == ["pipe.ipynb"]
    generated = plan_run("pipe.ipynb", seed=5, tracking_uri=f"sqlite:///{store}")
    assert (generated.seed, generated.seed_source, generated.injected) == (5, "option", {"seed": 5})
