"""Sweeps on a process pool and on a real dask LocalCluster; eight concurrent runs on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import code, pipeline_runs, step_runs, write_notebook

CELLS = [
    code("import time\nimport nbmlops"),
    code("alpha = 1\nseed = 0", "parameters"),
    code("time.sleep(1)\nbase = list(range(100))", "step:load"),
    code(
        "if alpha == 99:\n    raise ValueError('alpha 99 is not allowed')\n"
        "score = sum(base) * alpha\nnbmlops.log_metric('score', score)",
        "step:train",
    ),
]


def _sweep_points(client: Any, experiment: str) -> tuple[Any, list[Any]]:
    exp = client.get_experiment_by_name(experiment)
    sweeps = client.search_runs([exp.experiment_id], "tags.`nbmlops.kind` = 'sweep'")
    assert len(sweeps) == 1
    sweep = sweeps[0]
    children = [
        r
        for r in pipeline_runs(client, experiment)
        if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id
    ]
    return sweep, children


def _load_misses(client: Any, runs: list[Any]) -> int:
    return sum(step_runs(client, r)["load"].data.tags["nbmlops.cache"] == "miss" for r in runs)


def test_local_sweep_runs_shared_steps_once_and_ranks_the_points(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    result = nbmlops(
        "sweep",
        "pipe.ipynb",
        "-g",
        "alpha=1,3,2",
        "--jobs",
        "2",
        "--metric",
        "score",
        "--experiment",
        experiment,
        check=True,
    )
    sweep, children = _sweep_points(client, experiment)
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    assert sweep.info.status == "FINISHED"
    assert _load_misses(client, children) == 1  # computed once, reused by the other points
    best = max(children, key=lambda r: r.data.metrics["score"])
    assert best.data.params["alpha"] == "3"
    assert result.stdout.strip().splitlines()[-1] == f"best run: {best.info.run_id}"
    assert sweep.data.tags["nbmlops.best_run"] == best.info.run_id
    # The ranking lists the points best first, with a bar each.
    table = result.stdout[result.stdout.index("sweep " + sweep.info.run_id) :]
    rows = [line for line in table.splitlines() if "█" in line]
    assert [row.split()[1] for row in rows] == ["3", "2", "1"]


def test_a_failing_point_does_not_stop_the_others(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    result = nbmlops(
        "sweep",
        "pipe.ipynb",
        "-g",
        "alpha=1,99",
        "-g",
        "seed=0,1",
        "--random",
        "3",
        "--experiment",
        experiment,
    )
    assert result.returncode == 1
    assert "alpha 99 is not allowed" in result.stderr
    assert "step train" in result.stderr
    sweep, children = _sweep_points(client, experiment)
    assert sweep.info.status == "FAILED"
    assert len(children) == 3
    statuses = sorted(r.info.status for r in children)
    failed = [r for r in children if r.info.status == "FAILED"]
    assert all(r.data.params["alpha"] == "99" for r in failed)
    assert "FINISHED" in statuses and "FAILED" in statuses
    assert result.stdout.strip().splitlines()[-1].startswith("best run: ")


def test_sweep_rejects_bad_grids_before_running_anything(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    unknown = nbmlops("sweep", "pipe.ipynb", "-g", "beta=1,2", "--experiment", experiment)
    assert unknown.returncode == 2 and "known parameters: alpha, seed" in unknown.stderr
    wrong_type = nbmlops("sweep", "pipe.ipynb", "-g", "alpha=1,'x'", "--experiment", experiment)
    assert wrong_type.returncode == 2 and "alpha" in wrong_type.stderr
    malformed = nbmlops("sweep", "pipe.ipynb", "-g", "alpha", "--experiment", experiment)
    assert malformed.returncode == 2 and "name=v1,v2" in malformed.stderr
    nowhere = nbmlops(
        "sweep",
        "pipe.ipynb",
        "-g",
        "alpha=1,2",
        "--executor",
        "dask",
        "--scheduler",
        "tcp://127.0.0.1:9",
        "--experiment",
        experiment,
    )
    assert nowhere.returncode == 2 and "no dask scheduler answers" in nowhere.stderr
    assert client.get_experiment_by_name(experiment) is None


def _kernels_under(pids: list[int]) -> list[str]:
    """The IPython kernels running as descendants of the processes ``pids``."""
    import psutil

    found = []
    for pid in pids:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(
                    child.cmdline()
                ):
                    found.append(f"{child.pid}: {' '.join(child.cmdline())}")
            except psutil.NoSuchProcess:
                continue
    return found


def _assert_no_kernels_under(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while kernels := _kernels_under(pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"kernels still running after {timeout} s: {kernels}")
        time.sleep(0.2)


def test_dask_sweep_on_a_local_cluster(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    from distributed import Client, LocalCluster

    write_notebook(project / "pipe.ipynb", CELLS)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        assert len(cluster.workers) == 2
        result = nbmlops(
            "sweep",
            "pipe.ipynb",
            "-g",
            "alpha=1,2,3,4",
            "--executor",
            "dask",
            "--scheduler",
            cluster.scheduler_address,
            "--experiment",
            experiment,
            check=True,
        )
        with Client(cluster) as dask_client:  # the workers keep no kernel after the sweep
            workers = dask_client.run(os.getpid)
        assert len(workers) == 2
        _assert_no_kernels_under(list(workers.values()), timeout=30)
    sweep, children = _sweep_points(client, experiment)
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert _load_misses(client, children) == 1
    assert {r.data.params["alpha"] for r in children} == {"1", "2", "3", "4"}
    best = max(children, key=lambda r: r.data.metrics["score"])
    assert result.stdout.strip().splitlines()[-1] == f"best run: {best.info.run_id}"


def test_eight_concurrent_runs_on_a_new_sqlite_store_are_all_recorded(
    tmp_path: Path,
) -> None:
    """Eight `nbmlops run` processes at once, creating the store together: nothing lost."""
    from mlflow import MlflowClient

    write_notebook(tmp_path / "pipe.ipynb", CELLS)
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    exe = str(Path(sys.executable).parent / "nbmlops")
    procs = [
        subprocess.Popen(
            [exe, "run", "pipe.ipynb", "-p", f"alpha={i}", "--no-cache", "-q"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(1, 9)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out + err
    client = MlflowClient(uri)
    runs = pipeline_runs(client, "pipe")
    assert len(runs) == 8
    assert sorted(int(r.data.params["alpha"]) for r in runs) == list(range(1, 9))
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.metrics["score"] == sum(range(100)) * int(r.data.params["alpha"])
        steps = step_runs(client, r)
        assert set(steps) == {"load", "train"}
        assert all(s.info.status == "FINISHED" for s in steps.values())
        assert steps["train"].data.metrics["score"] == r.data.metrics["score"]
        assert "nbmlops.env_hash" in r.data.tags


@pytest.mark.parametrize("spec", ["alpha=1,2", "alpha=[1,2],[3]"])
def test_grid_values_are_python_literals(spec: str) -> None:
    from nbmlops.run.sweep import parse_grid, points

    grid = parse_grid([spec, "name=rf,gb"])
    assert len(points(grid)) == len(grid["alpha"]) * 2
    assert grid["name"] == ["rf", "gb"]
    assert len(points(grid, sample=1)) == 1


def test_a_worker_that_cannot_see_the_sqlite_store_fails_its_point_with_the_fix(
    tmp_path: Path,
) -> None:
    from nbmlops.run.sweep import run_point

    notebook = write_notebook(tmp_path / "pipe.ipynb", CELLS)
    result = run_point(
        0,
        str(notebook),
        notebook.read_bytes(),
        {"alpha": "1"},
        {
            "tracking_uri": f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}",
            "project_dir": str(tmp_path),
            "output_dir": str(tmp_path / "out"),
            "cache_dir": str(tmp_path / ".nbmlops"),
        },
    )
    assert result.status == "FAILED"
    assert "cannot see the tracking store" in result.error and "--tracking-uri" in result.error


def test_a_warm_kernel_gives_each_point_what_a_fresh_kernel_would(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    """One worker runs three points in one kernel: no leftovers, the same random numbers."""
    cells = [
        code("import random\nimport numpy as np\nimport nbmlops"),
        code("alpha = 1\nseed = 5", "parameters"),
        code(
            "assert 'leftover' not in globals(), 'a variable of the previous point survived'\n"
            "leftover = alpha\n"
            "draw = random.random() + np.random.rand() + np.random.default_rng().random()\n"
            "nbmlops.log_metric('draw', draw * alpha)",
            "step:draw",
        ),
    ]
    write_notebook(project / "pipe.ipynb", cells)
    nbmlops(
        "sweep",
        "pipe.ipynb",
        "-g",
        "alpha=1,2,3",
        "--jobs",
        "1",
        "--no-cache",
        "--experiment",
        experiment,
        check=True,
    )
    _, children = _sweep_points(client, experiment)
    swept = {r.data.params["alpha"]: r.data.metrics["draw"] for r in children}
    alone = f"{experiment}-alone"
    nbmlops("run", "pipe.ipynb", "-p", "alpha=3", "--no-cache", "--experiment", alone, check=True)
    assert pipeline_runs(client, alone)[0].data.metrics["draw"] == swept["3"]
    assert swept["2"] == 2 * swept["1"] and swept["3"] == 3 * swept["1"]
