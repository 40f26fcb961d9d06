"""Production data of a served model: where its logs are, and the logged features joined
with their labels as a dataset (``nbmlops monitor export``, ``nbmlops.read_production``).

A model ``NAME[@ALIAS]`` or ``NAME/VERSION`` resolves to its registered version; its
service logs under ``<monitor dir>/<bento name>-v<version>/`` (``data/`` the predictions,
``feedback/`` the labels). The monitor dir is ``--monitor-dir``, else
``$NBMLOPS_MONITOR_DIR``, else ``.nbmlops/monitoring`` of the project (``nbmlops serve``'s
default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nbmlops import project
from nbmlops.monitor.errors import MonitorInputError
from nbmlops.monitor.feedback import LABELLED_AT, Joined, load_joined


@dataclass
class Production:
    """A served model version and the folder its service logs to."""

    label: str  # name@alias or name/version
    ref: Any  # nbmlops.promote.registry.ModelRef
    folder: Path

    def training_metrics(self, tracking_uri: str | None = None) -> dict[str, float]:
        """The metrics MLflow recorded on the run the version was promoted from."""
        from nbmlops.promote.registry import client

        if not self.ref.run_id:
            return {}
        metrics: dict[str, float] = dict(client(tracking_uri).get_run(self.ref.run_id).data.metrics)
        return metrics


def monitor_root(monitor_dir: str | Path | None = None) -> Path:
    """Where services log: ``monitor_dir``, ``$NBMLOPS_MONITOR_DIR`` or ``.nbmlops/monitoring``."""
    chosen = monitor_dir or os.environ.get("NBMLOPS_MONITOR_DIR")
    return Path(chosen) if chosen else project.state_dir() / "monitoring"


def production(
    model: str, monitor_dir: str | Path | None = None, tracking_uri: str | None = None
) -> Production:
    """Resolve ``model`` and find its log folder (it must exist)."""
    from nbmlops.promote.registry import resolve_model
    from nbmlops.serve.build import bento_name

    ref = resolve_model(model, tracking_uri)
    label = f"{ref.name}@{ref.alias}" if ref.alias else f"{ref.name}/{ref.version}"
    root = monitor_root(monitor_dir)
    folder = root / f"{bento_name(ref.name)}-v{ref.version}"
    if not folder.is_dir():
        raise MonitorInputError(
            str(folder),
            f"no monitor logs of {label} (version {ref.version}) here",
            "serve it with monitoring on (nbmlops serve) and send requests, or give the "
            "folder the service logs to with --monitor-dir",
        )
    return Production(label, ref, folder)


def production_frame(joined: Joined, labelled_only: bool = True) -> pd.DataFrame:
    """The logged features and predictions with their labels (only the labelled rows when
    ``labelled_only``), ready to train on."""
    frame = joined.labelled if labelled_only else joined.frame
    return frame.drop(columns=[LABELLED_AT]).reset_index(drop=True)


def read_production(
    model: str,
    since: str | None = "30d",
    *,
    labelled_only: bool = True,
    monitor_dir: str | Path | None = None,
    tracking_uri: str | None = None,
) -> tuple[pd.DataFrame, Production]:
    """``model``'s logged features joined with their labels, from ``since`` ago on."""
    from nbmlops.monitor.performance import since_time

    found = production(model, monitor_dir, tracking_uri)
    joined = load_joined(found.folder, since_time(since))
    return production_frame(joined, labelled_only), found


def export(frame: pd.DataFrame, out: str | Path) -> tuple[Path, str]:
    """Write ``frame`` to ``out`` (Parquet) and return it with its full-content digest."""
    from nbmlops.capture.hashing import hash_data

    target = Path(out)
    if target.suffix.lower() not in (".parquet", ".pq"):
        raise MonitorInputError(str(target), "not a .parquet file name", "end OUT with .parquet")
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)
    return target, hash_data(frame)
