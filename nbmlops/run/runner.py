"""Run a tagged notebook as a pipeline: the one entry point the CLI, the widget and the
JupyterLab server all call.

``run_notebook`` parses the notebook, checks the parameters, picks the seed, opens the
MLflow store on a background thread, and hands the notebook to papermill with the
``nbmlops`` engine. The executed notebook is written under a temporary name and renamed
only when the run succeeded; on failure or interruption the runs are marked FAILED or
KILLED and the partial notebook is kept (and logged) under its ``.partial.ipynb`` name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
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
from nbmlops.cache.store import StepCache
from nbmlops.capture.environment import (
    Environment,
    GitInfo,
    environment,
    git_info,
    kernel_python,
)
from nbmlops.capture.hashing import FileHashCache
from nbmlops.capture.tracking import Tracker, check_reachable
from nbmlops.exceptions import (
    NbmlopsError,
    ParameterError,
    RunInterrupted,
    StepFailed,
    TrackingError,
)
from nbmlops.notebook.parameters import effective, resolve
from nbmlops.notebook.pipeline import Pipeline, load_pipeline
from nbmlops.run.progress import Reporter, default_reporter
from nbmlops.run.resume import INJECTED, RESUMED_FROM, find_resumable
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
    import papermill

    from nbmlops.run.engine import ensure_registered

    pipeline = load_pipeline(notebook)
    unknown = [s for s in refresh if s not in {p.name for p in pipeline.steps}]
    if unknown:
        raise NbmlopsError(
            f"--refresh {unknown[0]}: {pipeline.path} has no step {unknown[0]!r}\n"
            f"  fix: name one of its steps: {', '.join(p.name for p in pipeline.steps)}"
        )
    root = Path(project_dir).resolve() if project_dir else project.project_root()
    uri = project.tracking_uri(tracking_uri, root)
    tags = dict(tags or {})
    if resume:
        if parameters:
            raise NbmlopsError(
                "--resume reuses the parameters of the run it resumes\n"
                "  fix: drop the -p options (start a new run to change parameters)"
            )
        previous = find_resumable(uri, resume, experiment or pipeline.stem, pipeline.stem)
        parameters, seed = previous.parameters, previous.seed
        tags[RESUMED_FROM] = previous.run_id
    injected = resolve(pipeline.parameters, parameters or {})
    seed, seed_source, injected = _choose_seed(pipeline, injected, seed)
    values = effective(pipeline.parameters, injected)
    tags[INJECTED] = json.dumps({k: repr(v) for k, v in injected.items()})

    check_reachable(uri)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    default_dir = (
        project.state_dir(root) / "runs" / f"{pipeline.stem}-{stamp}-{secrets.token_hex(2)}"
    )
    run_dir = Path(output_dir).resolve() if output_dir else default_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise NbmlopsError(
            f"--output-dir {run_dir} is a file\n  fix: name a folder (it is created if missing)"
        )
    git = git_info(pipeline.path.resolve())
    tracker = Tracker(uri)
    reporter = reporter or default_reporter()
    cache = StepCache.at(cache_dir, root)
    env = _environment(pipeline, root)
    keys = KeyContext(
        pipeline=pipeline,
        values=values,
        seed=seed,
        env_hash=env.hash,
        store=uri,
        base_dir=pipeline.path.resolve().parent,
        files=FileHashCache(project.state_dir(root) / "file-hashes.json"),
    )
    session = Session(
        pipeline=pipeline,
        values=values,
        seed=seed,
        seed_source=seed_source,
        root=root,
        run_dir=run_dir,
        environment=env,
        cache=cache,
        keys=keys,
        cache_read=use_cache,
        refresh=frozenset(refresh),
        tracker=tracker,
        reporter=reporter,
        experiment=experiment or pipeline.stem,
        notebook_label=_label(pipeline.path, root, git),
        git=git,
        extra_tags=tags,
    )
    ensure_registered()
    partial = run_dir / f"{pipeline.stem}.partial.ipynb"
    final = run_dir / f"{pipeline.stem}.ipynb"
    status = "FAILED"
    error: BaseException | None = None
    with _sigterm_as_interrupt():
        try:
            session.start()
            papermill.execute_notebook(
                str(pipeline.path.resolve()),
                str(partial),
                parameters=injected,
                engine_name="nbmlops",
                kernel_name=pipeline.kernel_name,
                language="python",
                cwd=str(pipeline.path.resolve().parent),
                progress_bar=False,
                session=session,
                kernel_manager=kernel_manager,
            )
            os.replace(partial, final)
            status = "FINISHED"
        except KeyboardInterrupt as exc:
            status, error = "KILLED", exc
        except NoSuchKernel as exc:
            error = _no_such_kernel(pipeline, exc)
        except OSError as exc:
            error = (
                NbmlopsError(f"cannot write the run's outputs under {run_dir}: {exc}")
                if not session.steps
                else exc
            )
        except Exception as exc:  # a failing cell (PapermillExecutionError), a dead kernel, ...
            error = exc
        finally:
            reporter.close()
            with signals_deferred():  # a second Ctrl-C must not cut the recording short
                tracking_errors = session.finish(status, final if status == "FINISHED" else partial)
                tracker.close()

    parent = session.parent_id.result() if not session.parent_id.exception() else ""
    tracking_error = None
    if tracking_errors:
        first = tracking_errors[0]
        tracking_error = (
            first
            if isinstance(first, NbmlopsError)
            else TrackingError(uri, f"{type(first).__name__}: {first}")
        )
    if status == "KILLED":
        raise RunInterrupted(parent, str(partial)) from error
    failure = session.failure
    if error is not None and failure is not None:
        if tracking_error is not None:
            reporter.warn(f"the failure may be incompletely recorded: {tracking_error}")
        step_run = (
            session.steps[failure.step].run_id.result() if failure.step in session.steps else parent
        )
        raise StepFailed(
            step=failure.step or "(setup)",
            cell_index=failure.cell_index,
            source=failure.source,
            ename=failure.ename,
            evalue=failure.evalue,
            output_notebook=str(partial),
            run_id=parent,
            step_run_id=step_run,
            traceback=failure.traceback,
        ) from None
    if tracking_error is not None:
        raise tracking_error
    if error is not None:
        if isinstance(error, NbmlopsError):
            raise error
        raise NbmlopsError(
            f"run failed before a step could finish: {type(error).__name__}: {error}"
        ) from error

    return RunResult(
        run_id=parent,
        experiment=session.experiment,
        status=status,
        output_notebook=final,
        output_dir=run_dir,
        seed=seed,
        seed_source=seed_source,
        parameters=values,
        metrics=dict(session.metrics),
        steps=[
            StepResult(r.name, r.run_id.result(), r.status, r.seconds, r.cached_from)
            for r in session.steps.values()
        ],
        model_uri=session.model_uri,
    )


def _environment(pipeline: Pipeline, root: Path) -> Environment:
    """The package set of the Python the notebook's kernel runs."""
    try:
        python = kernel_python(pipeline.kernel_name)
    except NoSuchKernel as exc:
        raise _no_such_kernel(pipeline, exc) from None
    return environment(python, project.state_dir(root) / "environments.json")


