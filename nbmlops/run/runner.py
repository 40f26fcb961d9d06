"""Run a tagged notebook as a pipeline: the one entry point the CLI, ``nbmlops ci``, the
retraining loop and (through ``nbmlops run --events``) the JupyterLab panel all call.

A run has three phases:

1. **plan** (``run/plan.py``): parameters, seed, store, folders, experiment, decided and
   checked before anything starts or is recorded;
2. **execute** (:func:`_execute`): a :class:`~nbmlops.run.session.Session` records the run
   while papermill runs the notebook with the ``nbmlops`` engine. The executed notebook is
   written under a temporary name and renamed only when the run succeeded;
3. **outcome** (:func:`_outcome`): what the session saw and the error it was stopped by
   become a :class:`RunResult`, or the error the caller sees: :class:`StepFailed`,
   :class:`RunInterrupted`, a :class:`TrackingError`... On failure or interruption the runs
   are marked FAILED or KILLED and the partial notebook is kept (and logged) under its
   ``.partial.ipynb`` name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import NoSuchKernel

from nbmlops import project
from nbmlops.cache.keys import KeyContext
from nbmlops.cache.status import StepStatus, predict
from nbmlops.capture.environment import Environment, environment, kernel_python
from nbmlops.capture.hashing import FileHashCache
from nbmlops.capture.tracking import Tracker
from nbmlops.exceptions import (
    NbmlopsError,
    PathError,
    RunInterrupted,
    StepFailed,
    TrackingError,
)
from nbmlops.notebook.pipeline import Pipeline
from nbmlops.run.plan import RunPlan, plan_run
from nbmlops.run.progress import Reporter, default_reporter
from nbmlops.run.session import Session, signals_deferred


@dataclass
class StepResult:
    name: str
    run_id: str
    status: str
    seconds: float
    cached_from: str | None = None  # the run whose outputs a cache hit reused


@dataclass
class RunResult:
    run_id: str
    experiment: str
    status: str
    output_notebook: Path
    output_dir: Path
    seed: int
    seed_source: str  # option, parameter or generated
    parameters: dict[str, Any]
    metrics: dict[str, float]
    steps: list[StepResult] = field(default_factory=list)
    model_uri: str | None = None
    stopped_by: str | None = None  # the step that ended the run with sys.exit(0)
    skipped: list[str] = field(default_factory=list)  # the steps that therefore did not run


def run_notebook(
    notebook: str | Path,
    parameters: dict[str, str] | None = None,
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    output_dir: str | Path | None = None,
    seed: int | None = None,
    reporter: Reporter | None = None,
    tags: dict[str, str] | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    refresh: tuple[str, ...] = (),
    resume: str | None = None,
    project_dir: str | Path | None = None,
    kernel_manager: Any = None,
) -> RunResult:
    """Run ``notebook``'s steps in one kernel through papermill and record it in MLflow.

    ``parameters`` are the ``-p`` texts (``{"alpha": "0.5"}``), parsed as literals and
    checked against the parameters cell. Raises :class:`StepFailed` when a cell fails and
    :class:`RunInterrupted` on Ctrl-C or SIGTERM, after recording the run as such.
    ``tags`` are added to the pipeline run (e.g. the drift report that started a retraining).

    Steps whose cache key is unchanged are not executed: their outputs come from the step
    cache under ``cache_dir`` (default: the project's ``.nbmlops/``). ``use_cache=False``
    executes every step, ``refresh`` the steps named. ``resume`` (a run id, or ``"last"``)
    re-runs a failed or killed run with its parameters and seed: the steps that succeeded
    come from the cache. ``project_dir`` is the project folder (default: the working
    directory): where the default store and ``.nbmlops/`` live. ``kernel_manager``: a
    running kernel to use and leave running (sweep workers keep one warm).
    """
    plan = plan_run(
        notebook,
        parameters,
        experiment=experiment,
        tracking_uri=tracking_uri,
        output_dir=output_dir,
        seed=seed,
        tags=tags,
        cache_dir=cache_dir,
        use_cache=use_cache,
        refresh=refresh,
        resume=resume,
        project_dir=project_dir,
    )
    return _outcome(_execute(plan, reporter or default_reporter(), kernel_manager))


@dataclass
class Execution:
    """How the execution of a plan ended, before it is judged."""

    plan: RunPlan
    session: Session
    status: str  # FINISHED, FAILED or KILLED
    error: BaseException | None  # what stopped it
    tracking_errors: list[BaseException]  # MLflow writes that failed


def _execute(plan: RunPlan, reporter: Reporter, kernel_manager: Any) -> Execution:
    """Record the run in a :class:`Session` while papermill executes the notebook."""
    import papermill

    import nbmlops.run.engine  # noqa: F401  (registers the engine with papermill)

    tracker = Tracker(plan.tracking_uri)  # opens the store meanwhile: MLflow imports slowly
    try:
        session = _session(plan, tracker, reporter)
    except BaseException:
        tracker.close()
        raise
    pipeline = plan.pipeline
    status = "FAILED"
    error: BaseException | None = None
    with _sigterm_as_interrupt():
        try:
            session.start()
            papermill.execute_notebook(
                str(pipeline.path.resolve()),
                str(plan.partial_notebook),
                parameters=plan.injected,
                engine_name="nbmlops",
                kernel_name=pipeline.kernel_name,
                language="python",
                cwd=str(pipeline.path.resolve().parent),
                progress_bar=False,
                session=session,
                kernel_manager=kernel_manager,
            )
            os.replace(plan.partial_notebook, plan.final_notebook)
            status = "FINISHED"
        except KeyboardInterrupt as exc:
            status, error = "KILLED", exc
        except NoSuchKernel as exc:
            error = _no_such_kernel(pipeline, exc)
        except OSError as exc:
            error = exc
            if not session.steps:
                error = PathError(
                    "the run's output folder", str(plan.run_dir), f"cannot be written ({exc})"
                )
        except Exception as exc:  # a failing cell (PapermillExecutionError), a dead kernel, ...
            error = exc
        finally:
            reporter.close()
            with signals_deferred():  # a second Ctrl-C must not cut the recording short
                notebook = plan.final_notebook if status == "FINISHED" else plan.partial_notebook
                tracking_errors = session.finish(status, notebook)
                tracker.close()
                with contextlib.suppress(OSError):
                    plan.cache.enforce_size()  # least recently used first, past the cap
    return Execution(plan, session, status, error, tracking_errors)


def _session(plan: RunPlan, tracker: Tracker, reporter: Reporter) -> Session:
    env = _environment(plan.pipeline, plan.root)
    keys = key_context(plan, env)
    return Session(plan=plan, environment=env, keys=keys, tracker=tracker, reporter=reporter)


def key_context(plan: RunPlan, env: Environment) -> KeyContext:
    """What the steps' cache keys of ``plan`` are computed from."""
    return KeyContext(
        pipeline=plan.pipeline,
        values=plan.values,
        seed=plan.seed,
        env_hash=env.hash,
        store=plan.tracking_uri,
        base_dir=plan.pipeline.path.resolve().parent,
        files=FileHashCache(project.state_dir(plan.root) / "file-hashes.json"),
        root=plan.root,
    )


@dataclass
class Status:
    """What ``nbmlops run`` would do, predicted by :func:`status` without running anything."""

    plan: RunPlan
    steps: list[StepStatus]

    def describe(self) -> dict[str, Any]:
        return {
            "notebook": str(self.plan.pipeline.path),
            "seed": self.plan.seed,
            "seed_source": self.plan.seed_source,
            "steps": [s.describe() for s in self.steps],
            "warnings": [w.describe() for w in self.plan.pipeline.warnings],
        }


def status(
    notebook: str | Path,
    parameters: dict[str, str] | None = None,
    *,
    seed: int | None = None,
    tracking_uri: str | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    refresh: tuple[str, ...] = (),
    project_dir: str | Path | None = None,
) -> Status:
    """Which steps ``run_notebook`` with the same arguments would execute, and why.

    Starts no kernel, creates no MLflow run and contacts no tracking server: the plan is
    made as a run's is, the keys are computed from the cache's entries (``cache/status.py``).
    """
    plan = plan_run(
        notebook,
        parameters,
        tracking_uri=tracking_uri,
        seed=seed,
        cache_dir=cache_dir,
        use_cache=use_cache,
        refresh=refresh,
        project_dir=project_dir,
        reach_store=False,
    )
    keys = key_context(plan, _environment(plan.pipeline, plan.root))
    steps = predict(
        keys,
        plan.cache,
        plan.notebook_label,
        keys.files.digest,
        use_cache=use_cache,
        refresh=refresh,
    )
    return Status(plan, steps)


def _outcome(run: Execution) -> RunResult:
    """The result of a run that finished, or the error that tells how it did not."""
    plan, session, error = run.plan, run.session, run.error
    parent = _parent_run_id(session)
    tracking_error = _tracking_error(plan.tracking_uri, run.tracking_errors)
    if run.status == "KILLED":
        raise RunInterrupted(parent or None, str(plan.partial_notebook)) from error
    failure = session.failure
    if error is not None and failure is not None:
        if tracking_error is not None:
            session.reporter.warn(f"the failure may be incompletely recorded: {tracking_error}")
        step = session.steps.get(failure.step or "")
        raise StepFailed(
            step=failure.step or "(setup)",
            cell_index=failure.cell_index,
            source=failure.source,
            ename=failure.ename,
            evalue=failure.evalue,
            output_notebook=str(plan.partial_notebook),
            run_id=parent,
            step_run_id=step.run_id.result() if step else parent,
            traceback=failure.traceback,
        ) from None
    if tracking_error is not None:
        raise tracking_error
    if isinstance(error, NbmlopsError):
        raise error
    if error is not None:
        raise NbmlopsError(
            f"run failed before a step could finish: {type(error).__name__}: {error}"
        ) from error
    return RunResult(
        run_id=parent,
        experiment=plan.experiment,
        status=run.status,
        output_notebook=plan.final_notebook,
        output_dir=plan.run_dir,
        seed=plan.seed,
        seed_source=plan.seed_source,
        parameters=plan.values,
        metrics=dict(session.metrics),
        steps=[
            StepResult(s.name, s.run_id.result(), s.status, s.seconds, s.cached_from)
            for s in session.steps.values()
        ],
        model_uri=session.model_uri,
        stopped_by=session.stopped_by,
        skipped=list(session.skipped),
    )


def _parent_run_id(session: Session) -> str:
    """The pipeline run's id, or "" when it was never created."""
    future = session.parent_id
    if future is None or future.exception() is not None:
        return ""
    return future.result()


def _tracking_error(uri: str, errors: list[BaseException]) -> NbmlopsError | None:
    if not errors:
        return None
    first = errors[0]
    if isinstance(first, NbmlopsError):
        return first
    return TrackingError(uri, f"{type(first).__name__}: {first}")


def _environment(pipeline: Pipeline, root: Path) -> Environment:
    """The package set of the Python the notebook's kernel runs."""
    try:
        python = kernel_python(pipeline.kernel_name)
    except NoSuchKernel as exc:  # jupyter_client's aliases resolved (kernel_spec_name)
        raise _no_such_kernel(pipeline, exc) from None
    return environment(python, project.state_dir(root) / "environments.json")


def _no_such_kernel(pipeline: Pipeline, exc: Exception) -> NbmlopsError:
    from jupyter_client.kernelspec import KernelSpecManager

    known = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
    return NbmlopsError(
        f"{pipeline.path}: the notebook asks for a Jupyter kernel named {pipeline.kernel_name!r}, "
        f"which is not installed here (installed: {known})",
        "in JupyterLab pick a kernel (Kernel > Change Kernel) and save the notebook, or "
        f"register one: python -m ipykernel install --user --name {pipeline.kernel_name}",
    )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run like Ctrl-C does: runs marked KILLED, nothing half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
