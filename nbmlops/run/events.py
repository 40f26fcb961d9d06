"""The progress events of a run: what ``nbmlops run --events FILE`` writes, and how a front
end (the JupyterLab server, ``run/jobs.py``) reads them back into the run's progress.

One JSON object per line, appended as the run goes; every event has ``event`` (its kind)
and ``time`` (seconds since the epoch), and:

================  ======================================================================
``event``         fields
================  ======================================================================
``run_started``   ``notebook``, ``steps`` (names, in execution order), ``run_dir``
``step_started``  ``step``, ``index`` (from 0), ``total``, ``reason`` (why it executes,
                  not from the cache: ``parameter C, code changed``)
``cell_started``  ``step`` (null in setup cells), ``cell`` (its number in the notebook,
                  from 1 as JupyterLab counts), ``source`` (its first line)
``step_finished`` ``step``, ``status`` (FINISHED, FAILED, KILLED, or CACHED: not
                  executed), ``seconds``
``warn``          ``message``
``run_finished``  the last event: ``status`` (succeeded or failed), ``run_id``,
                  ``experiment``, ``output_path`` (the executed notebook), ``error``:
                  null, or ``step``, ``cell`` (from 1), ``line`` (one line: ``ename: evalue``
                  for a failed cell), ``message`` (the whole error)
================  ======================================================================

:func:`read_json_lines` is the one reader of a JSON-lines file nbmlops writes as it goes
(these events, and the notebook API's events in a run's folder).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.exceptions import NbmlopsError, RunInterrupted, StepFailed
from nbmlops.run.progress import first_line

if TYPE_CHECKING:
    from nbmlops.notebook.pipeline import Pipeline

RUN_STARTED = "run_started"
STEP_STARTED = "step_started"
CELL_STARTED = "cell_started"
STEP_FINISHED = "step_finished"
WARN = "warn"
RUN_FINISHED = "run_finished"

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"  # a run's status, as a job


def read_json_lines(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The whole lines of ``path`` from byte ``offset`` on, parsed, and the offset after
    them. A line still being written (no newline yet) waits for the next read; a line that
    is not JSON is skipped. A missing file has no lines."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    lines = []
    for line in chunk[:end].splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return [e for e in lines if isinstance(e, dict)], offset + end


# ---------------------------------------------------------------- writing


class EventWriter:
    """A :class:`~nbmlops.run.progress.Reporter` that appends the events to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def _emit(self, event: str, **fields: object) -> None:
        if self._file.closed:  # the run closed its reporter; the outcome comes after
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._file.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")
        self._file.flush()

    def run_started(self, pipeline: Pipeline, run_dir: Path) -> None:
        self._emit(
            RUN_STARTED,
            notebook=str(pipeline.path),
            steps=[s.name for s in pipeline.steps],
            run_dir=str(run_dir),
        )

    def step_started(self, name: str, index: int, total: int, reason: str = "") -> None:
        self._emit(STEP_STARTED, step=name, index=index, total=total, reason=reason)

    def cell_started(self, step: str | None, cell: int, source: str) -> None:
        self._emit(CELL_STARTED, step=step, cell=cell, source=first_line(source))

    def cell_output(self, step: str | None, text: str) -> None:
        pass  # the output notebook holds it

    def step_finished(self, name: str, status: str, seconds: float) -> None:
        self._emit(STEP_FINISHED, step=name, status=status, seconds=seconds)

    def warn(self, message: str) -> None:
        self._emit(WARN, message=message)

    def succeeded(self, run_id: str, experiment: str, output_path: str) -> None:
        """The last event of a run that finished."""
        self._finished(
            SUCCEEDED, run_id=run_id, experiment=experiment, output_path=output_path, error=None
        )

    def failed(self, exc: BaseException) -> None:
        """The last event of a run that ``exc`` ended (see :func:`failure_event`)."""
        self._finished(FAILED, **{"run_id": None, "output_path": None, **failure_event(exc)})

    def _finished(self, status: str, **fields: object) -> None:
        self._emit(RUN_FINISHED, status=status, **{"experiment": None, **fields})
        self._file.close()

    def close(self) -> None:
        self._file.close()


def failure_event(exc: BaseException) -> dict[str, Any]:
    """The ``run_finished`` fields of a run ``exc`` ended: ``error`` (where the run stopped
    and why, from the error's fields), and the run and partial notebook when it has them."""
    if isinstance(exc, NbmlopsError):
        details = exc.details()
        error = {
            "step": details.get("step"),
            "cell": details.get("cell"),
            "line": details.get("line") or exc.problem.splitlines()[0],
            "message": str(exc),
        }
    else:
        interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
        text = "run interrupted" if interrupted else str(exc) or type(exc).__name__
        error = {
            "step": None,
            "cell": None,
            "line": text.splitlines()[0],
            "message": f"{type(exc).__name__}: {text}",
        }
    if isinstance(exc, StepFailed):
        return {"run_id": exc.run_id or None, "output_path": exc.output_notebook, "error": error}
    if isinstance(exc, RunInterrupted):
        return {"run_id": exc.run_id, "output_path": exc.output_notebook, "error": error}
    return {"error": error}


# ---------------------------------------------------------------- reading


@dataclass
class Progress:
    """A run as its events (and, once it exited, its exit code) tell it."""

    status: str  # running, succeeded or failed
    # name, status, seconds, reason (why it executed; "" for a cached step)
    steps: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None
    experiment: str | None = None
    output_path: str | None = None
    error: dict[str, Any] | None = None  # as in run_finished

    @property
    def current_step(self) -> str | None:
        running = [s["name"] for s in self.steps if s["status"] == RUNNING]
        return running[-1] if running else None


def progress(
    events: list[dict[str, Any]], exit_code: int | None, output: Callable[[], str]
) -> Progress:
    """Fold a run's events into its progress. ``exit_code``: None while the process runs.
    ``output``: the end of the process's output, the error of a run that exited without
    its last event (it crashed, or failed before its writer existed)."""
    steps: dict[str, dict[str, Any]] = {}
    final: dict[str, Any] | None = None
    for e in events:
        kind = e.get("event")
        if kind == STEP_STARTED:
            steps[e["step"]] = {
                "name": e["step"],
                "status": RUNNING,
                "seconds": None,
                "reason": e.get("reason", ""),
            }
        elif kind == STEP_FINISHED:
            status = "FAILED" if e["status"] == "KILLED" else e["status"]
            reason = steps.get(e["step"], {}).get("reason", "")
            steps[e["step"]] = {
                "name": e["step"],
                "status": status,
                "seconds": e["seconds"],
                "reason": reason,
            }
        elif kind == RUN_FINISHED:
            final = e
    if final is not None:
        state = Progress(
            final["status"],
            run_id=final.get("run_id"),
            experiment=final.get("experiment"),
            output_path=final.get("output_path"),
            error=final.get("error"),
        )
    else:
        state = Progress(RUNNING if exit_code is None else FAILED)
    if state.status == FAILED and state.error is None:
        message = output() or f"the run exited with code {exit_code}"
        state.error = {
            "step": None,
            "cell": None,
            "line": message.splitlines()[-1],
            "message": message,
        }
    if state.status != RUNNING:
        for s in steps.values():
            if s["status"] == RUNNING:
                s["status"] = "FAILED"
    state.steps = list(steps.values())
    return state
