"""The runs widget with real runs of a tiny notebook in a real MLflow store: its rows and
chart data, a run's steps and lineage, and promotion through the methods its buttons call
(``promote_best``, ``promote_selected``), as a script would; the registry and the Bento
store are asked afterwards. The clicks themselves are tests/test_browser.py's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import CLASSIFIER, code, pipeline_runs, write_notebook
from jupyter_client import BlockingKernelClient
from mlflow import MlflowClient

from nbmlops.capture.schema import MV_RUN_ID
from nbmlops.exceptions import NbmlopsError, NotebookError
from nbmlops.notebook.pipeline import load_pipeline
from nbmlops.widgets import RunsWidget, runs
from nbmlops.widgets.runs import chart_points, notebook_experiment

TRAIN = CLASSIFIER  # score as given; depth changes the model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


WIDGET_CELL = "import nbmlops.widgets\nnbmlops.widgets.runs()"
PIPE = [
    code("import nbmlops"),
    code("x = 2\nseed = 1", "parameters"),
    code("y = x * 3", "step:load"),
    code("nbmlops.log_metric('score', y / 10)", "step:report"),
]


def test_a_widget_cell_is_in_no_step_and_no_cache_key(
    project: Path, nbmlops: Any, client: Any
) -> None:
    """The README's advice, a widget in the pipeline notebook's last cell: the runs pass
    (without --experiment), and changing the widget cell invalidates no step."""
    write_notebook(project / "pipe.ipynb", [*PIPE, code(WIDGET_CELL)])
    pipeline = load_pipeline(project / "pipe.ipynb")
    assert pipeline.widget_cells == [5]
    assert [[c.index for c in s.cells] for s in pipeline.steps] == [[3], [4]]
    nbmlops("run", "pipe.ipynb", check=True)
    first = pipeline_runs(client, "pipe")[0]
    output = Path(first.data.tags["nbmlops.output_dir"]) / "pipe.ipynb"
    shown = nbformat.read(output, 4).cells[-1]
    assert shown.source == WIDGET_CELL and shown.outputs == []  # not executed in the run
    write_notebook(project / "pipe.ipynb", [*PIPE, code(WIDGET_CELL.replace("()", "(limit=5)"))])
    second = nbmlops("run", "pipe.ipynb", check=True)
    for name in ("load", "report"):
        assert f"step {name}: cached (not executed)" in second.stdout, second.stdout
    latest = pipeline_runs(client, "pipe")[0]
    assert latest.data.tags["nbmlops.cache_hits"] == "2/2"
    assert latest.data.metrics["score"] == 0.6


def test_a_widget_cell_with_a_step_tag_is_refused(tmp_path: Path) -> None:
    write_notebook(tmp_path / "pipe.ipynb", [*PIPE, code(WIDGET_CELL, "step:show")])
    with pytest.raises(NotebookError) as err:
        load_pipeline(tmp_path / "pipe.ipynb")
    assert "cell 5 only shows nbmlops widgets but is tagged step:show" in err.value.problem


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert process.poll() is None, "jupyter server exited"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"jupyter server did not answer at {url}")


def test_the_widget_and_log_metric_follow_a_renamed_notebook(
    tmp_path: Path, tracking_uri: str
) -> None:
    """Untitled.ipynb, renamed to wine.ipynb as JupyterLab does it (the file, then its
    session): the kernel, started as Untitled, shows and logs to "wine"."""
    root, runtime = tmp_path / "project", tmp_path / "runtime"
    root.mkdir()
    port, token = _free_port(), uuid.uuid4().hex
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root"]
        + ["--ip=127.0.0.1", f"--port={port}", f"--ServerApp.token={token}"]
        + [f"--ServerApp.root_dir={root}"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "server.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}/api"

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            base + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"token {token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"null")

    try:
        _wait_for(f"{base}/status?token={token}", server)
        write_notebook(root / "Untitled.ipynb", [code("")])
        session = call(
            "POST",
            "/sessions",
            {"path": "Untitled.ipynb", "type": "notebook", "kernel": {"name": "python3"}},
        )
        call("PATCH", "/contents/Untitled.ipynb", {"path": "wine.ipynb"})
        call("PATCH", f"/sessions/{session['id']}", {"path": "wine.ipynb"})
        kernel = BlockingKernelClient(
            connection_file=str(runtime / f"kernel-{session['kernel']['id']}.json")
        )
        kernel.load_connection_file()
        kernel.start_channels()
        try:
            kernel.wait_for_ready(timeout=120)
            printed: list[str] = []
            reply = kernel.execute_interactive(
                "import os, nbmlops, nbmlops.widgets\n"
                "print(os.environ['JPY_SESSION_NAME'])\n"
                "print(nbmlops.widgets.runs().experiment)\n"
                "nbmlops.log_metric('acidity', 0.5)",
                timeout=120,
                output_hook=lambda msg: printed.append(msg["content"].get("text", "")),
            )
            assert reply["content"]["status"] == "ok", reply["content"]
        finally:
            kernel.stop_channels()
        stale, shown = "".join(printed).split()
        assert stale.endswith("Untitled.ipynb")  # what the kernel was started with
        assert shown == "wine"
        logged = MlflowClient(tracking_uri).get_experiment_by_name("wine")
        assert logged is not None
        (run,) = MlflowClient(tracking_uri).search_runs([logged.experiment_id])
        assert run.data.metrics["acidity"] == 0.5
    finally:
        server.terminate()
        server.wait(30)


def test_compare_shows_runs_side_by_side_and_who_holds_an_alias(
    trained: dict[str, Any], tracking_uri: str
) -> None:
    """What the panel's comparison view draws (``GET compare``)."""
    from nbmlops.capture.compare import compare
    from nbmlops.serve.release import release

    ids, experiment = trained["ids"], trained["experiment"]
    client = MlflowClient(tracking_uri)
    assert compare(client, experiment, [])["aliases"] == {}
    release(experiment, "score", run_id=ids[2], tracking_uri=tracking_uri)
    data = compare(client, experiment, [ids[2], ids[3]])
    assert data["aliases"] == {"champion": {"version": "1", "run_id": ids[2]}}
    assert [(r["run_id"], r["aliases"]) for r in data["runs"]] == [
        (ids[2], ["champion"]),
        (ids[3], []),
    ]
    params = {p["name"]: (p["values"], p["differs"]) for p in data["params"]}
    assert params["depth"] == (["2", "3"], True)
    assert params["seed"] == (["7", "7"], False)
    metrics = {m["name"]: (m["values"], m["differs"]) for m in data["metrics"]}
    assert metrics["score"] == ([0.8, 0.9], True)
    steps = {st["name"]: [r["cache"] for r in st["runs"]] for st in data["steps"]}
    assert steps == {
        "load": ["miss", "hit"],
        "split": ["miss", "hit"],
        "train": ["miss", "miss"],
        "evaluate": ["miss", "miss"],
    }
    assert all(r["seconds"] is not None for st in data["steps"] for r in st["runs"])


