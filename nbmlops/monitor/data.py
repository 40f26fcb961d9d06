"""Reading what drift compares: CSV or Parquet files, a reference profile, monitor logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from nbmlops.monitor.errors import MonitorInputError

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, or :class:`MonitorInputError` saying why not."""
    source = Path(path)
    if not source.exists():
        raise MonitorInputError(str(source), "no such file or folder", "check the path")
    kind = TABLE_SUFFIXES.get(source.suffix.lower())
    if kind is None:
        raise MonitorInputError(
            str(source),
            f"cannot read {source.suffix or 'files without a suffix'}",
            "give a .csv or .parquet file, or the service's monitor log folder",
        )
    try:
        return pd.read_csv(source) if kind == "csv" else pd.read_parquet(source)
    except Exception as exc:
        raise MonitorInputError(
            str(source),
            f"cannot read it as {kind}: {type(exc).__name__}: {exc}",
            f"check that it is a complete {kind} file (write it again), or give another",
        ) from None


def read_current(path: str | Path) -> pd.DataFrame:
    """Production inputs: the service's monitor log folder, or a CSV/Parquet file."""
    source = Path(path)
    if source.is_dir():
        try:
            from nbmlops.serve.monitoring import read_monitor_logs
        except ImportError as exc:
            raise MonitorInputError(
                str(source),
                f"monitor logs cannot be read by this nbmlops ({exc})",
                "export the logged inputs to a .csv or .parquet file and pass that",
            ) from None
        frame: pd.DataFrame = read_monitor_logs(source)
        return frame
    return read_table(source)


def read_reference(path: str | Path) -> pd.DataFrame | dict[str, Any]:
    """``--reference``: a CSV/Parquet file of training data, or a saved profile (.json)."""
    source = Path(path)
    if source.suffix.lower() == ".json":
        from nbmlops.capture.profile import load_profile

        return load_profile(source)
    return read_table(source)
