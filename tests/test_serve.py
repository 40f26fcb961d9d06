"""`nbmlops build`, `serve`, `monitor skew` end to end: a promoted model of a real run, a
real `bentoml serve` process on a loopback port, called over plain HTTP and with
BentoML's client; monitor logs read back; tampered files refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from test_promote import Trained, make_cli, train

from nbmlops.capture import schema
from nbmlops.exceptions import NbmlopsError
from nbmlops.promote import promote, resolve_model
from nbmlops.promote.errors import PromoteError
from nbmlops.serve import server
from nbmlops.serve.build import bento_tags
from nbmlops.serve.errors import ServeError
from nbmlops.serve.monitoring import read_monitor_logs

ROW = {"a": 0.7, "b": 3, "c": -0.2}


@dataclass
class Served:
    trained: Trained
    name: str
    url: str
    monitor_dir: Path
    bentoml_home: Path
    bento_tag: str
    log: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serve-project")
    home = root / "bentoml-home"
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "BENTOML_HOME": str(home)}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key, value in env.items():
            mp.setenv(key, value)
        trained = train(root, tracking_uri, {"v1": ["depth=3"], "v2": ["depth=2"]})
        trained.cli = make_cli(root, env)
        name = f"served-{trained.experiment}"
        promote(
            trained.experiment,
            "accuracy",
            model_name=name,
            run_id=trained.runs["v1"],
            tracking_uri=tracking_uri,
        )
        built = trained.cli("build", name)
        assert built.returncode == 0, built.stderr
        tag = bento_tags(resolve_model(name, tracking_uri))[0]
        assert f"built Bento {tag}" in built.stdout
        shown = subprocess.run(
            [str(server.bentoml_command()[0]), "-m", "bentoml", "get", tag, "-o", "json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        labels = json.loads(shown.stdout)["labels"]
        assert labels[schema.MV_RUN_ID] == trained.runs["v1"]
        assert (labels[schema.BENTO_MODEL], labels[schema.BENTO_VERSION]) == (name, "1")
        assert schema.CODE_HASH_PREFIX + "train" in labels
        assert not any(k.startswith(schema.METRIC_PREFIX) for k in labels)
        monitor_dir = root / "monitoring"
        log = root / "server.log"
        port = server.free_port()
        proc = server.start(
            server.serve_command(tag, port), {**server.server_env(monitor_dir), **env}, log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            server.wait_ready(url, proc, log)
            yield Served(trained, name, url, monitor_dir, home, tag, log, env)
        finally:
            server.stop(proc)


def post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(
        url + "/predict", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def records(*rows: dict[str, Any]) -> bytes:
    return json.dumps({"records": list(rows)}).encode()


# (case, body, the status it gets, what the error names)
BAD_REQUESTS: list[tuple[str, bytes, int, str]] = [
    ("missing column", records({"a": 0.1, "c": 0.2}), 400, "'b'"),
    ("text for a number", records({**ROW, "a": "high"}), 400, "'a'"),
    ("fraction for an integer", records({**ROW, "b": 1.5}), 400, "'b'"),
    ("boolean for a number", records({**ROW, "c": True}), 400, "'c'"),
    ("list for a number", records({**ROW, "a": [1]}), 400, "'a'"),
    ("null for a required column", records({**ROW, "a": None}), 400, "'a'"),
    ("extra column", records({**ROW, "d": 1.0}), 400, "'d'"),
    ("NaN", b'{"records": [{"a": NaN, "b": 3, "c": 0.1}]}', 400, "'a'"),
    ("Infinity", b'{"records": [{"a": 0.1, "b": 3, "c": -Infinity}]}', 400, "'c'"),
    ("overflowing number", b'{"records": [{"a": 1e999, "b": 3, "c": 0.1}]}', 400, "'a'"),
    ("second record bad", records(ROW, {**ROW, "b": "x"}), 400, "records[1]"),
    ("empty batch", records(), 400, "records"),
    ("record not an object", b'{"records": [[0.7, 3, -0.2]]}', 400, "records[0]"),
    ("records not a list", b'{"records": {"a": 0.7}}', 400, "records"),
    ("no records field", b'{"rows": []}', 400, "records"),
    ("empty body", b"", 400, "records"),
    ("malformed JSON", b'{"records": [', 400, "JSON"),
    ("not JSON at all", b"a=1&b=2", 400, "JSON"),
    ("unknown top-level field", b'{"records": [], "rows": []}', 400, "'rows'"),
    ("not an object", b"[1, 2]", 400, "object"),
]
OTHER_MEDIA = [
    ("form", "application/x-www-form-urlencoded", b"records=1"),
    ("multipart without boundary", "multipart/form-data", b"garbage"),
    ("text", "text/plain", b"hello"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "named"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests_get_a_4xx_naming_the_field(
    served: Served, case: str, body: bytes, status: int, named: str
) -> None:
    got, text = post(served.url, body)
    assert got == status, (case, got, text)
    assert named in text, (case, text)


@pytest.mark.parametrize(("case", "media", "body"), OTHER_MEDIA, ids=[c[0] for c in OTHER_MEDIA])
def test_a_body_that_is_not_json_gets_415_naming_the_content_type(
    served: Served, case: str, media: str, body: bytes
) -> None:
    answer = httpx.post(
        served.url + "/predict", content=body, headers={"Content-Type": media}, timeout=60
    )
    assert answer.status_code == 415, (case, answer.text)
    assert media in answer.json()["error"] and "application/json" in answer.json()["error"]


def test_no_bad_request_made_the_server_answer_5xx(served: Served) -> None:
    for _case, body, _status, _named in BAD_REQUESTS:
        post(served.url, body)
    for _case, media, body in OTHER_MEDIA:
        httpx.post(served.url + "/predict", content=body, headers={"Content-Type": media})
    assert "status=5" not in served.log.read_text()


def test_prediction_equals_the_models_offline_prediction(served: Served) -> None:
    import bentoml
    import mlflow

    rows = [ROW, {"a": -1.5, "b": 0, "c": 0.3}, {"a": 2.0, "b": 9, "c": 1.1}]
    offline = mlflow.pyfunc.load_model(f"models:/{served.name}/1").predict(pd.DataFrame(rows))
    with bentoml.SyncHTTPClient(served.url) as client:
        answer = client.predict(records=rows)
    assert answer["predictions"] == [int(p) for p in offline]
    assert (answer["model"], answer["version"]) == (served.name, "1")

    plain = httpx.post(served.url + "/predict", json={"records": rows[:1]}, timeout=60)
    assert plain.status_code == 200
    assert plain.json()["predictions"] == [int(offline[0])]


def test_model_lineage_health_and_metrics(served: Served) -> None:
    client = served.trained
    run_id = client.runs["v1"]
    info = httpx.get(served.url + "/model", timeout=30).json()
    assert (info["model"], info["version"]) == (served.name, "1")
    lineage = info["lineage"]
    assert lineage["nbmlops.run_id"] == run_id
    assert lineage["nbmlops.notebook"] == "train.ipynb"
    assert {"nbmlops.code_hash.train", "nbmlops.code_hash.split", "nbmlops.git_commit"} <= set(
        lineage
    )
    assert lineage["registry_uri"] == f"models:/{served.name}/1"
    assert info["schema"] == [
        {"name": "a", "type": "double", "required": True},
        {"name": "b", "type": "long", "required": True},
        {"name": "c", "type": "double", "required": True},
    ]
    assert len(info["sha256"]) == 64
    # The OpenAPI schema of /predict is the signature's too.
    schemas = httpx.get(served.url + "/docs.json", timeout=30).json()["components"]["schemas"]
    items = schemas["predict__Input"]["properties"]["records"]["items"]
    assert items["properties"] == {
        "a": {"type": "number"},
        "b": {"type": "integer"},
        "c": {"type": "number"},
    }
    assert items["required"] == ["a", "b", "c"] and items["additionalProperties"] is False
    for path in ("/livez", "/readyz"):
        assert httpx.get(served.url + path, timeout=30).status_code == 200
    httpx.post(served.url + "/predict", json={"records": [ROW]}, timeout=60)
    metrics = httpx.get(served.url + "/metrics", timeout=30)
    assert metrics.status_code == 200
    assert "bentoml_service_request_total" in metrics.text
    assert "nbmlops_batch_size_count" in metrics.text  # the micro-batcher's predict calls


def test_requests_are_read_back_from_the_monitor_logs(served: Served) -> None:
    import mlflow

    row = {"a": 0.123456, "b": 7, "c": -3.5}
    answer = httpx.post(served.url + "/predict", json={"records": [row, ROW]}, timeout=60).json()
    ids = answer["request_ids"]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
    given = httpx.post(
        served.url + "/predict",
        json={"records": [ROW, row], "request_ids": ["mine-1", "mine-2"]},
        timeout=60,
    ).json()
    assert given["request_ids"] == ["mine-1", "mine-2"]

    logs = logged(served.monitor_dir, [*ids, "mine-1", "mine-2"])
    assert list(logs.columns) == [
        "request_id",
        "timestamp",
        "latency_ms",
        "a",
        "b",
        "c",
        "prediction",
        "proba_0",
        "proba_1",
    ]
    mine = logs.set_index("request_id").loc[[*ids, "mine-1", "mine-2"]]
    assert mine[["a", "b", "c"]].to_dict(orient="records") == [row, ROW, ROW, row]
    assert mine["prediction"].tolist() == answer["predictions"] + given["predictions"]
    # The classifier's probabilities, as the model gives them.
    tree = mlflow.sklearn.load_model(f"models:/{served.name}/1")
    expected = tree.predict_proba(pd.DataFrame([row, ROW, ROW, row]))
    assert mine[["proba_0", "proba_1"]].to_numpy().tolist() == expected.tolist()
    assert (mine["latency_ms"] > 0).all()
    assert mine.loc["mine-1", "latency_ms"] == mine.loc["mine-2", "latency_ms"]
    assert str(logs["timestamp"].dtype) == "datetime64[us, UTC]"
    assert not logs["timestamp"].isna().any()
    assert logs["timestamp"].is_monotonic_increasing


def logged(folder: Path, ids: list[str]) -> pd.DataFrame:
    """The monitor logs once they hold ``ids`` (the service writes them after answering)."""
    for _ in range(600):
        if folder.is_dir() and any(folder.rglob("data.*.log*")):
            logs = read_monitor_logs(folder)
            if set(ids) <= set(logs["request_id"]):
                return logs
        time.sleep(0.05)
    raise AssertionError(f"the monitor logs under {folder} never held {ids}")


@pytest.mark.parametrize(
    ("ids", "named"),
    [
        (["only-one"], "request_ids: 1 ids for 2 records"),
        (["a", 7], "request_ids[1]: expected a non-empty string"),
        (["a", "x" * 129], "request_ids[1]: 129 characters; at most 128"),
        ("a,b", "request_ids: expected a list of strings"),
    ],
)
def test_wrong_request_ids_get_400_naming_them(served: Served, ids: Any, named: str) -> None:
    answer = httpx.post(
        served.url + "/predict", json={"records": [ROW, ROW], "request_ids": ids}, timeout=60
    )
    assert answer.status_code == 400, answer.text
    assert named in answer.json()["error"]


def test_skew_replays_training_rows_and_flags_another_version(served: Served) -> None:
    cli = served.trained.cli
    result = cli("monitor", "skew", served.name, "--url", served.url, "--sample", "50")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no skew: all 50 predictions match" in result.stdout
    # The alias moves to another model; the service still serves version 1: skew.
    promote(
        served.trained.experiment,
        "accuracy",
        model_name=served.name,
        run_id=served.trained.runs["v2"],
        force=True,
        tracking_uri=served.trained.tracking_uri,
    )
    try:
        moved = cli("monitor", "skew", served.name, "--url", served.url, "--sample", "50")
        assert moved.returncode == 1, moved.stdout + moved.stderr
        assert "serves version 1, not 2" in moved.stdout and "skew:" in moved.stdout
    finally:
        assert cli("rollback", served.name).returncode == 0
    down = cli("monitor", "skew", served.name, "--url", "http://127.0.0.1:9", "--sample", "5")
    assert down.returncode == 2 and "no answer from the service" in down.stderr


def test_serve_check_starts_predicts_and_stops(served: Served) -> None:
    result = served.trained.cli("serve", served.name, "--check", "--no-monitoring")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/predict -> 200" in result.stdout and '"version": "1"' in result.stdout
    assert "stopped" in result.stdout


def _artifact_file(served: Served, name: str) -> Path:
    from mlflow import MlflowClient

    model = resolve_model(served.name, served.trained.tracking_uri)
    logged = MlflowClient(served.trained.tracking_uri).get_logged_model(
        model.source.removeprefix("models:/")
    )
    return Path(logged.artifact_location.removeprefix("file://")) / name


def test_tampered_model_files_are_refused_by_build_and_by_the_service(served: Served) -> None:
    # In the artifact store: `nbmlops build` refuses, naming the file.
    stored = _artifact_file(served, "model.skops")
    original = stored.read_bytes()
    stored.write_bytes(original + b"\0")
    try:
        result = served.trained.cli("build", served.name)
    finally:
        stored.write_bytes(original)
    assert result.returncode == 1
    assert (
        f"error: model {served.name} v1 (@champion): model.skops has changed since promotion: "
        "refusing to use it\n"
    ) in result.stderr
    assert "Traceback" not in result.stderr

    # In the BentoML model store: the service refuses to load, naming the file.
    model = resolve_model(served.name, served.trained.tracking_uri)
    store_name, store_version = bento_tags(model)[1].split(":")
    copy = served.bentoml_home / "models" / store_name / store_version / "mlflow_model"
    copy /= "model.skops"
    original = copy.read_bytes()
    copy.write_bytes(original + b"\0")
    log = served.monitor_dir.parent / "tampered.log"
    try:
        serve = served.trained.cli("serve", served.name, "--port", str(server.free_port()))
        assert serve.returncode == 1
        assert (
            f"error: model {model} (BentoML copy {bento_tags(model)[1]}): model.skops has "
            "changed since promotion: refusing to use it\n"
        ) in serve.stderr
        proc = server.start(
            server.serve_command(served.bento_tag, server.free_port()),
            {**server.server_env(None), **served.env},
            log,
        )
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the server started with a tampered model:\n" + server.tail(log))
        finally:
            server.stop(proc)
    finally:
        copy.write_bytes(original)
    assert proc.returncode != 0
    assert (
        f"IntegrityError: model {served.name} v1: model.skops has changed since promotion "
        "(sha256 differs): refusing it"
    ) in log.read_text()


def test_monitor_logs_of_a_missing_folder_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ServeError) as no_folder:
        read_monitor_logs(tmp_path / "nope")
    assert no_folder.value.problem == f"no monitor log folder {str(tmp_path / 'nope')!r}"
    with pytest.raises(ServeError) as no_logs:
        read_monitor_logs(tmp_path)
    assert no_logs.value.problem == f"no monitor logs under {str(tmp_path)!r}"
    # A serving error is not a registry error: `except PromoteError` does not catch it.
    assert isinstance(no_logs.value, NbmlopsError)
    assert not isinstance(no_logs.value, PromoteError)


def test_promote_build_promotes_then_builds_or_finds_the_bento(served: Served) -> None:
    trained, name = served.trained, f"built-{served.trained.experiment}"
    args = ["--experiment", trained.experiment, "--metric", "accuracy", "--model-name", name]
    run = ["--run", trained.runs["v2"]]
    first = trained.cli("promote", *args, *run, "--build")
    assert first.returncode == 0, first.stdout + first.stderr
    tag = bento_tags(resolve_model(name, trained.tracking_uri))[0]
    assert f"{name}@champion: nothing -> v1\nBento {tag} built\n" in first.stdout
    again = trained.cli("promote", *args, *run, "--build")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{name}@champion is already version 1\nBento {tag} found and verified\n" in again.stdout
    plain = trained.cli("promote", *args, *run)  # without --build, as before: no Bento line
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stdout.endswith(f"{name}@champion is already version 1\n")
