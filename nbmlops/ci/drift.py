"""``nbmlops ci --on-drift MODEL --current DATA``: check drift, retrain only on drift
(and ``--on-performance MODEL``: the same loop on the labelled predictions' performance).

1. ``monitor.check.check_and_retrain`` (what ``nbmlops monitor drift --retrain`` runs):
   the model's reference profile against DATA, with the pipeline's drift thresholds. No
   drift: nothing is retrained, the command exits 0. On drift: the reports are written
   (``.nbmlops/drift/<time>/``) and the model's pipeline is retrained (tagged with the
   report), with DATA's path in the pipeline's ``drift.data_parameter`` if it names one.
2. The retrained run's steps, gates and test commands are checked as in ``nbmlops ci``
   (``PipelineRun``).
3. With ``promote``, a retrained run that passed is promoted when it beats the champion
   **on the current data**: with ``drift.target`` (DATA's label column) both models predict
   DATA's rows and are scored by the promotion metric; the new one must be strictly better
   (a tie keeps the champion). The promotion then overrides ``promote``'s comparison of the
   recorded metrics (which came from different data), and the history records it as
   forced. Without ``drift.target``, ``promote``'s own rule on the recorded metrics decides.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, TextIO

from nbmlops.capture.schema import MODEL_URI, MODES
from nbmlops.ci.core import CiResult, end_dead
from nbmlops.ci.pipelines import FAILED, PASSED, Check, Outcome, PipelineRun, check_parameters
from nbmlops.ci.promotion import promote_outcome
from nbmlops.config import ConfigError, PipelineConfig, ProjectConfig
from nbmlops.exceptions import NbmlopsError


def drift_loop(
    config: ProjectConfig,
    model: str,
    current: str,
    *,
    tracking_uri: str,
    promote: bool = False,
    stream: TextIO,
    cache_dir: str | None = None,
) -> CiResult:
    """Check ``model`` for drift on ``current``; on drift retrain, check, maybe promote."""
    from nbmlops.monitor.check import DriftOutcome, check_and_retrain

    pipeline = config.for_model(model)
    check_parameters(pipeline, config.path.name)
    _check_data_parameter(pipeline, config.path.name)
    if "@" not in model and "/" not in model and pipeline.promote:
        model = f"{model}@{pipeline.promote.alias}"
    d = pipeline.drift
    data = {d.data_parameter: str(Path(current).resolve())} if d.data_parameter else {}
    result = CiResult([])
    run = PipelineRun(
        pipeline, root=config.root, tracking_uri=tracking_uri, stream=stream, cache_dir=cache_dir
    )
    t0 = time.monotonic()

    def checked(found: DriftOutcome) -> None:
        drift, label = found.result, found.model or model
        stream.write(f"drift check of {label} on {current}: {drift.summary()}\n")
        detail = "\n".join([f"rule: {drift.thresholds.rule()}", *drift.notes()])
        seconds = time.monotonic() - t0
        result.extra.append(Check("drift", label, PASSED, seconds, drift.summary(), detail))
        if found.retrains:
            stream.write(
                f"drift report: {found.reports[-1]}\nretraining: pipeline {pipeline.name}\n"
            )
            end_dead(pipeline.experiment, tracking_uri, stream)
            run.start()

    found = check_and_retrain(
        current,
        model=model,
        thresholds=d.thresholds,
        allow_missing_columns=d.allow_missing_columns,
        retrain_notebook=pipeline.notebook,
        parameters={**pipeline.parameter_texts(), **data},
        tracking_uri=tracking_uri,
        on_checked=checked,
        **run.options(),
    )
    label = found.model or model
    if not found.retrains:
        result.notes.append(f"no drift in {label}: nothing retrained")
        return result
    outcome = run.checked(found.run, found.failure)
    outcome.trigger = f"retrained on drift: {found.result.summary()} (report {found.reports[-1]})"
    result.outcomes.append(outcome)
    if not promote:
        return result
    if not outcome.passed:
        result.notes.append("nothing promoted: the retrained run failed a check")
        return result
    check = _promote_on_fresh_data(outcome, label, current, tracking_uri)
    stream.write(f"{check.name}: {check.message}\n")
    result.promotions.append(check)
    return result


def performance_loop(
    config: ProjectConfig,
    model: str,
    *,
    tracking_uri: str,
    promote: bool = False,
    stream: TextIO,
    cache_dir: str | None = None,
) -> CiResult:
    """``nbmlops ci --on-performance MODEL``: check ``model``'s labelled predictions with its
    pipeline's ``monitor`` rule; on an alert retrain (tagged with the performance report),
    check, and with ``promote`` promote by ``promote``'s rule on the recorded metrics."""
    from nbmlops.monitor.check import PerformanceOutcome, check_performance
    from nbmlops.monitor.performance import Rule

    pipeline = config.for_model(model)
    check_parameters(pipeline, config.path.name)
    m = pipeline.monitor
    if m.performance is None and m.max_drop is None:
        raise ConfigError(
            config.path.name,
            f"{pipeline.key}.monitor",
            "sets no performance rule",
            'add monitor = { performance = "f1>=0.9" } (or max_drop = 0.05)',
        )
    if "@" not in model and "/" not in model and pipeline.promote:
        model = f"{model}@{pipeline.promote.alias}"
    result = CiResult([])
    run = PipelineRun(
        pipeline, root=config.root, tracking_uri=tracking_uri, stream=stream, cache_dir=cache_dir
    )
    t0 = time.monotonic()

    def checked(found: PerformanceOutcome) -> None:
        perf = found.result
        stream.write(f"performance check of {perf.model}: {perf.summary()}\n")
        seconds = time.monotonic() - t0
        result.extra.append(
            Check("performance", perf.model, PASSED, seconds, perf.summary(), f"rule: {perf.rule}")
        )
        if found.retrains:
            stream.write(
                f"performance report: {found.reports[0]}\nretraining: pipeline {pipeline.name}\n"
            )
            end_dead(pipeline.experiment, tracking_uri, stream)
            run.start()

    found = check_performance(
        model,
        rule=Rule(gate=m.performance, max_drop=m.max_drop),
        segments=m.segments,
        retrain_notebook=pipeline.notebook,
        parameters=pipeline.parameter_texts(),
        tracking_uri=tracking_uri,
        on_checked=checked,
        **run.options(),
    )
    if not found.retrains:
        result.notes.append(f"{found.result.model} performs within its rule: nothing retrained")
        return result
    outcome = run.checked(found.run, found.failure)
    outcome.trigger = (
        f"retrained on performance: {found.result.summary()} (report {found.reports[0]})"
    )
    result.outcomes.append(outcome)
    if promote:
        if outcome.passed:
            check = promote_outcome(outcome, tracking_uri)
            stream.write(f"{check.name}: {check.message}\n")
            result.promotions.append(check)
        else:
            result.notes.append("nothing promoted: the retrained run failed a check")
    return result


