"""Edge cases a user meets: relative stores, setup-cell calls, untracked notebooks, seeds."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import nbformat
from conftest import code, pipeline_runs, step_runs, write_notebook


def test_relative_sqlite_uri_is_one_store_for_driver_and_kernel(
    project: Path, nbmlops: Any, experiment: str
) -> None:
    # The notebook lives in a subfolder: papermill runs it there, the kernel logs a model.
    write_notebook(
        project / "nbs" / "m.ipynb",
        [
            code(
                "import numpy as np\nfrom sklearn.linear_model import LinearRegression\nimport nbmlops"
            ),
            code(
                "X = np.arange(20.0).reshape(10, 2)\nmodel = LinearRegression().fit(X, X.sum(axis=1))\n"
                "nbmlops.log_model(model, input_example=X)",
                "step:train",
            ),
        ],
    )
    nbmlops(
        "run",
        "nbs/m.ipynb",
        "--tracking-uri",
        "sqlite:///local.db",
        "--experiment",
        experiment,
        "-q",
        check=True,
    )
    assert not (project / "nbs" / "local.db").exists()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'local.db'}")
    [parent] = pipeline_runs(client, experiment)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["nbmlops.model_uri"].startswith("models:/")


def test_setup_cell_calls_go_to_the_pipeline_run(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(
        project / "s.ipynb",
        [
            code("import io, nbmlops\nnbmlops.log_param('source', 'setup')"),
            code("df = nbmlops.read_csv(io.StringIO('a,b\\n1,2\\n'), name='inline')", "step:load"),
        ],
    )
    nbmlops("run", "s.ipynb", "--experiment", experiment, "-q", check=True)
    [parent] = pipeline_runs(client, experiment)
    assert parent.data.params["source"] == "setup"
    load = step_runs(client, parent)["load"]
    assert "source" not in load.data.params  # setup is not the first step
    assert load.data.tags["nbmlops.data.inline"] == parent.data.tags["nbmlops.data.inline"]


def test_log_model_in_a_setup_cell_says_where_to_move_it(
    project: Path, nbmlops: Any, experiment: str
) -> None:
    write_notebook(
        project / "setup_model.ipynb",
        [
            code(
                "import numpy as np\nfrom sklearn.linear_model import LinearRegression\nimport nbmlops\n"
                "m = LinearRegression().fit(np.ones((3, 1)), np.ones(3))\nnbmlops.log_model(m)"
            ),
            code("x = 1", "step:s"),
        ],
    )
    result = nbmlops("run", "setup_model.ipynb", "--experiment", experiment)
    assert result.returncode == 1
    assert "step '(setup)' failed in cell 1" in result.stderr
    assert (
        "log_model: called in a setup cell, before any step; move it into a step" in result.stderr
    )


def test_untracked_notebook_in_a_clean_checkout_is_recorded_dirty(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    for args in (
        ["init", "-q"],
        [
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "empty",
        ],
    ):
        subprocess.run(["git", *args], cwd=project, check=True)
    write_notebook(project / "new.ipynb", [code("x = 1", "step:s")])
    nbmlops("run", "new.ipynb", "--experiment", experiment, "-q", check=True)
    [parent] = pipeline_runs(client, experiment)
    assert parent.data.tags["nbmlops.git_dirty"] == "true"


def test_seed_parameter_without_a_value_gets_the_recorded_seed(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(
        project / "seedless.ipynb",
        [
            code("seed = None", "parameters"),
            code("import nbmlops\nnbmlops.log_metric('seen', seed)", "step:s"),
        ],
    )
    nbmlops("run", "seedless.ipynb", "--experiment", experiment, "-q", check=True)
    [run] = pipeline_runs(client, experiment)
    seed = run.data.tags["nbmlops.seed"]
    assert run.data.tags["nbmlops.seed_source"] == "generated"
    assert run.data.params["seed"] == seed and run.data.metrics["seen"] == float(seed)
    out_of_range = nbmlops("run", "seedless.ipynb", "--seed", str(2**32))
    assert out_of_range.returncode == 2 and "is outside 0 .. 4294967295" in out_of_range.stderr


def test_unknown_kernel_names_the_installed_ones(project: Path, nbmlops: Any) -> None:
    spec = {"name": "no-such-kernel", "display_name": "X", "language": "python"}
    write_notebook(project / "k.ipynb", [code("x = 1", "step:s")], metadata={"kernelspec": spec})
    result = nbmlops("run", "k.ipynb")
    assert result.returncode == 2
    assert "asks for a Jupyter kernel named 'no-such-kernel'" in result.stderr
    assert "python3" in result.stderr and "ipykernel install" in result.stderr


def test_papermill_output_as_source_keeps_cell_indices(project: Path, nbmlops: Any) -> None:
    # A notebook saved from a papermill run already has an injected-parameters cell.
    write_notebook(
        project / "reused.ipynb",
        [
            code("x = 1", "parameters"),
            code("# Parameters\nx = 2", "injected-parameters"),
            code("y = x * 10", "step:a"),
            code("raise ValueError(f'x is {x}')", "step:b"),
        ],
    )
    replaced = nbmlops("run", "reused.ipynb", "-p", "x=7")
    assert "step 'b' failed in cell 4" in replaced.stderr and "x is 7" in replaced.stderr
    kept = nbmlops("run", "reused.ipynb")  # without -p papermill runs the old cell, as it does
    assert "step 'b' failed in cell 4" in kept.stderr and "x is 2" in kept.stderr


def test_papermill_error_markers_in_the_source_do_not_shift_cell_numbers(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(
        project / "fails.ipynb",
        [
            code("x = 1", "parameters"),
            code("y = x * 10", "step:a"),
            code("raise ValueError(f'x is {x}')", "step:b"),
        ],
    )
    first = nbmlops("run", "fails.ipynb", "--output-dir", "out", "--experiment", experiment)
    assert "step 'b' failed in cell 3" in first.stderr
    partial = project / "out" / "fails.partial.ipynb"
    assert "papermill-error-cell-tag" in partial.read_text()  # papermill's two markers
    again = nbmlops("run", str(partial), "--experiment", experiment)
    assert "step 'b' failed in cell 3" in again.stderr, again.stderr
    parent = pipeline_runs(client, experiment)[0]
    assert parent.data.tags["nbmlops.failed_cell"] == "3"
    assert step_runs(client, parent)["a"].data.tags["nbmlops.cells"] == "2"


def test_a_kernelspec_named_python_runs_as_papermill_runs_it(project: Path, nbmlops: Any) -> None:
    spec = {"name": "python", "display_name": "Python", "language": "python"}
    write_notebook(project / "k.ipynb", [code("x = 1", "step:s")], metadata={"kernelspec": spec})
    result = nbmlops("run", "k.ipynb", "-q")
    assert result.returncode == 0, result.stderr


def test_sys_exit_0_stops_the_run_successfully_and_the_rest_is_recorded_skipped(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(
        project / "stop.ipynb",
        [
            code("import sys\nimport nbmlops"),
            code("fresh = False\nseed = 1", "parameters"),
            code("rows = 0\nnbmlops.log_metric('rows', rows)", "step:load"),
            code("if not fresh:\n    sys.exit(0)\nprint('checked')", "step:check"),
            code("print('training')", "step:train"),
            code("print('done')", "Step:report"),  # misspelt: part of train, and a warning
        ],
    )
    result = nbmlops("run", "stop.ipynb", "--experiment", experiment, "--output-dir", "out")
    assert result.returncode == 0, result.stderr
    assert "step check stopped the run with sys.exit(0); not run: train" in result.stdout
    assert "warning: cell 6: tag 'Step:report' is ignored; did you mean" in result.stdout
    parent = pipeline_runs(client, experiment)[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["nbmlops.stopped_by"] == "check"
    assert parent.data.tags["nbmlops.skipped"] == "train"
    steps = step_runs(client, parent)
    assert set(steps) == {"load", "check"}  # a skipped step has no step run
    assert steps["check"].info.status == "FINISHED"
    assert (project / "out" / "stop.ipynb").exists()  # the output notebook, as for any run
    executed = nbformat.read(str(project / "out" / "stop.ipynb"), as_version=4)
    train = next(c for c in executed.cells if "training" in c.source)
    assert train.outputs == [] and train.execution_count is None
    # A step that stopped the run is not cached: a hit could not stop it again.
    again = nbmlops("run", "stop.ipynb", "--experiment", experiment, "-q", check=True)
    assert "step 2/3 check: started" in again.stdout and "not run: train" in again.stdout
    # A non-zero exit is a failure, as before.
    going = nbmlops("run", "stop.ipynb", "--experiment", experiment, "-p", "fresh=True")
    assert going.returncode == 0 and "training" in going.stdout
    cells = (project / "stop.ipynb").read_text().replace("sys.exit(0)", "sys.exit(3)")
    (project / "stop.ipynb").write_text(cells)
    failed = nbmlops("run", "stop.ipynb", "--experiment", experiment)
    assert failed.returncode == 1 and "SystemExit: 3" in failed.stderr
