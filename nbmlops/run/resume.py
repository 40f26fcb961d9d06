"""Which run ``--resume`` continues, and with which parameters and seed.

A resumed run is a new pipeline run with the old run's parameters and seed, tagged with
the run it resumes (``schema.RESUMED_FROM``): the steps that succeeded before hit the step
cache, so execution starts at the step that failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbmlops import project
from nbmlops.capture import orphans, schema
from nbmlops.capture.records import pipeline_run
from nbmlops.capture.tracking import open_client
from nbmlops.exceptions import NbmlopsError, NotFound


@dataclass
class Resumable:
    run_id: str
    parameters: dict[str, str]  # as -p texts
    seed: int


def find_resumable(uri: str, ref: str, experiment: str, stem: str) -> Resumable:
    """The run ``ref`` (an id, or ``last``: the newest failed or killed run of ``experiment``)
    of the notebook whose default experiment is ``stem``."""
    client = open_client(uri)
    if ref == "last":
        # A run whose driver was killed (kill -9) is still RUNNING: end it first.
        orphans.end_dead_runs(client, experiment)
        run = _last_unfinished(client, experiment)
    else:
        run = pipeline_run(client, ref)
        if run.info.status == "RUNNING":
            exp = client.get_experiment(run.info.experiment_id)
            if run.info.run_id in orphans.end_dead_runs(client, exp.name):
                run = pipeline_run(client, ref)
    run_id = run.info.run_id
    if run.info.status == "RUNNING":
        raise NbmlopsError(
            f"--resume {run_id}: that run is still running "
            f"(driver pid {run.data.tags.get(schema.DRIVER_PID, '?')} on "
            f"{run.data.tags.get(schema.DRIVER_HOST, '?')})",
            "wait for it to end, or stop it (Ctrl-C in its terminal), then resume it",
        )
    if run.info.status == "FINISHED":
        raise NbmlopsError(
            f"--resume {run_id}: that run finished; there is nothing to resume",
            "run the notebook again (unchanged steps come from the cache)",
        )
    record = schema.PipelineRecord.from_tags(run.data.tags)
    if record.notebook and project.experiment_name(record.notebook) != stem:
        raise NbmlopsError(
            f"--resume {run_id}: that run executed {record.notebook}, not {stem}.ipynb",
            "resume it with that notebook",
        )
    if not record.has_seed:
        raise NbmlopsError(
            f"--resume {run_id}: the run did not record its parameters and seed",
            "start a new run",
        )
    return Resumable(run_id, dict(record.injected), record.seed)


def _last_unfinished(client: Any, experiment: str) -> Any:
    """The newest failed or killed pipeline run of ``experiment``."""
    exp = client.get_experiment_by_name(experiment)
    found = (
        client.search_runs(
            [exp.experiment_id],
            f"tags.`{schema.KIND}` = '{schema.PIPELINE}' "
            "and attributes.status != 'FINISHED' and attributes.status != 'RUNNING'",
            order_by=["start_time DESC"],
            max_results=1,
        )
        if exp is not None
        else []
    )
    if not found:
        raise NotFound(
            f"--resume last: experiment {experiment!r} has no failed or killed pipeline run",
            "name the run: --resume RUN_ID (see `nbmlops runs`)",
        )
    return found[0]
