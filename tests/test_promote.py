"""`nbmlops promote`, `history`, `rollback` end to end: real runs of a tiny notebook, a real
MLflow store and registry, asserting what a user sees and what the registry recorded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import classifier, pipeline_runs, step_runs, write_notebook
from mlflow import MlflowClient

from nbmlops.cache.objects import decode, object_path
from nbmlops.capture import schema as s
from nbmlops.capture.hashing import hash_data
from nbmlops.capture.profile import sample_frame
from nbmlops.exceptions import NotFound
from nbmlops.promote import history, promote, resolve_model, rollback
from nbmlops.promote import registry as r
from nbmlops.promote.errors import (
    GateSyntaxError,
    NoCandidate,
    NoSuchExperiment,
    PromoteError,
    PromotionRefused,
    UnknownModel,
    UnknownVersion,
)

# The classifier with an integer feature (the served schema has one) and a `fail` parameter
# (`-p fail=True`: evaluate raises after logging, a FAILED run with the best score). `score`
# is logged as given so tests choose the ranking; `depth` makes each run's model differ
# (identical steps would be cached and share one).
TRAIN = classifier(integer_feature=True, fail=True)


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
    assert f"{name}@champion: nothing -> v1\n" in result.stdout
    high = trained.runs["high"]  # not the failed run with score 0.99
    assert f"  run:      {high}  (score=0.9)\n" in result.stdout
    assert "Traceback" not in result.stderr

    client = MlflowClient(trained.tracking_uri)
    model = resolve_model(name, trained.tracking_uri)
    assert (model.version, model.alias, model.run_id) == ("1", "champion", high)
    run = client.get_run(high)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=trained.root, capture_output=True, text=True
    ).stdout.strip()
    steps = step_runs(client, run)
    tags = model.tags
    assert s.Lineage.from_tags(tags) == s.Lineage(
        run_id=high,
        experiment=trained.experiment,
        model_uri=model.source,
        notebook="train.ipynb",
        git_commit=head,
        git_dirty=run.data.tags[s.GIT_DIRTY],
        seed="7",
        env_hash=run.data.tags[s.ENV_HASH],
        code_hashes={
            step: steps[step].data.tags[s.CODE_HASH]
            for step in ("load", "split", "train", "evaluate")
        },
        data=s.data_digests(run.data.tags),
    )
    assert model.source == run.data.tags[s.MODEL_URI]
    assert {"table", "df", "X_train"} <= set(s.data_digests(tags))
    assert s.recorded_metric(tags, "score") == 0.9
    assert s.recorded_metric(tags, "accuracy") == run.data.metrics["accuracy"]

    files = json.loads(tags[s.FILES])
    assert {"MLmodel", "model.skops", "requirements.txt"} <= set(files)
    assert all(len(d) == 64 for d in files.values()) and len(tags[s.DIGEST]) == 64

    # The reference profile is the training DataFrame (X_train), verified by its digest.
    assert tags[s.REFERENCE] == f"runs:/{high}/{s.reference_artifact(name, '1')}"
    profile = r.load_reference(model, trained.tracking_uri)
    assert profile["rows"] == 200 and profile["columns"] == ["a", "b", "c"]
    variable, digest = tags[s.REFERENCE_DATA].split()
    assert (variable, digest) == ("X_train", run.data.tags[s.data_tag("X_train")])
    sample = sample_frame(profile)
    assert list(sample.columns) == ["a", "b", "c"] and len(sample) > 0
    # Saved as Arrow: it loads without running code, and its content is its digest.
    saved = object_path(trained.root / ".nbmlops" / "objects", digest, "arrow")
    frame = decode("arrow", saved.read_bytes())
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
    registered = client.get_registered_model(name)
    assert registered.tags[s.MANAGED] == "true"
    assert s.alias_events(registered.tags) == [event]


def test_a_worse_candidate_or_failed_gate_is_refused_showing_both_values(
    trained: Trained,
) -> None:
    name = model_name()
    high, low = trained.runs["high"], trained.runs["low"]
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
        low,
    )
    assert result.returncode == 1
    assert (
        f"error: not promoting run {low} to {name}@champion: score=0.8 of run {low} is lower "
        f"than score=0.9 of {name} v1 (@champion)\n"
        "  fix: improve the model, or pass --force to promote anyway (the override is recorded)\n"
    ) in result.stderr
    assert "Traceback" not in result.stderr

    other = model_name()
    with pytest.raises(PromotionRefused) as refused:
        promote(
            trained.experiment,
            "score",
            gates=["score>=0.95"],
            model_name=other,
            tracking_uri=trained.tracking_uri,
        )
    assert refused.value.problem == (
        f"not promoting run {high} to {other}@champion: gate score>=0.95 failed: score=0.9"
    )
    assert refused.value.holder is None  # no version of `other` holds the alias
    assert (refused.value.exit_code, refused.value.http_status) == (1, 409)
    # min mode: the lower score wins; against v1 (0.9) it is better.
    lower = promote(
        trained.experiment, "score", mode="min", model_name=name, tracking_uri=trained.tracking_uri
    )
    assert lower.run_id == low and lower.version == "2"
    assert not lower.forced and lower.previous_value == 0.9
    with pytest.raises(PromotionRefused) as refused:  # by min, 0.9 is worse than v2's 0.8
        promote(
            trained.experiment,
            "score",
            mode="min",
            model_name=name,
            run_id=high,
            tracking_uri=trained.tracking_uri,
        )
    assert refused.value.holder == "2"


def test_force_overrides_and_is_recorded_then_rollback_moves_back(trained: Trained) -> None:
    name = model_name()
    high, low = trained.runs["high"], trained.runs["low"]
    first = promote(trained.experiment, "score", model_name=name, tracking_uri=trained.tracking_uri)
    forced = promote(
        trained.experiment,
        "score",
        gates=["accuracy>=2"],
        model_name=name,
        run_id=low,
        force=True,
        tracking_uri=trained.tracking_uri,
    )
    assert forced.forced and forced.version == "2" and forced.previous_version == "1"
    accuracy = MlflowClient(trained.tracking_uri).get_run(low).data.metrics["accuracy"]
    assert forced.overridden == [
        f"gate accuracy>=2 failed: accuracy={accuracy:.6g}",
        f"score=0.8 of run {low} is lower than score=0.9 of {name} v1 (@champion)",
    ]
    tags = resolve_model(f"{name}/2", trained.tracking_uri).tags
    assert tags[s.FORCED] == "; ".join(forced.overridden)

    result = trained.cli("rollback", name)
    assert result.returncode == 0, result.stderr
    assert f"{name}@champion: v2 -> v1\n" in result.stdout
    assert resolve_model(name, trained.tracking_uri).version == first.version == "1"

    shown = trained.cli("history", name)
    assert shown.returncode == 0, shown.stderr
    lines = [ln for ln in shown.stdout.splitlines() if ln.strip()[:1].isdigit()]
    when = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00  \S+"  # time (UTC) and user
    expected = [
        rf"  1  {when}  promote   @champion  - -> v1  run {high}  score=0\.9",
        rf"  2  {when}  promote   @champion  v1 -> v2  run {low}  score=0\.8 \(was 0\.9\)"
        rf"  FORCED: {re.escape('; '.join(forced.overridden))}",
        rf"  3  {when}  rollback  @champion  v2 -> v1  run {high}",
    ]
    assert len(lines) == len(expected), shown.stdout
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    events = history(name, trained.tracking_uri)
    assert [(e.action, e.from_version, e.to_version, e.forced) for e in events] == [
        ("promote", None, "1", False),
        ("promote", "1", "2", True),
        ("rollback", "2", "1", False),
    ]

    assert history(f"{name}@champion", trained.tracking_uri) == events

    # Forward again by version; an unknown version is named with the known ones.
    assert rollback(name, to_version="2", tracking_uri=trained.tracking_uri).to_version == "2"
    for version in ("7", "x"):  # unknown, malformed
        bad = trained.cli("rollback", name, "--to", version)
        assert bad.returncode == 2, bad.stderr
        expected = f"error: model {name!r} has no version {version}\n  fix: pick one of: 1, 2\n"
        assert expected in bad.stderr


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
    with pytest.raises(NoSuchExperiment) as missing:
        promote("nope", "score", tracking_uri=uri)
    assert missing.value.problem == "no experiment 'nope' in the store"
    assert missing.value.fix.startswith("pick one of: ")
    assert trained.experiment in missing.value.fix
    assert isinstance(missing.value, NotFound) and missing.value.http_status == 404
    with pytest.raises(NoCandidate) as no_metric:
        promote(trained.experiment, "f2", tracking_uri=uri)
    assert no_metric.value.problem == (
        f"no finished pipeline run of {trained.experiment!r} has metric 'f2'"
    )
    assert no_metric.value.fix == "pick one of: accuracy, score"
    failed = trained.runs["failed"]
    with pytest.raises(NoCandidate) as not_finished:
        promote(trained.experiment, "score", run_id=failed, tracking_uri=uri)
    assert not_finished.value.problem == f"run {failed} is failed, not finished"
    for run_id in ("0123456789abcdef", "not an id"):  # unknown, malformed
        with pytest.raises(NoCandidate) as no_run:
            promote(trained.experiment, "score", run_id=run_id, tracking_uri=uri)
        assert no_run.value.problem == f"no run {run_id!r} in the store"
    for gate in ("score>>0.9", "score", ">=0.9", "score>=high"):
        with pytest.raises(GateSyntaxError) as bad_gate:
            promote(trained.experiment, "score", gates=[gate], tracking_uri=uri)
        assert bad_gate.value.problem.startswith(f"gate {gate!r}")
    with pytest.raises(UnknownModel) as unknown:
        resolve_model("nope", uri)
    assert unknown.value.problem == "no registered model 'nope'"
    assert unknown.value.http_status == 404
    name = model_name()
    promote(trained.experiment, "score", model_name=name, tracking_uri=uri)
    with pytest.raises(UnknownVersion) as no_alias:
        resolve_model(f"{name}@staging", uri)
    assert no_alias.value.problem == (
        f"model {name!r} has no alias @staging (aliases: @champion (v1))"
    )
    with pytest.raises(UnknownVersion) as no_version:
        resolve_model(f"{name}/5", uri)
    assert (no_version.value.problem, no_version.value.fix) == (
        f"model {name!r} has no version 5",
        "pick one of: 1",
    )
    assert no_version.value.http_status == 404
    with pytest.raises(UnknownVersion) as no_earlier:
        rollback(name, tracking_uri=uri)
    assert no_earlier.value.problem == (
        f"{name}@champion (v1) has no earlier version to go back to"
    )

    for args, expected in (
        (
            ["--experiment", "nope", "--metric", "score"],
            "error: no experiment 'nope' in the store\n",
        ),
        (
            ["--experiment", trained.experiment, "--metric", "f2"],
            "  fix: pick one of: accuracy, score\n",
        ),
        (
            ["--experiment", trained.experiment, "--metric", "score", "--gate", "x=>1"],
            "error: gate 'x=>1' is not METRIC OP NUMBER\n",
        ),
    ):
        result = trained.cli("promote", *args)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
    result = trained.cli("history", "nope")
    assert result.returncode == 2 and "error: no registered model 'nope'\n" in result.stderr


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
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: no training data found (X_train: not in the object store")
    assert warning.endswith(
        "promote from the project folder): no reference profile stored; "
        "drift checks (nbmlops monitor drift) need it"
    )
    model = resolve_model(name, trained.tracking_uri)
    assert s.REFERENCE not in model.tags
    with pytest.raises(PromoteError) as no_profile:
        r.load_reference(model, trained.tracking_uri)
    assert no_profile.value.problem == (
        f"model {model} has no reference profile of its training data"
    )


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
