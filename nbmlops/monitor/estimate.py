"""Performance before labels arrive: confidence-based performance estimation (CBPE).

A classifier's probability for the class it predicted is, once calibrated, the chance that
the prediction is right; summed over a window it gives the expected confusion matrix, and
from it the expected accuracy and F1 (as NannyML describes CBPE). Calibration is isotonic
regression of each class's probability (one against the rest) on records whose labels are
known, the rows normalised to sum to 1.

Which labelled records, first found first used (``calibrated on`` in the output):

- ``reference``: the held-out set ``nbmlops.log_model(model, reference=(X_test, y_test))``
  stored with the run (its labels and the model's probabilities, a JSON artifact, see
  :func:`calibration_document`), which promotion points the version at (as NannyML
  calibrates on a labelled reference the model did not train on);
- ``production labels``: the labelled production records *before* the window estimated
  (every earlier one, the latest :data:`MAX_CALIBRATION`);
- ``none``: the model's own probabilities as they are.

Either set needs at least :data:`MIN_CALIBRATION` records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbmlops.monitor.errors import MonitorInputError
from nbmlops.serve.monitoring import PROBA_PREFIX

MIN_CALIBRATION = 100
MAX_CALIBRATION = 50_000  # the latest labelled records a calibration is fitted on
FORMAT = "nbmlops.calibration_set"
REFERENCE = "reference"
PRODUCTION = "production labels"
NONE = "none"


def as_classes(values: pd.Series) -> np.ndarray:
    """Class labels as text, as the logged probabilities name them: ``1.0`` (an integer
    label through a column with missing values) is ``1``; a missing one is ``""``."""
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy(dtype=np.float64)
        missing = np.isnan(numbers)
        present = numbers[~missing]
        if np.array_equal(present, np.round(present)):
            text: np.ndarray = np.where(missing, 0, numbers).astype(np.int64).astype(str)
            text[missing] = ""
            return text
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        numeric: np.ndarray = values.to_numpy().astype(str)
        return numeric
    strings: np.ndarray = values.astype(str).to_numpy()
    return strings


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
    source: str = NONE  # REFERENCE, PRODUCTION or NONE

    @property
    def calibrated(self) -> bool:
        return bool(self.maps)

    def describe(self) -> str:
        """``reference (n=143)``, ``production labels (n=3000)`` or ``none``."""
        return f"{self.source} (n={self.rows})" if self.maps else NONE

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


def fit_calibration(
    labelled: pd.DataFrame, classes: list[str], source: str = PRODUCTION
) -> Calibration:
    """Isotonic calibration on the last :data:`MAX_CALIBRATION` rows of ``labelled`` (logged
    probabilities and a ``label`` column), from ``source``; none with fewer than
    :data:`MIN_CALIBRATION`."""
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
    return Calibration(classes, len(labelled), maps, source)


def calibration_document(classes: list[str], labels: list[str], proba: Any) -> dict[str, Any]:
    """The held-out set ``log_model(reference=...)`` stores: its labels and the model's
    class probabilities (rows x classes, in ``classes`` order), at most
    :data:`MAX_CALIBRATION` rows, as JSON (never a pickle)."""
    rows = np.asarray(proba, dtype=np.float64)[:MAX_CALIBRATION]
    return {
        "format": FORMAT,
        "classes": classes,
        "labels": labels[:MAX_CALIBRATION],
        "proba": np.round(rows, 6).tolist(),
    }


def read_calibration_document(doc: Any, where: str) -> pd.DataFrame:
    """A :func:`calibration_document` as the frame :func:`fit_calibration` reads
    (``proba_<class>`` columns and ``label``), or a :class:`MonitorInputError` naming
    what is wrong with it."""
    fix = "log the model again with nbmlops.log_model(model, ..., reference=(X_test, y_test))"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MonitorInputError(where, f"not a {FORMAT} document", fix)
    classes, labels, proba = doc.get("classes"), doc.get("labels"), doc.get("proba")
    if not (
        isinstance(classes, list)
        and classes
        and all(isinstance(c, str) for c in classes)
        and isinstance(labels, list)
        and all(isinstance(y, str) for y in labels)
        and isinstance(proba, list)
        and len(proba) == len(labels)
        and all(isinstance(r, list) and len(r) == len(classes) for r in proba)
    ):
        raise MonitorInputError(
            where, "its classes, labels and probabilities do not line up (rows x classes)", fix
        )
    try:
        values = np.asarray(proba, dtype=np.float64).reshape(len(labels), len(classes))
    except (TypeError, ValueError):
        raise MonitorInputError(where, "its probabilities are not all numbers", fix) from None
    if not np.isfinite(values).all():
        raise MonitorInputError(where, "its probabilities are not all finite numbers", fix)
    frame = pd.DataFrame(values, columns=[PROBA_PREFIX + c for c in classes])
    frame["label"] = pd.Series(labels, dtype=object)
    return frame


def reference_set(model: Any, tracking_uri: str | None = None) -> pd.DataFrame | None:
    """The held-out set stored with ``model`` (a ``ModelRef``) for calibration, or None
    when it was logged without ``reference=``."""
    from nbmlops.capture import schema
    from nbmlops.promote.registry import download_json

    uri = model.tags.get(schema.CALIBRATION)
    if not uri:
        return None
    try:
        doc = download_json(uri, tracking_uri)
    except Exception as exc:
        raise MonitorInputError(
            uri,
            f"cannot read the calibration set of {model} ({exc})",
            "check that the run's artifacts are still in the artifact store",
        ) from exc
    return read_calibration_document(doc, f"calibration set of {model} ({uri})")


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
