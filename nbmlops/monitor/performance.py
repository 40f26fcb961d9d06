"""Realised performance of a served model, window by window, against its training metrics.

The logged predictions joined with their labels (:mod:`nbmlops.monitor.feedback`) are cut
into windows (``1d`` by default); each window gets accuracy, F1 and ROC AUC (a classifier:
its logs hold class probabilities, or its labels are not numbers) or RMSE and MAE (a
regressor), the number of predictions and of labels, and the CBPE estimate
(:mod:`nbmlops.monitor.estimate`), calibrated on the version's held-out reference set when it
has one, else on the earlier labels (``calibration`` says which). The rule (``--threshold "f1>=0.9"``, ``--max-drop 0.05``
below the training figure, or ``[tool.nbmlops.pipelines.X.monitor]``) is checked on the
latest window with at least ``min_labels`` labels: an older breach has already been seen.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbmlops.monitor.errors import MonitorInputError
from nbmlops.monitor.estimate import (
    MAX_CALIBRATION,
    NONE,
    REFERENCE,
    Calibration,
    as_classes,
    classes_of,
    estimate,
    fit_calibration,
)
from nbmlops.monitor.feedback import LABEL
from nbmlops.promote.gates import Gate
from nbmlops.serve.monitoring import PROBA_PREFIX

CLASSIFIER_METRICS = ("accuracy", "f1", "roc_auc")
REGRESSOR_METRICS = ("rmse", "mae")
LOWER_IS_BETTER = frozenset(REGRESSOR_METRICS)
FORMAT = "nbmlops.performance"


def parse_duration(text: str, option: str) -> pd.Timedelta:
    """``1d``, ``12h``, ``30m``, ``2w`` as a Timedelta, or a :class:`MonitorInputError`."""
    units = {"w": "W", "d": "D", "h": "h", "m": "min"}
    value, unit = text[:-1], text[-1:].lower()
    try:
        delta = pd.Timedelta(float(value), unit=units[unit])
    except (KeyError, ValueError):
        delta = pd.Timedelta(0)
    if delta <= pd.Timedelta(0):
        raise MonitorInputError(
            option, f"{text!r} is not a duration", "write e.g. 30m, 12h, 1d or 2w"
        )
    return delta


@dataclass(frozen=True)
class Rule:
    """When performance alerts: a gate on a realised metric, or a drop below training."""

    gate: Gate | None = None
    max_drop: float | None = None
    metric: str | None = None  # the metric of max_drop (default: the gate's, else f1/rmse)
    min_labels: int = 30

    def describe(self) -> str:
        parts = [str(self.gate)] if self.gate else []
        if self.max_drop is not None:
            parts.append(
                f"{self.metric or 'f1/rmse'} at most {self.max_drop:g} worse than at training"
            )
        return " and ".join(parts) or "none (no threshold configured)"


@dataclass
class Window:
    start: str
    end: str
    predictions: int
    labelled: int
    realised: dict[str, float] = field(default_factory=dict)
    estimated: dict[str, float] = field(default_factory=dict)
    calibrated_on: int = 0  # labelled records the estimate's calibration used
    calibration: str = NONE  # which: "reference", "production labels" or "none"


@dataclass
class PerformanceResult:
    model: str
    kind: str  # "classifier" or "regressor"
    window: str
    windows: list[Window]
    training: dict[str, float]
    rule: str
    alerts: list[str] = field(default_factory=list)
    unknown_ids: int = 0
    duplicate_labels: int = 0

    @property
    def alert(self) -> bool:
        return bool(self.alerts)

    def calibrated_on(self) -> str:
        """What the latest window's estimate was calibrated on: ``reference (n=143)``,
        ``production labels (n=3000)`` or ``none``."""
        if self.kind != "classifier" or not self.windows:
            return NONE
        last = self.windows[-1]
        return f"{last.calibration} (n={last.calibrated_on})" if last.calibrated_on else NONE

    def summary(self) -> str:
        if self.alerts:
            return "performance alert: " + "; ".join(self.alerts)
        labelled = sum(w.labelled for w in self.windows)
        return f"performance ok: {labelled} labelled predictions, rule {self.rule}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["format"], out["alert"], out["summary"] = FORMAT, self.alert, self.summary()
        clean: dict[str, Any] = _finite(out)
        return clean

    def write_json(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        return target


def model_kind(frame: pd.DataFrame) -> str:
    """``classifier`` when the logs hold probabilities or the labels/predictions are not
    floating-point numbers, else ``regressor``."""
    if classes_of(frame):
        return "classifier"
    values = frame["prediction"] if "prediction" in frame else pd.Series(dtype=float)
    return "regressor" if pd.api.types.is_float_dtype(values) else "classifier"


def metrics(labelled: pd.DataFrame, kind: str, classes: list[str]) -> dict[str, float]:
    """Realised metrics of ``labelled`` predictions (a ``label`` column)."""
    if labelled.empty:
        return {}
    if kind == "regressor":
        y = pd.to_numeric(labelled[LABEL], errors="coerce").to_numpy(dtype=np.float64)
        err = labelled["prediction"].to_numpy(dtype=np.float64) - y
        err = err[~np.isnan(err)]
        if not len(err):
            return {}
        return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}
    from sklearn.metrics import roc_auc_score

    y = as_classes(labelled[LABEL])
    pred = as_classes(labelled["prediction"])
    out = {"accuracy": float(np.mean(y == pred))}
    labels = classes or sorted(set(y) | set(pred))
    out["f1"] = f1(y, pred, labels[-1:] if len(labels) == 2 else labels)
    if classes and len(set(y)) > 1 and set(y) <= set(classes):
        proba = labelled[[f"proba_{c}" for c in classes]].to_numpy(dtype=np.float64)
        if len(classes) == 2:
            out["roc_auc"] = float(roc_auc_score(y == classes[-1], proba[:, 1]))
        elif len(set(y)) == len(classes):
            proba = proba / np.maximum(proba.sum(axis=1, keepdims=True), 1e-12)
            out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    return out


def f1(y: np.ndarray, pred: np.ndarray, positives: list[str]) -> float:
    """F1 of ``positives[0]`` (binary), else the mean F1 over ``positives`` (macro)."""
    scores = []
    for c in positives:
        is_c, said_c = y == c, pred == c
        tp = int(np.sum(is_c & said_c))
        wrong = int(np.sum(is_c != said_c))
        scores.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return float(np.mean(scores))


def evaluate(
    frame: pd.DataFrame,
    *,
    model: str,
    window: str = "1d",
    training: dict[str, float] | None = None,
    rule: Rule | None = None,
    unknown_ids: int = 0,
    duplicate_labels: int = 0,
    reference: pd.DataFrame | None = None,
) -> PerformanceResult:
    """Per-window realised and estimated performance of ``frame`` (predictions joined with
    labels: ``read_monitor_logs`` plus ``label``, ``labelled_at``), and the rule's verdict.
    ``reference`` is the version's held-out set (:func:`~nbmlops.monitor.estimate.reference_set`):
    when it has enough rows every window's estimate is calibrated on it."""
    rule = rule or Rule()
    size = parse_duration(window, "--window")
    kind = model_kind(frame)
    classes = classes_of(frame)
    on_reference = None
    if classes and reference is not None:
        missing = [c for c in classes if PROBA_PREFIX + c not in reference]
        if missing:
            raise MonitorInputError(
                "calibration set",
                f"it has no probabilities of class {', '.join(missing)}, which the service logs",
                "log the served model again with reference=(X_test, y_test) and promote it",
            )
        on_reference = fit_calibration(reference, classes, REFERENCE)
        if not on_reference.calibrated:
            on_reference = None
    windows: list[Window] = []
    if not frame.empty:
        if not frame["timestamp"].is_monotonic_increasing:
            frame = frame.sort_values("timestamp", kind="stable")
        stamps = frame["timestamp"]
        origin = stamps.min().floor("D") if size >= pd.Timedelta("1D") else stamps.min().floor(size)
        slot = ((stamps - origin) // size).to_numpy()
        has_label = frame[LABEL].notna().to_numpy()
        labelled_all, labelled_slot = frame[has_label], slot[has_label]  # in time order
        for k in np.unique(slot):
            lo, hi = np.searchsorted(slot, [k, k + 1])
            part = frame.iloc[lo:hi]
            start = origin + int(k) * size
            below, until = np.searchsorted(labelled_slot, [k, k + 1])
            labelled = labelled_all.iloc[below:until]
            win = Window(
                start.isoformat(),
                (start + size).isoformat(),
                len(part),
                len(labelled),
                realised=metrics(labelled, kind, classes),
            )
            if classes:
                calibration: Calibration = on_reference or fit_calibration(
                    labelled_all.iloc[max(0, below - MAX_CALIBRATION) : below], classes
                )
                win.estimated = estimate(part, calibration)
                win.calibrated_on, win.calibration = calibration.rows, calibration.source
            windows.append(win)
    training = {
        k: v
        for k, v in (training or {}).items()
        if k in (CLASSIFIER_METRICS if kind == "classifier" else REGRESSOR_METRICS)
    }
    result = PerformanceResult(
        model,
        kind,
        window,
        windows,
        training,
        rule.describe(),
        unknown_ids=unknown_ids,
        duplicate_labels=duplicate_labels,
    )
    result.alerts = check_rule(result, rule)
    return result


def check_rule(result: PerformanceResult, rule: Rule) -> list[str]:
    """Why the latest window with ``rule.min_labels`` labels breaks ``rule`` (empty: ok)."""
    judged = [w for w in result.windows if w.labelled >= rule.min_labels and w.realised]
    if not judged:
        return []
    last = judged[-1]
    alerts = []
    where = f"window from {last.start[:16]} ({last.labelled} labels)"
    gate = rule.gate
    if gate is not None:
        value = last.realised.get(gate.metric)
        if value is None:
            known = ", ".join(last.realised)
            raise MonitorInputError(
                "threshold",
                f"{gate} names {gate.metric!r}, which a {result.kind} is not measured by",
                f"use one of: {known}",
            )
        if not gate.passes(value):
            alerts.append(f"{gate.metric} {value:.4f} breaks {gate} in the {where}")
    if rule.max_drop is not None:
        metric = rule.metric or (gate.metric if gate else None)
        metric = metric or ("f1" if result.kind == "classifier" else "rmse")
        value, trained = last.realised.get(metric), result.training.get(metric)
        if value is not None and trained is not None:
            drop = value - trained if metric in LOWER_IS_BETTER else trained - value
            if drop > rule.max_drop:
                alerts.append(
                    f"{metric} {value:.4f} is {drop:.4f} worse than at training ({trained:.4f}), "
                    f"more than {rule.max_drop:g}, in the {where}"
                )
    return alerts


def since_time(since: str | None) -> dt.datetime | None:
    """The moment ``--since`` (a duration back from now) names."""
    if since is None:
        return None
    back: dt.timedelta = parse_duration(since, "--since").to_pytimedelta()
    return dt.datetime.now(dt.UTC) - back


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
