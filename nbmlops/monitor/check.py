"""Drift, then retraining: the one implementation behind ``nbmlops monitor drift`` and
``nbmlops ci --on-drift``.

:func:`check_and_retrain` compares the current data with a model's reference profile (or
a reference file), writes the reports and, when a feature drifted and a notebook is given,
retrains (:func:`nbmlops.monitor.retrain.retrain`). What happened comes back as a
:class:`DriftOutcome`; a front door shows it (``on_checked`` lets it show the comparison
before a retraining starts) and decides its exit code.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops import project
from nbmlops.capture.schema import DEFAULT_ALIAS
from nbmlops.exceptions import NbmlopsError
from nbmlops.monitor.errors import MonitorInputError
from nbmlops.monitor.thresholds import Thresholds

if TYPE_CHECKING:
    from nbmlops.monitor.drift import DriftResult
    from nbmlops.monitor.performance import PerformanceResult, Rule
    from nbmlops.monitor.segments import Segments
    from nbmlops.run.progress import Reporter
    from nbmlops.run.runner import RunResult

REPORTS_DIR = "drift"  # under .nbmlops/: a retraining's reports, one folder per check


@dataclass
class DriftOutcome:
    """What :func:`check_and_retrain` found and did."""

    result: DriftResult
    model: str | None  # the model compared, name@alias or name/version (None: a file)
    reports: list[Path] = field(default_factory=list)  # written, the JSON report first
    notebook: str | Path | None = None  # the notebook that retrains on drift
    run: RunResult | None = None  # the retraining, when it ran and finished
    failure: NbmlopsError | None = None  # why the retraining failed (its run is recorded)

    @property
    def retrains(self) -> bool:
        """A feature drifted and there is a notebook to retrain."""
        return self.notebook is not None and self.result.any_drift


def check_and_retrain(
    current: str,
    *,
    model: str | None = None,
    reference: str | None = None,
    thresholds: Thresholds | None = None,
    allow_missing_columns: bool = False,
    retrain_notebook: str | Path | None = None,
    parameters: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    json_path: str | None = None,
    html_path: str | None = None,
    on_checked: Callable[[DriftOutcome], None] | None = None,
    experiment: str | None = None,
    reporter: Reporter | None = None,
    tags: dict[str, str] | None = None,
    project_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> DriftOutcome:
    """Compare ``current`` with ``model``'s reference profile (or a ``reference`` file),
    write the reports asked for and, on drift, retrain with ``retrain_notebook``.

    A ``retrain_notebook`` is read first: one that cannot run is the mistake to report,
    before any drift is. When it will retrain, both reports are written (by default under
    ``.nbmlops/drift/<time>/``) and logged on the new run. ``on_checked`` is called once
    the comparison is done and the reports written, before the retraining starts. Errors
    of the comparison raise; an error of the retraining is the outcome's ``failure``.
    ``parameters`` and the arguments after ``on_checked`` go to ``run_notebook``.
    """
    from nbmlops.monitor.retrain import retrain

    if retrain_notebook is not None:
        from nbmlops.notebook.pipeline import load_pipeline

        load_pipeline(retrain_notebook)
    result, label = compare(
        current,
        model=model,
        reference=reference,
        thresholds=thresholds,
        allow_missing_columns=allow_missing_columns,
        tracking_uri=tracking_uri,
    )
    outcome = DriftOutcome(result, label, notebook=retrain_notebook)
    outcome.reports = write_reports(result, json_path, html_path, needed=outcome.retrains)
    if on_checked is not None:
        on_checked(outcome)
    if outcome.retrains:
        assert retrain_notebook is not None
        try:
            outcome.run = retrain(
                retrain_notebook,
                outcome.reports,
                model=label,
                parameters=parameters,
                tracking_uri=tracking_uri,
                experiment=experiment,
                reporter=reporter,
                tags=tags,
                project_dir=project_dir,
                cache_dir=cache_dir,
            )
        except NbmlopsError as exc:
            outcome.failure = exc
    return outcome


def compare(
    current: str,
    *,
    model: str | None = None,
    reference: str | None = None,
    thresholds: Thresholds | None = None,
    allow_missing_columns: bool = False,
    tracking_uri: str | None = None,
) -> tuple[DriftResult, str | None]:
    """Drift of ``current`` against ``model``'s reference profile (or a ``reference`` file).

    Returns the result and the model as ``name@alias`` or ``name/version`` (None for a
    file).
    """
    from nbmlops.monitor.data import read_current, read_reference
    from nbmlops.monitor.drift import check_drift

    if (model is None) == (reference is None):
        raise MonitorInputError(
            "nbmlops monitor drift",
            "give either MODEL[@ALIAS] or --reference FILE" + (", not both" if model else ""),
            f"e.g. nbmlops monitor drift mymodel@{DEFAULT_ALIAS} --current logs/, or "
            "nbmlops monitor drift --reference train.csv --current today.csv",
        )
    label: str | None = None
    if model is not None:
        from nbmlops.promote.registry import load_reference, resolve_model
        from nbmlops.promote.signing import verified_files

        ref = resolve_model(model, tracking_uri)
        verified_files(ref)  # an unsigned or re-signed version is refused here too
        ref_data: Any = load_reference(ref, tracking_uri)
        label = f"{ref.name}@{ref.alias}" if ref.alias else f"{ref.name}/{ref.version}"
        source = f"{ref} reference profile"
    else:
        assert reference is not None
        ref_data = read_reference(reference)
        source = reference
    result = check_drift(
        ref_data,
        read_current(current),
        thresholds,
        allow_missing_columns=allow_missing_columns,
        reference_source=source,
        current_source=current,
    )
    return result, label


def write_reports(
    result: DriftResult, json_path: str | None, html_path: str | None, needed: bool = False
) -> list[Path]:
    """Write the requested reports; when ``needed`` (to retrain), both, by default under
    ``.nbmlops/drift/<time>/``. The JSON report comes first."""
    from nbmlops.monitor.report import write_html, write_json

    if needed and not (json_path and html_path):
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        folder = project.state_dir() / REPORTS_DIR / stamp
        json_path = json_path or str(folder / "drift.json")
        html_path = html_path or str(folder / "drift.html")
    written = []
    if json_path:
        written.append(write_json(result, json_path))
    if html_path:
        written.append(write_html(result, html_path))
    return written


@dataclass
class PerformanceOutcome:
    """What :func:`check_performance` found and did."""

    result: PerformanceResult
    segments: Segments | None = None
    reports: list[Path] = field(default_factory=list)  # the JSON report, when written
    notebook: str | Path | None = None  # the notebook that retrains on an alert
    run: RunResult | None = None
    failure: NbmlopsError | None = None

    @property
    def retrains(self) -> bool:
        return self.notebook is not None and self.result.alert


def check_performance(
    model: str,
    *,
    window: str = "1d",
    since: str | None = "30d",
    rule: Rule | None = None,
    segments: tuple[str, ...] | list[str] = (),
    json_path: str | None = None,
    retrain_notebook: str | Path | None = None,
    parameters: dict[str, str] | None = None,
    monitor_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    on_checked: Callable[[PerformanceOutcome], None] | None = None,
    experiment: str | None = None,
    reporter: Reporter | None = None,
    tags: dict[str, str] | None = None,
    project_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> PerformanceOutcome:
    """Realised (and estimated) performance of ``model``'s labelled predictions against the
    ``rule``, and on an alert a retraining with ``retrain_notebook`` tagged
    ``nbmlops.retrain.cause=performance`` and its report. ``segments`` are the logged
    columns compared (bias). The front doors read both from the options or the project
    configuration (``[tool.nbmlops.pipelines.X.monitor]``).
    """
    from nbmlops.monitor.estimate import reference_set
    from nbmlops.monitor.export import production
    from nbmlops.monitor.feedback import load_joined
    from nbmlops.monitor.performance import Rule, evaluate, since_time
    from nbmlops.monitor.retrain import retrain
    from nbmlops.monitor.segments import segment

    if retrain_notebook is not None:
        from nbmlops.notebook.pipeline import load_pipeline

        load_pipeline(retrain_notebook)
    found = production(model, monitor_dir, tracking_uri)
    joined = load_joined(found.folder, since_time(since))
    result = evaluate(
        joined.frame,
        model=found.label,
        window=window,
        training=found.training_metrics(tracking_uri),
        rule=rule or Rule(),
        unknown_ids=len(joined.unknown),
        duplicate_labels=len(joined.duplicates),
        reference=reference_set(found.ref, tracking_uri),
    )
    min_labels = (rule or Rule()).min_labels
    outcome = PerformanceOutcome(
        result,
        segment(joined.frame, segments, min_labels) if segments and len(joined.frame) else None,
        notebook=retrain_notebook,
    )
    if json_path or outcome.retrains:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        default = project.state_dir() / "performance" / stamp / "performance.json"
        outcome.reports = [result.write_json(json_path or default)]
    if on_checked is not None:
        on_checked(outcome)
    if outcome.retrains:
        assert retrain_notebook is not None
        try:
            outcome.run = retrain(
                retrain_notebook,
                outcome.reports,
                model=found.label,
                parameters=parameters,
                tracking_uri=tracking_uri,
                experiment=experiment,
                reporter=reporter,
                tags=tags,
                project_dir=project_dir,
                cache_dir=cache_dir,
                cause="performance",
            )
        except NbmlopsError as exc:
            outcome.failure = exc
    return outcome
