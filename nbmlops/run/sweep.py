"""Parameter sweeps: every point of a grid as its own pipeline run, under one sweep run.

Points run in parallel on a local process pool or on a ``dask.distributed`` cluster; each
point is an ordinary :func:`~nbmlops.run.runner.run_notebook` call. Steps that do not
read the swept parameters have the same cache key at every point: the first point to
reach such a step computes it while the others wait on the cache's lock, then reuse it.
That needs the cache folder (and the MLflow store) to be shared by the workers: on one
machine they are; on a cluster, give ``--cache-dir`` on a shared file system and a
tracking server every worker can reach. Without a shared cache each worker computes
shared steps itself, once per worker.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import os
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nbmlops import project
from nbmlops.cache.store import StepCache
from nbmlops.capture import schema
from nbmlops.capture import tracking as t
from nbmlops.exceptions import NbmlopsError, ParameterError, StepFailed
from nbmlops.notebook.parameters import resolve
from nbmlops.notebook.pipeline import load_pipeline


@dataclass
class PointResult:
    index: int
    parameters: dict[str, str]  # as -p texts
    status: str  # FINISHED, FAILED
    run_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    cache_hits: int = 0
    steps: int = 0
    seconds: float = 0.0
    error: str = ""  # the error line of a failed point


@dataclass
class SweepResult:
    sweep_id: str
    experiment: str
    points: list[PointResult]
    metric: str | None
    mode: str

    @property
    def failed(self) -> list[PointResult]:
        return [p for p in self.points if p.status != "FINISHED"]

    def ranked(self) -> list[PointResult]:
        """Finished points, best first by the metric (points without it last)."""
        done = [p for p in self.points if p.status == "FINISHED"]
        if not self.metric:
            return done
        sign = -1 if self.mode == schema.MODES[0] else 1
        return sorted(
            done,
            key=lambda p: (
                self.metric not in p.metrics,
                sign * p.metrics.get(self.metric, 0.0),  # type: ignore[arg-type]
            ),
        )

    @property
    def best(self) -> PointResult | None:
        ranked = self.ranked()
        return ranked[0] if ranked and self.metric in ranked[0].metrics else None


# ---------------------------------------------------------------- the grid


EXECUTORS = ("local", "dask")


def parse_grid(specs: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """``["alpha=0.1,1,10", "model=rf,gb"]`` -> ``{"alpha": ["0.1", "1", "10"], ...}``.

    Values are Python literals separated by commas (``layers=[64,32],[128]`` works); a
    list that is not made of literals is split on commas into texts.
    """
    grid: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or not text.strip():
            raise ParameterError(
                spec, "is not of the form name=v1,v2,...", "write -g alpha=0.1,1,10"
            )
        if name in grid:
            raise ParameterError(name, "is swept twice", "give each parameter one -g option")
        try:
            values = ast.literal_eval(f"[{text}]")
            texts = [repr(v) for v in values]
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            texts = [v.strip() for v in text.split(",")]
        if not texts or any(v == "" for v in texts):
            raise ParameterError(name, f"has an empty value in {text!r}", "write -g alpha=0.1,1,10")
        grid[name] = texts
    if not grid:
        raise ParameterError("-g", "no parameter to sweep", "give at least one -g name=v1,v2")
    return grid


def points(grid: dict[str, list[str]], sample: int | None = None) -> list[dict[str, str]]:
    """The grid's points in order, or ``sample`` of them drawn with a fixed seed (0)."""
    names = list(grid)
    every = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
    if sample is not None:
        if sample < 1:
            raise ParameterError("--random", f"{sample} is not a number of points", "--random 5")
        if sample < len(every):
            chosen = sorted(random.Random(0).sample(range(len(every)), sample))
            every = [every[i] for i in chosen]
    return every


# ---------------------------------------------------------------- one point (in a worker)


