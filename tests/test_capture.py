"""Reproducibility capture: seeds, full-content hashes, the examples, interactive use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import papermill
import pytest
from conftest import ROOT, code, pipeline_runs, step_runs, write_notebook

from nbmlops.capture.hashing import FileHashCache, hash_data

RANDOM = [
    code("import random\nimport numpy as np\nimport nbmlops"),
    code(
        "draws = {\n"
        "    'random': random.random(),\n"
        "    'numpy_global': float(np.random.rand()),\n"
        "    'numpy_default_rng': float(np.random.default_rng().normal()),\n"
        "}\n"
        "nbmlops.log_metrics(draws)\n"
        "# PYTHONHASHSEED: string hashes, and so the iteration order of a set of strings\n"
        "nbmlops.log_param('str_hash', hash('nbmlops'))\n"
        "nbmlops.log_param('set_order', ','.join({f'name{i}' for i in range(20)}))",
        "step:draw",
    ),
]
DRAWS = {"random", "numpy_global", "numpy_default_rng"}
HASHED = {"str_hash", "set_order"}


def _executed_runs(client: Any, experiment: str, count: int) -> list[Any]:
    """The experiment's ``count`` pipeline runs, newest first, each of whose steps was
    executed (a cache miss), as MLflow recorded them."""
    runs = pipeline_runs(client, experiment)
    assert len(runs) == count
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = step_runs(client, run)
        cache = {name: r.data.tags["nbmlops.cache"] for name, r in steps.items()}
        assert steps and set(cache.values()) == {"miss"}, cache
        assert run.data.tags["nbmlops.cache_hits"] == f"0/{len(steps)}"
    return runs


def test_same_seed_same_draws_and_generated_seed_is_recorded(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "rand.ipynb", RANDOM)
    run = ("run", "rand.ipynb", "--experiment", experiment, "--no-cache", "-q")
    nbmlops(*run, check=True)
    [generated] = pipeline_runs(client, experiment)
    assert generated.data.tags["nbmlops.seed_source"] == "generated"
    seed = generated.data.tags["nbmlops.seed"]

    # Executed again with the recorded seed, every draw is the same, PYTHONHASHSEED's too;
    # with another seed, every one differs.
    nbmlops(*run, "--seed", seed, check=True)
    nbmlops(*run, "--seed", str(int(seed) + 1), check=True)
    other, replay, first = _executed_runs(client, experiment, 3)
    assert set(first.data.metrics) == DRAWS and set(first.data.params) >= HASHED
    assert replay.data.metrics == first.data.metrics
    for name in DRAWS:
        assert other.data.metrics[name] != first.data.metrics[name], name
    for name in HASHED:
        assert replay.data.params[name] == first.data.params[name], name
        assert other.data.params[name] != first.data.params[name], name


# As data scientists write notebooks: no seed parameter, no random_state anywhere, a helper
# module of the project drawing from numpy's global generator, a cell magic, display(),
# paths built with os.path.join, a file written by one step and read by the next.
HELPERS = """import numpy as np
import pandas as pd


def make_frame(n):
    x = np.random.normal(size=(n, 2))
    noise = np.random.normal(scale=0.5, size=n)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x.sum(axis=1) + noise > 0).astype(int)})
