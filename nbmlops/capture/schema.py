"""The run record: every tag, metric, artifact and label name nbmlops writes, and typed
readers and writers for the records made of them.

This is nbmlops' public format. The MLflow UI, ``mlflow.search_runs``, ``nbmlops show``,
promotion, the served model's ``/model`` answer and the JupyterLab panel all read it, so
a name is spelled here and nowhere else; ``docs/schema.md`` is the same table for people
(a test keeps the two in step).

Records (each a dataclass with a writer, ``tags()``, and a reader, ``from_tags()``):

- :class:`PipelineRecord`: the pipeline run of one ``nbmlops run`` (``kind=pipeline``);
- :class:`StepRecord`: a step run, nested under its pipeline run (``kind=step``);
- :class:`SweepRecord`: the run a sweep's points are nested under (``kind=sweep``);
- :class:`Lineage`: what a registered model version says of the run it came from;
- :class:`AliasEvent`: one alias move (promotion, rollback), kept on the registered model.

The outcome of a run (failure, cache hits, model, data) is written as it becomes known,
with :func:`failure_tags`, :func:`cache_hits_tag`, :func:`data_tag` and :data:`MODEL_URI`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PREFIX = "nbmlops."

# ---------------------------------------------------------------- conventions

DEFAULT_ALIAS = "champion"  # the alias that names the live version of a registered model
MODES = ("max", "min")  # how a metric compares: higher is better, lower is better

# ---------------------------------------------------------------- run tags, every run

KIND = "nbmlops.kind"  # one of the kinds below
PIPELINE = "pipeline"
STEP_KIND = "step"
SWEEP_KIND = "sweep"
INTERACTIVE = "interactive"  # a notebook run outside a pipeline (JupyterLab, the API)
KINDS = (PIPELINE, STEP_KIND, SWEEP_KIND, INTERACTIVE)

NOTEBOOK = "nbmlops.notebook"  # the notebook, relative to the git root or the project
SETUP_HASH = "nbmlops.setup_hash"  # code hash of the setup cells
MODEL_URI = "nbmlops.model_uri"  # the model nbmlops.log_model logged (models:/m-...)
MODEL_FILES = "nbmlops.model_files"  # JSON: file -> sha256 of that model, taken at log time
# runs:/ URI of the held-out set log_model(reference=...) stored (labels and the model's class
# probabilities, JSON): on the run, and on the model version promoted from it
CALIBRATION = "nbmlops.calibration"
DATA_PREFIX = "nbmlops.data."  # + data name: its full-content BLAKE3 digest
ERROR = "nbmlops.error"  # why the run failed, or why its record is incomplete
# The process that writes a run, so a later command can tell a run whose driver died from
# one still running; the PID namespace, because containers that share a host name do not
# share PIDs.
DRIVER_PID = "nbmlops.driver_pid"
DRIVER_HOST = "nbmlops.driver_host"
DRIVER_PIDNS = "nbmlops.driver_pidns"
KILLED = "nbmlops.killed"  # a run ended FAILED because its driver was gone: why

# ---------------------------------------------------------------- pipeline run tags

SEED = "nbmlops.seed"
SEED_SOURCE = "nbmlops.seed_source"  # option | parameter | generated
SEED_SOURCES = ("option", "parameter", "generated")
ENV_HASH = "nbmlops.env_hash"  # hash of the kernel's installed package set
OUTPUT_DIR = "nbmlops.output_dir"  # where the executed notebooks were written
STEPS = "nbmlops.steps"  # the steps in execution order, comma-separated
GIT_COMMIT = "nbmlops.git_commit"
GIT_DIRTY = "nbmlops.git_dirty"  # "true" when the checkout had uncommitted changes
INJECTED = "nbmlops.injected"  # JSON: the parameters injected, as Python literal source
RESUMED_FROM = "nbmlops.resumed_from"  # the failed run that --resume continued
CACHE_HITS = "nbmlops.cache_hits"  # "k/n": steps whose outputs came from the cache
FAILED_STEP = "nbmlops.failed_step"
FAILED_CELL = "nbmlops.failed_cell"  # the failing cell's number (from 1, as JupyterLab counts)
# A step ended the pipeline early with sys.exit(0) (or SystemExit()): "stop here, successfully".
STOPPED_BY = "nbmlops.stopped_by"  # the step that stopped it
SKIPPED = "nbmlops.skipped"  # the steps that did not run because of it, comma-separated
CI = "nbmlops.ci"  # the configured pipeline `nbmlops ci` ran
SWEEP = "nbmlops.sweep"  # a sweep point: the sweep run's id
SWEEP_POINT = "nbmlops.sweep_point"  # a sweep point: its index in the grid
RETRAIN_TRIGGER = "nbmlops.retrain.trigger"  # "drift"
RETRAIN_REPORT = "nbmlops.retrain.drift_report"  # the drift report's artifact URI
RETRAIN_MODEL = "nbmlops.retrain.model"  # the model whose drift started it
RETRAIN_CAUSE = "nbmlops.retrain.cause"  # "drift" or "performance"
RETRAIN_PERFORMANCE_REPORT = "nbmlops.retrain.performance_report"  # its artifact URI

# ---------------------------------------------------------------- step run tags

STEP = "nbmlops.step"  # the step's name
CODE_HASH = "nbmlops.code_hash"  # hash of the step's normalised code
UPSTREAM = "nbmlops.upstream"  # comma-separated upstream steps
CELLS = "nbmlops.cells"  # comma-separated cell numbers (from 1, as JupyterLab counts)
CACHE = "nbmlops.cache"  # hit | miss
HIT, MISS = "hit", "miss"
CACHE_KEY = "nbmlops.cache_key"
CACHE_REASON = "nbmlops.cache_reason"  # a miss: why it executed ("parameter C; code changed")
CACHE_SOURCE_RUN = "nbmlops.cache_source_run"  # a hit: the step run whose outputs it reused
UNSAVED = "nbmlops.unsaved"  # variables that could not be saved (the step is not cached)

# ---------------------------------------------------------------- sweep run tags

GRID = "nbmlops.grid"  # JSON: parameter -> the values swept
POINTS = "nbmlops.points"
POINTS_FAILED = "nbmlops.points_failed"
SWEEP_METRIC = "nbmlops.sweep_metric"
SWEEP_MODE = "nbmlops.sweep_mode"
BEST_RUN = "nbmlops.best_run"

# ---------------------------------------------------------------- MLflow's own tags we set

MLFLOW_PARENT = "mlflow.parentRunId"
MLFLOW_USER = "mlflow.user"
MLFLOW_SOURCE_NAME = "mlflow.source.name"
MLFLOW_SOURCE_TYPE = "mlflow.source.type"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_DATA_CONTEXT = "mlflow.data.context"  # dataset input tag: file | step-output
DATASET_STEP = "nbmlops.step"  # on a step output's dataset source: the step that made it

# ---------------------------------------------------------------- metrics

STEP_SECONDS = "nbmlops.step_seconds"
CELL_SECONDS = "nbmlops.cell_seconds"  # one value per cell, the cell index as its step


def is_user_metric(name: str) -> bool:
    """A metric the notebook logged (nbmlops' own timings are not)."""
    return not name.startswith(PREFIX)


def user_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if is_user_metric(k)}


