"""Ground truth for logged predictions: the feedback logs, and joining them by request id.

Labels arrive through the service's ``POST /feedback`` (``nbmlops/serve/feedback.py``) or
``nbmlops monitor feedback MODEL labels.csv``; both append JSON lines
``{"timestamp", "request_id", "label"}`` to ``<monitor dir>/<monitor name>/feedback/
feedback.<worker>.log`` (the command line's worker is ``cli``). :func:`join_labels` never
drops anything silently: ids with no logged prediction, ids labelled more than once (the
latest label is used) and ids logged with more than one prediction are counted.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nbmlops.monitor.errors import MonitorInputError

FEEDBACK_DIR = "feedback"
LABEL = "label"
LABELLED_AT = "labelled_at"


@dataclass
class Joined:
    """Predictions with their labels: ``frame`` is every prediction, ``label`` missing (NA)
    where none arrived."""

    frame: pd.DataFrame
    matched: int  # predictions that have a label
    unknown: list[str] = field(default_factory=list)  # labelled ids never logged as predicted
    duplicates: list[str] = field(default_factory=list)  # ids labelled more than once
    repeated: list[str] = field(default_factory=list)  # ids logged with several predictions

    @property
    def labelled(self) -> pd.DataFrame:
        """The predictions that have a label."""
        return self.frame[self.frame[LABEL].notna()]

    def summary(self) -> str:
        return (
            f"{self.matched} of {len(self.frame)} predictions labelled; "
            f"{len(self.unknown)} unknown ids, {len(self.duplicates)} duplicate labels"
            + (f", {len(self.repeated)} ids predicted more than once" if self.repeated else "")
        )


def feedback_files(folder: str | Path) -> list[Path]:
    """The feedback logs under ``folder`` (a monitor's folder, a log folder or the
    ``feedback`` folder itself)."""
    from nbmlops.serve.monitoring import log_files

    root = Path(folder)
    if not root.exists():
        return []
    return log_files(root, FEEDBACK_DIR)


def read_feedback(folder: str | Path) -> pd.DataFrame:
    """Every label under ``folder``: ``timestamp`` (UTC), ``request_id``, ``label``, in time
    order. No feedback yet is an empty frame."""
    from nbmlops.serve.monitoring import read_json_lines, to_utc

    files = feedback_files(folder)
    frame = read_json_lines(files) if files else pd.DataFrame()
    if frame.empty:
        return pd.DataFrame(
            {
                "timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
                "request_id": pd.Series([], dtype=object),
                LABEL: pd.Series([], dtype=object),
            }
        )
    frame = frame[[c for c in ("timestamp", "request_id", LABEL) if c in frame]]
    frame["timestamp"] = to_utc(frame["timestamp"])
    frame["request_id"] = frame["request_id"].astype(str)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def write_feedback(folder: str | Path, labels: pd.DataFrame, worker: str = "cli") -> Path:
    """Append ``labels`` (columns ``request_id``, ``label``) to the feedback log of
    ``folder`` (a monitor's folder), stamped now."""
    target = Path(folder) / FEEDBACK_DIR / f"feedback.{worker}.log"
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    with open(target, "a", encoding="utf-8") as fh:
        for rid, label in zip(labels["request_id"], labels[LABEL], strict=True):
            fh.write(
                json.dumps({"timestamp": stamp, "request_id": str(rid), LABEL: _native(label)})
                + "\n"
            )
    return target


def read_labels_file(path: str | Path, id_column: str, label_column: str) -> pd.DataFrame:
    """A CSV or Parquet file of labels as ``request_id``, ``label``; missing columns and
    empty labels are :class:`MonitorInputError` naming them."""
    from nbmlops.monitor.data import read_table

    table = read_table(path)
    missing = [c for c in (id_column, label_column) if c not in table.columns]
    if missing:
        raise MonitorInputError(
            str(path),
            f"no column {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(map(str, table.columns))})",
            "name the columns with --id-column and --label-column",
        )
    frame = table[[id_column, label_column]].set_axis(["request_id", LABEL], axis=1)
    empty = frame[frame.isna().any(axis=1)]
    if len(empty):
        raise MonitorInputError(
            str(path),
            f"{len(empty)} rows have an empty id or label (first: row {int(empty.index[0]) + 2})",
            "fill them in or remove those rows",
        )
    frame["request_id"] = frame["request_id"].astype(str)
    return frame


def join_labels(predictions: pd.DataFrame, labels: pd.DataFrame) -> Joined:
    """``predictions`` (``read_monitor_logs``) with a ``label`` and ``labelled_at`` column
    from ``labels`` (``read_feedback``): the latest label of each id."""
    labels = labels.sort_values("timestamp", kind="stable") if "timestamp" in labels else labels
    counts = labels["request_id"].value_counts()
    duplicates = sorted(counts.index[counts > 1].astype(str))
    latest = labels.drop_duplicates("request_id", keep="last").set_index("request_id")
    ids = predictions["request_id"].astype(str)
    repeated = sorted(ids[ids.duplicated()].unique())
    known = set(ids)
    unknown = sorted(i for i in latest.index if i not in known)
    frame = predictions.copy()
    frame[LABEL] = ids.map(latest[LABEL]).to_numpy()
    stamps = (
        latest["timestamp"] if "timestamp" in latest else pd.Series(dtype="datetime64[ns, UTC]")
    )
    frame[LABELLED_AT] = ids.map(stamps).to_numpy()
    matched = int(frame[LABEL].notna().sum())
    return Joined(frame, matched, unknown, duplicates, repeated)


def _native(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def load_joined(folder: str | Path, since: dt.datetime | None = None) -> Joined:
    """The predictions logged under ``folder`` (a monitor's folder) from ``since`` on, with
    their labels."""
    from nbmlops.serve.monitoring import read_monitor_logs

    return join_labels(read_monitor_logs(folder, since), read_feedback(folder))
