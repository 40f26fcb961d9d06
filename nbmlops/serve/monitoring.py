"""Read the service's monitor logs back: one row per predicted record.

The service (``bento_service.py``, ``log_records``) writes JSON lines under
``<log dir>/<monitor name>/data/data.<worker>.log`` (rotated to ``.log.1``, ``.log.2``...),
each with ``timestamp`` (ISO 8601 UTC), ``request_id``, ``latency_ms``, the features,
``prediction`` and, for a classifier, ``proba`` (``{"<class>": p}``).

Files are parsed by pyarrow's JSON reader (multi-threaded C++, about 3M records in a few
seconds here); a file it refuses (a line cut short by a killed server, a column whose type
changes) is read line by line instead, skipping the lines that are not JSON objects.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from nbmlops.serve.errors import ServeError

_META = ("request_id", "timestamp", "latency_ms")
PROBA_PREFIX = "proba_"


def log_files(path: str | Path, folder: str = "data") -> list[Path]:
    """The ``folder`` files under ``path`` (rotated ones included): a log folder, a monitor's
    folder, or one file. ``folder`` is ``data`` (predictions) or ``feedback`` (labels)."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ServeError(
            f"no monitor log folder {str(root)!r}",
            "give the folder the service logs to (NBMLOPS_MONITOR_DIR; default "
            ".nbmlops/monitoring/ under the folder nbmlops serve ran in)",
        )
    return sorted(
        p for p in root.rglob(f"{folder}.*.log*") if p.is_file() and p.parent.name == folder
    )


def read_monitor_logs(path: str | Path, since: datetime | None = None) -> pd.DataFrame:
    """Every logged record under ``path`` as a DataFrame (those from ``since`` on, if given).

    Columns: ``request_id``, ``timestamp`` (datetime64, UTC), ``latency_ms``, the feature
    columns (in logged order), ``prediction``, and ``proba_<class>`` per class of a
    classifier. Rows in time order. A line cut short (a server killed while writing) is
    skipped. Files last written before ``since`` are not read.
    """
    files = log_files(path)
    if not files:
        raise ServeError(
            f"no monitor logs under {str(path)!r}",
            "send requests to the service with monitoring on (NBMLOPS_MONITOR unset or 1)",
        )
    if since is not None:
        files = [f for f in files if f.stat().st_mtime >= since.timestamp()]
    frame = read_json_lines(files)
    if frame.empty:
        return pd.DataFrame(columns=[*_META, "prediction"])
    frame = frame.drop(columns=["trace_id"], errors="ignore")
    probas = [c for c in frame.columns if c.startswith("proba.")]
    frame = frame.rename(columns={c: PROBA_PREFIX + c.removeprefix("proba.") for c in probas})
    if "timestamp" in frame:
        frame["timestamp"] = to_utc(frame["timestamp"])
        if since is not None:
            frame = frame[frame["timestamp"] >= pd.Timestamp(since)]
        frame = frame.sort_values("timestamp", kind="stable")
    tail = ["prediction"] if "prediction" in frame else []
    tail += [c for c in frame.columns if c.startswith(PROBA_PREFIX)]
    features = [c for c in frame.columns if c not in (*_META, *tail)]
    order = [c for c in _META if c in frame] + features + tail
    return frame[order].reset_index(drop=True)


def to_utc(values: pd.Series) -> pd.Series:
    """ISO 8601 texts (or datetimes) as UTC datetimes; unreadable ones become NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    return pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)


def read_json_lines(files: list[Path]) -> pd.DataFrame:
    """The JSON objects of ``files`` (one per line) as one frame; nested objects become
    ``parent.child`` columns."""
    frames = [frame for frame in map(_frame, files) if len(frame)]
    if not frames:
        return pd.DataFrame()
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _frame(file: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.json as pj

    data = file.read_bytes()
    if not data.strip():
        return pd.DataFrame()
    try:
        table = pj.read_json(io.BytesIO(data))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        rows = [row for row in _rows(data) if isinstance(row, dict)]
        return pd.json_normalize(rows, max_level=1) if rows else pd.DataFrame()
    flat = table.flatten() if any(pa.types.is_struct(f.type) for f in table.schema) else table
    frame: pd.DataFrame = flat.to_pandas()
    return frame


def _rows(data: bytes) -> list[Any]:
    rows = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows
