"""Performance and prediction rate per segment (bias): the configured columns' values.

Each segment column (``[tool.nbmlops.pipelines.X.monitor] segments``, or ``--segment``)
splits the predictions by value (a numeric column with more than :data:`MAX_GROUPS`
values by quartile). Per group: predictions, the prediction rate (a binary classifier's
share of its last class, a regressor's mean prediction; else the share of the most common
class overall), labels, and accuracy (classifier) or RMSE (regressor). The group pair with
the largest gap in the metric (groups with at least ``min_labels`` labels), or else in the
prediction rate, is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbmlops.monitor.errors import MonitorInputError
from nbmlops.monitor.estimate import classes_of
from nbmlops.monitor.feedback import LABEL
from nbmlops.monitor.performance import metrics, model_kind

MAX_GROUPS = 20


@dataclass
class Group:
    value: str
    predictions: int
    rate: float
    labelled: int
    metric: float | None


@dataclass
class Segment:
    column: str
    metric: str  # accuracy or rmse
    rate: str  # what the rate is, e.g. "share predicted 1"
    groups: list[Group] = field(default_factory=list)
    gap: float = 0.0  # the largest metric gap (else rate gap) between two groups
    gap_of: str = ""  # "metric" or "rate"
    between: tuple[str, str] = ("", "")


@dataclass
class Segments:
    segments: list[Segment]

    @property
    def largest(self) -> Segment | None:
        """The segment column with the largest metric gap (else rate gap)."""
        ranked = sorted(self.segments, key=lambda s: (s.gap_of == "metric", s.gap), reverse=True)
        return ranked[0] if ranked and ranked[0].gap > 0 else None


def segment(
    frame: pd.DataFrame, columns: list[str] | tuple[str, ...], min_labels: int = 30
) -> Segments:
    """Per-segment figures of ``frame`` (predictions joined with labels)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        features = [c for c in frame.columns if c not in ("request_id", "timestamp")]
        raise MonitorInputError(
            "segments",
            f"no logged column {', '.join(map(repr, missing))}",
            f"name logged columns (features: {', '.join(map(str, features[:20]))})",
        )
    kind = model_kind(frame)
    classes = classes_of(frame)
    metric = "accuracy" if kind == "classifier" else "rmse"
    predicted = frame["prediction"]
    if kind == "regressor":
        rate_of, rate_name = predicted.astype(float), "mean prediction"
    else:
        target = classes[-1] if len(classes) == 2 else str(predicted.astype(str).mode().iat[0])
        rate_of, rate_name = (
            (predicted.astype(str) == target).astype(float),
            f"share predicted {target}",
        )
    out = []
    for column in columns:
        groups_of = _groups(frame[column])
        seg = Segment(column, metric, rate_name)
        for value, index in groups_of.groups.items():
            part = frame.loc[index]
            labelled = part[part[LABEL].notna()]
            value_metric = metrics(labelled, kind, classes).get(metric) if len(labelled) else None
            seg.groups.append(
                Group(
                    str(value),
                    len(part),
                    float(rate_of.loc[index].mean()),
                    len(labelled),
                    value_metric,
                )
            )
        _flag(seg, min_labels)
        out.append(seg)
    return Segments(out)


def _groups(values: pd.Series) -> Any:
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_GROUPS:
        return values.groupby(pd.qcut(values, 4, duplicates="drop"), observed=True)
    top = values.astype(str).value_counts().index[:MAX_GROUPS]
    keyed = values.astype(str).where(values.astype(str).isin(top), "(other)")
    return keyed.groupby(keyed)


def _flag(seg: Segment, min_labels: int) -> None:
    scored = [g for g in seg.groups if g.metric is not None and g.labelled >= min_labels]
    pool, key, of = (
        (scored, lambda g: float(g.metric or 0.0), "metric")
        if len(scored) > 1
        else (seg.groups, lambda g: g.rate, "rate")
    )
    if len(pool) < 2:
        return
    low, high = min(pool, key=key), max(pool, key=key)
    seg.gap, seg.gap_of, seg.between = float(key(high) - key(low)), of, (low.value, high.value)
    if not np.isfinite(seg.gap):
        seg.gap = 0.0
