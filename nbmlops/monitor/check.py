"""``nbmlops monitor drift`` as one call: what to compare, the comparison, the reports.

The CLI (and later a CI command or the JupyterLab server) calls :func:`compare`, shows the
result, writes the reports with :func:`write_reports` and, on drift, may retrain with
:func:`nbmlops.monitor.retrain.retrain`.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any

from nbmlops import project
from nbmlops.monitor.drift import DriftResult, Thresholds, check_drift
from nbmlops.monitor.errors import MonitorInputError


def compare(
    current: str,
    *,
    model: str | None = None,
    reference: str | None = None,
    thresholds: Thresholds | None = None,
    allow_missing_columns: bool = False,
    retrain: str | None = None,
    tracking_uri: str | None = None,
) -> tuple[DriftResult, str | None]:
    """Drift of ``current`` against ``model``'s reference profile (or a ``reference`` file).

    Returns the result and the model as ``name@alias`` or ``name/version`` (None for a
    file). A ``retrain`` notebook is checked first: one that cannot run is the mistake to
    report, before any drift is.
    """
    from nbmlops.monitor.data import read_current, read_reference

    if (model is None) == (reference is None):
        raise MonitorInputError(
            "nbmlops monitor drift",
            "give either MODEL[@ALIAS] or --reference FILE" + (", not both" if model else ""),
            "e.g. nbmlops monitor drift mymodel@champion --current logs/, or "
            "nbmlops monitor drift --reference train.csv --current today.csv",
        )
    if retrain is not None:
        from nbmlops.notebook.pipeline import load_pipeline

        load_pipeline(retrain)
    label: str | None = None
    if model is not None:
        from nbmlops.promote.registry import load_reference, resolve_model

        ref = resolve_model(model, tracking_uri)
        ref_data: Any = load_reference(ref, tracking_uri)
        label = f"{ref.name}@{ref.alias}" if ref.alias else f"{ref.name}/{ref.version}"
        source = f"{ref} reference profile"
    else:
        assert reference is not None
        ref_data = read_reference(reference)
        source = reference
    result = check_drift(
        ref_data,
        read_current(current),
        thresholds,
        allow_missing_columns=allow_missing_columns,
        reference_source=source,
        current_source=current,
    )
    return result, label


def write_reports(
    result: DriftResult, json_path: str | None, html_path: str | None, needed: bool = False
) -> list[Path]:
    """Write the requested reports; when ``needed`` (to retrain), both, by default under
    ``.nbmlops/drift/<time>/``. The JSON report comes first."""
    from nbmlops.monitor.report import write_html, write_json

    if needed and not (json_path and html_path):
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        folder = project.state_dir() / "drift" / stamp
        json_path = json_path or str(folder / "drift.json")
        html_path = html_path or str(folder / "drift.html")
    written = []
    if json_path:
        written.append(write_json(result, json_path))
    if html_path:
        written.append(write_html(result, html_path))
    return written
