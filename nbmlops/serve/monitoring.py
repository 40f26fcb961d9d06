"""Read the service's monitor logs back: one row per predicted record.

The service (``bento_service.py``, ``log_records``) writes JSON lines under
``<log dir>/<monitor name>/data/data.<worker>.log`` (rotated to ``.log.1``, ``.log.2``...),
each with ``timestamp`` (ISO 8601 UTC), ``request_id``, ``latency_ms``, the features,
``prediction`` and, for a classifier, ``proba`` (``{"<class>": p}``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from nbmlops.serve.errors import ServeError

_META = ("request_id", "timestamp", "latency_ms")
PROBA_PREFIX = "proba_"


def log_files(path: str | Path) -> list[Path]:
    """The data files under ``path`` (rotated ones included): a log folder, a monitor's
    folder, or one file."""
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

    Columns: ``request_id``, ``timestamp`` (datetime64, UTC), ``latency_ms``, the feature
    columns (in logged order), ``prediction``, and ``proba_<class>`` per class of a
    classifier. Rows in time order. A line cut short (a server killed while writing) is
    skipped.
    """
    files = log_files(path)
    if not files:
        raise ServeError(
            f"no monitor logs under {str(path)!r}",
            "send requests to the service with monitoring on (NBMLOPS_MONITOR unset or 1)",
        )
    rows = [row for file in files for row in _rows(file)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*_META, "prediction"])
    frame = frame.drop(columns=["trace_id"], errors="ignore")
    if "proba" in frame:
        probas = pd.DataFrame([p if isinstance(p, dict) else {} for p in frame.pop("proba")])
        frame = frame.join(probas.add_prefix(PROBA_PREFIX).set_index(frame.index))
    if "timestamp" in frame:
        frame["timestamp"] = pd.to_datetime(
            frame["timestamp"], errors="coerce", format="ISO8601", utc=True
        )
        frame = frame.sort_values("timestamp", kind="stable")
    tail = ["prediction"] if "prediction" in frame else []
    tail += [c for c in frame.columns if c.startswith(PROBA_PREFIX)]
    features = [c for c in frame.columns if c not in (*_META, *tail)]
    order = [c for c in _META if c in frame] + features + tail
    return frame[order].reset_index(drop=True)


def _rows(file: Path) -> list[dict[str, Any]]:
    rows = []
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
    return rows
