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
        "    'str_hash': hash('nbmlops') % 10_000,\n"
        "}\n"
        "nbmlops.log_metrics(draws)",
        "step:draw",
    ),
]


def _metrics(client: Any, experiment: str) -> list[dict[str, float]]:
    return [r.data.metrics for r in pipeline_runs(client, experiment)]


def test_same_seed_same_draws_and_generated_seed_is_recorded(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "rand.ipynb", RANDOM)
    nbmlops("run", "rand.ipynb", "--experiment", experiment, "-q", check=True)
    [generated] = pipeline_runs(client, experiment)
    assert generated.data.tags["nbmlops.seed_source"] == "generated"
    seed = generated.data.tags["nbmlops.seed"]

    # Re-running with the recorded seed reproduces every draw, PYTHONHASHSEED included.
    nbmlops("run", "rand.ipynb", "--experiment", experiment, "--seed", seed, "-q", check=True)
    nbmlops(
        "run",
        "rand.ipynb",
        "--experiment",
        experiment,
        "--seed",
        str(int(seed) + 1),
        "-q",
        check=True,
    )
    other, replay, first = _metrics(client, experiment)
    assert replay == first
    assert set(first) == {"random", "numpy_global", "numpy_default_rng", "str_hash"}
    for name in ("random", "numpy_global", "numpy_default_rng"):
        assert other[name] != first[name], name


@pytest.mark.parametrize("notebook", ["breast_cancer", "diabetes"])
def test_example_notebooks_run_reproducibly_and_their_models_load(
    notebook: str, project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    shutil.copytree(ROOT / "notebooks", project / "notebooks")
    path = f"notebooks/{notebook}.ipynb"
    nbmlops("run", path, "--experiment", experiment, "-q", check=True)
    nbmlops("run", path, "--experiment", experiment, "-q", check=True)
    second, first = pipeline_runs(client, experiment)
    assert first.data.metrics == second.data.metrics and first.data.metrics
    assert first.data.tags["nbmlops.seed"] == second.data.tags["nbmlops.seed"]
    assert any(k.startswith("nbmlops.data.") for k in first.data.tags)

    import mlflow

    model_uri = first.data.tags["nbmlops.model_uri"]
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
