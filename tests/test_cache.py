"""The step cache, --no-cache/--refresh, resume and `nbmlops cache`: real kernels, a real store."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbformat
from conftest import code, pipeline_runs, step_runs, write_notebook

from nbmlops.cache.objects import object_path

CELLS = [
    code("import numpy as np\nimport nbmlops"),
    code("alpha = 1.0\nscale = 2\nseed = 7", "parameters"),
    code(
        "data = np.random.rand(1000) * scale\nprint('loaded', len(data))",
        "step:load",
    ),
    code("weights = data * alpha + 1\nnoise = np.random.rand()", "step:train"),
    code(
        "score = float(weights.mean())\nnbmlops.log_metric('score', score)\nprint('score', score)",
        "step:report",
    ),
]


def _run(nbmlops: Any, experiment: str, *args: str, check: bool = True) -> Any:
    return nbmlops("run", "pipe.ipynb", "--experiment", experiment, *args, check=check)


def _cache_tags(client: Any, experiment: str) -> dict[str, str]:
    latest = pipeline_runs(client, experiment)[0]
    return {name: r.data.tags["nbmlops.cache"] for name, r in step_runs(client, latest).items()}


def test_unchanged_rerun_hits_every_step_and_replays_what_they_recorded(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    _run(nbmlops, experiment)
    second = _run(nbmlops, experiment)
    for name in ("load", "train", "report"):
        assert f"step {name}: cached (not executed)" in second.stdout, second.stdout

    first_run, latest = pipeline_runs(client, experiment)[1], pipeline_runs(client, experiment)[0]
    first_steps, steps = step_runs(client, first_run), step_runs(client, latest)
    for name in ("load", "train", "report"):
        tags = steps[name].data.tags
        assert tags["nbmlops.cache"] == "hit"
        assert tags["nbmlops.cache_source_run"] == first_steps[name].info.run_id
        assert steps[name].info.status == "FINISHED"
    assert latest.data.tags["nbmlops.cache_hits"] == "3/3"
    assert latest.data.metrics["score"] == first_run.data.metrics["score"]
    assert steps["report"].data.metrics["score"] == first_run.data.metrics["score"]
    # The output notebook shows what the skipped cells printed when they ran.
    output = Path(latest.data.tags["nbmlops.output_dir"]) / "pipe.ipynb"
    texts = "".join(
        "".join(o.get("text", "")) for c in nbformat.read(output, 4).cells for o in c.outputs
    )
    assert "loaded 1000" in texts and "score" in texts


def test_a_parameter_invalidates_only_the_steps_that_read_it(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    _run(nbmlops, experiment)
    _run(nbmlops, experiment, "-p", "alpha=3.0")
    # load does not read alpha; train does; report reads train's (changed) output.
    assert _cache_tags(client, experiment) == {"load": "hit", "train": "miss", "report": "miss"}
    _run(nbmlops, experiment, "-p", "scale=5")
    assert set(_cache_tags(client, experiment).values()) == {"miss"}


def test_changed_last_step_is_the_only_one_executed_and_comments_do_not_count(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    _run(nbmlops, experiment)
    commented = [*CELLS[:3], code("# a comment\n" + CELLS[3].source, "step:train"), CELLS[4]]
    write_notebook(project / "pipe.ipynb", commented)
    _run(nbmlops, experiment)
    assert set(_cache_tags(client, experiment).values()) == {"hit"}
    changed = [*CELLS[:4], code(CELLS[4].source + "\nprint('done')", "step:report")]
    write_notebook(project / "pipe.ipynb", changed)
    _run(nbmlops, experiment)
    assert _cache_tags(client, experiment) == {"load": "hit", "train": "hit", "report": "miss"}


def test_a_partial_rerun_draws_the_same_random_numbers_as_a_full_run(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    cells = [
        *CELLS[:4],
        code("draw = float(np.random.rand())\nnbmlops.log_metric('draw', draw)", "step:report"),
    ]
    write_notebook(project / "pipe.ipynb", cells)
    _run(nbmlops, experiment)
    full = pipeline_runs(client, experiment)[0].data.metrics["draw"]
    cells[4] = code(cells[4].source + "\nprint(draw)", "step:report")
    write_notebook(project / "pipe.ipynb", cells)
    _run(nbmlops, experiment)
    assert _cache_tags(client, experiment) == {"load": "hit", "train": "hit", "report": "miss"}
    assert pipeline_runs(client, experiment)[0].data.metrics["draw"] == full


def test_a_changed_data_file_invalidates_the_step_that_names_it(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    (project / "input.csv").write_text("x\n1\n2\n")
    cells = [
        code("import pandas as pd\nimport nbmlops"),
        code("df = pd.read_csv('input.csv')", "step:load"),
        code("total = int(df.x.sum())\nnbmlops.log_metric('total', total)", "step:report"),
    ]
    write_notebook(project / "pipe.ipynb", cells)
    _run(nbmlops, experiment, "--seed", "1")
    (project / "input.csv").write_text("x\n1\n2\n3\n")
    _run(nbmlops, experiment, "--seed", "1")
    assert _cache_tags(client, experiment) == {"load": "miss", "report": "miss"}
    assert pipeline_runs(client, experiment)[0].data.metrics["total"] == 6


def test_damaged_entries_and_objects_are_recomputed_never_loaded(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    _run(nbmlops, experiment)
    entries = sorted((project / ".nbmlops" / "cache").glob("??/*.json"))
    assert len(entries) == 3
    by_step = {json.loads(p.read_text())["entry"]["step"]: p for p in entries}
    # A torn entry (a crash mid-write without the rename) and a corrupted saved output.
    raw = by_step["report"].read_bytes()
    by_step["report"].write_bytes(raw[: len(raw) // 2])
    train = json.loads(by_step["train"].read_text())["entry"]
    weights = next(o for o in train["outputs"] if o["name"] == "weights")
    obj = object_path(project / ".nbmlops" / "objects", weights["digest"], weights["format"])
    obj.write_bytes(obj.read_bytes()[:-10] + b"0123456789")
    _run(nbmlops, experiment)
    assert _cache_tags(client, experiment) == {"load": "hit", "train": "miss", "report": "miss"}
    assert pipeline_runs(client, experiment)[0].info.status == "FINISHED"
    _run(nbmlops, experiment)  # the entries were rewritten whole
    assert set(_cache_tags(client, experiment).values()) == {"hit"}


def test_an_unpicklable_output_is_named_and_its_step_is_not_cached(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    cells = [
        code("import nbmlops"),
        code("numbers = list(range(10))", "step:load"),
        code("stream = (n * 2 for n in numbers)\ntotal = sum(numbers)", "step:open"),
        code("nbmlops.log_metric('total', total)", "step:report"),
    ]
    write_notebook(project / "pipe.ipynb", cells)
    first = _run(nbmlops, experiment, "--seed", "1")
    assert "'stream'" in first.stdout + first.stderr and "'open'" in first.stdout + first.stderr
    _run(nbmlops, experiment, "--seed", "1")
    assert _cache_tags(client, experiment) == {"load": "hit", "open": "miss", "report": "hit"}
    assert pipeline_runs(client, experiment)[0].info.status == "FINISHED"


def test_no_cache_and_refresh_force_execution(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    _run(nbmlops, experiment)
    _run(nbmlops, experiment, "--no-cache")
    assert set(_cache_tags(client, experiment).values()) == {"miss"}
    _run(nbmlops, experiment, "--refresh", "train")
    # train ran again; its outputs are the same, so report is still a hit.
    assert _cache_tags(client, experiment) == {"load": "hit", "train": "miss", "report": "hit"}
    bad = _run(nbmlops, experiment, "--refresh", "trian", check=False)
    assert bad.returncode == 2
    assert "no step 'trian'" in bad.stderr and "load, train, report" in bad.stderr


def test_resume_starts_at_the_failed_step_with_the_same_parameters(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    cells = [
        *CELLS[:4],
        code(
            "import os\nif os.environ.get('NBMLOPS_TEST_FAIL'):\n    raise RuntimeError('flaky')\n"
            + CELLS[4].source,
            "step:report",
        ),
    ]
    write_notebook(project / "pipe.ipynb", cells)
    os.environ["NBMLOPS_TEST_FAIL"] = "1"
    try:
        failed = _run(nbmlops, experiment, "-p", "alpha=4.0", check=False)
    finally:
        del os.environ["NBMLOPS_TEST_FAIL"]
    assert failed.returncode != 0
    old = pipeline_runs(client, experiment)[0]
    assert old.info.status == "FAILED"

    _run(nbmlops, experiment, "--resume", "last")
    new = pipeline_runs(client, experiment)[0]
    assert new.info.status == "FINISHED"
    assert new.data.tags["nbmlops.resumed_from"] == old.info.run_id
    assert new.data.params["alpha"] == "4.0"
    assert _cache_tags(client, experiment) == {"load": "hit", "train": "hit", "report": "miss"}

    done = _run(nbmlops, experiment, "--resume", new.info.run_id, check=False)
    assert done.returncode == 2 and "nothing to resume" in done.stderr
    both = _run(nbmlops, experiment, "--resume", "last", "-p", "alpha=1.0", check=False)
    assert both.returncode == 2 and "drop the -p" in both.stderr


def test_a_generated_seed_is_part_of_every_key_and_the_run_says_how_to_reuse_steps(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    cells = [code("import random"), code("x = random.random()", "step:draw")]
    write_notebook(project / "pipe.ipynb", cells)
    _run(nbmlops, experiment)
    second = _run(nbmlops, experiment)
    assert _cache_tags(client, experiment) == {"draw": "miss"}
    assert "--seed" in second.stdout
    seed = pipeline_runs(client, experiment)[0].data.tags["nbmlops.seed"]
    _run(nbmlops, experiment, "--seed", seed)
    assert _cache_tags(client, experiment) == {"draw": "hit"}


def test_cache_ls_and_prune(project: Path, nbmlops: Any, experiment: str) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    _run(nbmlops, experiment)
    listed = nbmlops("cache", "ls", check=True).stdout
    assert "3 entries" in listed and "train" in listed and "pipe.ipynb" in listed
    kept = nbmlops("cache", "prune", "--older-than", "30d", check=True).stdout
    assert "removed 0 entries" in kept
    pruned = nbmlops("cache", "prune", "--max-size", "0B", check=True).stdout
    assert "removed 3 entries" in pruned
    assert "empty" in nbmlops("cache", "ls", check=True).stdout
    bad = nbmlops("cache", "prune", "--older-than", "soon")
    assert bad.returncode == 2 and "30d" in bad.stderr


def test_a_run_against_another_store_reuses_nothing_from_the_first(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    """Hits point at runs and logged models of the store that recorded them: a run against
    another store (say, a team server after a local mlflow.db) executes its steps and can be
    promoted there."""
    cells = [
        code(
            "import numpy as np\nimport nbmlops\nfrom sklearn.linear_model import LinearRegression"
        ),
        code("seed = 3", "parameters"),
        code("X = np.arange(20.0).reshape(-1, 1)\ny = 2 * X[:, 0] + 1", "step:load"),
        code(
            "model = LinearRegression().fit(X, y)\n"
            "nbmlops.log_model(model, input_example=X[:2])\n"
            "nbmlops.log_metric('r2', model.score(X, y))",
            "step:train",
        ),
    ]
    write_notebook(project / "pipe.ipynb", cells)
    _run(nbmlops, experiment)
    other = f"sqlite:///{project / 'other' / 'mlflow.db'}"
    second = nbmlops("run", "pipe.ipynb", "--experiment", experiment, "--tracking-uri", other)
    assert second.returncode == 0, second.stdout + second.stderr
    from mlflow import MlflowClient

    other_client = MlflowClient(other)
    latest = pipeline_runs(other_client, experiment)[0]
    steps = step_runs(other_client, latest)
    assert {name: r.data.tags["nbmlops.cache"] for name, r in steps.items()} == {
        "load": "miss",
        "train": "miss",
    }
    promoted = nbmlops(
        "promote", "--experiment", experiment, "--metric", "r2", "--tracking-uri", other
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    # Back on the first store, the first run's steps are still reused.
    _run(nbmlops, experiment)
    assert set(_cache_tags(client, experiment).values()) == {"hit"}