"""
UNSEEDED = [
    code(
        "import os\nimport pandas as pd\nfrom sklearn.ensemble import RandomForestClassifier\n"
        "from helpers import make_frame\nimport nbmlops\nDATA = 'data'"
    ),
    code(
        "%%time\nos.makedirs(DATA, exist_ok=True)\ndf = make_frame(400)\n"
        "df.to_csv(os.path.join(DATA, 'frame.csv'), index=False)\ndisplay(df.head())",
        "step:load",
    ),
    code(
        "frame = pd.read_csv(os.path.join(DATA, 'frame.csv'))\n"
        "model = RandomForestClassifier(n_estimators=20).fit(frame[['a', 'b']], frame['y'])\n"
        "proba = model.predict_proba(frame[['a', 'b']])[:, 1]\n"
        "nbmlops.log_metrics({'mean_proba': float(proba.mean()), 'first_a': float(frame['a'][0])})",
        "step:train",
    ),
]


def test_a_notebook_without_any_seed_reproduces_its_model_when_re_executed_with_the_recorded_seed(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    (project / "helpers.py").write_text(HELPERS)
    write_notebook(project / "unseeded.ipynb", UNSEEDED)
    run = ("run", "unseeded.ipynb", "--experiment", experiment, "--no-cache", "-q")
    nbmlops(*run, check=True)
    [first] = pipeline_runs(client, experiment)
    assert first.data.tags["nbmlops.seed_source"] == "generated"
    seed = first.data.tags["nbmlops.seed"]
    nbmlops(*run, "--seed", seed, check=True)
    nbmlops(*run, "--seed", str(int(seed) + 1), check=True)
    other, replay, first = _executed_runs(client, experiment, 3)
    assert set(first.data.metrics) == {"mean_proba", "first_a"}
    assert replay.data.metrics == first.data.metrics
    for name in first.data.metrics:
        assert other.data.metrics[name] != first.data.metrics[name], name


@pytest.mark.parametrize("notebook", ["breast_cancer", "diabetes"])
def test_example_notebooks_run_reproducibly_and_their_models_load(
    notebook: str, project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    shutil.copytree(ROOT / "notebooks", project / "notebooks")
    path = f"notebooks/{notebook}.ipynb"
    nbmlops("run", path, "--experiment", experiment, "--no-cache", "-q", check=True)
    nbmlops("run", path, "--experiment", experiment, "--no-cache", "-q", check=True)
    second, first = _executed_runs(client, experiment, 2)
    assert first.data.metrics == second.data.metrics and first.data.metrics
    assert first.data.tags["nbmlops.seed"] == second.data.tags["nbmlops.seed"]
    data = {k: v for k, v in first.data.tags.items() if k.startswith("nbmlops.data.")}
    assert data and data == {k: second.data.tags[k] for k in data}

    import mlflow

    model_uri = first.data.tags["nbmlops.model_uri"]
    assert second.data.tags["nbmlops.model_uri"] != model_uri  # a model per execution
    train = step_runs(client, first)["train"]
    assert train.data.tags["nbmlops.model_uri"] == model_uri
    model = mlflow.pyfunc.load_model(model_uri)
    columns = [c.name for c in model.metadata.get_input_schema().inputs]
    predictions = model.predict(pd.DataFrame(np.zeros((3, len(columns))), columns=columns))
    assert len(predictions) == 3


def test_full_content_hash_sees_what_mlflows_sampled_digest_misses() -> None:
    import mlflow.data

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "x": rng.normal(size=20_000),
            "flag": rng.integers(0, 2, 20_000).astype(bool),
            "when": pd.date_range("2026-01-01", periods=20_000, freq="min"),
            "label": rng.choice(["a", "b"], 20_000),
        }
    )
    changed = df.copy()
    changed.loc[15_000, "x"] += 1.0
    assert (
        mlflow.data.from_pandas(df).digest == mlflow.data.from_pandas(changed).digest
    )  # MLflow samples
    assert hash_data(df) != hash_data(changed)
    for column, value in (
        ("flag", not df.loc[3, "flag"]),
        ("when", pd.Timestamp("2000-01-01")),
        ("label", "c"),
    ):
        other = df.copy()
        other.loc[3, column] = value
        assert hash_data(other) != hash_data(df), column
    assert hash_data(df) == hash_data(df.copy())
    assert hash_data(df.to_numpy()) != hash_data(changed.to_numpy())


def test_file_hashes_are_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    cache = FileHashCache(tmp_path / "cache.json")
    first = cache.digest(data)
    stat = data.stat()
    data.write_text("a,b\n9,9\n")  # same size
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert FileHashCache(tmp_path / "cache.json").digest(data) == first  # not re-read
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert FileHashCache(tmp_path / "cache.json").digest(data) != first


def test_api_logs_to_an_interactive_run_outside_nbmlops_run(
    project: Path, client: Any, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    nb = write_notebook(
        project / "explore.ipynb",
        [
            code(
                "import pandas as pd\nimport nbmlops\ndf = pd.DataFrame({'a': range(100)})\nnbmlops.track_data(df, name='frame')\nnbmlops.log_metric('m', 2.5)\nnbmlops.log_param('note', 'x')"
            )
        ],
    )
    papermill.execute_notebook(
        str(nb), str(project / "out.ipynb"), progress_bar=False, kernel_name="python3"
    )
    exp = client.get_experiment_by_name(experiment)
    [run] = client.search_runs([exp.experiment_id])
    assert run.data.tags["nbmlops.kind"] == "interactive"
    assert run.data.metrics == {"m": 2.5} and run.data.params == {"note": "x"}
    assert run.data.tags["nbmlops.data.frame"] == hash_data(pd.DataFrame({"a": range(100)}))


def test_papermill_finds_the_engine_by_its_entry_point(project: Path) -> None:
    nb = write_notebook(project / "p.ipynb", [code("x = 1", "parameters"), code("print(x * 2)")])
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "papermill"),
            "--engine",
            "nbmlops",
            str(nb),
            "out.ipynb",
            "-p",
            "x",
            "21",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    import nbformat

    result = nbformat.read(str(project / "out.ipynb"), as_version=4)
    assert result.cells[-1].outputs[0]["text"] == "42\n"
