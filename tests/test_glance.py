"""The served model at a glance in a real Jupyter server (pytest-jupyter, ``nbmlops.jupyter``
enabled): a real MLflow registry with a champion promoted by force with a reason through
the panel's endpoint, predictions logged in the service's format, then ``GET glance``
(the champion, the latest drift and performance verdicts) and its HTML report page."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_promote import Trained, train
from tornado.httpclient import HTTPResponse

from nbmlops.promote import history, promote
from nbmlops.serve.build import bento_name

pytest_plugins = ("pytest_jupyter.jupyter_server",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("glance-root")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        mp.setenv("NBMLOPS_CACHE_KEY", "the key of the glance tests")
        yield train(root, tracking_uri, {"high": ["score=0.9"], "low": ["score=0.5", "depth=2"]})


@pytest.fixture
def jp_root_dir(trained: Trained) -> Path:
    return trained.root


@pytest.fixture
def jp_server_config(tracking_uri: str) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"nbmlops.jupyter": True}},
        "Nbmlops": {"tracking_uri": tracking_uri},
    }


async def call(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, Any]:
    if "body" in kwargs:
        kwargs["body"] = json.dumps(kwargs["body"])
    response: HTTPResponse = await jp_fetch("nbmlops", "api", *path, raise_error=False, **kwargs)
    text = (response.body or b"null").decode()
    if response.headers["Content-Type"].startswith("text/html"):
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "img-src data:" in policy  # no scripts
        return response.code, text
    return response.code, json.loads(text)


def log_predictions(folder: Path, shift: float, n: int = 200) -> None:
    """``n`` predictions of today in the service's log format, feature ``a`` shifted."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n)})
    stamp = pd.Timestamp.now(tz="UTC").isoformat()
    (folder / "data").mkdir(parents=True)
    with open(folder / "data" / "data.0.log", "w") as out:
        for i, row in enumerate(frame.to_dict(orient="records")):
            line = {"timestamp": stamp, "request_id": f"r{i}", "latency_ms": 3.0, **row}
            line["prediction"] = int(row["a"] + row["b"] > 0)
            line["proba"] = {"0": 0.5, "1": 0.5}
            out.write(json.dumps(line) + "\n")


async def test_the_panel_shows_the_champion_its_forced_reason_and_the_verdicts(
    jp_fetch: Any, trained: Trained, tracking_uri: str
) -> None:
    name = f"glance-{uuid.uuid4().hex[:6]}"
    notebook = f"{trained.experiment}.ipynb"  # the panel's experiment is the notebook's stem
    (trained.root / notebook).write_bytes((trained.root / "train.ipynb").read_bytes())
    query = {"path": notebook, "model_name": name}
    status, empty = await call(jp_fetch, "glance", params=query)
    assert status == 200 and empty["champion"] is None
    assert "promote a run" in empty["note"]

    promote(trained.experiment, "score", model_name=name, run_id=trained.runs["high"])
    refused = {
        "path": notebook,
        "metric": "score",
        "model_name": name,
        "run_id": trained.runs["low"],
        "force": True,
        "reason": "the 0.9 run leaked the test split",
    }
    status, body = await call(jp_fetch, "promote", method="POST", body=refused)
    assert status == 200, body
    [*_, move] = history(name, tracking_uri)
    assert move.forced and move.reason.startswith("the 0.9 run leaked the test split (overrode: ")

    status, seen = await call(jp_fetch, "glance", params=query)
    assert status == 200, seen
    champion = seen["champion"]
    assert (champion["version"], champion["run_id"]) == ("2", trained.runs["low"])
    assert champion["forced"] and champion["reason"] == move.reason
    assert champion["promoted_at"] == move.time
    assert seen["drift"] is None and seen["performance"] is None
    assert seen["note"] == f"no monitor logs of {name}@champion (version 2) here"
    status, missing = await call(jp_fetch, "glance", params={**query, "format": "html"})
    assert status == 400, missing
    assert missing["error"]["problem"].endswith(seen["note"])
    assert str(trained.root / ".nbmlops" / "monitoring") in missing["error"]["problem"]

    log_predictions(trained.root / ".nbmlops" / "monitoring" / f"{bento_name(name)}-v2", 3.0)
    status, seen = await call(jp_fetch, "glance", params=query)
    assert status == 200, seen
    assert seen["drift"]["verdict"] == "drift" and "a" in seen["drift"]["features"]
    assert seen["performance"]["verdict"] == "ok"
    assert seen["performance"]["labelled"] == 0
    status, page = await call(jp_fetch, "glance", params={**query, "format": "html"})
    assert status == 200 and isinstance(page, str)
    assert f"nbmlops monitor report: {name}@champion" in page and "data:image/svg+xml" in page


def test_the_cli_records_why_a_promotion_was_forced(trained: Trained) -> None:
    name = f"why-{uuid.uuid4().hex[:6]}"
    base = ["promote", "--experiment", trained.experiment, "--metric", "score"]
    assert trained.cli(*base, "--model-name", name).returncode == 0
    low = ["--model-name", name, "--run", trained.runs["low"]]
    alone = trained.cli(*base, *low, "--reason", "rollback of a leak")
    assert alone.returncode == 2 and "--reason explains a --force" in alone.stderr
    forced = trained.cli(*base, *low, "--force", "--reason", "rollback of a leak")
    assert forced.returncode == 0, forced.stderr
    shown = trained.cli("history", name)
    assert "FORCED: rollback of a leak (overrode: " in shown.stdout, shown.stdout
