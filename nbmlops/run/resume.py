"""Which run ``--resume`` continues, and with which parameters and seed.

A resumed run is a new pipeline run with the old run's parameters and seed, tagged
``nbmlops.resumed_from``: the steps that succeeded before hit the step cache, so
execution starts at the step that failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nbmlops.capture import tracking as t
from nbmlops.capture.records import pipeline_run
from nbmlops.exceptions import NbmlopsError

INJECTED = "nbmlops.injected"  # the parameters injected into the run, as Python literals
RESUMED_FROM = "nbmlops.resumed_from"


@dataclass
class Resumable:
    run_id: str
    parameters: dict[str, str]  # as -p texts
    seed: int


def find_resumable(uri: str, ref: str, experiment: str, stem: str) -> Resumable:
    """The run ``ref`` (an id, or ``last``: the newest failed or killed run of ``experiment``)."""
    client = t.open_client(uri)
    if ref == "last":
        exp = client.get_experiment_by_name(experiment)
        found = (
            client.search_runs(
                [exp.experiment_id],
                f"tags.`{t.KIND}` = 'pipeline' and attributes.status != 'FINISHED' "
                "and attributes.status != 'RUNNING'",
                order_by=["start_time DESC"],
                max_results=1,
            )
            if exp is not None
            else []
        )
        if not found:
            raise NbmlopsError(
                f"--resume last: experiment {experiment!r} has no failed or killed pipeline run\n"
                "  fix: name the run: --resume RUN_ID (see `nbmlops runs`)"
            )
        run = found[0]
    else:
        run = pipeline_run(client, ref)
    tags = run.data.tags
    if run.info.status == "FINISHED":
        raise NbmlopsError(
            f"--resume {run.info.run_id}: that run finished; there is nothing to resume\n"
            "  fix: run the notebook again (unchanged steps come from the cache)"
        )
    recorded = tags.get(t.NOTEBOOK, "")
    if recorded and recorded.removesuffix(".ipynb").rsplit("/", 1)[-1] != stem:
        raise NbmlopsError(
            f"--resume {run.info.run_id}: that run executed {recorded}, not {stem}.ipynb\n"
            "  fix: resume it with that notebook"
        )
    try:
        parameters = json.loads(tags.get(INJECTED, "{}"))
        seed = int(tags[t.SEED])
    except (ValueError, KeyError):
        raise NbmlopsError(
            f"--resume {run.info.run_id}: the run did not record its parameters and seed\n"
            "  fix: start a new run"
        ) from None
    return Resumable(run.info.run_id, parameters, seed)
