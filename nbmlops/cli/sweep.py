"""``nbmlops sweep``: a grid (or random sample) of parameter values, run in parallel."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from nbmlops.capture.schema import MODES
from nbmlops.cli import _console, cache_dir_option, cli, tracking_uri_option, verbose_option

if TYPE_CHECKING:
    from nbmlops.run.sweep import SweepResult


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option(
    "-g",
    "--grid",
    "grid",
    multiple=True,
    required=True,
    metavar="NAME=V1,V2,...",
    help="Values of a parameter to sweep (Python literals). Repeatable: the grid is the product.",
)
@click.option("--random", "sample", type=int, help="Run N points drawn from the grid (seed 0).")
@click.option("-j", "--jobs", type=int, help="Points at a time (default: the number of cores).")
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="A local process pool, or a dask.distributed cluster.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Dask scheduler (tcp://host:8786); without it --executor dask starts a local cluster.",
)
@click.option("--metric", help="Rank points by this metric (default: the first one logged).")
@click.option("--mode", type=click.Choice(MODES), default=MODES[0], show_default=True)
@click.option("--experiment", help="MLflow experiment (default: the notebook's name).")
@tracking_uri_option
@cache_dir_option
@click.option("--no-cache", is_flag=True, help="Execute every step of every point.")
@click.option(
    "--fresh-kernels",
    is_flag=True,
    help="Start a kernel per point (default: each worker reuses its kernel, namespace reset).",
)
@verbose_option
def sweep(
    notebook: str,
    grid: tuple[str, ...],
    sample: int | None,
    jobs: int | None,
    executor: str,
    scheduler: str | None,
    metric: str | None,
    mode: str,
    experiment: str | None,
    tracking_uri: str | None,
    cache_dir: str | None,
    no_cache: bool,
    fresh_kernels: bool,
) -> None:
    """Run NOTEBOOK once per point of a parameter grid, in parallel, under one sweep run.

    Steps that do not read the swept parameters run once for the whole sweep. The last
    line printed is the best run's id.
    """
    from nbmlops.run.sweep import PointResult, run_sweep

    def progress(point: PointResult, done: int, total: int) -> None:
        values = " ".join(f"{k}={v}" for k, v in point.parameters.items())
        if point.status == "FINISHED":
            shown = ", ".join(f"{k}={v:.4g}" for k, v in list(point.metrics.items())[:3])
            note = f"{shown}  ({point.cache_hits}/{point.steps} steps cached, {point.seconds:.1f}s)"
            click.echo(f"[{done}/{total}] {values}: finished  {note}")
        else:
            click.secho(f"[{done}/{total}] {values}: FAILED  {point.error}", fg="red")

    result = run_sweep(
        notebook,
        grid,
        sample=sample,
        jobs=jobs,
        executor=executor,
        scheduler=scheduler,
        metric=metric,
        mode=mode,
        experiment=experiment,
        tracking_uri=tracking_uri,
        cache_dir=cache_dir,
        use_cache=not no_cache,
        warm_kernels=not fresh_kernels,
        on_point=progress,
    )
    _print_ranking(result)
    for point in result.failed:
        values = " ".join(f"{k}={v}" for k, v in point.parameters.items())
        click.secho(f"failed: {values}: {point.error}", fg="red", err=True)
    best = result.best
    if result.failed:
        click.secho(
            f"{len(result.failed)} of {len(result.points)} points failed (sweep run {result.sweep_id})",
            fg="red",
            err=True,
        )
    click.echo(f"best run: {best.run_id}" if best else "best run: none")
    if result.failed:
        sys.exit(1)


def _print_ranking(result: SweepResult) -> None:
    from rich.table import Table

    ranked = result.ranked()
    if not ranked:
        return
    metric = result.metric
    values = [p.metrics[metric] for p in ranked if metric and metric in p.metrics]
    low, high = (min(values), max(values)) if values else (0.0, 0.0)
    names = list(ranked[0].parameters)
    table = Table(box=None, header_style="bold", title=f"sweep {result.sweep_id}")
    for col in ["#", *names, metric or "metric", "", "run"]:
        table.add_column(col, no_wrap=True, justify="right" if col == metric else "left")
    for rank, p in enumerate(ranked, 1):
        value = p.metrics.get(metric) if metric else None
        if value is None:
            bar, shown = "", "-"
        else:
            span = (high - low) or 1.0
            bar = "█" * max(1, round(1 + 23 * (value - low) / span))
            shown = f"{value:.4g}"
        table.add_row(str(rank), *[p.parameters[n] for n in names], shown, bar, p.run_id)
    _console().print(table)