def run_point(
    index: int,
    notebook: str,
    source: bytes,
    parameters: dict[str, str],
    options: dict[str, Any],
) -> PointResult:
    """Run one point; called in a worker process (pool or dask). Never raises for a
    failing notebook: the failure is the result."""
    from nbmlops.run.progress import PlainReporter
    from nbmlops.run.runner import run_notebook

    path = _local_copy(notebook, source)
    started = time.monotonic()
    uri = options["tracking_uri"]
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return PointResult(
            index,
            parameters,
            "FAILED",
            error=f"this worker cannot see the tracking store {uri}: on a cluster, use a "
            "tracking server every worker reaches (--tracking-uri http://...)",
        )
    if not Path(options["project_dir"]).is_dir():  # a worker without the client's files
        local = Path(tempfile.mkdtemp(prefix="nbmlops-worker-"))
        shared = Path(options["cache_dir"]).is_dir()
        options = {
            **options,
            "project_dir": str(local),
            "output_dir": str(local / "run"),
            "cache_dir": options["cache_dir"] if shared else str(local / ".nbmlops"),
        }
    km = _warm_kernel(path, parameters, options) if options.pop("warm_kernels", False) else None
    log_path = Path(options["output_dir"]) / "run.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            result = run_notebook(
                path,
                parameters,
                reporter=PlainReporter(stream=log, quiet=False),
                kernel_manager=km,
                **options,
            )
        except StepFailed as exc:
            return PointResult(
                index,
                parameters,
                "FAILED",
                run_id=exc.run_id,
                seconds=time.monotonic() - started,
                error=f"step {exc.step}, cell {exc.cell_index}: {exc.ename}: {exc.evalue}",
            )
        except NbmlopsError as exc:
            return PointResult(
                index,
                parameters,
                "FAILED",
                seconds=time.monotonic() - started,
                error=exc.problem.splitlines()[0],
            )
        except BaseException as exc:  # a point must never take the sweep down
            return PointResult(
                index,
                parameters,
                "FAILED",
                seconds=time.monotonic() - started,
                error=f"{type(exc).__name__}: {exc}",
            )
    return PointResult(
        index,
        parameters,
        "FINISHED",
        run_id=result.run_id,
        metrics=result.metrics,
        cache_hits=sum(1 for s in result.steps if s.cached_from),
        steps=len(result.steps),
        seconds=time.monotonic() - started,
    )


_WARM: dict[tuple[str, ...], Any] = {}  # this worker's kernels, kept between its points


def _warm_kernel(path: str, parameters: dict[str, str], options: dict[str, Any]) -> Any:
    """A kernel this worker keeps for its next point of the same notebook and seed.

    Its namespace is reset and its generators reseeded before each run (``kernel.start``);
    imported modules stay loaded, which saves starting a kernel and importing the
    notebook's libraries for every point. ``PYTHONHASHSEED`` is fixed when a kernel starts,
    so points with another seed get their own kernel.
    """
    from jupyter_core.utils import run_sync

    from nbmlops.notebook.pipeline import load_pipeline
    from nbmlops.run.engine import IPCKernelManager

    pipeline = load_pipeline(path)
    key = (str(Path(path).resolve()), pipeline.kernel_name, parameters.get("seed", ""))
    km = _WARM.get(key)
    if km is not None and (not km.has_kernel or run_sync(km.is_alive)()):
        return km
    if km is not None:  # it died with the previous point: start afresh
        with contextlib.suppress(Exception):
            run_sync(km.shutdown_kernel)(now=True)
    elif not _WARM:
        import atexit

        atexit.register(_shutdown_warm_kernels)
    km = IPCKernelManager(kernel_name=pipeline.kernel_name)
    _WARM[key] = km
    return km


def _shutdown_warm_kernels() -> None:
    from jupyter_core.utils import run_sync

    for km in _WARM.values():
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    _WARM.clear()


def _local_copy(notebook: str, source: bytes) -> str:
    """The notebook on this worker: its own path when the file system is shared, else a copy."""
    try:
        if Path(notebook).read_bytes() == source:
            return notebook
    except OSError:
        pass
    folder = Path(tempfile.mkdtemp(prefix="nbmlops-sweep-"))
    copy = folder / Path(notebook).name
    copy.write_bytes(source)
    return str(copy)


# ---------------------------------------------------------------- the sweep (driver)


def run_sweep(
    notebook: str | Path,
    grid_specs: tuple[str, ...] | list[str],
    *,
    sample: int | None = None,
    jobs: int | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    metric: str | None = None,
    mode: str = schema.MODES[0],
    experiment: str | None = None,
    tracking_uri: str | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    warm_kernels: bool = True,
    on_point: Callable[[PointResult, int, int], None] | None = None,
) -> SweepResult:
    """Run every point of the grid; the sweep run in MLflow holds the points as children.

    With ``warm_kernels`` each worker keeps its kernel between points of the same seed
    (namespace reset, generators reseeded, imports kept); without, a kernel per point.
    """
    if mode not in schema.MODES:
        raise NbmlopsError(f"--mode {mode}: not a mode", f"use one of {', '.join(schema.MODES)}")
    if executor not in EXECUTORS:
        raise NbmlopsError(
            f"--executor {executor}: not an executor", f"use one of {', '.join(EXECUTORS)}"
        )
    pipeline = load_pipeline(notebook)
    grid = parse_grid(grid_specs)
    todo = points(grid, sample)
    for point in todo:  # every point is checked before anything runs
        resolve(pipeline.parameters, point)
    root = project.project_root()
    uri = project.tracking_uri(tracking_uri, root)
    t.check_reachable(uri)
    experiment = experiment or pipeline.stem
    state = StepCache.at(cache_dir, root).root
    if executor == "dask" and scheduler:
        _check_scheduler(scheduler)  # before anything is recorded
    record = schema.SweepRecord(pipeline.stem, grid, len(todo), metric, mode)
    sweep_id = _start_sweep_run(uri, experiment, record)
    folder = state / "sweeps" / sweep_id
    source = pipeline.path.read_bytes()
    jobs = jobs or os.cpu_count() or 1

    def options(index: int) -> dict[str, Any]:
        return {
            "experiment": experiment,
            "tracking_uri": uri,
            "output_dir": str(folder / f"point-{index}"),
            "cache_dir": str(state),
            "use_cache": use_cache,
            "warm_kernels": warm_kernels,
            "project_dir": str(root),
            "tags": schema.sweep_point_tags(sweep_id, index),
        }

    results: list[PointResult] = []
    status = "FAILED"
    try:
        for result in _execute(
            executor, scheduler, jobs, todo, str(pipeline.path), source, options
        ):
            results.append(result)
            if on_point:
                on_point(result, len(results), len(todo))
        if metric is None:
            metric = next((m for r in results for m in r.metrics if schema.is_user_metric(m)), None)
        status = "FINISHED" if all(r.status == "FINISHED" for r in results) else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        outcome = SweepResult(
            sweep_id, experiment, sorted(results, key=lambda r: r.index), metric, mode
        )
        _finish_sweep_run(uri, outcome, record, status)
    return outcome


