"""The runs widget with real runs of a tiny notebook in a real MLflow store: its rows and
chart data, a run's steps and lineage, and promotion through the methods its buttons call
(``promote_best``, ``promote_selected``), as a script would; the registry and the Bento
store are asked afterwards. The clicks themselves are tests/test_browser.py's."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import CLASSIFIER, pipeline_runs, write_notebook
from mlflow import MlflowClient

from nbmlops.capture.schema import MV_RUN_ID
from nbmlops.exceptions import NbmlopsError
from nbmlops.widgets import RunsWidget, runs
from nbmlops.widgets.runs import chart_points, notebook_experiment

TRAIN = CLASSIFIER  # score as given; depth changes the model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> dict[str, Any]:
    """Two runs of TRAIN (depth 2 scoring 0.8, then depth 3 scoring 0.9) in a fresh experiment."""
    root = tmp_path_factory.mktemp("widget-project")
    write_notebook(root / "train.ipynb", TRAIN)
    experiment = f"widget-{uuid.uuid4().hex[:8]}"
    ids = {}
    for depth, score in [(2, 0.8), (3, 0.9)]:
        result = subprocess.run(
            [sys.executable, "-c", "from nbmlops.cli import main; main()", "run", "train.ipynb"]
            + ["-q", "--experiment", experiment, "-p", f"depth={depth}", "-p", f"score={score}"],
            cwd=root,
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        ids[depth] = pipeline_runs(MlflowClient(tracking_uri), experiment)[0].info.run_id
    return {"root": root, "experiment": experiment, "ids": ids}


@pytest.fixture(scope="module")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))
        yield


def test_rows_and_chart(trained: dict[str, Any], tracking_uri: str) -> None:
    ids = trained["ids"]
    w = RunsWidget(trained["experiment"], tracking_uri)
    assert [r["run_id"] for r in w.rows] == [ids[3], ids[2]]  # newest first
    assert w.metrics == ["accuracy", "score"] and w.metric == "accuracy"
    assert "depth" in w.params and "score" in w.params
    row = w.rows[0]
    assert row["status"] == "FINISHED" and row["params"]["depth"] == "3"
    assert row["metrics"]["score"] == pytest.approx(0.9)
    assert [r["cache_hits"] for r in w.rows] == ["2/4", "0/4"]
    assert row["duration_s"] > 0 and row["start_time"]

    w.metric = "score"
    w.x_param = "depth"
    assert w.chart["numeric"] is True and w.chart["x"] == "depth"
    assert [(p["x"], p["y"], p["run_id"]) for p in w.chart["points"]] == [
        (2.0, pytest.approx(0.8), ids[2]),
        (3.0, pytest.approx(0.9), ids[3]),
    ]
    w.x_param = ""
    assert w.chart["x"] == "start_time"
    assert [p["run_id"] for p in w.chart["points"]] == [ids[2], ids[3]]

    rows = [
        {"run_id": "a", "params": {"opt": "adam"}, "metrics": {"f1": 0.5}, "start_time": ""},
        {"run_id": "b", "params": {"opt": "sgd"}, "metrics": {}, "start_time": ""},
    ]
    chart = chart_points(rows, "f1", "opt")
    assert chart["numeric"] is False and chart["points"] == [{"run_id": "a", "x": "adam", "y": 0.5}]


def test_selecting_a_run_shows_steps_and_lineage(
    trained: dict[str, Any], tracking_uri: str
) -> None:
    ids = trained["ids"]
    w = RunsWidget(trained["experiment"], tracking_uri)
    w.selected_run = ids[3]
    d = w.details
    assert d["run_id"] == ids[3] and d["status"] == "FINISHED" and d["seed"] == "7"
    assert [(s["name"], s["status"], s["cache"]) for s in d["steps"]] == [
        ("load", "FINISHED", "hit"),
        ("split", "FINISHED", "hit"),
        ("train", "FINISHED", "miss"),
        ("evaluate", "FINISHED", "miss"),
    ]
    w.selected_run = ids[2]
    first = w.details
    assert [s["cache"] for s in first["steps"]] == ["miss"] * 4
    # The cached steps name the step runs of the first run, whose outputs they reused.
    assert [s["cached_from"] for s in d["steps"][:2]] == [s["run_id"] for s in first["steps"][:2]]
    assert all(len(s["code_hash"]) >= 12 for s in d["steps"])
    assert {"table", "df", "X_train"} <= set(d["data"])
    assert d["data"]["df"] == first["data"]["df"]  # the same data, the same digest
    assert d["model_uri"].startswith("models:/")
    w.selected_run = ""
    assert w.details == {}


def test_promote_best_then_a_worse_run_is_refused(
    trained: dict[str, Any], tracking_uri: str, bentoml_home: Any
) -> None:
    ids = trained["ids"]
    model = f"widget-{uuid.uuid4().hex[:6]}"
    w = RunsWidget(trained["experiment"], tracking_uri)
    w.metric, w.model_name = "score", model
    with pytest.raises(NbmlopsError) as nothing_selected:
        w.promote_selected()
    assert nothing_selected.value.problem == "no run selected"
    assert w.promote_best() is True
    assert w.busy is True
    # A second click while the first is under way (promoting, then building) does nothing.
    w.selected_run = ids[2]
    assert w.promote_selected() is False
    result = w.wait(600)
    assert w.busy is False
    assert result["state"] == "built", result
    assert result["run_id"] == ids[3] and result["alias"] == "champion"
    assert result["value"] == pytest.approx(0.9)
    assert result["message"] == f"{model} v1 is @champion (score=0.9); Bento {result['bento']}"
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    holder = client.get_model_version_by_alias(model, "champion")
    assert str(holder.version) == result["version"] == "1"
    assert holder.tags[MV_RUN_ID] == ids[3]
    assert len(client.search_model_versions(f"name='{model}'")) == 1  # the ignored click
    import bentoml

    assert str(bentoml.get(result["bento"]).tag) == result["bento"]

    assert w.promote_selected() is True  # "Promote selected": the worse run
    refused = w.wait(600)
    assert refused == {
        "state": "refused",
        "message": f"not promoting run {ids[2]} to {model}@champion: score=0.8 of run "
        f"{ids[2]} is lower than score=0.9 of {model} v1 (@champion)",
        "fix": "improve the model, or pass --force to promote anyway (the override is recorded)",
    }
    assert client.get_model_version_by_alias(model, "champion").version == holder.version


def test_gate_refusal_shows_both_values(trained: dict[str, Any], tracking_uri: str) -> None:
    model = f"widget-{uuid.uuid4().hex[:6]}"
    w = RunsWidget(trained["experiment"], tracking_uri)
    w.metric, w.model_name, w.gates = "score", model, ["score>=1.01"]
    assert w.promote_best() is True
    result = w.wait(600)
    assert result["state"] == "refused"
    assert result["message"] == (
        f"not promoting run {trained['ids'][3]} to {model}@champion: "
        "gate score>=1.01 failed: score=0.9"
    )
    assert "--force" in result["fix"]


def test_the_notebook_names_the_experiment(
    trained: dict[str, Any], tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", str(Path("work") / "churn model.ipynb"))
    assert notebook_experiment() == "churn model"
    monkeypatch.setenv("JPY_SESSION_NAME", f"/somewhere/{trained['experiment']}.ipynb")
    w = runs(tracking_uri=tracking_uri)
    assert w.experiment == trained["experiment"] and len(w.rows) == 2
    empty = runs("never-ran", tracking_uri=tracking_uri)
    assert empty.rows == [] and "no pipeline runs" in empty.error
    monkeypatch.delenv("JPY_SESSION_NAME")
    with pytest.raises(NbmlopsError) as err:
        runs(tracking_uri=tracking_uri)
    assert "experiment=" in err.value.fix
