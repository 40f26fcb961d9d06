"""``nbmlops server start`` on a real PostgreSQL, and nbmlops commands against it.

One PostgreSQL server (tests/postgres.py) and one ``nbmlops server start`` process serve
the module. A team member's project points at it through ``MLFLOW_TRACKING_URI``: a
four-point parallel sweep and a promotion must record everything (runs, step runs, params,
metrics, artifacts, the registered version and its alias) in PostgreSQL and the served
artifact folder. Then the server is killed in the middle of a sweep and started again on
the same port and store: the sweep completes, and no run is FINISHED with part of its
record missing; killed and kept away, the run stops with a clear message. The last test
needs no server: a write MLflow refuses leaves the runs FAILED, on any store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import classifier, code, pipeline_runs, step_runs, write_notebook
from postgres import Postgres, free_port, running_postgres

NBMLOPS = str(Path(sys.executable).parent / "nbmlops")

# The shared classifier (conftest.CLASSIFIER) with `score` = depth / 10, so the deepest
# point of a sweep is the best. With NBMLOPS_TEST_GATE set, the gated step says it got
# there and waits for a `go` file.
GATE = (
    "import os, time\n"
    "gate = os.environ.get('NBMLOPS_TEST_GATE')\n"
    "if gate:\n"
    "    open(os.path.join(gate, f'reached-{depth}'), 'w').close()\n"
    "    while not os.path.exists(os.path.join(gate, 'go')):\n"
    "        time.sleep(0.1)\n"
)
TRAIN = (
    "model = DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(X_train, y_train)\n"
    "nbmlops.log_model(model, input_example=X_train)\n"
    "nbmlops.log_metric('train_rows', len(X_train))"
)
EVALUATE = (
    "nbmlops.log_metric('accuracy', float((model.predict(X_test) == y_test).mean()))\n"
    "nbmlops.log_metric('score', depth / 10)\n"
    "nbmlops.log_param('rows', len(df))"
)


def cells(gated: str = "train") -> list[Any]:
    return classifier(
        "depth = 1\nseed = 3",
        train=(GATE if gated == "train" else "") + TRAIN,
        evaluate=(GATE if gated == "evaluate" else "") + EVALUATE,
    )


STEPS = {"load", "split", "train", "evaluate"}


@dataclass
class TrackingServer:
    """An ``nbmlops server start`` process, started (and restarted) as a user would."""

    project: Path
    backend: str
    artifacts: Path
    port: int
    url: str = ""
    proc: subprocess.Popen[str] | None = None
    outputs: list[Path] = field(default_factory=list)

    def start(self, timeout: float = 300) -> str:
        """Start the server; return what it printed up to its export line."""
        out = self.project / f"server-{len(self.outputs)}.out"
        self.outputs.append(out)
        with open(out, "w") as fh:
            self.proc = subprocess.Popen(
                [NBMLOPS, "server", "start",
                 "--artifacts-destination", str(self.artifacts), "--port", str(self.port),
                 "--workers", "2"],
                cwd=self.project,
                env={**os.environ, "MLFLOW_BACKEND_STORE_URI": self.backend},  # not in argv
                stdout=fh,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while "export MLFLOW_TRACKING_URI=" not in out.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nbmlops server start did not come up:\n{out.read_text()}")
            time.sleep(0.2)
        text = out.read_text()
        self.url = text.split("export MLFLOW_TRACKING_URI=")[1].split()[0]
        return text

    def mlflow_group(self) -> int:
        """The process group of the ``mlflow server`` the command started."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def stop(self) -> str:
        """Stop the command as Ctrl-C would (SIGINT); return everything it printed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.mlflow_group(), signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(10)
        return self.outputs[-1].read_text() if self.outputs else ""


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def server(pg: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    folder = tmp_path_factory.mktemp("server")
    backend = pg.create_database("mlflow")
    tracking = TrackingServer(folder, backend, folder / "artifacts", free_port())
    tracking.start()
    yield tracking
    tracking.stop()


def nbmlops(
    project: Path, url: str, *args: str, timeout: float = 900, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``nbmlops`` in a team member's project pointed at the server by the environment."""
    return subprocess.run(
        [NBMLOPS, *args],
        cwd=project,
        env={**os.environ, "MLFLOW_TRACKING_URI": url, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(done: Callable[[], bool], proc: subprocess.Popen[str], out: Path) -> None:
    """Poll ``done`` while ``proc`` runs; fail with its output if it ends or hangs first."""
    deadline = time.monotonic() + 600
    while not done():
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, f"still waiting after 600 s:\n{out.read_text()}"
        time.sleep(0.2)


def client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(url, registry_uri=url)


def sweep_runs(url: str, experiment: str) -> tuple[list[Any], list[Any], dict[str, list[Any]]]:
    """The experiment's sweep runs, pipeline runs, and step runs by pipeline run id."""
    c = client(url)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None
    every = c.search_runs([exp.experiment_id], max_results=1000)
    kind = lambda r: r.data.tags.get("nbmlops.kind")  # noqa: E731
    sweeps = [r for r in every if kind(r) == "sweep"]
    pipelines = [r for r in every if kind(r) == "pipeline"]
    steps: dict[str, list[Any]] = {}
    for r in every:
        if kind(r) == "step":
            steps.setdefault(r.data.tags["mlflow.parentRunId"], []).append(r)
    return sweeps, pipelines, steps


def assert_complete(url: str, pipeline: Any, steps: list[Any]) -> None:
    """A FINISHED pipeline run holds everything it recorded: steps, params, metrics, files."""
    c = client(url)
    depth = int(pipeline.data.params["depth"])
    assert pipeline.data.params["rows"] == "300"
    assert pipeline.data.metrics["score"] == depth / 10
    assert 0.5 < pipeline.data.metrics["accuracy"] <= 1.0
    assert pipeline.data.tags["nbmlops.model_uri"].startswith("models:/")
    names = {s.data.tags["nbmlops.step"]: s for s in steps}
    assert set(names) == STEPS and len(steps) == len(STEPS)
    assert all(s.info.status == "FINISHED" for s in steps)
    assert names["evaluate"].data.metrics["score"] == depth / 10
    assert names["train"].data.metrics["train_rows"] == 200
    for s in steps:
        files = {f.path for f in c.list_artifacts(s.info.run_id)}
        assert {"outputs.json", "notebook"} <= files, (s.data.tags["nbmlops.step"], files)
    assert "notebook" in {f.path for f in c.list_artifacts(pipeline.info.run_id)}


def test_bad_input_is_named_with_its_fix(
    pg: Postgres, server: TrackingServer, tmp_path: Path
) -> None:
    def start(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NBMLOPS, "server", "start", *args], cwd=tmp_path, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    wrong_password = start("--backend-store-uri", pg.uri("mlflow", password="nope"))
    assert wrong_password.returncode == 2
    assert "refused the password of user 'postgres'" in wrong_password.stderr
    assert "fix: correct the password in --backend-store-uri" in wrong_password.stderr
    assert "nope" not in wrong_password.stderr

    nothing_there = free_port()
    unreachable = start("--backend-store-uri", f"postgresql://u:p@127.0.0.1:{nothing_there}/db")
    assert unreachable.returncode == 2
    assert f"cannot reach PostgreSQL at 127.0.0.1:{nothing_there}" in unreachable.stderr
    assert "fix: start PostgreSQL there" in unreachable.stderr

    no_database = start("--backend-store-uri", pg.uri("missing"))
    assert no_database.returncode == 2
    assert "has no database 'missing'" in no_database.stderr
    assert "createdb" in no_database.stderr

    port_in_use = start("--backend-store-uri", server.backend, "--port", str(server.port))
    assert port_in_use.returncode == 2
    assert f"cannot listen on 127.0.0.1:{server.port}" in port_in_use.stderr
    assert "choose another port with --port" in port_in_use.stderr

    for result in (wrong_password, unreachable, no_database, port_in_use):
        assert "Traceback" not in result.stderr
    verbose = start("--backend-store-uri", pg.uri("missing"), "--verbose")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert not (tmp_path / "mlartifacts").exists()  # nothing was started


def test_a_parallel_sweep_and_a_promotion_record_everything_in_postgres(
    pg: Postgres, server: TrackingServer, tmp_path: Path
) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}"
    # The password is in no command line any local user can read (nor in the server's log).
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert pg.password not in cmdline.read_text(errors="replace"), cmdline
        except OSError:
            continue  # the process has gone
    for out in [*server.outputs, *server.project.glob(".nbmlops/server/*.log")]:
        assert pg.password not in out.read_text(errors="replace"), out
    write_notebook(tmp_path / "pipe.ipynb", cells())
    experiment = "team-sweep"
    sweep = nbmlops(
        tmp_path, server.url,
        "sweep", "pipe.ipynb", "-g", "depth=1,2,3,4", "--jobs", "4", "--metric", "score",
        "--experiment", experiment,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    sweeps, pipelines, steps = sweep_runs(server.url, experiment)
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    assert len(pipelines) == 4
    assert sorted(int(p.data.params["depth"]) for p in pipelines) == [1, 2, 3, 4]
    for p in pipelines:
        assert p.info.status == "FINISHED"
        assert p.data.tags["mlflow.parentRunId"] == sweeps[0].info.run_id
        assert_complete(server.url, p, steps[p.info.run_id])
    best = next(p for p in pipelines if p.data.params["depth"] == "4")
    assert sweeps[0].data.tags["nbmlops.best_run"] == best.info.run_id
    assert sweeps[0].data.metrics["score"] == 0.4
    assert sweep.stdout.strip().splitlines()[-1] == f"best run: {best.info.run_id}"
    listed = client(server.url).download_artifacts(sweeps[0].info.run_id, "sweep.json", tmp_path)
    assert len(json.loads(Path(listed).read_text())["points"]) == 4

    promoted = nbmlops(
        tmp_path, server.url, "promote", "--experiment", experiment, "--metric", "score"
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert f"run:      {best.info.run_id}" in promoted.stdout
    assert f"{experiment}@champion: nothing -> v1" in promoted.stdout
    version = client(server.url).get_model_version_by_alias(experiment, "champion")
    assert version.version == "1"
    assert version.tags["nbmlops.run_id"] == best.info.run_id

    # The team's commands read it back through the server.
    runs = nbmlops(tmp_path, server.url, "runs", "--experiment", experiment)
    assert runs.returncode == 0 and all(p.info.run_id in runs.stdout for p in pipelines)
    shown = nbmlops(tmp_path, server.url, "show", best.info.run_id)
    assert shown.returncode == 0 and "evaluate" in shown.stdout and "score" in shown.stdout

    # It is all in PostgreSQL, and the artifacts in the server's folder (none client-side).
    exp_id = pipelines[0].info.experiment_id
    counted = pg.query("mlflow", f"SELECT count(*) FROM runs WHERE experiment_id = {exp_id}")
    assert counted == [(1 + 4 + 4 * len(STEPS),)]
    aliases = pg.query("mlflow", "SELECT name, alias, version FROM registered_model_aliases")
    assert (experiment, "champion", 1) in aliases
    assert len(list(server.artifacts.rglob("MLmodel"))) >= 4
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_server_killed_and_restarted_mid_sweep_loses_nothing(
    server: TrackingServer, tmp_path: Path
) -> None:
    """Kill the server (SIGKILL) while four points wait in their train step; let them go on
    against no server, start it again on the same port and store a few seconds later.

    The points wait for the server longer than it can take to come back (start() gives it
    300 s): nbmlops' own writes (NBMLOPS_SERVER_PATIENCE) and MLflow's requests in the
    kernels (MLFLOW_HTTP_REQUEST_MAX_RETRIES: 10 retries, ~10 minutes of backoff), so a
    slow restart on a busy machine is not a lost point."""
    gate = tmp_path / "gate"
    gate.mkdir()
    write_notebook(tmp_path / "pipe.ipynb", cells())
    experiment = "restarted"
    out = tmp_path / "sweep.out"
    with open(out, "w") as fh:
        sweep = subprocess.Popen(
            [NBMLOPS, "sweep", "pipe.ipynb", "-g", "depth=1,2,3,4", "--jobs", "4",
             "--metric", "score", "--experiment", experiment],
            cwd=tmp_path,
            env={
                **os.environ,
                "MLFLOW_TRACKING_URI": server.url,
                "NBMLOPS_TEST_GATE": str(gate),
                "NBMLOPS_SERVER_PATIENCE": "900",
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10",
            },
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
    try:
        wait_for(lambda: len(list(gate.glob("reached-*"))) == 4, sweep, out)
        os.killpg(server.mlflow_group(), signal.SIGKILL)
        assert server.proc is not None and server.proc.wait(60) == 2
        died = server.outputs[-1].read_text()
        assert "error: the tracking server exited with status -9" in died
        (gate / "go").touch()  # the points log their model and steps to a dead server
        time.sleep(3)
        server.start()
        code = sweep.wait(900)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    output = out.read_text()
    assert code == 0, output
    assert "Traceback" not in output
    sweeps, pipelines, steps = sweep_runs(server.url, experiment)
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    assert sorted(int(p.data.params["depth"]) for p in pipelines) == [1, 2, 3, 4]
    for p in pipelines:
        assert p.info.status == "FINISHED"
        assert_complete(server.url, p, steps[p.info.run_id])
    best = next(p for p in pipelines if p.data.params["depth"] == "4")
    assert sweeps[0].data.tags["nbmlops.best_run"] == best.info.run_id
    assert output.strip().splitlines()[-1] == f"best run: {best.info.run_id}"


def test_a_server_that_stays_away_fails_the_run_clearly_and_nothing_half_recorded_is_finished(
    pg: Postgres, server: TrackingServer, tmp_path: Path
) -> None:
    """The server dies while the last step runs and is not back within the patience
    nbmlops gives it: the run stops with a message naming the server; the runs whose
    records could not be written are not FINISHED.

    The server is killed once the store shows the steps before the last one FINISHED and
    the last one's run created (the driver creates a step's run when the step starts, so
    both are written before the kernel reaches the gate's wait)."""
    gate = tmp_path / "gate"
    gate.mkdir()
    write_notebook(tmp_path / "pipe.ipynb", cells(gated="evaluate"))
    experiment = "server-gone"
    impatient = {
        "MLFLOW_TRACKING_URI": server.url,
        "NBMLOPS_TEST_GATE": str(gate),
        "NBMLOPS_SERVER_PATIENCE": "5",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    out = tmp_path / "run.out"
    with open(out, "w") as fh:
        run = subprocess.Popen(
            [NBMLOPS, "run", "pipe.ipynb", "-p", "depth=2", "--experiment", experiment, "-q"],
            cwd=tmp_path,
            env={**os.environ, **impatient},
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_for((gate / "reached-2").exists, run, out)
        c = client(server.url)
        exp_id = c.get_experiment_by_name(experiment).experiment_id

        def recorded() -> dict[str, str]:
            return {
                r.data.tags.get("nbmlops.step", "pipe"): r.info.status
                for r in c.search_runs([exp_id])
            }

        # Wait until train's record is written and evaluate's run created; then take the
        # server away.
        wait_for(
            lambda: recorded().get("train") == "FINISHED" and "evaluate" in recorded(),
            run,
            out,
        )
        os.killpg(server.mlflow_group(), signal.SIGKILL)
        server.proc.wait(60)  # type: ignore[union-attr]
        (gate / "go").touch()
        code = run.wait(600)
        output = out.read_text()
        status = dict(
            pg.query("mlflow", f"SELECT name, status FROM runs WHERE experiment_id = {exp_id}")
        )
    finally:
        if run.poll() is None:
            run.kill()
        server.start()
    assert code == 2, output
    assert (
        f"error: MLflow tracking store {server.url}: the tracking server did not answer" in output
    )
    assert "([Errno 111] Connection refused); is it running? (nbmlops server start)" in output
    assert "Traceback" not in output
    # In PostgreSQL itself: the steps recorded before the outage are FINISHED; the evaluate
    # step and the pipeline run, whose records were cut off, stay RUNNING: nothing could
    # reach the store to end them (the next run of the experiment marks them FAILED, as
    # runs whose driver is gone).
    assert status == {
        "load": "FINISHED",
        "split": "FINISHED",
        "train": "FINISHED",
        "evaluate": "RUNNING",
        "pipe": "RUNNING",
    }


def test_a_run_whose_record_could_not_be_written_is_not_finished(
    project: Path, client: Any, experiment: str
) -> None:
    """A write MLflow refuses (here: a step logs a parameter with another value than the
    run's) leaves that step run and the pipeline run FAILED, saying which record is
    missing, never FINISHED with the record incomplete. (Any store: SQLite here.)"""
    write_notebook(
        project / "pipe.ipynb",
        [
            code("import nbmlops"),
            code("alpha = 1", "parameters"),
            code("nbmlops.log_metric('m', 1.0)", "step:first"),
            code("nbmlops.log_param('alpha', 2)\nnbmlops.log_metric('m2', 2.0)", "step:second"),
        ],
    )
    result = subprocess.run(
        [NBMLOPS, "run", "pipe.ipynb", "--experiment", experiment, "-q"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Changing param values is not allowed" in result.stderr
    [parent] = pipeline_runs(client, experiment)
    steps = step_runs(client, parent)
    assert steps["first"].info.status == "FINISHED"
    assert steps["second"].info.status == "FAILED" and parent.info.status == "FAILED"
    for run in (steps["second"], parent):
        assert run.data.tags["nbmlops.error"].startswith("not every record was written: ")
