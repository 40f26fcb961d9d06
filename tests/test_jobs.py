"""Runs started from a front end (``run/jobs.py``): one run per notebook at a time, and
Stop, which ends the run as KILLED and keeps its finished steps cached. Real runs in child
processes, a real MLflow store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import code, pipeline_runs, step_runs, write_notebook
from mlflow import MlflowClient

from nbmlops.run.jobs import KILLED, Jobs, RunAlreadyGoing

# `wait` blocks until the file `go` exists: the run is stopped while it waits.
CELLS = [
    code("import os, time\nimport nbmlops"),
    code("x = 2\nseed = 1", "parameters"),
    code("y = x * 3", "step:load"),
    code("while not os.path.exists('go'):\n    time.sleep(0.1)\nz = y + 1", "step:wait"),
]


def _until(condition: Any, what: str) -> None:
    for _ in range(1500):
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def test_one_run_per_notebook_and_stop_keeps_finished_steps(
    tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    notebook = write_notebook(tmp_path / "slow.ipynb", CELLS)
    jobs = Jobs(tmp_path, tracking_uri)
    job = jobs.start(notebook, {}, "slow.ipynb")
    try:
        _until(lambda: jobs.status(job.job_id)["current_step"] == "wait", "step wait to start")
        with pytest.raises(RunAlreadyGoing) as going:
            jobs.start(notebook, {"x": "3"}, "slow.ipynb")
        assert going.value.problem == f"a run of slow.ipynb is under way (job {job.job_id})"
        assert going.value.http_status == 409 and "anyway" in going.value.fix

        stopped = jobs.stop(job.job_id)
    finally:
        jobs.stop_all(timeout=5)
    assert stopped["status"] == KILLED
    steps = {s["name"]: s["status"] for s in stopped["steps"]}
    assert steps == {"load": "FINISHED", "wait": "FAILED"}
    client = MlflowClient(tracking_uri)
    (killed,) = pipeline_runs(client, "slow")
    assert killed.info.status == "KILLED"
    assert step_runs(client, killed)["load"].info.status == "FINISHED"

    # The next run (which may start now) takes the finished step from the cache.
    (tmp_path / "go").touch()
    again = jobs.start(notebook, {}, "slow.ipynb")
    _until(lambda: jobs.status(again.job_id)["status"] != "running", "the second run")
    done = jobs.status(again.job_id)
    assert done["status"] == "succeeded", done
    assert {s["name"]: s["status"] for s in done["steps"]} == {
        "load": "CACHED",
        "wait": "FINISHED",
    }


# ---- through the Jupyter server extension (pytest-jupyter, a real server) ----------------

pytest_plugins = ("pytest_jupyter.jupyter_server",)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # not there yet


@pytest.fixture
def jp_root_dir(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write_notebook(root / "slow.ipynb", CELLS)
    return root


@pytest.fixture
def jp_server_config(store: str) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"nbmlops.jupyter": True},
            "allow_unauthenticated_access": False,
        },
        "Nbmlops": {"tracking_uri": store},
    }


async def _call(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, Any]:
    if "body" in kwargs:
        kwargs["body"] = json.dumps(kwargs["body"])
    answer = await jp_fetch("nbmlops", "api", *path, raise_error=False, **kwargs)
    return answer.code, json.loads(answer.body or b"null")


async def test_the_panel_looks_without_creating_a_store_then_runs_one_at_a_time_and_stops(
    jp_fetch: Any, store: str, jp_root_dir: Path
) -> None:
    db = Path(store.removeprefix("sqlite:///"))
    code_, runs = await _call(jp_fetch, "runs", params={"path": "slow.ipynb"})
    assert (code_, runs["runs"]) == (200, [])
    code_, compared = await _call(jp_fetch, "compare", params={"path": "slow.ipynb"})
    assert (code_, compared["aliases"], compared["runs"]) == (200, {}, [])
    assert not db.exists()  # opening the panel created no mlflow.db

    start = {"method": "POST", "body": {"path": "slow.ipynb", "parameters": {}}}
    code_, started = await _call(jp_fetch, "runs", **start)
    assert code_ == 202
    job_id = started["job_id"]
    for _ in range(1500):
        code_, job = await _call(jp_fetch, "jobs", job_id)
        if job["current_step"] == "wait":
            break
        assert job["status"] == "running", job
        await asyncio.sleep(0.2)
    code_, again = await _call(jp_fetch, "runs", **start)
    assert code_ == 409
    assert again["error"]["problem"] == f"a run of slow.ipynb is under way (job {job_id})"
    assert again["error"]["job_id"] == job_id

    code_, stopped = await _call(jp_fetch, "jobs", job_id, "stop", method="POST", body={})
    assert code_ == 200 and stopped["status"] == "killed"
    assert stopped["seconds"] > 0
    (killed,) = pipeline_runs(MlflowClient(store), "slow")
    assert killed.info.status == "KILLED"
    code_, missing = await _call(jp_fetch, "jobs", "nosuchjob", "stop", method="POST", body={})
    assert code_ == 404 and "no job 'nosuchjob'" in missing["error"]["problem"]