# ---------------------------------------------------------------- artifacts

PIPELINE_JSON = "pipeline.json"  # the pipeline as parsed (steps, cells, parameters)
REQUIREMENTS = "environment/requirements.txt"  # the kernel's package set
NOTEBOOK_DIR = "notebook"  # the executed notebook (of the pipeline, or of the step)
OUTPUTS_JSON = "outputs.json"  # a step's outputs: name, kind, digest, columns
SWEEP_JSON = "sweep.json"  # a sweep's points and their outcomes
DRIFT_DIR = "drift"  # the drift reports that started a retraining
PERFORMANCE_DIR = "performance"  # the performance report that started a retraining
REFERENCE_DIR = "nbmlops/reference"  # reference profiles, on the promoted run
CALIBRATION_DIR = "nbmlops/calibration"  # log_model's held-out sets, on the model's run


def reference_artifact(model_name: str, version: str) -> str:
    return f"{REFERENCE_DIR}/{safe_name(model_name)}-v{version}.json"


def calibration_artifact(model_name: str) -> str:
    return f"{CALIBRATION_DIR}/{safe_name(model_name)}.json"


# ---------------------------------------------------------------- model version tags

MV_RUN_ID = "nbmlops.run_id"
MV_EXPERIMENT = "nbmlops.experiment"
CODE_HASH_PREFIX = "nbmlops.code_hash."  # + step name
METRIC_PREFIX = "nbmlops.metric."  # + metric name: the run's metrics, as promoted
FILES = "nbmlops.integrity.files"  # JSON: file -> sha256, the model's manifest
DIGEST = "nbmlops.integrity.sha256"  # sha256 of the manifest
SIGNED_MANIFEST = "nbmlops.signature.manifest"  # canonical JSON: name, version, run id, files
SIGNATURE = "nbmlops.signature"  # base64 ed25519 signature of the signed manifest
SIGNATURE_KEY = "nbmlops.signature.key"  # id of the key that signed it (sha256 prefix)
REFERENCE = "nbmlops.reference"  # runs:/ URI of the training data's reference profile
REFERENCE_DATA = "nbmlops.reference.data"  # "<variable> <digest>" it was built from
FORCED = "nbmlops.forced"  # the refusals --force overrode

