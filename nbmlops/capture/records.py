"""Read pipeline runs back from MLflow: what ``nbmlops runs``/``show`` print, and the UI lists."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from nbmlops.capture import tracking as t
from nbmlops.exceptions import NotFound


class RunNotFound(NotFound):
    """No such run, experiment or pipeline run in the store."""


@dataclass
class StepView:
    name: str
    run_id: str
    status: str
    code_hash: str
    seconds: float | None
    metrics: dict[str, float]
    cache: str = ""  # hit or miss
    cached_from: str = ""


@dataclass
class PipelineView:
    run_id: str
    experiment: str
    notebook: str
    status: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    seed: str
    git_commit: str | None
    git_dirty: str | None
    env_hash: str
    data: dict[str, str]
    model_uri: str | None
    failed_step: str | None
    error: str | None
    steps: list[StepView] = field(default_factory=list)


def pipeline_runs(client: Any, experiment: str | None = None, max_results: int = 20) -> list[Any]:
    """Pipeline runs, newest first, of one experiment or of all."""
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            known = ", ".join(e.name for e in client.search_experiments()) or "none yet"
            raise RunNotFound(f"no experiment {experiment!r} in the store", f"pick one of: {known}")
        ids = [exp.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    return list(
        client.search_runs(
            ids,
            f"tags.`{t.KIND}` = 'pipeline'",
            order_by=["attributes.start_time DESC"],
            max_results=max_results,
        )
    )


@dataclass
class RunRow:
    """One pipeline run as the JupyterLab panel and the notebook widget list it."""

    run_id: str
    status: str
    start_time: str  # ISO 8601, UTC
    duration_s: float | None
    params: dict[str, str]
    metrics: dict[str, float]
    cache_hits: str | None  # "k/n": steps whose outputs came from the cache
    git_commit: str | None
    url: str | None  # the MLflow UI page, when the store is a tracking server

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunTable:
    experiment: str
    metrics: list[str]  # every metric name the runs logged
    runs: list[RunRow]

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "metrics": self.metrics,
            "runs": [r.to_json() for r in self.runs],
        }


def run_table(
    client: Any, experiment: str, limit: int = 20, tracking_uri: str | None = None
) -> RunTable:
    """The pipeline runs of ``experiment``, newest first, as the UIs list them (none yet if
    the experiment does not exist). ``tracking_uri``: for links to the MLflow UI."""
    exp = client.get_experiment_by_name(experiment)
    found = pipeline_runs(client, experiment, limit) if exp is not None else []
    rows = [
        RunRow(
            run_id=r.info.run_id,
            status=r.info.status,
            start_time=_iso(r.info.start_time),
            duration_s=(r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None,
            params=dict(r.data.params),
            metrics={k: v for k, v in r.data.metrics.items() if not k.startswith("nbmlops.")},
            cache_hits=r.data.tags.get("nbmlops.cache_hits"),
            git_commit=r.data.tags.get(t.GIT_COMMIT),
            url=run_url(tracking_uri, r.info.experiment_id, r.info.run_id),
        )
        for r in found
    ]
    return RunTable(experiment, sorted({k for row in rows for k in row.metrics}), rows)


def run_url(tracking_uri: str | None, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI when ``tracking_uri`` is a tracking server."""
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return None
    from nbmlops.project import without_credentials

    base = without_credentials(tracking_uri).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def _iso(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC).isoformat(timespec="seconds")


def pipeline_run(client: Any, run_id: str) -> Any:
    """The MLflow run ``run_id``, which must be a pipeline run."""
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise RunNotFound(
            f"no run {run_id!r} in the store", "list runs with `nbmlops runs`"
        ) from exc
    kind = run.data.tags.get(t.KIND)
    if kind != "pipeline":
        raise RunNotFound(
            f"run {run_id} is not a pipeline run (it is {kind or 'not from nbmlops'})",
            "give the id of a pipeline run (`nbmlops runs` lists them)",
        )
    return run


def load(client: Any, run_id: str, experiment: str | None = None) -> PipelineView:
    """The pipeline run ``run_id`` (or ``"last"``) with its steps."""
    if run_id == "last":
        runs = pipeline_runs(client, experiment, max_results=1)
        if not runs:
            raise RunNotFound("no pipeline runs yet", "run one with `nbmlops run NOTEBOOK`")
        run = runs[0]
    else:
        run = pipeline_run(client, run_id)
    tags = run.data.tags
    children = client.search_runs(
        [run.info.experiment_id], f"tags.`{t.PARENT}` = '{run.info.run_id}'"
    )
    order = tags.get("nbmlops.steps", "").split(",")
    children = sorted(
        children,
        key=lambda r: (
            order.index(r.data.tags.get(t.STEP)) if r.data.tags.get(t.STEP) in order else 99
        ),
    )
    return PipelineView(
        run_id=run.info.run_id,
        experiment=client.get_experiment(run.info.experiment_id).name,
        notebook=tags.get(t.NOTEBOOK, ""),
        status=run.info.status,
        start_time=run.info.start_time,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        seed=tags.get(t.SEED, ""),
        git_commit=tags.get(t.GIT_COMMIT),
        git_dirty=tags.get(t.GIT_DIRTY),
        env_hash=tags.get(t.ENV_HASH, ""),
        data={
            k.removeprefix(t.DATA_PREFIX): v for k, v in tags.items() if k.startswith(t.DATA_PREFIX)
        },
        model_uri=tags.get(t.MODEL_URI),
        failed_step=tags.get(t.FAILED_STEP),
        error=tags.get(t.ERROR),
        steps=[
            StepView(
                name=c.data.tags.get(t.STEP, "?"),
                run_id=c.info.run_id,
                status=c.info.status,
                code_hash=c.data.tags.get(t.CODE_HASH, ""),
                seconds=c.data.metrics.get("nbmlops.step_seconds"),
                metrics={k: v for k, v in c.data.metrics.items() if not k.startswith("nbmlops.")},
                cache=c.data.tags.get("nbmlops.cache", ""),
                cached_from=c.data.tags.get("nbmlops.cache_source_run", ""),
            )
            for c in children
        ],
    )
