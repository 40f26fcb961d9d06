"""Ground truth and performance end to end: a promoted model served by a real
`bentoml serve`, real /predict and /feedback requests, then `nbmlops monitor feedback`,
`performance` (with a retraining on an alert), `report` and `export` as a user runs them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import classifier, code, pipeline_runs, write_notebook
from mlflow import MlflowClient
from test_promote import Trained, make_cli

from nbmlops.capture import schema
from nbmlops.config import ConfigError, load
from nbmlops.monitor.estimate import estimate as cbpe
from nbmlops.monitor.estimate import fit_calibration, read_calibration_document
from nbmlops.monitor.feedback import read_feedback
from nbmlops.promote import promote, resolve_model
from nbmlops.serve import server
from nbmlops.serve.build import bento_tags
from nbmlops.serve.monitoring import read_monitor_logs

# TRAIN (test_promote's) with its test split (100 rows) logged as the calibration reference
TRAIN = classifier(
    integer_feature=True,
    fail=True,
    train=(
        "model = DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(X_train, y_train)\n"
        "nbmlops.log_model(model, input_example=X_train, reference=(X_test, y_test))"
    ),
)


@dataclass
class Served:
    trained: Trained
    name: str
    url: str
    monitor_dir: Path
    rows: list[dict[str, Any]]
    ids: list[str]
    truth: list[int]
    tag: str
    env: dict[str, str]

    def cli(self, *args: str) -> Any:
        return self.trained.cli(*args, "--monitor-dir", str(self.monitor_dir))


def truth(row: dict[str, Any]) -> int:
    """TRAIN's labelling rule: y = a + b / 10 > 0.5."""
    return int(row["a"] + row["b"] / 10 > 0.5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("perf-project")
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "BENTOML_HOME": str(root / "bentoml-home")}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key, value in env.items():
            mp.setenv(key, value)
        trained = train(root, tracking_uri)
        monitor_dir = root / "monitoring"
        trained.cli = make_cli(root, {**env, "NBMLOPS_MONITOR_DIR": str(monitor_dir)})
        name = f"perf-{trained.experiment}"
        promote(trained.experiment, "accuracy", model_name=name, run_id=trained.runs["v1"])
        built = trained.cli("build", name)
        assert built.returncode == 0, built.stderr
        tag = bento_tags(resolve_model(name, tracking_uri))[0]
        import bentoml

        source = Path(bentoml.bentos.get(tag).path) / "src"
        assert {"service.py", "nbmlops_feedback.py"} <= {p.name for p in source.iterdir()}
        log = root / "server.log"
        proc = server.start(
            server.serve_command(tag, port := server.free_port()),
            {**server.server_env(monitor_dir), **env},
            log,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            server.wait_ready(url, proc, log)
            rng = np.random.default_rng(3)
            rows = [
                {"a": float(rng.normal()), "b": int(rng.integers(0, 10)), "c": float(rng.normal())}
                for _ in range(240)
            ]
            ids = []
            for start in range(0, len(rows), 60):
                answer = httpx.post(
                    url + "/predict", json={"records": rows[start : start + 60]}, timeout=60
                )
                assert answer.status_code == 200, answer.text
                ids += answer.json()["request_ids"]
            yield Served(
                trained, name, url, monitor_dir, rows, ids, [truth(r) for r in rows], tag, env
            )
        finally:
            server.stop(proc)


def train(root: Path, tracking_uri: str) -> Trained:
    """Run TRAIN once in a git project (as test_promote's ``train``)."""
    import subprocess
    import uuid

    write_notebook(root / "train.ipynb", TRAIN)
    for args in (
        ["init", "-q"],
        ["add", "train.ipynb"],
        ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "nb"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True)
    experiment = f"perf-{uuid.uuid4().hex[:8]}"
    cli = make_cli(root, {"MLFLOW_TRACKING_URI": tracking_uri})
    result = cli("run", "train.ipynb", "-q", "--experiment", experiment, "-p", "depth=3")
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = pipeline_runs(MlflowClient(tracking_uri), experiment)[0].info.run_id
    return Trained(root, tracking_uri, experiment, {"v1": run_id}, cli)


def test_before_any_label_the_estimate_is_calibrated_on_the_reference(served: Served) -> None:
    version = resolve_model(served.name, served.trained.tracking_uri)
    uri = version.tags[schema.CALIBRATION]
    run = MlflowClient(served.trained.tracking_uri).get_run(served.trained.runs["v1"])
    assert run.data.tags[schema.CALIBRATION] == uri  # the run's, carried by promotion
    import mlflow

    held_out = read_calibration_document(mlflow.artifacts.load_dict(uri), uri)
    assert len(held_out) == 100 and set(held_out["label"]) == {"0", "1"}

    shown = served.cli("monitor", "performance", served.name)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "estimates calibrated on: reference (n=100)" in shown.stdout
    logged = read_monitor_logs(next(served.monitor_dir.iterdir()))
    expected = cbpe(logged, fit_calibration(held_out, ["0", "1"], "reference"))
    assert f"{expected['accuracy']:.4f}" in shown.stdout
    assert f"{expected['f1']:.4f}" in shown.stdout


def test_feedback_bodies_over_the_limits_get_4xx(served: Served) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    answer = httpx.post(served.url + "/feedback", content=deep, timeout=60)
    assert answer.status_code == 400, answer.text
    assert "nests 100000 levels deep; at most 8" in answer.json()["error"]
    huge = b'[{"request_id": "' + b"x" * (17 * 1024 * 1024) + b'", "label": 1}]'
    answer = httpx.post(served.url + "/feedback", content=huge, timeout=60)
    assert answer.status_code == 413, answer.text
    assert "body over 16777216 bytes" in answer.json()["error"]
    text = httpx.post(
        served.url + "/feedback", content=b"{}", headers={"content-type": "text/csv"}, timeout=60
    )
    assert text.status_code == 415, text.text


def test_feedback_logs_rotate_like_the_prediction_logs(served: Served, tmp_path: Path) -> None:
    monitor_dir = tmp_path / "monitoring"
    env = {**served.env, "NBMLOPS_MONITOR_MAX_BYTES": "2000", "NBMLOPS_MONITOR_FILES": "3"}
    log = tmp_path / "server.log"
    proc = server.start(
        server.serve_command(served.tag, port := server.free_port()),
        {**server.server_env(monitor_dir), **env},
        log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(url, proc, log)
        for start in range(0, 100, 10):  # about 8,500 bytes of lines
            body = [{"request_id": f"id-{i:03d}", "label": i % 2} for i in range(start, start + 10)]
            assert httpx.post(url + "/feedback", json=body, timeout=60).json() == {"accepted": 10}
    finally:
        server.stop(proc)
    folder = next(monitor_dir.iterdir()) / "feedback"
    names = sorted(p.name for p in folder.iterdir())
    worker = names[0]  # feedback.<worker index>.log
    assert names == [worker, f"{worker}.1", f"{worker}.2"]  # at most 3 files kept
    assert all(p.stat().st_size <= 2000 for p in folder.iterdir())
    kept = read_feedback(folder.parent)
    assert 10 <= len(kept) < 100  # the oldest file was dropped, the newest labels are read
    assert {f"id-{i:03d}" for i in range(90, 100)} <= set(kept["request_id"])


def feedback(served: Served, body: Any) -> httpx.Response:
    return httpx.post(served.url + "/feedback", json=body, timeout=60)


BAD_FEEDBACK: list[tuple[str, Any, str]] = [
    ("no label", {"request_id": "x"}, "'label'"),
    ("no id", {"label": 1}, "'request_id'"),
    ("unknown field", {"request_id": "x", "label": 1, "when": 2}, "'when'"),
    ("id not a string", {"request_id": 5, "label": 1}, "'request_id'"),
    ("null label", {"request_id": "x", "label": None}, "'label'"),
    ("item not an object", [{"request_id": "x", "label": 1}, 3], "[1]"),
    ("empty list", [], "empty"),
]


@pytest.mark.parametrize(("case", "body", "named"), BAD_FEEDBACK, ids=[c[0] for c in BAD_FEEDBACK])
def test_bad_feedback_gets_400_naming_the_field(
    served: Served, case: str, body: Any, named: str
) -> None:
    answer = feedback(served, body)
    assert answer.status_code == 400, (case, answer.text)
    assert named in answer.json()["error"], (case, answer.text)


def test_feedback_that_is_not_json_gets_400(served: Served) -> None:
    answer = httpx.post(served.url + "/feedback", content=b"label=1", timeout=60)
    assert answer.status_code == 400
    assert "not JSON" in answer.json()["error"]


def test_labels_from_the_service_and_a_file_give_performance_then_an_alert_retrains(
    served: Served, tmp_path: Path
) -> None:
    half = len(served.ids) // 2
    # the service: one label, then a batch; the file: the rest, one unknown id
    one = feedback(served, {"request_id": served.ids[0], "label": served.truth[0]})
    assert one.json() == {"accepted": 1}
    batch = [
        {"request_id": i, "label": y}
        for i, y in zip(served.ids[1:half], served.truth[1:half], strict=True)
    ]
    assert feedback(served, batch).json() == {"accepted": half - 1}
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {"id": [*served.ids[half:], "never-predicted"], "y": [*served.truth[half:], 1]}
    ).to_csv(labels, index=False)
    got = served.cli(
        "monitor", "feedback", served.name, str(labels), "--id-column", "id", "--label-column", "y"
    )
    assert got.returncode == 0, got.stderr
    assert "matched 120, unknown 1, duplicate 0" in got.stdout
    assert "never-predicted" in got.stdout
    folder = next(served.monitor_dir.iterdir())
    assert len(read_feedback(folder)) == len(served.ids) + 1

    accuracy = float(np.mean([served.truth[i] == p for i, p in enumerate(_offline(served))]))
    ok = served.cli(
        "monitor", "performance", served.name, "--threshold", "accuracy>=0.5", "--segment", "b"
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "at training" in ok.stdout
    assert f"{accuracy:.4f}" in ok.stdout  # the realised accuracy over the 240 labels
    assert "240" in ok.stdout and "est. accuracy" in ok.stdout
    assert "segment b" in ok.stdout and "share predicted 1" in ok.stdout
    assert "largest gap: b" in ok.stdout
    assert "performance ok" in ok.stdout

    # new labels for the same ids (the latest counts): the truth flipped
    flipped = [
        {"request_id": i, "label": 1 - y} for i, y in zip(served.ids, served.truth, strict=True)
    ]
    assert feedback(served, flipped).json() == {"accepted": len(flipped)}
    report_json = tmp_path / "perf.json"
    alert = served.cli(
        "monitor",
        "performance",
        served.name,
        "--threshold",
        "accuracy>=0.5",
        "--json",
        str(report_json),
        "--retrain",
        "train.ipynb",
    )
    assert alert.returncode == 1, alert.stdout + alert.stderr
    assert "performance alert: accuracy" in alert.stdout
    assert "breaks accuracy>=0.5" in alert.stdout
    assert f"{len(served.ids)} duplicates" in alert.stdout
    result = json.loads(report_json.read_text())
    assert result["alert"] and result["windows"][0]["labelled"] == len(served.ids)
    assert result["windows"][0]["realised"]["accuracy"] == pytest.approx(1 - accuracy)
    assert "retrain run" in alert.stdout
    run_id = alert.stdout.split("retrain run ")[1].split()[0]
    run = MlflowClient(served.trained.tracking_uri).get_run(run_id)
    assert run.data.tags[schema.RETRAIN_CAUSE] == "performance"
    uri = run.data.tags[schema.RETRAIN_PERFORMANCE_REPORT]
    assert uri.startswith(f"runs:/{run.info.run_id}/{schema.PERFORMANCE_DIR}/perf.json")
    assert run.data.tags[schema.RETRAIN_MODEL] == f"{served.name}@champion"

    page = tmp_path / "report.html"
    shown = served.cli(
        "monitor", "report", served.name, "--since", "1d", "--html", str(page), "--segment", "b"
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert (
        f"{len(served.ids)} predictions ({len(served.ids)} labelled) in 1 windows" in shown.stdout
    )
    text = page.read_text()
    for title in (
        "Performance",
        "Input drift per window",
        "Traffic and latency",
        "Predictions",
        "Segments",
    ):
        assert f"<h2>{title}</h2>" in text
    assert text.count("data:image/svg+xml;base64,") == 4 and "<script" not in text
    assert "estimates calibrated on: reference (n=100)" in text

    out = tmp_path / "prod.parquet"
    exported = served.cli("monitor", "export", served.name, str(out))
    assert exported.returncode == 0, exported.stderr
    frame = pd.read_parquet(out)
    assert len(frame) == len(served.ids)
    assert {"request_id", "a", "b", "c", "prediction", "label"} <= set(frame.columns)
    assert "digest " in exported.stdout


def test_a_notebook_reads_production_data_as_a_recorded_dataset(
    served: Served, tmp_path: Path
) -> None:
    root = served.trained.root
    write_notebook(
        root / "fromprod.ipynb",
        [
            code("import nbmlops"),
            code("model_name = ''\nmonitor_dir = ''", "parameters"),
            code(
                "df = nbmlops.read_production(model_name, monitor_dir=monitor_dir)\n"
                "nbmlops.log_metric('rows', len(df))",
                "step:load",
            ),
        ],
    )
    experiment = f"{served.trained.experiment}-prod"
    ran = served.trained.cli(
        "run", "fromprod.ipynb", "-q", "--experiment", experiment,
        "-p", f"model_name={served.name}", "-p", f"monitor_dir={served.monitor_dir}",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = tmp_path / "prod.parquet"
    exported = served.cli("monitor", "export", served.name, str(out))
    digest = exported.stdout.split("digest ")[1].rstrip(")\n")
    client = MlflowClient(served.trained.tracking_uri)
    parent = pipeline_runs(client, experiment)[0]
    assert parent.data.metrics["rows"] == len(served.ids)
    inputs = {(d.dataset.name, d.dataset.digest) for d in parent.inputs.dataset_inputs}
    assert (f"production:{served.name}/v1", digest) in inputs


def test_ci_on_performance_retrains_the_models_pipeline_on_an_alert(served: Served) -> None:
    root = served.trained.root
    (root / "pyproject.toml").write_text(
        f"""[tool.nbmlops.pipelines.train]
notebook = "train.ipynb"
experiment = "{served.trained.experiment}"
promote = {{ metric = "accuracy", model_name = "{served.name}" }}
monitor = {{ performance = "accuracy>=0.5", segments = ["b"] }}
"""
    )
    flipped = [
        {"request_id": i, "label": 1 - y} for i, y in zip(served.ids, served.truth, strict=True)
    ]
    assert feedback(served, flipped).status_code == 200
    got = served.trained.cli("ci", "--on-performance", served.name)
    assert got.returncode == 0, got.stdout + got.stderr
    assert f"performance check of {served.name}@champion: performance alert" in got.stdout
    assert "retraining: pipeline train" in got.stdout
    runs = pipeline_runs(MlflowClient(served.trained.tracking_uri), served.trained.experiment)
    assert runs[0].data.tags[schema.RETRAIN_CAUSE] == "performance"
    (root / "pyproject.toml").unlink()


def test_bad_input_exits_2_naming_the_fix(served: Served) -> None:
    window = served.cli("monitor", "performance", served.name, "--window", "daily")
    assert window.returncode == 2 and "'daily' is not a duration" in window.stderr
    gate = served.cli("monitor", "performance", served.name, "--threshold", "f1 is high")
    assert gate.returncode == 2 and "fix:" in gate.stderr
    missing = served.trained.cli("monitor", "performance", served.name, "--monitor-dir", "nowhere")
    assert missing.returncode == 2 and "no monitor logs" in missing.stderr


def _offline(served: Served) -> list[int]:
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{served.name}/1")
    return [int(p) for p in model.predict(pd.DataFrame(served.rows))]


MONITOR_CONFIG = """[project]
name = "x"
[tool.nbmlops.pipelines.clf]
notebook = "train.ipynb"
"""


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('{ performance = "f1 => 0.9" }', "performance", "METRIC OP NUMBER"),
        ("{ max_drop = -1 }", "max_drop", "out of range"),
        ('{ segmets = ["plan"] }', "segmets", "did you mean 'segments'"),
        ('{ segments = "plan" }', "segments", "not a list of strings"),
    ],
)
def test_monitor_configuration_errors_name_the_key(
    tmp_path: Path, table: str, key: str, words: str
) -> None:
    write_notebook(tmp_path / "train.ipynb", [code("x = 1")])
    (tmp_path / "pyproject.toml").write_text(MONITOR_CONFIG + f"monitor = {table}\n")
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert str(err.value).startswith(f"pyproject.toml: tool.nbmlops.pipelines.clf.monitor.{key}")
    assert words in str(err.value) and "fix:" in str(err.value)


def test_the_monitor_table_is_read(tmp_path: Path) -> None:
    write_notebook(tmp_path / "train.ipynb", [code("x = 1")])
    (tmp_path / "pyproject.toml").write_text(
        MONITOR_CONFIG
        + 'monitor = { performance = "f1>=0.9", max_drop = 0.05, segments = ["plan"] }\n'
    )
    monitor = load(tmp_path).pipelines["clf"].monitor
    assert (str(monitor.performance), monitor.max_drop, monitor.segments) == (
        "f1>=0.9",
        0.05,
        ("plan",),
    )


def _logged(rows: int, seed: int) -> pd.DataFrame:
    """Predictions as the monitor logs hold them (one day), their labels, over-confident
    probabilities: the raw estimate is too high, a calibrated one is not."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, rows)
    said = 1 / (1 + np.exp(-3 * np.log(p / (1 - p))))
    return pd.DataFrame(
        {
            "timestamp": pd.Timestamp("2026-11-02", tz="UTC")
            + pd.to_timedelta(np.arange(rows), "s"),
            "prediction": (said > 0.5).astype(int),
            "proba_0": 1 - said,
            "proba_1": said,
            "label": (rng.random(rows) < p).astype(int).astype(str),
        }
    )


def test_the_estimate_says_what_it_was_calibrated_on() -> None:
    from nbmlops.monitor.performance import evaluate

    reference = _logged(150, 1)[["proba_0", "proba_1", "label"]]
    unlabelled = _logged(400, 2).assign(label=None)
    on_reference = evaluate(unlabelled, model="m/1", reference=reference)
    assert on_reference.calibrated_on() == "reference (n=150)"
    raw = evaluate(unlabelled, model="m/1")
    assert raw.calibrated_on() == "none"
    assert raw.windows[0].estimated["accuracy"] > on_reference.windows[0].estimated["accuracy"]
    # too small a reference: the earlier production labels (day 1) calibrate day 2
    days = pd.concat([_logged(300, 3), _logged(300, 4)], ignore_index=True)
    days.loc[300:, "timestamp"] += pd.Timedelta("1D")
    days.loc[300:, "label"] = None
    fallback = evaluate(days, model="m/1", reference=reference.head(50))
    assert fallback.calibrated_on() == "production labels (n=300)"
    assert fallback.to_dict()["windows"][1]["calibration"] == "production labels"


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ([1, 2], "not a nbmlops.calibration_set document"),
        (
            {
                "format": "nbmlops.calibration_set",
                "classes": ["0", "1"],
                "labels": ["1"],
                "proba": [],
            },
            "do not line up",
        ),
        (
            {
                "format": "nbmlops.calibration_set",
                "classes": ["0", "1"],
                "labels": ["1"],
                "proba": [["a", 0.5]],
            },
            "not all numbers",
        ),
    ],
)
def test_a_bad_calibration_document_names_the_problem(doc: Any, words: str) -> None:
    from nbmlops.monitor.errors import MonitorInputError

    with pytest.raises(MonitorInputError) as err:
        read_calibration_document(doc, "runs:/r/nbmlops/calibration/model.json")
    assert words in str(err.value) and "reference=(X_test, y_test)" in str(err.value)


BAD_REFERENCES: list[tuple[str, Callable[[pd.DataFrame, pd.Series], Any], str]] = [
    ("classifier", lambda X, y: X, "reference is a DataFrame"),
    ("regressor", lambda X, y: (X, y), "needs a classifier with predict_proba"),
    ("classifier", lambda X, y: (X, y[:5]), "10 rows of features and 5 labels"),
]


@pytest.mark.parametrize(("model", "reference", "words"), BAD_REFERENCES)
def test_log_model_refuses_a_bad_reference_before_logging(
    model: str, reference: Callable[[pd.DataFrame, pd.Series], Any], words: str
) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    import nbmlops
    from nbmlops.api import ApiError

    X = pd.DataFrame({"a": np.arange(10.0)})
    y = pd.Series([0, 1] * 5)
    fitted = (LogisticRegression() if model == "classifier" else LinearRegression()).fit(X, y)
    with pytest.raises(ApiError) as err:
        nbmlops.log_model(fitted, input_example=X, reference=reference(X, y))
    assert words in str(err.value)