# ---------------------------------------------------------------- registered model tags

MANAGED = "nbmlops.managed"  # "true": nbmlops created it
EVENT_PREFIX = "nbmlops.event."  # + zero-padded sequence number: an AliasEvent (JSON)

# ---------------------------------------------------------------- Bento labels

BENTO_MODEL = "nbmlops.model"
BENTO_VERSION = "nbmlops.version"

_TAG_SAFE = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def safe_name(name: str) -> str:
    """``name`` with the characters MLflow refuses in tag keys replaced by ``_``."""
    return _TAG_SAFE.sub("_", name)


def data_tag(name: str) -> str:
    return DATA_PREFIX + safe_name(name)


def data_digests(tags: Mapping[str, str]) -> dict[str, str]:
    """The data digests among ``tags``: data name -> digest."""
    return {k.removeprefix(DATA_PREFIX): v for k, v in tags.items() if k.startswith(DATA_PREFIX)}


def failure_tags(step: str | None, cell: int, error: str) -> dict[str, str]:
    """Where a pipeline run failed: the step (``(setup)`` before the first), cell, error."""
    return {FAILED_STEP: step or "(setup)", FAILED_CELL: str(cell), ERROR: error[:4000]}


def cache_hits_tag(hits: int, ran: int) -> dict[str, str]:
    return {CACHE_HITS: f"{hits}/{ran}"}


def stopped_tags(step: str, skipped: list[str]) -> dict[str, str]:
    """A pipeline run that ``step`` stopped early, successfully, before ``skipped`` ran."""
    return {STOPPED_BY: step, SKIPPED: _csv(skipped)}


def _csv(items: Any) -> str:
    return ",".join(str(i) for i in items)


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(p for p in (text or "").split(",") if p)


def _bool(text: str | None) -> bool | None:
    return None if text is None else text == "true"


@dataclass(frozen=True)
class PipelineRecord:
    """The tags of a pipeline run written when it starts, and the outcome read back."""

    notebook: str
    seed: int
    seed_source: str
    setup_hash: str
    env_hash: str
    output_dir: str
    steps: tuple[str, ...]
    injected: dict[str, str] = field(default_factory=dict)  # name -> literal source
    git_commit: str | None = None
    git_dirty: bool | None = None
    resumed_from: str | None = None
    # Written later, read back:
    model_uri: str | None = None
    failed_step: str | None = None
    failed_cell: int | None = None
    error: str | None = None
    cache_hits: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    stopped_by: str | None = None
    skipped: tuple[str, ...] = ()

    def tags(self) -> dict[str, str]:
        tags = {
            KIND: PIPELINE,
            NOTEBOOK: self.notebook,
            SEED: str(self.seed),
            SEED_SOURCE: self.seed_source,
            SETUP_HASH: self.setup_hash,
            ENV_HASH: self.env_hash,
            OUTPUT_DIR: self.output_dir,
            STEPS: _csv(self.steps),
            INJECTED: json.dumps(self.injected),
            MLFLOW_SOURCE_NAME: self.notebook,
            MLFLOW_SOURCE_TYPE: "NOTEBOOK",
        }
        if self.git_commit:
            tags[GIT_COMMIT] = tags[MLFLOW_GIT_COMMIT] = self.git_commit
            tags[GIT_DIRTY] = "true" if self.git_dirty else "false"
        if self.resumed_from:
            tags[RESUMED_FROM] = self.resumed_from
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> PipelineRecord:
        """Read a pipeline run's tags; a missing tag reads as empty (never KeyError)."""
        try:
            seed = int(tags.get(SEED, ""))
        except ValueError:
            seed = -1
        try:
            injected = json.loads(tags.get(INJECTED) or "{}")
        except ValueError:
            injected = {}
        cell = tags.get(FAILED_CELL)
        return cls(
            notebook=tags.get(NOTEBOOK, ""),
            seed=seed,
            seed_source=tags.get(SEED_SOURCE, ""),
            setup_hash=tags.get(SETUP_HASH, ""),
            env_hash=tags.get(ENV_HASH, ""),
            output_dir=tags.get(OUTPUT_DIR, ""),
            steps=_split(tags.get(STEPS)),
            injected=injected if isinstance(injected, dict) else {},
            git_commit=tags.get(GIT_COMMIT),
            git_dirty=_bool(tags.get(GIT_DIRTY)),
            resumed_from=tags.get(RESUMED_FROM),
            model_uri=tags.get(MODEL_URI),
            failed_step=tags.get(FAILED_STEP),
            failed_cell=int(cell) if cell and cell.lstrip("-").isdigit() else None,
            error=tags.get(ERROR),
            cache_hits=tags.get(CACHE_HITS),
            data=data_digests(tags),
            stopped_by=tags.get(STOPPED_BY),
            skipped=_split(tags.get(SKIPPED)),
        )

    @property
    def has_seed(self) -> bool:
        return self.seed >= 0


