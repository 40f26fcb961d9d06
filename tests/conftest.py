"""Shared fixtures: tiny real notebooks, a real MLflow SQLite store in a temporary folder.

Notebooks are executed for real by an IPython kernel; nothing of papermill, nbclient or
MLflow is mocked. One store serves the session (creating an SQLite store costs seconds);
each test gets its own experiment and its own project folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["IPYKERNEL_CELL_NAME"] = "<cell>"  # stable tracebacks, as nbclient's tests do
os.environ.pop("MLFLOW_TRACKING_URI", None)

ROOT = Path(__file__).resolve().parents[1]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def code(source: str, *tags: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def markdown(source: str) -> nbformat.NotebookNode:
    return new_markdown_cell(source)


def write_notebook(path: Path, cells: list[Any], metadata: dict[str, Any] | None = None) -> Path:
    nb = new_notebook(
        cells=cells,
        metadata=metadata
        if metadata is not None
        else {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# A tiny classifier for promotion and front-door tests: `score` is logged as given, `depth`
# changes the model (and the steps from `train` on), so a second run with another depth takes
# `load` and `split` from the cache.
CLASSIFIER = [
    code(
        "import numpy as np\nimport pandas as pd\n"
        "from sklearn.tree import DecisionTreeClassifier\nimport nbmlops"
    ),
    code("score = 0.9\ndepth = 3\nseed = 7", "parameters"),
    code(
        "rng = np.random.default_rng(seed)\n"
        "df = pd.DataFrame({'a': rng.normal(size=300), 'b': rng.normal(size=300)})\n"
        "df['y'] = (df['a'] + df['b'] > 0).astype(int)\n"
        "nbmlops.track_data(df, 'table')",
        "step:load",
    ),
    code(
        "X_train, X_test = df[['a', 'b']].iloc[:200], df[['a', 'b']].iloc[200:]\n"
        "y_train, y_test = df['y'].iloc[:200], df['y'].iloc[200:]",
        "step:split",
    ),
    code(
        "model = DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(X_train, y_train)\n"
        "nbmlops.log_model(model, input_example=X_train)",
        "step:train",
    ),
    code(
        "nbmlops.log_metric('accuracy', float((model.predict(X_test) == y_test).mean()))\n"
        "nbmlops.log_metric('score', score)",
        "step:evaluate",
    ),
]


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real ed25519 key pair for the session, in ``$NBMLOPS_SIGNING_KEY`` (so promotion
    and build sign with it, in this process and in the commands tests start); its public
    key, next to it, is the trusted key by default. Returns the private key's path."""
    from nbmlops.promote.signing import KEY_ENV, init_keys

    private, _public, _id = init_keys(tmp_path_factory.mktemp("keys"))
    saved = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = str(private)
    yield private
    if saved is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = saved


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    from mlflow import MlflowClient

    MlflowClient(uri).search_experiments()  # create the schema once
    return uri


@pytest.fixture
def client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_uri: str) -> Path:
    """A project folder as the working directory, its MLflow store set in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return tmp_path


@pytest.fixture
def experiment() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def nbmlops(project: Path, tracking_uri: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the ``nbmlops`` command line as a user would, in the project folder."""

    def run(
        *args: str, timeout: float = 300, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
        result = subprocess.run(
            [str(Path(sys.executable).parent / "nbmlops"), *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"nbmlops {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    return run


def pipeline_runs(client: Any, experiment: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in the store"
    return list(
        client.search_runs(
            [exp.experiment_id], "tags.`nbmlops.kind` = 'pipeline'", order_by=["start_time DESC"]
        )
    )


def step_runs(client: Any, parent: Any) -> dict[str, Any]:
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return {r.data.tags["nbmlops.step"]: r for r in runs}


def classifier(
    parameters: str | None = None,
    *,
    integer_feature: bool = False,
    fail: bool = False,
    **steps: str,
) -> list[Any]:
    """:data:`CLASSIFIER` as a test's variation of it, with the same cells at the same
    indices: ``parameters`` and the named ``steps`` replace those cells' code;
    ``integer_feature`` gives three features of which ``b`` is an integer (0..9), so the
    served schema has an integer input; ``fail`` adds a ``fail`` parameter that makes
    ``evaluate`` raise after logging its metrics (``-p fail=True``: a FAILED run with the
    best score)."""
    import copy

    cells = copy.deepcopy(CLASSIFIER)
    params_cell, load, split, evaluate = cells[1], cells[2], cells[3], cells[5]
    if integer_feature:
        load.source = (
            "rng = np.random.default_rng(seed)\n"
            "df = pd.DataFrame({'a': rng.normal(size=300), 'b': rng.integers(0, 10, 300),"
            " 'c': rng.normal(size=300)})\n"
            "df['y'] = ((df['a'] + df['b'] / 10) > 0.5).astype(int)\n"
            "nbmlops.track_data(df, 'table')"
        )
        split.source = split.source.replace("[['a', 'b']]", "[['a', 'b', 'c']]")
    if fail:
        params_cell.source += "\nfail = False"
        evaluate.source += "\nif fail:\n    raise RuntimeError('boom')"
    for cell in cells:
        for tag in cell.metadata.get("tags", []):
            if tag == "parameters" and parameters is not None:
                cell.source = parameters
            elif tag.startswith("step:") and tag.removeprefix("step:") in steps:
                cell.source = steps.pop(tag.removeprefix("step:"))
    assert not steps, f"CLASSIFIER has no step {', '.join(steps)}"
    return cells