def test_metrics_logged_by_step_are_compared_as_curves(
    nbmlops: Any, client: Any, experiment: str, project: Path
) -> None:
    from nbmlops.capture.compare import compare

    write_notebook(
        project / "curve.ipynb",
        [
            code("import nbmlops"),
            code("rate = 0.5", "parameters"),
            code(
                "for i in range(4):\n    nbmlops.log_metric('loss', 1 / (1 + rate * i), step=i)\n"
                "nbmlops.log_metric('final', 1 / (1 + rate * 3))",
                "step:fit",
            ),
        ],
    )
    for rate in (0.5, 1.0):
        args = ("run", "curve.ipynb", "-q", "--experiment", experiment, "-p", f"rate={rate}")
        nbmlops(*args, check=True)
    ids = [r.info.run_id for r in reversed(pipeline_runs(client, experiment))]
    data = compare(client, experiment, ids)
    assert data["curves"] == [
        {
            "name": "loss",
            "runs": [[[i, 1 / (1 + rate * i)] for i in range(4)] for rate in (0.5, 1.0)],
        }
    ]


def test_ticking_two_rows_compares_them_in_the_widget(
    trained: dict[str, Any], tracking_uri: str
) -> None:
    ids = trained["ids"]
    w = RunsWidget(trained["experiment"], tracking_uri)
    w.compared = [ids[2]]
    assert w.comparison == {}  # one run: nothing to compare
    w.compared = [ids[2], ids[3]]
    assert [r["run_id"] for r in w.comparison["runs"]] == [ids[2], ids[3]]
    params = {p["name"]: (p["values"], p["differs"]) for p in w.comparison["params"]}
    assert params["depth"] == (["2", "3"], True)
    metrics = {m["name"]: m["values"] for m in w.comparison["metrics"]}
    assert metrics["score"] == [0.8, 0.9]
    w.compared = [ids[2], "0" * 32]
    assert "0" * 32 in w.comparison["error"] and w.comparison["fix"]
