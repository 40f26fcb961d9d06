"""What a run will do, decided before anything runs: the first of a run's three phases.

:func:`plan_run` reads the notebook (and, for ``--resume``, the run it continues), checks
the parameters and ``--refresh``, picks the seed, the store, the folders and the
experiment, and checks that the output and cache folders can be written. It starts no
kernel, creates no MLflow run and writes nothing: every mistake a user can make in a
command line is reported from here, before anything is recorded. The runner
(``run/runner.py``) then executes the :class:`RunPlan` and turns the outcome into a result.
"""

from __future__ import annotations

import datetime as dt
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops import project
from nbmlops.cache.store import StepCache
from nbmlops.capture import schema
from nbmlops.capture.environment import GitInfo, git_info
from nbmlops.capture.tracking import check_reachable
from nbmlops.exceptions import NbmlopsError, ParameterError, PathError
from nbmlops.notebook.parameters import effective, resolve
from nbmlops.notebook.pipeline import Pipeline, load_pipeline
from nbmlops.run.resume import find_resumable

SEED_RANGE = 2**32  # what numpy and PYTHONHASHSEED accept


@dataclass(frozen=True)
class RunPlan:
    """Everything a pipeline run is decided to be, before it starts."""

    pipeline: Pipeline
    injected: dict[str, Any]  # the parameters papermill injects, typed
    values: dict[str, Any]  # every parameter's value for this run (injected, else default)
    seed: int
    seed_source: str  # schema.SEED_OPTION, SEED_PARAMETER or SEED_GENERATED
    tracking_uri: str
    root: Path  # the project folder: the default store and .nbmlops/ live there
    run_dir: Path  # where the executed notebooks go
    cache: StepCache
    experiment: str
    notebook_label: str  # the notebook as recorded: relative to the git root or the project
    git: GitInfo | None
    use_cache: bool = True  # False: execute every step (the entries are still refreshed)
    refresh: frozenset[str] = frozenset()  # steps to execute whatever the cache holds
    resumed_from: str | None = None  # the failed run --resume continues
    tags: dict[str, str] = field(default_factory=dict)  # the caller's, on the pipeline run

    @property
    def partial_notebook(self) -> Path:
        """The executed notebook while the run goes on, and after it failed."""
        return self.run_dir / f"{self.pipeline.stem}.partial.ipynb"

    @property
    def final_notebook(self) -> Path:
        """The executed notebook of a run that finished."""
        return self.run_dir / f"{self.pipeline.stem}.ipynb"

    def record(self, env_hash: str) -> schema.PipelineRecord:
        """The pipeline run's tags as it starts (``env_hash``: the kernel's package set)."""
        return schema.PipelineRecord(
            notebook=self.notebook_label,
            seed=self.seed,
            seed_source=self.seed_source,
            setup_hash=self.pipeline.setup_hash,
            env_hash=env_hash,
            output_dir=str(self.run_dir),
            steps=tuple(s.name for s in self.pipeline.steps),
            injected={k: repr(v) for k, v in self.injected.items()},
            git_commit=self.git.commit if self.git else None,
            git_dirty=self.git.dirty if self.git else None,
            resumed_from=self.resumed_from,
        )