@dataclass(frozen=True)
class StepRecord:
    """The tags of a step run: written when it starts; a cache hit names its source."""

    step: str
    code_hash: str
    setup_hash: str
    upstream: tuple[str, ...]
    cells: tuple[int, ...]
    notebook: str
    cache: str = MISS
    cache_key: str = ""
    cache_source_run: str | None = None
    unsaved: tuple[str, ...] = ()
    cache_reason: str = ""

    def tags(self, parent_run_id: str) -> dict[str, str]:
        tags = {
            KIND: STEP_KIND,
            STEP: self.step,
            CODE_HASH: self.code_hash,
            SETUP_HASH: self.setup_hash,
            UPSTREAM: _csv(self.upstream),
            CELLS: _csv(self.cells),
            MLFLOW_SOURCE_NAME: self.notebook,
            MLFLOW_PARENT: parent_run_id,
            CACHE: self.cache,
            CACHE_KEY: self.cache_key,
        }
        if self.cache_source_run:
            tags[CACHE_SOURCE_RUN] = self.cache_source_run
        if self.cache_reason:
            tags[CACHE_REASON] = self.cache_reason[:4000]
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> StepRecord:
        return cls(
            step=tags.get(STEP, "?"),
            code_hash=tags.get(CODE_HASH, ""),
            setup_hash=tags.get(SETUP_HASH, ""),
            upstream=_split(tags.get(UPSTREAM)),
            cells=tuple(int(c) for c in _split(tags.get(CELLS)) if c.isdigit()),
            notebook=tags.get(MLFLOW_SOURCE_NAME, ""),
            cache=tags.get(CACHE, ""),
            cache_key=tags.get(CACHE_KEY, ""),
            cache_source_run=tags.get(CACHE_SOURCE_RUN) or None,
            unsaved=_split(tags.get(UNSAVED)),
            cache_reason=tags.get(CACHE_REASON, ""),
        )


def unsaved_tag(names: list[str]) -> dict[str, str]:
    return {UNSAVED: _csv(names)}


@dataclass(frozen=True)
class SweepRecord:
    """The tags of a sweep run; its outcome (failed points, the best run) is added at the end."""

    notebook: str
    grid: dict[str, list[str]]
    points: int
    metric: str | None
    mode: str
    points_failed: int | None = None
    best_run: str | None = None

    def tags(self) -> dict[str, str]:
        return {
            KIND: SWEEP_KIND,
            NOTEBOOK: self.notebook,
            GRID: json.dumps(self.grid),
            POINTS: str(self.points),
            SWEEP_METRIC: self.metric or "",
            SWEEP_MODE: self.mode,
        }

    def outcome_tags(self) -> dict[str, str]:
        tags = {POINTS_FAILED: str(self.points_failed or 0), SWEEP_METRIC: self.metric or ""}
        if self.best_run:
            tags[BEST_RUN] = self.best_run
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> SweepRecord:
        failed = tags.get(POINTS_FAILED)
        return cls(
            notebook=tags.get(NOTEBOOK, ""),
            grid=json.loads(tags.get(GRID) or "{}"),
            points=int(tags.get(POINTS) or 0),
            metric=tags.get(SWEEP_METRIC) or None,
            mode=tags.get(SWEEP_MODE, MODES[0]),
            points_failed=int(failed) if failed and failed.isdigit() else None,
            best_run=tags.get(BEST_RUN),
        )


def sweep_point_tags(sweep_run_id: str, index: int) -> dict[str, str]:
    """The tags that nest a sweep's point (a pipeline run) under the sweep run."""
    return {MLFLOW_PARENT: sweep_run_id, SWEEP: sweep_run_id, SWEEP_POINT: str(index)}


