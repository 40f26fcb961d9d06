"""Runs started from a front end (``run/jobs.py``): one run per notebook at a time, and
Stop, which ends the run as KILLED and keeps its finished steps cached. Real runs in child
processes, a real MLflow store."""

from __future__ import annotations

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