def _execute(
    executor: str,
    scheduler: str | None,
    jobs: int,
    todo: list[dict[str, str]],
    notebook: str,
    source: bytes,
    options: Callable[[int], dict[str, Any]],
) -> Iterator[PointResult]:
    """Run the points; yield each result as it completes."""
    if executor == "dask":
        yield from _execute_dask(scheduler, jobs, todo, notebook, source, options)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: the driver holds threads (MLflow, the tracker) that fork would copy half-made.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context) as pool:
        futures: list[Future[PointResult]] = [
            pool.submit(run_point, i, notebook, source, p, options(i)) for i, p in enumerate(todo)
        ]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _execute_dask(
    scheduler: str | None,
    jobs: int,
    todo: list[dict[str, str]],
    notebook: str,
    source: bytes,
    options: Callable[[int], dict[str, Any]],
) -> Iterator[PointResult]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise NbmlopsError(
            "--executor dask needs dask.distributed", "pip install 'dask[distributed]'"
        ) from exc
    cluster = None
    if scheduler is None:  # no cluster given: one on this machine, one process per job
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=jobs, threads_per_worker=1, processes=True
        )
    try:
        try:
            client = Client(scheduler or cluster, timeout="10s")  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise _no_scheduler(str(scheduler), exc) from None
        with client:
            futures = [
                client.submit(
                    run_point,
                    i,
                    notebook,
                    source,
                    p,
                    options(i),
                    pure=False,
                    key=f"nbmlops-point-{i}-{secrets.token_hex(3)}",
                )
                for i, p in enumerate(todo)
            ]
            try:
                for future in as_completed(futures):  # type: ignore[no-untyped-call]
                    yield future.result()
            finally:  # the workers outlive the sweep: stop the kernels they kept warm
                with contextlib.suppress(Exception):
                    client.run(_shutdown_warm_kernels)
    finally:
        if cluster is not None:
            cluster.close()


def _check_scheduler(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at a ``tcp://host:port`` scheduler address."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp" or not parts.hostname:
        return  # tls://, inproc://: left to dask
    try:
        socket.create_connection((parts.hostname, parts.port or 8786), timeout=timeout).close()
    except OSError as exc:
        raise _no_scheduler(address, exc) from None


def _no_scheduler(address: str, exc: OSError) -> NbmlopsError:
    return NbmlopsError(
        f"--scheduler {address}: no dask scheduler answers there ({exc})",
        "start one (dask scheduler) or leave --scheduler out for a local cluster",
    )


def _start_sweep_run(uri: str, experiment: str, record: schema.SweepRecord) -> str:
    client: Any = t.open_client(uri)
    exp = t.experiment_id(client, experiment, project.artifact_root(uri))
    return t.create_run(client, exp, f"{record.notebook}-sweep", record.tags())


def _finish_sweep_run(
    uri: str, outcome: SweepResult, record: schema.SweepRecord, status: str
) -> None:
    client: Any = t.open_client(uri)
    run_id = outcome.sweep_id
    try:
        best = outcome.best
        done = replace(
            record,
            metric=outcome.metric,
            points_failed=len(outcome.failed),
            best_run=best.run_id if best else None,
        )
        if best is not None and outcome.metric:
            client.log_metric(run_id, outcome.metric, best.metrics[outcome.metric])
        t.log_tags(client, [run_id], done.outcome_tags())
        points = {"points": [asdict(p) for p in outcome.points]}
        t.log_json(client, run_id, points, schema.SWEEP_JSON)
    finally:
        t.terminate(client, run_id, status)