def _check_data_parameter(pipeline: PipelineConfig, config_file: str) -> None:
    from nbmlops.notebook.pipeline import load_pipeline

    name = pipeline.drift.data_parameter
    known = load_pipeline(pipeline.notebook).parameters
    if name and name not in known:
        raise ConfigError(
            config_file,
            f"{pipeline.key}.drift.data_parameter",
            f"{pipeline.notebook.name} has no parameter {name!r}",
            f"name one of its parameters: {', '.join(known) or 'none (add a parameters cell)'}",
        )


def _promote_on_fresh_data(outcome: Outcome, label: str, current: str, uri: str) -> Check:
    pipeline = outcome.pipeline
    rule, target = pipeline.promote, pipeline.drift.target
    if rule is None or not target:
        check = promote_outcome(outcome, uri)
        if rule is not None:
            check.message += " (by the recorded metrics: set drift.target to compare on the data)"
        return check
    try:
        new, old = _scores(pipeline, outcome.run_id or "", label, current, target, uri)
    except NbmlopsError as exc:
        return Check("promote", label, FAILED, message=exc.problem, detail=str(exc))
    on_data = f"on {Path(current).name}: {rule.metric} {new:.6g} (new run) vs {old:.6g} ({label})"
    better = new > old if rule.mode == MODES[0] else new < old  # max: higher is better
    if not better:
        return Check("promote", label, PASSED, message=f"kept {label}: {on_data}")
    check = promote_outcome(outcome, uri, force=True)
    check.message += f"; {on_data}"
    return check


def _scores(
    pipeline: PipelineConfig, run_id: str, label: str, current: str, target: str, uri: str
) -> tuple[float, float]:
    """The promotion metric of the new run's model and of ``label`` on ``current``."""
    import mlflow.pyfunc

    from nbmlops.capture.tracking import open_client
    from nbmlops.monitor.data import read_current
    from nbmlops.promote.registry import resolve_model, using_store
    from nbmlops.serve.skew import load_offline

    assert pipeline.promote is not None
    metric = pipeline.promote.metric
    if metric not in SCORERS:
        raise NbmlopsError(
            f"{pipeline.key}.promote.metric {metric!r} cannot be computed on fresh data",
            f"use one of {', '.join(SCORERS)}, or remove {pipeline.key}.drift.target",
        )
    frame = read_current(current)
    if target not in frame.columns:
        raise NbmlopsError(
            f"{current} has no column {target!r} ({pipeline.key}.drift.target)",
            "include the labels in the current data, or remove drift.target",
        )
    candidate_uri = open_client(uri).get_run(run_id).data.tags.get(MODEL_URI)
    if not candidate_uri:
        raise NbmlopsError(f"the retrained run {run_id} logged no model", "call nbmlops.log_model")
    champion = load_offline(resolve_model(label, uri), uri)  # its files checked first
    with using_store(uri):
        candidate = mlflow.pyfunc.load_model(candidate_uri)  # just logged by the retrain run
    features, y = frame.drop(columns=[target]), frame[target]
    return (
        _score(candidate, "the retrained model", features, y, metric, current),
        _score(champion, label, features, y, metric, current),
    )


def _score(model: Any, which: str, features: Any, y: Any, metric: str, current: Any) -> float:
    schema = model.metadata.get_input_schema()
    columns = schema.input_names() if schema is not None else list(features.columns)
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise NbmlopsError(
            f"{current} lacks the column(s) {', '.join(missing)} that {which} needs",
            "include every feature in the current data (drift.allow_missing_columns only "
            "lets the drift check pass)",
        )
    try:
        value = float(SCORERS[metric](y, model.predict(features[columns])))
    except ValueError as exc:  # e.g. f1 of a multiclass target
        raise NbmlopsError(
            f"cannot compute {metric} of {which} on {current}: {exc}",
            "choose a promote.metric that fits the target",
        ) from None
    return value if math.isfinite(value) else math.nan


def _sk(name: str) -> Any:
    def score(y: Any, pred: Any) -> float:
        from sklearn import metrics

        if name == "rmse":
            return float(metrics.mean_squared_error(y, pred) ** 0.5)
        return float(getattr(metrics, name)(y, pred))

    return score


SCORERS = {
    "accuracy": _sk("accuracy_score"),
    "f1": _sk("f1_score"),
    "precision": _sk("precision_score"),
    "recall": _sk("recall_score"),
    "r2": _sk("r2_score"),
    "rmse": _sk("rmse"),
    "mae": _sk("mean_absolute_error"),
    "mse": _sk("mean_squared_error"),
}
