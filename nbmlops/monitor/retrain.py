"""Retraining when drift is found: run the training notebook, tagged with why.

The new pipeline run carries :func:`nbmlops.capture.schema.retrain_tags`: the trigger
(``drift``), the drift report (its artifact URI on that run once logged; the local path
while it runs) and the model compared (``name@alias`` or ``name/version``), and the drift
reports as artifacts under ``drift/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nbmlops.capture import schema
from nbmlops.exceptions import StepFailed

if TYPE_CHECKING:
    from nbmlops.run.progress import Reporter
    from nbmlops.run.runner import RunResult


def retrain(
    notebook: str | Path,
    reports: list[Path],
    *,
    model: str | None = None,
    parameters: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    reporter: Reporter | None = None,
    tags: dict[str, str] | None = None,
    project_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    cause: str = "drift",
) -> RunResult:
    """Run ``notebook`` as a pipeline tagged as a retraining; returns its RunResult.

    ``cause`` is ``drift`` or ``performance`` (the tags and the artifact folder follow it).
    ``reports[0]`` (the JSON result) is the one the tag points to. If a cell fails, the
    reports are still logged on the failed run before :class:`StepFailed` propagates. The
    other arguments are ``run_notebook``'s; ``tags`` are added to the retraining's own.
    """
    from nbmlops import project
    from nbmlops.run.runner import run_notebook

    uri = project.tracking_uri(tracking_uri)
    try:
        result = run_notebook(
            notebook,
            parameters,
            experiment=experiment,
            tracking_uri=uri,
            reporter=reporter,
            tags={**(tags or {}), **schema.retrain_tags(str(reports[0].resolve()), model, cause)},
            project_dir=project_dir,
            cache_dir=cache_dir,
        )
    except StepFailed as exc:
        if exc.run_id:
            log_reports(exc.run_id, reports, uri, cause)
        raise
    log_reports(result.run_id, reports, uri, cause)
    return result


def log_reports(run_id: str, reports: list[Path], tracking_uri: str, cause: str = "drift") -> str:
    """Log ``reports`` on ``run_id`` under ``drift/`` (``performance/``); point the report
    tag at the first."""
    from nbmlops.capture.tracking import open_client

    folder, tag = (
        (schema.DRIFT_DIR, schema.RETRAIN_REPORT)
        if cause == "drift"
        else (schema.PERFORMANCE_DIR, schema.RETRAIN_PERFORMANCE_REPORT)
    )
    client = open_client(tracking_uri)
    for path in reports:
        client.log_artifact(run_id, str(path), folder)
    artifact = f"runs:/{run_id}/{folder}/{reports[0].name}"
    client.set_tag(run_id, tag, artifact)
    return artifact
