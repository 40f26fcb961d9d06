"""`nbmlops promote`, `history`, `rollback` end to end: real runs of a tiny notebook, a real
MLflow store and registry, asserting what a user sees and what the registry recorded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import code, pipeline_runs, step_runs, write_notebook
from mlflow import MlflowClient

from nbmlops.capture.hashing import hash_data
from nbmlops.capture.profile import sample_frame
from nbmlops.promote import history, promote, resolve_model, rollback
from nbmlops.promote import registry as r
from nbmlops.promote.errors import (
    GateSyntaxError,
    NoCandidate,
    NoSuchExperiment,
    PromotionRefused,
    UnknownModel,
    UnknownVersion,
)

# A tiny classifier pipeline; `score` is logged as given so tests choose the ranking
# (`depth` makes each run's model differ: identical steps would be cached and share one), and
# `fail` makes the last step raise after logging it (a FAILED run with the best score).
TRAIN = [
    code(
        "import numpy as np\nimport pandas as pd\n"
        "from sklearn.tree import DecisionTreeClassifier\nimport nbmlops"
    ),
    code("score = 0.9\ndepth = 3\nfail = False\nrows = 300\nseed = 7", "parameters"),
    code(
        "rng = np.random.default_rng(seed)\n"
        "df = pd.DataFrame({'a': rng.normal(size=rows), 'b': rng.integers(0, 10, rows),"
        " 'c': rng.normal(size=rows)})\n"
        "df['y'] = ((df['a'] + df['b'] / 10) > 0.5).astype(int)",
        "step:load",
    ),
    code(
        "X = df[['a', 'b', 'c']]\n"
        "X_train, X_test = X.iloc[:200], X.iloc[200:]\n"
        "y_train, y_test = df['y'].iloc[:200], df['y'].iloc[200:]",
        "step:split",
    ),
    code(
        "model = DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(X_train, y_train)\n"
        "nbmlops.log_model(model, input_example=X_train)",
        "step:train",
    ),
    code(
        "nbmlops.log_metric('accuracy', float((model.predict(X_test) == y_test).mean()))\n"
        "nbmlops.log_metric('score', score)\n"
        "if fail:\n    raise RuntimeError('boom')",
        "step:evaluate",
    ),
]


@dataclass
class Trained:
    """A project folder with pipeline runs of TRAIN in one experiment."""

    root: Path
    tracking_uri: str
    experiment: str
    runs: dict[str, str]  # label -> pipeline run id
    cli: Callable[..., subprocess.CompletedProcess[str]]


def make_cli(root: Path, env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "nbmlops"), *args],
            cwd=root,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def train(root: Path, tracking_uri: str, runs: dict[str, list[str]]) -> Trained:
    """Run TRAIN once per entry of ``runs`` (label -> -p arguments) in a git project."""
    write_notebook(root / "train.ipynb", TRAIN)
    for args in (
        ["init", "-q"],
        ["add", "train.ipynb"],
        ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "nb"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True)
    experiment = f"promote-{uuid.uuid4().hex[:8]}"
    cli = make_cli(root, {"MLFLOW_TRACKING_URI": tracking_uri})
    ids = {}
    client = MlflowClient(tracking_uri)
    for label, params in runs.items():
        p = [x for kv in params for x in ("-p", kv)]
        result = cli("run", "train.ipynb", "-q", "--experiment", experiment, *p)
        fails = "fail=True" in params
        assert (result.returncode != 0) == fails, result.stdout + result.stderr
        ids[label] = pipeline_runs(client, experiment)[0].info.run_id
    return Trained(root, tracking_uri, experiment, ids, cli)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> Any:
    root = tmp_path_factory.mktemp("promote-project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        yield train(
            root,
            tracking_uri,
            {
                "low": ["score=0.8", "depth=2"],
                "high": ["score=0.9", "depth=3"],
                "failed": ["score=0.99", "depth=4", "fail=True"],
            },
        )


def model_name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def test_promote_picks_the_best_finished_run_and_tags_its_lineage(trained: Trained) -> None:
    name = model_name()
    result = trained.cli(
        "promote", "--experiment", trained.experiment, "--metric", "score", "--model-name", name
    )
    assert result.returncode == 0, result.stderr
    assert f"{name}@champion: nothing -> v1" in result.stdout
    assert trained.runs["high"] in result.stdout  # not the failed run with score 0.99
    assert "Traceback" not in result.stderr

    client = MlflowClient(trained.tracking_uri)
    model = resolve_model(name, trained.tracking_uri)
    assert (model.version, model.alias, model.run_id) == ("1", "champion", trained.runs["high"])
    run = client.get_run(trained.runs["high"])
    tags = model.tags
    assert tags[r.RUN_ID] == trained.runs["high"]
    assert tags[r.NOTEBOOK] == "train.ipynb"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=trained.root, capture_output=True, text=True
    ).stdout.strip()
    assert tags[r.GIT_COMMIT] == head
    assert tags[r.SEED] == "7"
    assert tags[r.ENV_HASH] == run.data.tags["nbmlops.env_hash"]
    assert tags[r.MODEL_URI] == run.data.tags["nbmlops.model_uri"] == model.source
    steps = step_runs(client, run)
    assert {
        k.removeprefix(r.CODE_HASH_PREFIX): v
        for k, v in tags.items()
        if k.startswith(r.CODE_HASH_PREFIX)
    } == {
        s: steps[s].data.tags["nbmlops.code_hash"] for s in ("load", "split", "train", "evaluate")
    }
    assert tags["nbmlops.data.X_train"] == run.data.tags["nbmlops.data.X_train"]
    assert float(tags[f"{r.METRIC_PREFIX}score"]) == 0.9

    files = json.loads(tags[r.FILES])
    assert {"MLmodel", "model.skops", "requirements.txt"} <= set(files)
    assert all(len(d) == 64 for d in files.values()) and len(tags[r.DIGEST]) == 64

    # The reference profile is the training DataFrame (X_train), verified by its digest.
    profile = r.load_reference(model, trained.tracking_uri)
    assert profile["rows"] == 200 and profile["columns"] == ["a", "b", "c"]
    assert tags[r.REFERENCE_DATA].startswith("X_train ")
    sample = sample_frame(profile)
    assert list(sample.columns) == ["a", "b", "c"] and len(sample) > 0
    digest = tags[r.REFERENCE_DATA].split()[1]
    assert digest == run.data.tags["nbmlops.data.X_train"]
    saved = trained.root / ".nbmlops" / "objects" / digest[:2] / f"{digest}.pkl"
    import cloudpickle

    frame = cloudpickle.loads(saved.read_bytes())
    assert hash_data(frame) == digest
    assert sample["a"].tolist() == frame["a"].iloc[sample.index].tolist()

    [event] = history(name, trained.tracking_uri)
    assert (event.action, event.from_version, event.to_version, event.forced) == (
        "promote",
        None,
        "1",
        False,
    )
    assert event.metric == "score" and event.value == 0.9 and event.user


def test_a_worse_candidate_or_failed_gate_is_refused_showing_both_values(
    trained: Trained,
) -> None:
    name = model_name()
    promote(trained.experiment, "score", model_name=name, tracking_uri=trained.tracking_uri)

    result = trained.cli(
        "promote",
        "--experiment",
        trained.experiment,
        "--metric",
        "score",
        "--model-name",
        name,
        "--run",
        trained.runs["low"],
    )
    assert result.returncode == 1
    assert "score=0.8" in result.stderr and "score=0.9" in result.stderr
    assert f"{name} v1 (@champion)" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.stderr

    with pytest.raises(PromotionRefused, match=r"gate score>=0.95 failed: score=0.9"):
        promote(
            trained.experiment,
            "score",
            gates=["score>=0.95"],
            model_name=model_name(),
            tracking_uri=trained.tracking_uri,
        )
    # min mode: the lower score wins; against v1 (0.9) it is better.
    lower = promote(
        trained.experiment, "score", mode="min", model_name=name, tracking_uri=trained.tracking_uri
    )
    assert lower.run_id == trained.runs["low"] and lower.version == "2"
    assert not lower.forced and lower.previous_value == 0.9


def test_force_overrides_and_is_recorded_then_rollback_moves_back(trained: Trained) -> None:
    name = model_name()
    first = promote(trained.experiment, "score", model_name=name, tracking_uri=trained.tracking_uri)
    forced = promote(
        trained.experiment,
        "score",
        gates=["accuracy>=2"],
        model_name=name,
        run_id=trained.runs["low"],
        force=True,
        tracking_uri=trained.tracking_uri,
    )
    assert forced.forced and forced.version == "2" and forced.previous_version == "1"
    assert any("accuracy>=2" in o for o in forced.overridden)
    assert any("score=0.8" in o and "score=0.9" in o for o in forced.overridden)
    assert r.FORCED in resolve_model(f"{name}/2", trained.tracking_uri).tags

    result = trained.cli("rollback", name)
    assert result.returncode == 0, result.stderr
    assert f"{name}@champion: v2 -> v1" in result.stdout
    assert resolve_model(name, trained.tracking_uri).version == first.version == "1"

    shown = trained.cli("history", name)
    assert shown.returncode == 0, shown.stderr
    lines = [ln for ln in shown.stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert len(lines) == 3
    assert "promote" in lines[0] and "- -> v1" in lines[0] and "score=0.9" in lines[0]
    assert "promote" in lines[1] and "FORCED" in lines[1] and "score=0.8 (was 0.9)" in lines[1]
    assert "rollback" in lines[2] and "v2 -> v1" in lines[2]
    events = history(name, trained.tracking_uri)
    assert [(e.action, e.from_version, e.to_version, e.forced) for e in events] == [
        ("promote", None, "1", False),
        ("promote", "1", "2", True),
        ("rollback", "2", "1", False),
    ]

    assert history(f"{name}@champion", trained.tracking_uri) == events

    # Forward again by version; an unknown version is named with the known ones.
    assert rollback(name, to_version="2", tracking_uri=trained.tracking_uri).to_version == "2"
    bad = trained.cli("rollback", name, "--to", "7")
    assert bad.returncode == 2 and "no version 7" in bad.stderr and "1, 2" in bad.stderr


def test_promoting_the_same_run_again_reuses_its_version(trained: Trained) -> None:
    name = model_name()
    client = MlflowClient(trained.tracking_uri)
    first = promote(trained.experiment, "score", model_name=name, tracking_uri=trained.tracking_uri)
    again = promote(trained.experiment, "score", model_name=name, tracking_uri=trained.tracking_uri)
    assert again.unchanged and again.version == first.version and again.reused_version
    # Moved away and promoted back: still the same version, and the move is recorded.
    promote(
        trained.experiment,
        "score",
        model_name=name,
        run_id=trained.runs["low"],
        force=True,
        tracking_uri=trained.tracking_uri,
    )
    back = promote(trained.experiment, "score", model_name=name, tracking_uri=trained.tracking_uri)
    assert back.version == "1" and back.reused_version and not back.unchanged
    assert len(client.search_model_versions(f"name='{name}'")) == 2
    assert [e.to_version for e in history(name, trained.tracking_uri)] == ["1", "2", "1"]


def test_mistakes_are_named_with_the_fix(trained: Trained) -> None:
    uri = trained.tracking_uri
    with pytest.raises(NoSuchExperiment, match=r"no experiment 'nope'.*\n.*fix: pick one of:.*"):
        promote("nope", "score", tracking_uri=uri)
    with pytest.raises(NoCandidate, match=r"has metric 'f2'\n  fix: pick one of: accuracy, score"):
        promote(trained.experiment, "f2", tracking_uri=uri)
    with pytest.raises(NoCandidate, match="is failed, not finished"):
        promote(trained.experiment, "score", run_id=trained.runs["failed"], tracking_uri=uri)
    for gate in ("score>>0.9", "score", ">=0.9", "score>=high"):
        with pytest.raises(GateSyntaxError, match="gate"):
            promote(trained.experiment, "score", gates=[gate], tracking_uri=uri)
    with pytest.raises(UnknownModel, match="no registered model 'nope'"):
        resolve_model("nope", uri)
    name = model_name()
    promote(trained.experiment, "score", model_name=name, tracking_uri=uri)
    with pytest.raises(UnknownVersion, match=r"no alias @staging \(aliases: @champion \(v1\)\)"):
        resolve_model(f"{name}@staging", uri)
    with pytest.raises(UnknownVersion, match=r"no version 5\n  fix: pick one of: 1"):
        resolve_model(f"{name}/5", uri)
    with pytest.raises(UnknownVersion, match="no earlier version"):
        rollback(name, tracking_uri=uri)

    for args, expected in (
        (["--experiment", "nope", "--metric", "score"], "no experiment 'nope'"),
        (["--experiment", trained.experiment, "--metric", "f2"], "pick one of: accuracy, score"),
        (["--experiment", trained.experiment, "--metric", "score", "--gate", "x=>1"], "gate"),
    ):
        result = trained.cli("promote", *args)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
    result = trained.cli("history", "nope")
    assert result.returncode == 2 and "no registered model 'nope'" in result.stderr


def test_without_the_training_data_promote_warns_that_drift_checks_need_it(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another folder: the run's saved outputs are not there (nor where the run wrote them).
    objects = trained.root / ".nbmlops" / "objects"
    moved = tmp_path / "objects"
    shutil.move(objects, moved)
    try:
        monkeypatch.chdir(tmp_path)
        name = model_name()
        result = make_cli(tmp_path, {"MLFLOW_TRACKING_URI": trained.tracking_uri})(
            "promote", "--experiment", trained.experiment, "--metric", "score", "--model-name", name
        )
    finally:
        shutil.move(moved, objects)
    assert result.returncode == 0, result.stderr
    assert "warning: no training data found" in result.stderr
    assert "drift checks" in result.stderr and "X_train" in result.stderr
    model = resolve_model(name, trained.tracking_uri)
    assert r.REFERENCE not in model.tags
    from nbmlops.promote.errors import PromoteError

    with pytest.raises(PromoteError, match="no reference profile"):
        r.load_reference(model, trained.tracking_uri)


def test_a_promotion_in_process_leaves_mlflow_pointing_where_it_was(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Jupyter server and the widget promote in their own process: afterwards MLflow
    must not stay pinned to that store (nor export it to every child process)."""
    import mlflow

    from nbmlops.promote.registry import using_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # a process where nothing pinned
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]  # them, as a fresh server or kernel
    with using_store(tracking_uri) as store:
        assert mlflow.get_registry_uri() == store == tracking_uri
        assert os.environ["MLFLOW_REGISTRY_URI"] == store
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert mlflow.get_tracking_uri() == other
    assert mlflow.get_registry_uri() == other
