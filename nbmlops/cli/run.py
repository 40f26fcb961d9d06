"""``nbmlops run``, ``status``, ``steps``, ``runs`` and ``show``: executing a notebook,
saying what a run would execute and why, and reading back what runs recorded."""

from __future__ import annotations

import json

import click

from nbmlops.cli import (
    _client,
    _console,
    cache_dir_option,
    cli,
    tracking_uri_option,
    verbose_option,
)


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option(
    "-p",
    "--parameter",
    "parameters",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a parameter (a Python literal, else text). Repeatable.",
)
@click.option("--experiment", help="MLflow experiment (default: the notebook's name).")
@tracking_uri_option
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    help="Where executed notebooks go (default: .nbmlops/runs/<notebook>-<time>).",
)
@click.option(
    "--seed",
    type=int,
    help="Seed for random, numpy and torch (default: the notebook's seed parameter, else a new one).",
)
@click.option("--no-cache", is_flag=True, help="Execute every step (the cache is still refreshed).")
@click.option(
    "--refresh", multiple=True, metavar="STEP", help="Execute STEP even if cached. Repeatable."
)
@cache_dir_option
@click.option(
    "--resume",
    metavar="RUN_ID",
    help="Re-run a failed or killed run ('last': the newest) from the step that failed.",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not echo cell output.")
@click.option(
    "--events",
    type=click.Path(dir_okay=False),
    help="Write progress as JSON lines to this file (for front ends) instead of the terminal.",
)
@verbose_option
def run(
    notebook: str,
    parameters: tuple[str, ...],
    experiment: str | None,
    tracking_uri: str | None,
    output_dir: str | None,
    seed: int | None,
    no_cache: bool,
    refresh: tuple[str, ...],
    cache_dir: str | None,
    resume: str | None,
    quiet: bool,
    events: str | None,
) -> None:
    """Run NOTEBOOK's steps as one tracked pipeline run.

    Steps whose code, parameters read, inputs, data files and environment did not change
    since they last ran are not executed: their outputs come from the step cache.
    """
    from pathlib import Path

    from nbmlops.capture.schema import SEED_GENERATED
    from nbmlops.notebook.parameters import parse_assignments
    from nbmlops.run.events import EventWriter
    from nbmlops.run.progress import Reporter, default_reporter
    from nbmlops.run.runner import run_notebook

    writer = EventWriter(Path(events)) if events else None
    reporter: Reporter = writer or default_reporter(quiet=quiet)
    try:
        result = run_notebook(
            notebook,
            parse_assignments(parameters),
            experiment=experiment,
            tracking_uri=tracking_uri,
            output_dir=output_dir,
            seed=seed,
            reporter=reporter,
            cache_dir=cache_dir,
            use_cache=not no_cache,
            refresh=refresh,
            resume=resume,
        )
    except BaseException as exc:
        if writer is not None:
            writer.failed(exc)
        raise
    if writer is not None:
        writer.succeeded(result.run_id, result.experiment, str(result.output_notebook))
    click.echo("")
    if result.stopped_by:
        where = "a setup cell" if result.stopped_by == "(setup)" else f"step {result.stopped_by}"
        rest = f"; not run: {', '.join(result.skipped)}" if result.skipped else ""
        click.echo(f"  {where} stopped the run with sys.exit(0){rest}")
    width = max((len(s.name) for s in result.steps), default=4)
    for s in result.steps:
        if s.cached_from:
            click.echo(
                f"  {s.name:<{width}}  cached            run {s.run_id} (from {s.cached_from})"
            )
        else:
            click.echo(
                f"  {s.name:<{width}}  {s.status.lower():<8} {s.seconds:6.2f}s  run {s.run_id}"
            )
    if result.metrics:
        click.echo(
            "  metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics.items()))
        )
    if result.model_uri:
        click.echo(f"  model:   {result.model_uri}")
    click.echo(f"  output:  {result.output_notebook}")
    click.echo(f"  seed:    {result.seed}")
    if result.seed_source == SEED_GENERATED:
        click.echo(
            "  note:    the notebook has no `seed` parameter, so this run drew a new seed and its "
            f"steps are cached under it; re-run with --seed {result.seed} to reuse them"
        )
    click.secho(f"run {result.run_id} finished (experiment {result.experiment!r})", fg="green")


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option(
    "-p",
    "--parameter",
    "parameters",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter, as for `nbmlops run`. Repeatable.",
)
@click.option("--seed", type=int, help="The seed, as for `nbmlops run`.")
@tracking_uri_option
@cache_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
@verbose_option
def status(
    notebook: str,
    parameters: tuple[str, ...],
    seed: int | None,
    tracking_uri: str | None,
    cache_dir: str | None,
    as_json: bool,
) -> None:
    """Say which steps `nbmlops run NOTEBOOK` would execute, and why; run nothing.

    A step that reads what a step that executes produces is listed as executing: it does
    unless that step produces exactly what it did before.
    """
    from nbmlops.capture.schema import SEED_GENERATED
    from nbmlops.notebook.parameters import parse_assignments
    from nbmlops.run.runner import status as predict

    found = predict(
        notebook,
        parse_assignments(parameters),
        seed=seed,
        tracking_uri=tracking_uri,
        cache_dir=cache_dir,
    )
    if as_json:
        click.echo(json.dumps(found.describe(), indent=2))
        return
    pipeline = found.plan.pipeline
    for warning in pipeline.warnings:
        click.secho(f"warning: {warning.message}", fg="yellow", err=True)
    runs = [s for s in found.steps if s.runs]
    click.secho(f"{pipeline.path}: {len(runs)} of {len(found.steps)} steps would run", bold=True)
    width = max((len(s.step) for s in found.steps), default=4)
    for s in found.steps:
        if s.runs:
            click.echo(f"  {s.step:<{width}}  runs: {', '.join(s.reasons)}")
        else:
            click.echo(f"  {s.step:<{width}}  cached (from run {s.cached_from})")
    if found.plan.seed_source == SEED_GENERATED:
        click.echo(
            "  note: the notebook has no `seed` parameter, so every run draws a new seed and "
            "executes every step; pass --seed N (to status and run) to reuse a run's steps"
        )


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline as JSON.")
@verbose_option
def steps(notebook: str, as_json: bool) -> None:
    """Print NOTEBOOK's pipeline: steps, their cells and upstreams, the parameters."""
    from nbmlops.notebook.pipeline import load_pipeline

    pipeline = load_pipeline(notebook)
    if as_json:
        click.echo(json.dumps(pipeline.describe(), indent=2))
        return
    for warning in pipeline.warnings:
        click.secho(f"warning: {warning.message}", fg="yellow", err=True)
    click.secho(f"{pipeline.path}  (kernel {pipeline.kernel_name})", bold=True)
    if pipeline.parameters:
        click.echo("parameters:")
        for p in pipeline.parameters.values():
            note = f"  # {p.help}" if p.help else ""
            click.echo(f"  {p.name} = {p.default_source}  ({p.type_name}){note}")
    else:
        click.echo("parameters: none (tag a cell 'parameters' to add some)")
    setup = [c.index for c in pipeline.setup if c.is_code]
    click.echo(f"setup cells: {', '.join(map(str, setup)) or 'none'}")
    if pipeline.setup_analysis.opaque:
        click.echo(
            "  every step is cached on every parameter: the setup code does not show what it "
            f"reads ({pipeline.setup_analysis.opaque})"
        )
    click.echo("steps:")
    for i, s in enumerate(pipeline.steps, 1):
        cells = ", ".join(str(c.index) for c in s.cells if c.is_code)
        after = f"  after {', '.join(s.upstream)}" if s.upstream else ""
        click.echo(f"  {i}. {s.name:<14} cells {cells}{after}")
        if s.opaque:
            click.echo(
                f"     {'':<14} cached on every parameter and earlier output: its code "
                f"does not show what it reads ({s.opaque})"
            )


@cli.command()
@click.option("--experiment", help="Only this experiment.")
@tracking_uri_option
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs.")
@verbose_option
def runs(experiment: str | None, tracking_uri: str | None, limit: int) -> None:
    """List recent pipeline runs, newest first."""
    import datetime as dt

    from rich.table import Table

    from nbmlops.capture import records

    rows = records.pipeline_rows(_client(tracking_uri), experiment, limit)
    if not rows:
        click.echo("no pipeline runs yet: run one with `nbmlops run NOTEBOOK`")
        return
    metric_names = sorted({k for r in rows for k in r.metrics})[:4]
    table = Table(box=None, header_style="bold")
    for col in ["run", "started", "status", "notebook", "cached", *metric_names]:
        table.add_column(
            col, justify="right" if col in metric_names else "left", no_wrap=col != "notebook"
        )
    for r in rows:
        started = dt.datetime.fromisoformat(r.start_time).astimezone()  # local time, as shown
        values = [f"{r.metrics[m]:.4g}" if m in r.metrics else "" for m in metric_names]
        table.add_row(
            r.run_id,
            started.strftime("%Y-%m-%d %H:%M"),
            r.status.lower(),
            r.notebook,
            r.cache_hits or "",
            *values,
        )
    _console().print(table)


@cli.command()
@click.argument("run_id", default="last")
@click.option("--experiment", help="With 'last': the last run of this experiment.")
@tracking_uri_option
@verbose_option
def show(run_id: str, experiment: str | None, tracking_uri: str | None) -> None:
    """Show what a pipeline run recorded (RUN_ID, or 'last')."""
    from rich.table import Table

    from nbmlops.capture import records
    from nbmlops.capture.schema import HIT

    view = records.load(_client(tracking_uri), run_id, experiment)
    console = _console()
    console.print(
        f"[bold]run {view.run_id}[/]  {view.status.lower()}  experiment {view.experiment!r}  notebook {view.notebook}"
    )
    git = (
        f"{view.git_commit}{' (uncommitted changes)' if view.git_dirty else ''}"
        if view.git_commit
        else "not in a git checkout"
    )
    console.print(f"  seed {view.seed}   git {git}   environment {view.env_hash}")
    if view.params:
        console.print(
            "  parameters: " + ", ".join(f"{k}={v}" for k, v in sorted(view.params.items()))
        )
    if view.metrics:
        console.print(
            "  metrics:    " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(view.metrics.items()))
        )
    if view.model_uri:
        console.print(f"  model:      {view.model_uri}")
    if view.error:
        console.print(f"  [red]failed in step {view.failed_step}: {view.error}[/]")
    steps = Table(
        "step", "status", "seconds", "cache", "code hash", "metrics", box=None, header_style="bold"
    )
    steps.add_column("run", no_wrap=True)
    for s in view.steps:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(s.metrics.items()))
        steps.add_row(
            s.name,
            s.status.lower(),
            f"{s.seconds:.2f}" if s.seconds is not None and s.cache != HIT else "",
            f"{HIT} ({s.cached_from[:8]})" if s.cache == HIT else s.cache,
            s.code_hash[:12],
            metrics,
            s.run_id,
        )
    console.print(steps)
    if view.data:
        data = Table("data", "full-content digest (BLAKE3-128)", box=None, header_style="bold")
        for name, digest in sorted(view.data.items()):
            data.add_row(name, digest)
        console.print(data)
