"""Read pipeline runs back from MLflow: what ``nbmlops runs``/``show``, the JupyterLab panel
and the widget list. Every tag is read through :mod:`nbmlops.capture.schema`."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from nbmlops.capture import schema as s
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
    status: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    record: s.PipelineRecord
    steps: list[StepView] = field(default_factory=list)

    @property
    def notebook(self) -> str:
        return self.record.notebook

    @property
    def seed(self) -> str:
        return str(self.record.seed) if self.record.has_seed else ""

    @property
    def git_commit(self) -> str | None:
        return self.record.git_commit

    @property
    def git_dirty(self) -> bool:
        return bool(self.record.git_dirty)

    @property
    def env_hash(self) -> str:
        return self.record.env_hash

    @property
    def data(self) -> dict[str, str]:
        return self.record.data

    @property
    def model_uri(self) -> str | None:
        return self.record.model_uri

    @property
    def failed_step(self) -> str | None:
        return self.record.failed_step

    @property
    def error(self) -> str | None:
        return self.record.error


def _experiment_ids(client: Any, experiment: str | None) -> list[str]:
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            known = ", ".join(e.name for e in client.search_experiments()) or "none yet"
            raise RunNotFound(f"no experiment {experiment!r} in the store", f"pick one of: {known}")
        return [str(exp.experiment_id)]
    return [str(e.experiment_id) for e in client.search_experiments()]


def pipeline_runs(client: Any, experiment: str | None = None, max_results: int = 20) -> list[Any]:
    """Pipeline runs (MLflow ``Run`` objects), newest first, of one experiment or of all."""
    return list(
        client.search_runs(
            _experiment_ids(client, experiment),
            f"tags.`{s.KIND}` = '{s.PIPELINE}'",
            order_by=["attributes.start_time DESC"],
            max_results=max_results,
        )
    )


@dataclass
class RunRow:
    """One pipeline run as every listing shows it: ``nbmlops runs``, the panel, the widget."""

    run_id: str
    experiment: str
    notebook: str
    status: str
    start_time: str  # ISO 8601, UTC
    duration_s: float | None
    params: dict[str, str]
    metrics: dict[str, float]  # the notebook's own metrics
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


def pipeline_rows(
    client: Any, experiment: str | None = None, limit: int = 20, tracking_uri: str | None = None
) -> list[RunRow]:
    """The pipeline runs of ``experiment`` (of every experiment when None), newest first.

    An unknown experiment is :class:`RunNotFound`. ``tracking_uri``: for links to the
    MLflow UI."""
    names = {str(e.experiment_id): e.name for e in client.search_experiments()}
    rows = []
    for run in pipeline_runs(client, experiment, limit):
        info, record = run.info, s.PipelineRecord.from_tags(run.data.tags)
        rows.append(
            RunRow(
                run_id=info.run_id,
                experiment=names.get(str(info.experiment_id), experiment or ""),
                notebook=record.notebook,
                status=info.status,
                start_time=_iso(info.start_time),
                duration_s=(info.end_time - info.start_time) / 1000 if info.end_time else None,
                params=dict(run.data.params),
                metrics=s.user_metrics(run.data.metrics),
                cache_hits=record.cache_hits,
                git_commit=record.git_commit,
                url=run_url(tracking_uri, info.experiment_id, info.run_id),
            )
        )
    return rows


def run_table(
    client: Any, experiment: str, limit: int = 20, tracking_uri: str | None = None
) -> RunTable:
    """The pipeline runs of ``experiment``, newest first, as the UIs list them (none yet if
    the experiment does not exist). ``tracking_uri``: for links to the MLflow UI."""
    exists = client.get_experiment_by_name(experiment) is not None
    rows = pipeline_rows(client, experiment, limit, tracking_uri) if exists else []
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
    kind = run.data.tags.get(s.KIND)
    if kind != s.PIPELINE:
        raise RunNotFound(
            f"run {run_id} is not a pipeline run (it is {kind or 'not from nbmlops'})",
            "give the id of a pipeline run (`nbmlops runs` lists them)",
        )
    return run


def step_runs(client: Any, run: Any) -> list[Any]:
    """The step runs nested under pipeline run ``run`` (an MLflow ``Run``), in any order."""
    return list(
        client.search_runs(
            [run.info.experiment_id], f"tags.`{s.MLFLOW_PARENT}` = '{run.info.run_id}'"
        )
    )


def load(client: Any, run_id: str, experiment: str | None = None) -> PipelineView:
    """The pipeline run ``run_id`` (or ``"last"``) with its steps, in execution order."""
    if run_id == "last":
        runs = pipeline_runs(client, experiment, max_results=1)
        if not runs:
            raise RunNotFound("no pipeline runs yet", "run one with `nbmlops run NOTEBOOK`")
        run = runs[0]
    else:
        run = pipeline_run(client, run_id)
    record = s.PipelineRecord.from_tags(run.data.tags)
    steps = []
    for child in step_runs(client, run):
        step = s.StepRecord.from_tags(child.data.tags)
        steps.append(
            StepView(
                name=step.step,
                run_id=child.info.run_id,
                status=child.info.status,
                code_hash=step.code_hash,
                seconds=child.data.metrics.get(s.STEP_SECONDS),
                metrics=s.user_metrics(child.data.metrics),
                cache=step.cache,
                cached_from=step.cache_source_run or "",
            )
        )
    order = list(record.steps)
    steps.sort(key=lambda v: order.index(v.name) if v.name in order else len(order))
    return PipelineView(
        run_id=run.info.run_id,
        experiment=client.get_experiment(run.info.experiment_id).name,
        status=run.info.status,
        start_time=run.info.start_time,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        record=record,
        steps=steps,
    )
