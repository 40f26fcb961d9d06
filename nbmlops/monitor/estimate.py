"""Performance before labels arrive: confidence-based performance estimation (CBPE).

A classifier's probability for the class it predicted is, once calibrated, the chance that
the prediction is right; summed over a window it gives the expected confusion matrix, and
from it the expected accuracy and F1 (as NannyML describes CBPE). Calibration is isotonic
regression of each class's probability (one against the rest) on records whose labels are
known, the rows normalised to sum to 1.

Which labelled records: the reference profile stored at promotion holds the training
features but not the labels (and not the model's probabilities), so nbmlops calibrates on
the labelled production records *before* the window it estimates (every earlier labelled
record, at least :data:`MIN_CALIBRATION` of them). Without them the model's own
probabilities are used as they are (``calibrated: false`` in the result). Calibrating on
the training reference needs the labels and probabilities of a held-out set stored at
promotion: not done yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbmlops.serve.monitoring import PROBA_PREFIX

MIN_CALIBRATION = 100
MAX_CALIBRATION = 50_000  # the latest labelled records a calibration is fitted on


def as_classes(values: pd.Series) -> np.ndarray:
    """Class labels as text, as the logged probabilities name them: ``1.0`` (an integer
    label through a column with missing values) is ``1``; ``True`` stays ``True``."""
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy(dtype=np.float64)
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        if whole[~np.isnan(numbers)].all():
            return np.array(
                [str(int(v)) if ok else "" for v, ok in zip(numbers, whole, strict=True)]
            )
    text: np.ndarray = values.astype(str).to_numpy()
    return text


def proba_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if str(c).startswith(PROBA_PREFIX)]


def classes_of(frame: pd.DataFrame) -> list[str]:
    """The classes a classifier's logged probabilities name, in logged order."""
    return [str(c).removeprefix(PROBA_PREFIX) for c in proba_columns(frame)]


@dataclass
class Calibration:
    """Isotonic maps of each class's probability, fitted on ``rows`` labelled records."""

    classes: list[str]
    rows: int = 0
    maps: list[Any] = field(default_factory=list)  # IsotonicRegression per class; [] = none

    @property
    def calibrated(self) -> bool:
        return bool(self.maps)

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """``frame``'s class probabilities (rows, classes), calibrated and normalised."""
        raw: np.ndarray = np.nan_to_num(
            frame[[PROBA_PREFIX + c for c in self.classes]].to_numpy(dtype=np.float64), nan=0.0
        )
        if not self.maps:
            return raw
        out: np.ndarray = np.column_stack([m.predict(raw[:, i]) for i, m in enumerate(self.maps)])
        total = out.sum(axis=1, keepdims=True)
        even = np.full_like(out, 1 / len(self.classes))
        np.divide(out, total, out=even, where=total > 0)
        return even


def fit_calibration(labelled: pd.DataFrame, classes: list[str]) -> Calibration:
    """Isotonic calibration on the last :data:`MAX_CALIBRATION` rows of ``labelled`` (logged
    probabilities and a ``label`` column); none with fewer than :data:`MIN_CALIBRATION`."""
    from sklearn.isotonic import IsotonicRegression

    if len(labelled) < MIN_CALIBRATION:
        return Calibration(classes)
    labelled = labelled.tail(MAX_CALIBRATION)
    labels = as_classes(labelled["label"])
    maps = []
    for c in classes:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(labelled[PROBA_PREFIX + c].to_numpy(dtype=np.float64), labels == c)
        maps.append(iso)
    return Calibration(classes, len(labelled), maps)


def estimate(frame: pd.DataFrame, calibration: Calibration) -> dict[str, float]:
    """Expected ``accuracy`` and ``f1`` (binary: of the last class; else macro) of the
    predictions in ``frame``, from their calibrated probabilities."""
    if frame.empty:
        return {}
    classes = calibration.classes
    proba = calibration.probabilities(frame)
    predicted = as_classes(frame["prediction"])
    index = {c: i for i, c in enumerate(classes)}
    cols = np.array([index.get(p, -1) for p in predicted])
    known = cols >= 0
    right = np.where(known, proba[np.arange(len(proba)), np.maximum(cols, 0)], 0.0)
    f1s = []
    for i in [len(classes) - 1] if len(classes) == 2 else range(len(classes)):
        p, chosen = proba[:, i], cols == i
        tp, fp, fn = p[chosen].sum(), (1 - p[chosen]).sum(), p[~chosen].sum()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0)
    return {"accuracy": float(right.mean()), "f1": float(np.mean(f1s))}
