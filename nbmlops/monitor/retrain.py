"""Retraining when drift is found: run the training notebook, tagged with why.

The new pipeline run carries ``nbmlops.retrain.trigger=drift``,
``nbmlops.retrain.drift_report`` (the report's artifact URI on that run once logged; the
local path while it runs) and ``nbmlops.retrain.model`` (``name@alias`` or
``name/version``), and the drift reports as artifacts under ``drift/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbmlops.exceptions import StepFailed

TRIGGER = "nbmlops.retrain.trigger"
REPORT = "nbmlops.retrain.drift_report"
MODEL = "nbmlops.retrain.model"
ARTIFACT_DIR = "drift"


def retrain(
    notebook: str | Path,
    reports: list[Path],
    *,
    model: str | None = None,
    tracking_uri: str | None = None,
    reporter: Any = None,
    **options: Any,
) -> Any:
    """Run ``notebook`` as a pipeline tagged as a drift retraining; returns its RunResult.

    ``reports[0]`` (the JSON result) is the one the tag points to. If a cell fails, the
    reports are still logged on the failed run before :class:`StepFailed` propagates.
    ``options`` go to ``run_notebook`` (``parameters``, ``experiment``, more ``tags``...).
    """
    from nbmlops import project
    from nbmlops.run.runner import run_notebook

    main = reports[0].resolve()
    tags = {**options.pop("tags", {}), TRIGGER: "drift", REPORT: str(main)}
    if model:
        tags[MODEL] = model
    uri = project.tracking_uri(tracking_uri)
    try:
        result = run_notebook(notebook, tracking_uri=uri, reporter=reporter, tags=tags, **options)
    except StepFailed as exc:
        if exc.run_id:
            log_reports(exc.run_id, reports, uri)
        raise
    log_reports(result.run_id, reports, uri)
    return result


def log_reports(run_id: str, reports: list[Path], tracking_uri: str) -> str:
    """Log ``reports`` on ``run_id`` under ``drift/``; point the report tag at the first."""
    from nbmlops.capture.tracking import open_client

    client = open_client(tracking_uri)
    for path in reports:
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    artifact = f"runs:/{run_id}/{ARTIFACT_DIR}/{reports[0].name}"
    client.set_tag(run_id, REPORT, artifact)
    return artifact