def _no_such_kernel(pipeline: Pipeline, exc: Exception) -> NbmlopsError:
    from jupyter_client.kernelspec import KernelSpecManager

    known = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
    return NbmlopsError(
        f"{pipeline.path}: the notebook asks for a Jupyter kernel named {pipeline.kernel_name!r}, "
        f"which is not installed here (installed: {known})\n"
        "  fix: in JupyterLab pick a kernel (Kernel > Change Kernel) and save the notebook, or "
        f"register one: python -m ipykernel install --user --name {pipeline.kernel_name}"
    )


SEED_RANGE = 2**32  # what numpy and PYTHONHASHSEED accept


def _choose_seed(
    pipeline: Pipeline, injected: dict[str, Any], seed: int | None
) -> tuple[int, str, dict[str, Any]]:
    """The run's seed: --seed, else the notebook's ``seed`` parameter, else a new one.

    When the notebook has a ``seed`` parameter, the run's seed is injected into it, so the
    recorded parameter and the seed agree and a replay with ``--seed`` takes the same path.
    """
    param = pipeline.parameters.get("seed")
    given = injected.get(
        "seed", param.default if param is not None and param.has_literal_default else None
    )
    if seed is not None:
        source = "option"
    elif isinstance(given, int) and not isinstance(given, bool):
        seed, source = given, "parameter"
    else:
        seed, source = secrets.randbelow(2**31), "generated"
    if not 0 <= seed < SEED_RANGE:
        raise ParameterError(
            "seed", f"{seed} is outside 0 .. {SEED_RANGE - 1}", "pick a seed in that range"
        )
    unchanged = param is not None and param.has_literal_default and param.default == seed
    if param is not None and not unchanged:
        injected = {**injected, "seed": seed}
    return seed, source, injected


def _label(path: Path, root: Path, info: GitInfo | None) -> str:
    """The notebook path as recorded: relative to the git root or the project folder."""
    resolved = path.resolve()
    for base in ([info.root] if info else []) + [root]:
        try:
            return str(resolved.relative_to(base))
        except ValueError:
            continue
    return str(resolved)


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