def retrain_tags(report: str, model: str | None, cause: str = "drift") -> dict[str, str]:
    """A pipeline run started because ``model`` drifted or performed below its threshold
    (``cause``: ``drift`` or ``performance``; ``report``: the report that said so)."""
    report_tag = RETRAIN_REPORT if cause == "drift" else RETRAIN_PERFORMANCE_REPORT
    tags = {RETRAIN_TRIGGER: cause, RETRAIN_CAUSE: cause, report_tag: report}
    if model:
        tags[RETRAIN_MODEL] = model
    return tags


def driver_tags(pid: int, host: str, pid_namespace: str) -> dict[str, str]:
    return {DRIVER_PID: str(pid), DRIVER_HOST: host, DRIVER_PIDNS: pid_namespace}


@dataclass(frozen=True)
class Lineage:
    """What a registered model version records of the run it came from."""

    run_id: str
    experiment: str
    model_uri: str
    notebook: str | None = None
    git_commit: str | None = None
    git_dirty: str | None = None
    seed: str | None = None
    env_hash: str | None = None
    code_hashes: dict[str, str] = field(default_factory=dict)  # step -> code hash
    data: dict[str, str] = field(default_factory=dict)  # data name -> digest

    def tags(self) -> dict[str, str]:
        tags = {MV_RUN_ID: self.run_id, MV_EXPERIMENT: self.experiment, MODEL_URI: self.model_uri}
        for key, value in (
            (NOTEBOOK, self.notebook),
            (GIT_COMMIT, self.git_commit),
            (GIT_DIRTY, self.git_dirty),
            (SEED, self.seed),
            (ENV_HASH, self.env_hash),
        ):
            if value:
                tags[key] = value
        tags.update({data_tag(k): v for k, v in self.data.items()})
        tags.update({CODE_HASH_PREFIX + safe_name(k): v for k, v in self.code_hashes.items()})
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Lineage:
        return cls(
            run_id=tags.get(MV_RUN_ID, ""),
            experiment=tags.get(MV_EXPERIMENT, ""),
            model_uri=tags.get(MODEL_URI, ""),
            notebook=tags.get(NOTEBOOK),
            git_commit=tags.get(GIT_COMMIT),
            git_dirty=tags.get(GIT_DIRTY),
            seed=tags.get(SEED),
            env_hash=tags.get(ENV_HASH),
            code_hashes={
                k.removeprefix(CODE_HASH_PREFIX): v
                for k, v in tags.items()
                if k.startswith(CODE_HASH_PREFIX)
            },
            data=data_digests(tags),
        )


def lineage_labels(tags: Mapping[str, str]) -> dict[str, str]:
    """A model version's nbmlops tags without its manifests (what the served model shows)."""
    return {
        k: v
        for k, v in sorted(tags.items())
        if k.startswith(PREFIX) and k not in (FILES, SIGNED_MANIFEST)
    }


def metric_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    """A run's metrics as model version tags, exactly (17 significant digits)."""
    return {METRIC_PREFIX + k: f"{v:.17g}" for k, v in metrics.items()}


def recorded_metric(tags: Mapping[str, str], metric: str) -> float | None:
    text = tags.get(METRIC_PREFIX + metric)
    return None if text is None else float(text)


@dataclass
class AliasEvent:
    """One alias move of a registered model: a promotion or a rollback."""

    seq: int
    action: str  # promote | rollback
    alias: str
    from_version: str | None
    to_version: str
    user: str
    time: str  # ISO 8601, UTC
    run_id: str | None = None
    metric: str | None = None
    value: float | None = None
    previous_value: float | None = None
    forced: bool = False
    reason: str = ""

    def tag(self) -> tuple[str, str]:
        """The registered model tag that records this event: key and JSON value."""
        data = {k: v for k, v in asdict(self).items() if k != "seq"}
        return f"{EVENT_PREFIX}{self.seq:06d}", json.dumps(data, sort_keys=True)

    @classmethod
    def from_tag(cls, key: str, value: str) -> AliasEvent:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in json.loads(value).items() if k in known}
        return cls(seq=int(key.removeprefix(EVENT_PREFIX)), **data)


def alias_events(tags: Mapping[str, str]) -> list[AliasEvent]:
    """Every alias move among a registered model's tags, oldest first."""
    found = [AliasEvent.from_tag(k, v) for k, v in tags.items() if k.startswith(EVENT_PREFIX)]
    return sorted(found, key=lambda e: e.seq)


# --- added for the run stage

# The values of SEED_SOURCE, by name: where a pipeline run's seed came from.
SEED_OPTION, SEED_PARAMETER, SEED_GENERATED = SEED_SOURCES


def interactive_tags(notebook: str) -> dict[str, str]:
    """The tags of a notebook's run outside a pipeline (JupyterLab, plain papermill)."""
    return {KIND: INTERACTIVE, NOTEBOOK: notebook}
