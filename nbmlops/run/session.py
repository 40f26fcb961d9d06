"""The driver's side of one pipeline run: what the engine reports, and what gets recorded.

The engine calls a :class:`Session` as cells and steps start and end; the session shows
progress (through a reporter), reads the events the notebook API wrote in the kernel, and
queues every MLflow write on the :class:`~nbmlops.capture.tracking.Tracker` thread, so the
kernel never waits for the tracking store. Ctrl-C and SIGTERM are held back while the
session updates its bookkeeping, so an interruption never loses what was already read.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbclient.exceptions import CellExecutionError

from nbmlops import project
from nbmlops.cache import status as cache_status
from nbmlops.cache.keys import SETUP_RNG, KeyContext, inert
from nbmlops.cache.store import Entry, KeyLock, StepCache, changed_files
from nbmlops.capture import orphans, schema
from nbmlops.capture import tracking as t
from nbmlops.capture.environment import Environment
from nbmlops.capture.hashing import write_atomic
from nbmlops.notebook.pipeline import PAPERMILL_INJECTED_TAG, Pipeline, user_cells
from nbmlops.run.events import read_json_lines
from nbmlops.run.observe import unobserved_readers
from nbmlops.run.plan import RunPlan
from nbmlops.run.progress import Reporter

DATA_KINDS = ("dataframe", "series", "ndarray")
EVENT_KINDS = ("metric", "param", "data", "model")  # what a cache hit replays


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done (they are delivered after it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass
class StepState:
    """A step of this run as the session knows it: its MLflow run, status and outputs."""

    name: str
    run_id: Future[str]
    started: float
    status: str = "RUNNING"
    seconds: float = 0.0
    outputs: list[dict[str, Any]] = field(default_factory=list)
    unsaved: list[dict[str, str]] = field(default_factory=list)
    cached_from: str | None = None  # the run whose outputs a cache hit reused
    io: dict[str, Any] = field(default_factory=dict)  # files read, written, listed (kernel)


@dataclass
class Failure:
    step: str | None
    cell_index: int  # its number in the source notebook (from 1, as JupyterLab counts)
    source: str
    ename: str
    evalue: str
    traceback: list[str]


@dataclass
class Session:
    """One run's driver-side state: what was planned, and what has happened so far."""

    plan: RunPlan
    environment: Environment  # the kernel's package set
    keys: KeyContext  # computes the steps' cache keys
    tracker: t.Tracker
    reporter: Reporter
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("nbmlops.run"))
    # What the run did so far:
    parent_id: Future[str] | None = None  # the pipeline run, once start() queued its creation
    experiment_id: str = ""  # set on the tracker's thread when the pipeline run is created
    steps: dict[str, StepState] = field(default_factory=dict)  # the steps started, in order
    failure: Failure | None = None  # the cell that failed
    metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each
    model_uri: str | None = None  # the model the notebook logged last
    produced: dict[str, str] = field(default_factory=dict)  # variable -> digest, so far
    producers: dict[str, str] = field(default_factory=dict)  # variable -> the step that made it
    inert: set[str] = field(default_factory=set)  # produced variables that are plain data
    rng: str = SETUP_RNG  # digest of the random generators' state, so far
    stopped_by: str | None = None  # the step that ended the run with sys.exit(0)
    skipped: list[str] = field(default_factory=list)  # the steps it kept from running
    _keys: dict[str, str] = field(default_factory=dict)  # step -> its cache key
    _parts: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> its key's parts
    _reasons: dict[str, list[str]] = field(default_factory=dict)  # step -> why it executes
    _unsealed: dict[str, Path] = field(default_factory=dict)  # step -> its entry, unsealed
    _sealing_rng: dict[str, str] = field(default_factory=dict)  # step -> rng digest after it
    _locks: dict[str, KeyLock] = field(default_factory=dict)  # step -> its key's lock, held
    _events_offset: int = 0  # how far the notebook API's events were read
    _current_cell: Any = None
    _nb: Any = None  # the notebook papermill is executing (for notebooks of killed steps)

    @property
    def pipeline(self) -> Pipeline:
        return self.plan.pipeline

    @property
    def run_dir(self) -> Path:
        return self.plan.run_dir

    @property
    def cache(self) -> StepCache:
        return self.plan.cache

    @property
    def experiment(self) -> str:
        return self.plan.experiment

    # ------------------------------------------------------------ run start

    def start(self) -> None:
        """Clear what a previous run left in a reused output folder; create the parent run."""
        steps_dir = self.run_dir / "steps"
        steps_dir.mkdir(parents=True, exist_ok=True)
        stem = self.pipeline.stem
        stale = [
            self.run_dir / "events.jsonl",
            self.run_dir / f"{stem}.ipynb",
            self.run_dir / f"{stem}.partial.ipynb",
        ]
        for path in [*stale, *steps_dir.iterdir()]:
            if path.is_file():
                path.unlink()
        plan, env = self.plan, self.environment
        tags = {**plan.record(env.hash).tags(), **plan.tags}
        artifact_root = project.artifact_root(self.tracker.uri)

        def create(client: Any) -> str:
            exp = t.experiment_id(client, plan.experiment, artifact_root)
            self.experiment_id = exp
            orphans.end_dead_runs(client, plan.experiment)  # runs a killed driver left RUNNING
            run_id = t.create_run(client, exp, plan.pipeline.stem, tags, plan.values)
            t.log_json(client, run_id, plan.pipeline.describe(), schema.PIPELINE_JSON)
            client.log_text(run_id, env.requirements, schema.REQUIREMENTS)
            return run_id

        self.parent_id = self.tracker.submit(create)

    def prepare(self, nb: nbformat.NotebookNode) -> None:
        """Mark each cell of the notebook papermill will run with its step and source index.

        papermill either inserts an ``injected-parameters`` cell or replaces the one the
        source already has in place. Cells are reordered only when ``after:`` tags put a
        step before an earlier one.
        """
        self._nb = nb
        source = user_cells(self.pipeline.notebook)  # papermill removed its error markers
        step_of = {c.index: s.name for s in self.pipeline.steps for c in s.cells}
        i = 0
        for cell in nb.cells:
            tags = cell.metadata.get("tags", [])
            inserted = PAPERMILL_INJECTED_TAG in tags and (
                i >= len(source)
                or PAPERMILL_INJECTED_TAG not in source[i].get("metadata", {}).get("tags", [])
            )
            if inserted:
                cell.metadata["nbmlops"] = {"cell": PAPERMILL_INJECTED_TAG}
                continue
            i += 1  # the cell's number, as JupyterLab counts
            cell.metadata["nbmlops"] = {"cell": i, **({"step": step_of[i]} if i in step_of else {})}
            if i in self.pipeline.widget_cells:  # shown interactively, never run here
                cell.metadata["nbmlops"]["widget"] = True
        order = {s.name: n for n, s in enumerate(self.pipeline.steps)}
        keys: list[int] = []
        for cell in nb.cells:  # a widget cell stays after the cell before it
            meta = cell.metadata["nbmlops"]
            widget = meta.get("widget") and keys
            keys.append(keys[-1] if widget else order.get(meta.get("step"), -1))
        nb.cells = [c for _, c in sorted(zip(keys, nb.cells, strict=True), key=lambda kc: kc[0])]

    def kernel_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONHASHSEED": str(self.plan.seed),
                "MLFLOW_TRACKING_URI": self.tracker.uri,
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "NBMLOPS_NOTEBOOK": self.plan.notebook_label,
                "NBMLOPS_PROJECT": str(self.plan.root),
            }
        )
        return env

    def kernel_start_call(self) -> str:
        return f"start({str(self.run_dir)!r}, {str(self.cache.objects)!r}, {self.plan.seed})"

    def warn_tags(self) -> None:
        """Show the tags the notebook seems to misspell (they are not obeyed)."""
        for warning in self.pipeline.warnings:
            self.reporter.warn(warning.message)

    def kernel_started(self, info: dict[str, Any]) -> None:
        """The kernel is up and seeded (``info``: its pid and interpreter)."""
        self.log.debug("kernel %s started (%s)", info.get("pid"), info.get("executable"))

    def watched_names(self, step: str) -> tuple[list[str], list[str]]:
        """Names the step's code reads, and names it binds or may change in place (every
        name, ``*``, for a step whose code does not show them)."""
        s = self.pipeline.step(step)
        if s.opaque:
            return ["*"], sorted(s.writes)
        return sorted(s.reads | s.writes), sorted(s.writes)

    # ------------------------------------------------------------ steps and cells

    def step_started(self, name: str, hit: Entry | None = None) -> None:
        """Queue the step run's creation; ``hit``: the cache entry the step is taken from."""
        self.tracker.raise_open_error()
        parent_id = self._parent()
        step = self.pipeline.step(name)
        record = schema.StepRecord(
            step=name,
            code_hash=step.code_hash,
            setup_hash=self.pipeline.setup_hash,
            upstream=tuple(step.upstream),
            cells=tuple(c.index for c in step.cells),
            notebook=self.plan.notebook_label,
            cache=schema.HIT if hit else schema.MISS,
            cache_key=self._keys.get(name, ""),
            cache_source_run=hit.source_run if hit else None,
            cache_reason="" if hit else "; ".join(self._reasons.get(name, [])),
        )
        id_file = self.run_dir / "steps" / f"{name}.run_id"

        def create(client: Any) -> str:
            tags = record.tags(parent_id.result())
            run_id = t.create_run(client, self.experiment_id, name, tags)
            write_atomic(id_file, run_id.encode())
            return run_id

        with signals_deferred():
            self.steps[name] = StepState(name, self.tracker.submit(create), time.monotonic())
        if hit is None:
            index = [s.name for s in self.pipeline.steps].index(name)
            reason = ", ".join(self._reasons.get(name, []))
            self.reporter.step_started(name, index, len(self.pipeline.steps), reason)

    def cell_started(self, cell: nbformat.NotebookNode) -> None:
        self._current_cell = cell
        if cell.cell_type == "code":
            meta = cell.metadata.get("nbmlops", {})
            self.reporter.cell_started(meta.get("step"), meta.get("cell", -1), cell.source)

    def cell_output(self, output: nbformat.NotebookNode) -> None:
        meta = self._current_cell.metadata.get("nbmlops", {}) if self._current_cell else {}
        step = meta.get("step")
        if output.output_type == "stream":
            self.reporter.cell_output(step, "".join(output.text))
        elif output.output_type == "error":
            self.reporter.cell_output(step, f"{output.ename}: {output.evalue}\n")

    def cell_failed(self, cell: nbformat.NotebookNode, error: BaseException) -> None:
        """A cell raised (``CellExecutionError``) or the kernel died under it."""
        meta = cell.metadata.get("nbmlops", {})
        if isinstance(error, CellExecutionError):
            ename, evalue = error.ename, error.evalue
            tb = error.traceback.splitlines() if isinstance(error.traceback, str) else []
        else:
            ename = type(error).__name__
            evalue = (
                f"the kernel died while running this cell ({error}); out of memory, or os._exit()? "
                f"The kernel's log: {self.run_dir / 'kernel.log'}"
            )
            tb = []
        cell_index = meta.get("cell", -1)
        self.failure = Failure(
            meta.get("step"),
            cell_index if isinstance(cell_index, int) else -1,
            cell.source,
            ename,
            evalue,
            tb,
        )

    def step_finished(
        self,
        name: str,
        nb: nbformat.NotebookNode,
        result: dict[str, Any],
        failed: bool,
        stopped: bool = False,
    ) -> None:
        """The step ended; ``stopped``: it called ``sys.exit(0)``, so it FINISHED, is not
        cached (a hit could not stop the run), and the steps after it do not run."""
        with signals_deferred():
            self._step_finished(name, nb, result, failed, stopped)

    def pipeline_stopped(self, step: str | None, skipped: list[str]) -> None:
        """``step`` (None: a setup cell) ended the run early and successfully."""
        self.stopped_by = step or "(setup)"
        self.skipped = skipped
        rest = f"; not run: {', '.join(skipped)}" if skipped else ""
        self.reporter.warn(
            f"{'step ' + step if step else 'a setup cell'} stopped the run with sys.exit(0){rest}"
        )

    def _step_finished(
        self,
        name: str,
        nb: nbformat.NotebookNode,
        result: dict[str, Any],
        failed: bool,
        stopped: bool,
    ) -> None:
        record = self.steps[name]
        record.seconds = time.monotonic() - record.started
        record.outputs = result.get("outputs", [])
        record.unsaved = result.get("unsaved", [])
        record.io = {k: result.get(k) or {} for k in ("reads", "listings")}
        folders = [{"path": f, "format": "dir"} for f in result.get("folders", [])]
        record.io["written"] = folders + result.get("written", [])
        for u in record.unsaved:
            self.reporter.warn(
                f"step {name!r}: variable {u['name']!r} ({u['type']}) cannot be saved "
                f"({u['problem']}); this step's outputs will not be cached"
            )
        unseen = [
            *(
                f"it wrote {p} outside the project (a hit could not restore it)"
                for p in result.get("outside", [])
            ),
            *(
                f"it called {c}, whose file reads nbmlops cannot see"
                for c in result.get("unseen", [])
            ),
            *(
                f"it uses {lib}, whose file reads nbmlops cannot see"
                for lib in unobserved_readers(self.pipeline.step(name), self.pipeline)
            ),
        ]
        for why in unseen:
            self.reporter.warn(f"step {name!r}: {why}; this step will not be cached")
        events = self._read_events()
        notebook_path = self._write_step_notebook(name, nb)
        durations = [
            (
                c.metadata["nbmlops"]["cell"],
                float(c.metadata.get("papermill", {}).get("duration") or 0.0),
            )
            for c in nb.cells
            if c.metadata.get("nbmlops", {}).get("step") == name and c.cell_type == "code"
        ]
        status = "FAILED" if failed else "FINISHED"
        self._record_step(record, events, notebook_path, durations, status)
        record.status = status  # only once its record is queued
        self._produced(name, record.outputs)
        if result.get("rng"):
            self.rng = result["rng"]["digest"]
        if not failed and not record.unsaved and not stopped and not unseen:
            self._store(name, nb, record, events, result.get("rng", {}))
        elif not failed:
            why = (
                "it stopped the run with sys.exit(0)"
                if stopped
                else ", ".join(
                    [f"variable {u['name']!r} cannot be saved" for u in record.unsaved] + unseen
                )
            )
            self._remember(name, record.outputs, self.rng, uncacheable=why)
        if name not in self._unsealed:
            self._release(name)  # not stored: nothing for a waiting run to find
        self.objects_saved(result.get("saved", {}))
        self.reporter.step_finished(name, status, record.seconds)

    def _record_step(
        self,
        record: StepState,
        events: list[dict[str, Any]],
        notebook_path: Path,
        durations: list[tuple[int, float]],
        status: str,
    ) -> None:
        """Queue the step run's record: events, timings, outputs manifest, notebook, status."""
        downstream = self.pipeline.downstream_reads(record.name)
        handed_on = [
            {"kind": "data", "name": o["name"], "digest": o["digest"], "step": record.name}
            for o in record.outputs
            if o.get("kind") in DATA_KINDS and (downstream is None or o["name"] in downstream)
        ]
        unsaved = record.unsaved
        seconds = record.seconds

        def record_step(client: Any) -> None:
            run_id = record.run_id.result()
            try:
                self._log_events(client, run_id, events + handed_on)
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                client.log_batch(
                    run_id,
                    metrics=[Metric(schema.CELL_SECONDS, sec, now, idx) for idx, sec in durations]
                    + [Metric(schema.STEP_SECONDS, seconds, now, 0)],
                )
                outputs = {"outputs": record.outputs, "unsaved": unsaved}
                t.log_json(client, run_id, outputs, schema.OUTPUTS_JSON)
                if unsaved:
                    t.log_tags(client, [run_id], schema.unsaved_tag([u["name"] for u in unsaved]))
                t.log_file(client, run_id, notebook_path, schema.NOTEBOOK_DIR)
            finally:
                t.terminate(client, run_id, status)

        self.tracker.submit(record_step)

    # ------------------------------------------------------------ the step cache

    def lookup(self, name: str) -> tuple[str, Entry | None]:
        """The step's cache key, and the entry to reuse (None: execute the step, for the
        reasons kept for its progress line and its run)."""
        step = self.pipeline.step(name)
        key, parts = self.keys.key(step, self.produced, self.rng, self.inert)
        self._keys[name], self._parts[name] = key, parts
        if not self.plan.use_cache or name in self.plan.refresh:
            self._reasons[name] = [
                cache_status.NO_CACHE if not self.plan.use_cache else cache_status.REFRESH
            ]
            return key, None
        entry = self.cache.get(key)
        changed = changed_files(entry, self.keys.files.digest) if entry is not None else []
        if entry is not None and not changed:
            try:
                self.cache.restore_files(entry, self.plan.root)  # what it wrote, for the next
                return key, entry
            except OSError as exc:
                self.reporter.warn(f"step {name!r}: cannot restore the files it wrote ({exc})")
                self._reasons[name] = [f"its files cannot be restored ({exc})"]
                return key, None
        self._reasons[name] = cache_status.miss_reasons(
            step,
            parts,
            entry,
            changed,
            self.cache,
            self.plan.notebook_label,
            producers=self.producers,
            running={s.name for s in self.steps.values() if not s.cached_from},
            base_dir=self.keys.base_dir,
            setup_opaque=self.pipeline.setup_analysis.opaque,
        )
        return key, None

    def _produced(self, step: str, outputs: list[dict[str, Any]]) -> None:
        for o in outputs:
            self.produced[o["name"]] = o["digest"]
            self.producers[o["name"]] = step
            if inert(o):
                self.inert.add(o["name"])
            else:
                self.inert.discard(o["name"])

    def _remember(
        self, name: str, outputs: list[dict[str, Any]], rng: str, uncacheable: str = ""
    ) -> None:
        """Keep this run of the step in the history ``nbmlops status`` explains misses by."""
        if name in self._parts:
            cache_status.remember(
                self.cache,
                self.plan.notebook_label,
                name,
                self._keys[name],
                self._parts[name],
                outputs,
                rng,
                uncacheable,
            )

    def step_hit(self, name: str, entry: Entry, nb: nbformat.NotebookNode) -> None:
        """Record a step the cache skipped: its run, tagged as a hit, with what it reported."""
        with signals_deferred():
            self.step_started(name, hit=entry)
            record = self.steps[name]
            record.outputs = entry.outputs
            record.cached_from = entry.source_run
            notebook_path = self._write_step_notebook(name, nb)
            now = time.time()
            events = [{**e, "step": name, "time": now} for e in entry.events]
            self._record_step(record, events, notebook_path, [], "FINISHED")
            record.status = "FINISHED"
            self._produced(name, entry.outputs)
            self.rng = entry.rng.get("digest", self.rng)
        self.reporter.step_finished(name, "CACHED", 0.0)

    def _store(
        self,
        name: str,
        nb: nbformat.NotebookNode,
        record: StepState,
        events: list[dict[str, Any]],
        rng: dict[str, str],
    ) -> None:
        try:
            source_run = record.run_id.result()
        except Exception:
            return  # not recorded: nothing to point a hit at
        mine = [e for e in events if e.get("step") == name and e.get("kind") in EVENT_KINDS]
        cells = [dict(c) for c in nb.cells if c.metadata.get("nbmlops", {}).get("step") == name]
        setup = [
            dict(c)
            for c in nb.cells
            if "step" not in c.metadata.get("nbmlops", {})
            and isinstance(c.metadata.get("nbmlops", {}).get("cell"), int)
        ]
        entry = Entry(
            key=self._keys[name],
            step=name,
            source_run=source_run,
            created=time.time(),
            outputs=record.outputs,
            events=[{k: v for k, v in e.items() if k not in ("step", "time")} for e in mine],
            files={
                **{e["path"]: e["digest"] for e in mine if e["kind"] == "data" and e.get("path")},
                **record.io.get("reads", {}),
            },
            rng=rng,
            cells=cells,
            setup_cells=setup,
            notebook=self.plan.notebook_label,
            parts=self._parts.get(name, {}),
            written=record.io.get("written", []),
            listings=record.io.get("listings", {}),
        )
        body = self.run_dir / "steps" / f"{name}.entry.json"
        write_atomic(body, json.dumps(entry.to_json(), default=str).encode())
        self._unsealed[name] = body  # sealed by the kernel once it has saved the objects
        self._sealing_rng[name] = rng.get("digest", "")

    def unsealed(self, name: str) -> tuple[str, str] | None:
        """(the entry's body, the cache folder) of a step the kernel is to seal, once its
        objects are saved (``kernel.seal_when_saved``), or None."""
        body = self._unsealed.get(name)
        return (str(body), str(self.cache.root)) if body else None

    def hold(self, name: str, lock: KeyLock) -> None:
        """Keep the lock of the step's key until its entry is written: a run waiting for
        it then finds the entry."""
        self._locks[name] = lock

    def _release(self, name: str) -> None:
        lock = self._locks.pop(name, None)
        if lock is not None:
            lock.release()

    def objects_saved(self, report: dict[str, Any]) -> None:
        """What the kernel's saving thread finished (``report["entries"]``: step -> "" for
        an entry written, else why not): release those keys' locks."""
        for name, problem in report.get("entries", {}).items():
            if self._unsealed.pop(name, None) is None:
                continue
            self._release(name)
            if problem:
                self.reporter.warn(f"step {name!r}: {problem}; it is not cached")
                continue
            self._remember(name, self.steps[name].outputs, self._sealing_rng.pop(name, ""))

    # ------------------------------------------------------------ run end

    def finish(self, status: str, notebook: Path | None) -> list[BaseException]:
        """Record the run's end (also after a failure or Ctrl-C); wait for the tracker.

        Returns the errors of the MLflow writes. A run whose pipeline run was never queued
        (``start()`` did not get that far) records nothing."""
        for name in list(self._locks):  # entries never written (Ctrl-C, a dead kernel)
            self._release(name)
        if self.parent_id is None:
            return self.tracker.flush()
        parent_id = self.parent_id
        running = [r for r in self.steps.values() if r.status == "RUNNING"]  # interrupted
        leftovers = self._read_events()
        failure = self.failure
        stopped = schema.stopped_tags(self.stopped_by, self.skipped) if self.stopped_by else {}
        hits = sum(1 for r in self.steps.values() if r.cached_from)
        ran = len(self.steps)
        notebooks = {}
        for record in running:
            record.status = status
            record.seconds = time.monotonic() - record.started
            if self._nb is not None:
                notebooks[record.name] = self._write_step_notebook(record.name, self._nb)

        def record_run(client: Any) -> None:
            parent = parent_id.result()
            try:
                self._log_events(
                    client, running[-1].run_id.result() if running else None, leftovers
                )
                for r in running:
                    run_id = r.run_id.result()
                    try:
                        if r.name in notebooks:
                            t.log_file(client, run_id, notebooks[r.name], schema.NOTEBOOK_DIR)
                    finally:
                        t.terminate(client, run_id, status)
                if failure:
                    error = f"{failure.ename}: {failure.evalue}"
                    t.log_tags(
                        client,
                        [parent],
                        schema.failure_tags(failure.step, failure.cell_index, error),
                    )
                if ran:
                    t.log_tags(client, [parent], schema.cache_hits_tag(hits, ran))
                if stopped:
                    t.log_tags(client, [parent], stopped)
                if notebook and notebook.exists():
                    t.log_file(client, parent, notebook, schema.NOTEBOOK_DIR)
            finally:
                t.terminate(client, parent, status)

        self.tracker.submit(record_run)
        return self.tracker.flush()

    # ------------------------------------------------------------ helpers

    def _parent(self) -> Future[str]:
        if self.parent_id is None:
            raise RuntimeError("the session was not started")
        return self.parent_id

    def _read_events(self) -> list[dict[str, Any]]:
        """The notebook API's events (``kernel.emit``) not read yet."""
        found, self._events_offset = read_json_lines(
            self.run_dir / "events.jsonl", self._events_offset
        )
        return found

    def _log_events(self, client: Any, step_run: str | None, events: list[dict[str, Any]]) -> None:
        """Events of a step go to its run and the parent; events of setup cells to the parent."""
        parent = self._parent().result()
        by_run: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for e in events:
            runs: tuple[str, ...] = (step_run, parent) if step_run and e.get("step") else (parent,)
            by_run.setdefault(runs, []).append(e)
        for runs, batch in by_run.items():
            metrics = [e for e in batch if e["kind"] == "metric"]
            params = {e["name"]: e["value"] for e in batch if e["kind"] == "param"}
            data = [e for e in batch if e["kind"] == "data"]
            models = [e for e in batch if e["kind"] == "model"]
            if metrics:
                t.log_metrics(client, runs, metrics)
                self.metrics.update({e["name"]: float(e["value"]) for e in metrics})
            if params:
                t.log_params(client, runs, params)
            if data:
                t.log_datasets(client, runs, data)
                t.log_tags(client, runs, {schema.data_tag(d["name"]): d["digest"] for d in data})
            for m in models:
                self.model_uri = m["uri"]
                tags = {schema.MODEL_URI: m["uri"]}
                if m.get("files"):
                    tags[schema.MODEL_FILES] = m["files"]
                if m.get("calibration"):
                    tags[schema.CALIBRATION] = m["calibration"]
                t.log_tags(client, runs, tags)

    def _write_step_notebook(self, name: str, nb: nbformat.NotebookNode) -> Path:
        """The step's own notebook: setup cells and the step's cells, as executed."""
        step_nb = copy.deepcopy(nb)
        step_nb.cells = [
            c for c in step_nb.cells if c.metadata.get("nbmlops", {}).get("step") in (None, name)
        ]
        path = self.run_dir / "steps" / f"{name}.ipynb"
        write_atomic(path, nbformat.writes(step_nb).encode())  # type: ignore[no-untyped-call]
        return path
