"""Failing cells, bad input and interruptions: clear messages, nothing recorded is lost."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
from conftest import code, pipeline_runs, step_runs, write_notebook

FAILING = [
    code("import nbmlops"),
    code("limit = 3", "parameters"),
    code("values = list(range(10))\nnbmlops.log_metric('loaded', len(values))", "step:load"),
    code("nbmlops.log_metric('before_failure', 1.5)\ntotal = sum(values)", "step:check"),
    code(
        "if total > limit:\n    raise ValueError(f'total {total} is over the limit {limit}')\nprint('never')"
    ),
    code("print('not reached')", "step:report"),
]


def test_failing_cell_names_step_cell_error_notebook_and_run(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "fails.ipynb", FAILING)
    result = nbmlops("run", "fails.ipynb", "--experiment", experiment, "--output-dir", "out")
    assert result.returncode == 1
    err = result.stderr
    assert "step 'check' failed in cell 5" in err
    assert "| if total > limit:" in err
    assert "ValueError: total 45 is over the limit 3" in err
    partial = project / "out" / "fails.partial.ipynb"
    assert f"partial output notebook: {partial}" in err
    assert "Traceback" not in err  # shown only with --verbose

    [parent] = pipeline_runs(client, experiment)
    assert f"MLflow run: {parent.info.run_id}" in err
    assert parent.info.status == "FAILED"
    assert parent.data.tags["nbmlops.failed_step"] == "check"
    assert parent.data.tags["nbmlops.failed_cell"] == "5"
    steps = step_runs(client, parent)
    assert set(steps) == {"load", "check"}  # report never started
    assert steps["load"].info.status == "FINISHED"
    assert steps["check"].info.status == "FAILED"
    # Nothing recorded before the failure is lost.
    assert steps["check"].data.metrics["before_failure"] == 1.5
    assert parent.data.metrics == {"loaded": 10.0, "before_failure": 1.5}

    # papermill's error cell is in the partial notebook, which is also logged.
    nb = nbformat.read(str(partial), as_version=4)
    assert any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in nb.cells)
    assert not (project / "out" / "fails.ipynb").exists()
    assert [f.path for f in client.list_artifacts(parent.info.run_id, "notebook")] == [
        "notebook/fails.partial.ipynb"
    ]

    verbose = nbmlops("run", "fails.ipynb", "--experiment", experiment, "--verbose")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert "the cell's traceback:" in verbose.stderr and "----> 2" in verbose.stderr


def test_bad_input_gets_one_clear_line_and_no_traceback(project: Path, nbmlops: Any) -> None:
    write_notebook(project / "ok.ipynb", FAILING)
    (project / "broken.ipynb").write_text("{ not json")
    write_notebook(
        project / "cycle.ipynb",
        [code("a = 1", "step:a", "after:b"), code("b = 1", "step:b", "after:a")],
    )
    cases = {
        (
            "run",
            "ok.ipynb",
            "-p",
            "limt=4",
        ): "parameter 'limt': is not a parameter of this notebook",
        (
            "run",
            "ok.ipynb",
            "-p",
            "limit=many",
        ): "parameter 'limit': got 'many' (str), but its default 3 is a int",
        ("run", "ok.ipynb", "-p", "limit"): "is not of the form name=value",
        ("run", "broken.ipynb"): "broken.ipynb: not a valid notebook",
        ("run", "cycle.ipynb"): "steps depend on each other in a cycle: a -> b -> a",
        ("steps", "missing.ipynb"): "missing.ipynb: no such notebook",
        (
            "run",
            "ok.ipynb",
            "--tracking-uri",
            "http://127.0.0.1:9/",
        ): "no answer from the tracking server",
    }
    for args, message in cases.items():
        result = nbmlops(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    listed = nbmlops("run", "ok.ipynb", "-p", "limt=4")
    assert "known parameters: limit" in listed.stderr


def test_a_folder_that_cannot_be_written_is_named_before_anything_runs(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    """A folder under a regular file cannot be created, by root either: the run stops at
    once, naming it, and records nothing."""
    write_notebook(project / "ok.ipynb", FAILING)
    (project / "afile").write_text("not a folder")
    for option in ("--output-dir", "--cache-dir"):
        result = nbmlops("run", "ok.ipynb", "--experiment", experiment, option, "afile/sub")
        assert result.returncode == 2, (option, result.stderr)
        assert result.stderr.splitlines()[0] == (
            f"error: {option} {project / 'afile' / 'sub'}: {project / 'afile'} is a file, "
            "not a folder"
        )
        assert "fix: name a folder you can write" in result.stderr
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert client.get_experiment_by_name(experiment) is None  # no run was created


def test_a_project_state_folder_that_is_a_file_is_named_before_anything_runs(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "ok.ipynb", FAILING)
    (project / ".nbmlops").write_text("not a folder")
    result = nbmlops("run", "ok.ipynb", "--experiment", experiment)
    assert result.returncode == 2, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: the run's output folder {project / '.nbmlops' / 'runs'}")
    assert first.endswith(f": {project / '.nbmlops'} is a file, not a folder")
    assert client.get_experiment_by_name(experiment) is None


def test_the_events_file_ends_with_where_the_run_failed(
    project: Path, nbmlops: Any, experiment: str
) -> None:
    """What the JupyterLab panel reads: the last event names the step, the cell and the
    error line of the failed cell, from the error's fields."""
    write_notebook(project / "fails.ipynb", FAILING)
    result = nbmlops(
        "run", "fails.ipynb", "--experiment", experiment, "--events", "events.jsonl", "-q"
    )
    assert result.returncode == 1
    events = [json.loads(line) for line in (project / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    finished = [(e["step"], e["status"]) for e in events if e["event"] == "step_finished"]
    assert finished == [("load", "FINISHED"), ("check", "FAILED")]
    last = events[-1]
    assert last["status"] == "failed" and last["run_id"]
    assert last["output_path"].endswith("fails.partial.ipynb")
    assert last["error"]["step"] == "check" and last["error"]["cell"] == 5
    assert last["error"]["line"] == "ValueError: total 45 is over the limit 3"
    assert "step 'check' failed in cell 5" in last["error"]["message"]


def test_sigterm_marks_runs_killed_and_leaves_no_finished_notebook(
    project: Path, tracking_uri: str, client: Any, experiment: str
) -> None:
    write_notebook(
        project / "slow.ipynb",
        [
            code("import time, nbmlops"),
            code(
                "nbmlops.log_metric('started', 1)\nprint('sleeping', flush=True)\ntime.sleep(60)",
                "step:wait",
            ),
            code("print('after')", "step:after"),
        ],
    )
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "nbmlops"),
            "run",
            "slow.ipynb",
            "--experiment",
            experiment,
            "--output-dir",
            "out",
        ],
        cwd=project,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_output(proc, "sleeping", timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "marked KILLED" in err
    [parent] = pipeline_runs(client, experiment)
    assert parent.info.status == "KILLED"
    steps = step_runs(client, parent)
    assert steps["wait"].info.status == "KILLED"
    assert steps["wait"].data.metrics["started"] == 1.0
    assert not (project / "out" / "slow.ipynb").exists()
    assert (project / "out" / "slow.partial.ipynb").exists()


def _wait_for_output(proc: subprocess.Popen[str], text: str, timeout: float) -> None:
    """Read ``proc``'s output until a line holds ``text``; fail with the output so far if
    it does not come within ``timeout`` seconds (or the process ends first)."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            raise AssertionError(
                f"no {text!r} within {timeout} s; output:\n{''.join(seen)}"
            ) from None
        if line is None:
            raise AssertionError(f"the run ended before printing {text!r}:\n{''.join(seen)}")
        seen.append(line)
        if text in line:
            return


def test_dead_kernel_is_reported_as_a_failed_step(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(
        project / "dies.ipynb",
        [code("import os"), code("x = 1", "step:ok"), code("os._exit(1)", "step:crash")],
    )
    result = nbmlops("run", "dies.ipynb", "--experiment", experiment)
    assert result.returncode == 1
    assert "step 'crash' failed in cell 3" in result.stderr
    assert "DeadKernelError: the kernel died while running this cell" in result.stderr
    assert "kernel.log" in result.stderr
    [parent] = pipeline_runs(client, experiment)
    assert parent.info.status == "FAILED"
    steps = step_runs(client, parent)
    assert steps["ok"].info.status == "FINISHED" and steps["crash"].info.status == "FAILED"


def test_unpicklable_output_is_named_and_the_run_goes_on(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(
        project / "gen.ipynb",
        [
            code("squares = (i * i for i in range(5))\nn = 3", "step:make"),
            code("total = n * 2", "step:use"),
        ],
    )
    result = nbmlops("run", "gen.ipynb", "--experiment", experiment, check=True)
    assert "step 'make': variable 'squares' (generator) cannot be saved" in result.stdout
    assert "will not be cached" in result.stdout
    [parent] = pipeline_runs(client, experiment)
    steps = step_runs(client, parent)
    assert steps["make"].data.tags["nbmlops.unsaved"] == "squares"
    assert "nbmlops.unsaved" not in steps["use"].data.tags


def test_step_that_logged_a_model_then_failed_stays_failed(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(
        project / "model_fails.ipynb",
        [
            code(
                "import numpy as np\nfrom sklearn.linear_model import LinearRegression\nimport nbmlops"
            ),
            code(
                "X = np.arange(20.0).reshape(10, 2)\nmodel = LinearRegression().fit(X, X.sum(axis=1))\n"
                "nbmlops.log_model(model, input_example=X)\nraise RuntimeError('validation failed after logging')",
                "step:train",
            ),
        ],
    )
    result = nbmlops("run", "model_fails.ipynb", "--experiment", experiment)
    assert (
        result.returncode == 1 and "RuntimeError: validation failed after logging" in result.stderr
    )
    [parent] = pipeline_runs(client, experiment)
    train = step_runs(client, parent)["train"]
    # The kernel resumed this run to log the model; its shutdown must not mark it FINISHED.
    assert train.info.status == "FAILED" and parent.info.status == "FAILED"
    assert train.data.tags["nbmlops.model_uri"].startswith("models:/")


def test_a_step_that_logged_a_model_is_finished_by_the_driver_when_a_later_step_fails(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    # log_model resumes the step's run in the kernel; the kernel lets go of it when the step
    # ends, so only the driver ends it, FINISHED, however the pipeline ends afterwards.
    write_notebook(
        project / "later_fails.ipynb",
        [
            code(
                "import numpy as np\nfrom sklearn.linear_model import LinearRegression\nimport nbmlops"
            ),
            code(
                "X = np.arange(20.0).reshape(10, 2)\nmodel = LinearRegression().fit(X, X.sum(axis=1))\n"
                "nbmlops.log_model(model, input_example=X)",
                "step:train",
            ),
            code("raise RuntimeError('evaluation failed')", "step:evaluate"),
        ],
    )
    result = nbmlops("run", "later_fails.ipynb", "--experiment", experiment)
    assert result.returncode == 1 and "RuntimeError: evaluation failed" in result.stderr
    [parent] = pipeline_runs(client, experiment)
    steps = step_runs(client, parent)
    assert steps["train"].info.status == "FINISHED"
    assert steps["train"].data.tags["nbmlops.model_uri"].startswith("models:/")
    assert steps["evaluate"].info.status == "FAILED" and parent.info.status == "FAILED"


def test_a_run_whose_driver_died_is_ended_failed_by_the_next_run(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    """A driver killed with SIGKILL cannot end its run; the next run of the experiment does."""
    write_notebook(project / "pipe.ipynb", [code("x = 1", "step:one")])
    first = nbmlops("run", "pipe.ipynb", "--experiment", experiment)
    assert first.returncode == 0, first.stdout + first.stderr
    done = pipeline_runs(client, experiment)[0]
    # A run left RUNNING by a driver that no longer exists (its tags as nbmlops writes them).
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = client.create_run(
        done.info.experiment_id,
        tags={
            "nbmlops.kind": "pipeline",
            "nbmlops.driver_pid": str(gone.pid),
            "nbmlops.driver_host": done.data.tags["nbmlops.driver_host"],
            "nbmlops.driver_pidns": done.data.tags["nbmlops.driver_pidns"],
        },
    )
    # The same pid in another container (PID namespace) is another process: not judged here.
    elsewhere = client.create_run(
        done.info.experiment_id,
        tags={**orphan.data.tags, "nbmlops.driver_pidns": "pid:[1]"},
    )
    second = nbmlops("run", "pipe.ipynb", "--experiment", experiment)
    assert second.returncode == 0, second.stdout + second.stderr
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"
    ended = client.get_run(orphan.info.run_id)
    assert ended.info.status == "FAILED"
    assert "was gone" in ended.data.tags["nbmlops.killed"]
    assert client.get_run(done.info.run_id).info.status == "FINISHED"  # a finished run stays


def test_resume_last_right_after_the_driver_was_killed_with_sigkill(
    project: Path, tracking_uri: str, client: Any, experiment: str
) -> None:
    """``kill -9`` leaves the run RUNNING; ``--resume last`` ends it first, then resumes it."""
    write_notebook(
        project / "slow.ipynb",
        [
            code("import os, time"),
            code("seed = 3", "parameters"),
            code("done = 1", "step:first"),
            code(
                "open('kernel.pid', 'w').write(str(os.getpid()))\n"
                "print('sleeping', flush=True)\n"
                "while not os.path.exists('go'):\n    time.sleep(0.1)",
                "step:wait",
            ),
        ],
    )
    command = [str(Path(sys.executable).parent / "nbmlops"), "run", "slow.ipynb"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    proc = subprocess.Popen(
        [*command, "--experiment", experiment],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    _wait_for_output(proc, "sleeping", timeout=120)
    proc.kill()  # SIGKILL: the driver records nothing more
    proc.wait(timeout=30)
    kernel = int((project / "kernel.pid").read_text())
    _wait_for_exit(kernel, timeout=30)  # the kernel notices its parent is gone
    [killed] = pipeline_runs(client, experiment)
    assert killed.info.status == "RUNNING"
    (project / "go").touch()
    resumed = subprocess.run(
        [*command, "--experiment", experiment, "--resume", "last", "-q"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert client.get_run(killed.info.run_id).info.status == "FAILED"
    new = pipeline_runs(client, experiment)[0]
    assert new.data.tags["nbmlops.resumed_from"] == killed.info.run_id
    assert step_runs(client, new)["first"].data.tags["nbmlops.cache"] == "hit"


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Wait for process ``pid`` to end; kill it if it outlives ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
