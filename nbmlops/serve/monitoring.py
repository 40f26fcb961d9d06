"""Read the service's monitor logs back: one row per predicted record.

The service logs through ``bentoml.monitor`` (default exporter): JSON lines under
``<log dir>/<monitor name>/data/data.<worker>.log`` (rotated daily: ``.log.YYYY-MM-DD``),
each with ``timestamp``, ``request_id``, ``trace_id``, the features and ``prediction``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from nbmlops.serve.errors import ServeError

_META = ("request_id", "timestamp")


def log_files(path: str | Path) -> list[Path]:
    """The data files under ``path``: a log folder, a monitor's folder, or one file."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ServeError(
            f"no monitor log folder {str(root)!r}",
            "give the folder the service logs to (NBMLOPS_MONITOR_DIR; default "
            ".nbmlops/monitoring/ under the folder nbmlops serve ran in)",
        )
    return sorted(p for p in root.rglob("data.*.log*") if p.is_file() and p.parent.name == "data")


def read_monitor_logs(path: str | Path) -> pd.DataFrame:
    """Every logged record under ``path`` as a DataFrame.

    Columns: ``request_id``, ``timestamp`` (datetime), the feature columns (in schema
    order), ``prediction``. Rows in time order. A line cut short (a server killed while
    writing) is skipped.
    """
    files = log_files(path)
    if not files:
        raise ServeError(
            f"no monitor logs under {str(path)!r}",
            "send requests to the service with monitoring on (NBMLOPS_MONITOR unset or 1)",
        )
    rows = []
    for file in files:
        with open(file, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*_META, "prediction"])
    frame = frame.drop(columns=["trace_id"], errors="ignore")
    if "timestamp" in frame:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], errors="coerce", format="ISO8601")
        frame = frame.sort_values("timestamp", kind="stable")
    features = [c for c in frame.columns if c not in (*_META, "prediction")]
    order = (
        [c for c in _META if c in frame]
        + features
        + (["prediction"] if "prediction" in frame else [])
    )
    return frame[order].reset_index(drop=True)