def plan_run(
    notebook: str | Path,
    parameters: dict[str, str] | None = None,
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    output_dir: str | Path | None = None,
    seed: int | None = None,
    tags: dict[str, str] | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    refresh: tuple[str, ...] = (),
    resume: str | None = None,
    project_dir: str | Path | None = None,
    reach_store: bool = True,
) -> RunPlan:
    """Decide the run :func:`~nbmlops.run.runner.run_notebook` is asked for (same arguments).

    Raises :class:`~nbmlops.exceptions.NbmlopsError` (a bad notebook, parameter, seed,
    step name, run to resume, an unreachable tracking server, a folder that cannot be
    written) before anything is started or recorded. ``reach_store=False`` does not ask a
    tracking server whether it answers (``nbmlops status`` needs no store).
    """
    pipeline = load_pipeline(notebook)
    _check_refresh(pipeline, refresh)
    root = Path(project_dir).resolve() if project_dir else project.project_root()
    uri = project.tracking_uri(tracking_uri, root)
    experiment = experiment or pipeline.stem
    resumed_from = None
    if resume:
        if parameters:
            raise NbmlopsError(
                "--resume reuses the parameters of the run it resumes",
                "drop the -p options (start a new run to change parameters)",
            )
        previous = find_resumable(uri, resume, experiment, pipeline.stem)
        parameters, seed, resumed_from = previous.parameters, previous.seed, previous.run_id
    injected = resolve(pipeline.parameters, parameters or {})
    seed, seed_source, injected = choose_seed(pipeline, injected, seed)
    if reach_store:
        check_reachable(uri)
    run_dir = Path(output_dir).resolve() if output_dir else _default_run_dir(pipeline, root)
    cache = StepCache.at(cache_dir, root)
    check_writable("--output-dir" if output_dir else "the run's output folder", run_dir)
    check_writable("--cache-dir" if cache_dir else "the step cache", cache.root)
    git = git_info(pipeline.path.resolve())
    return RunPlan(
        pipeline=pipeline,
        injected=injected,
        values=effective(pipeline.parameters, injected),
        seed=seed,
        seed_source=seed_source,
        tracking_uri=uri,
        root=root,
        run_dir=run_dir,
        cache=cache,
        experiment=experiment,
        notebook_label=_label(pipeline.path, root, git),
        git=git,
        use_cache=use_cache,
        refresh=frozenset(refresh),
        resumed_from=resumed_from,
        tags=dict(tags or {}),
    )


def _check_refresh(pipeline: Pipeline, refresh: tuple[str, ...]) -> None:
    names = [s.name for s in pipeline.steps]
    for step in refresh:
        if step not in names:
            raise NbmlopsError(
                f"--refresh {step}: {pipeline.path} has no step {step!r}",
                f"name one of its steps: {', '.join(names)}",
            )


def choose_seed(
    pipeline: Pipeline, injected: dict[str, Any], seed: int | None
) -> tuple[int, str, dict[str, Any]]:
    """The run's seed: --seed, else the notebook's ``seed`` parameter, else a new one.

    When the notebook has a ``seed`` parameter, the run's seed is injected into it, so the
    recorded parameter and the seed agree and a replay with ``--seed`` takes the same path.
    Returns the seed, where it came from, and the parameters to inject.
    """
    param = pipeline.parameters.get("seed")
    given = injected.get(
        "seed", param.default if param is not None and param.has_literal_default else None
    )
    if seed is not None:
        source = schema.SEED_OPTION
    elif isinstance(given, int) and not isinstance(given, bool):
        seed, source = given, schema.SEED_PARAMETER
    else:
        seed, source = secrets.randbelow(2**31), schema.SEED_GENERATED
    if not 0 <= seed < SEED_RANGE:
        raise ParameterError(
            "seed", f"{seed} is outside 0 .. {SEED_RANGE - 1}", "pick a seed in that range"
        )
    unchanged = param is not None and param.has_literal_default and param.default == seed
    if param is not None and not unchanged:
        injected = {**injected, "seed": seed}
    return seed, source, injected


def _default_run_dir(pipeline: Pipeline, root: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{pipeline.stem}-{stamp}-{secrets.token_hex(2)}"
    return project.state_dir(root) / "runs" / name


def check_writable(what: str, folder: Path) -> None:
    """Raise :class:`PathError` unless ``folder`` is, or can be created as, a folder this
    process can write. Nothing is left behind: the probe is an unnamed temporary file in
    the folder, or in the nearest folder above it that exists."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == folder else str(existing)
        raise PathError(what, str(folder), f"{where} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "" if existing == folder else f" in {existing}"
        raise PathError(what, str(folder), f"cannot write{where} ({exc.strerror or exc})") from None


def _label(path: Path, root: Path, info: GitInfo | None) -> str:
    """The notebook path as recorded: relative to the git root or the project folder."""
    resolved = path.resolve()
    for base in ([info.root] if info else []) + [root]:
        try:
            return str(resolved.relative_to(base))
        except ValueError:
            continue
    return str(resolved)
