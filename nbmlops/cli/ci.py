"""``nbmlops ci`` (the configured pipelines, checked and reported) and ``nbmlops init-ci``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nbmlops.cli import cache_dir_option, cli, tracking_uri_option, verbose_option


@cli.command()
@click.argument("pipelines", nargs=-1, metavar="[PIPELINE]...")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Write a JUnit XML report: a test case per step, gate and test command.",
)
@click.option(
    "--summary",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Write the Markdown summary here (default: appended to $GITHUB_STEP_SUMMARY if set).",
)
@click.option(
    "--promote",
    "do_promote",
    is_flag=True,
    help="Promote (and build) each run that passed and is at least as good as its champion.",
)
@click.option(
    "--on-drift",
    "model",
    metavar="MODEL",
    help="Check MODEL[@ALIAS] for drift against --current; retrain its pipeline only on drift.",
)
@click.option(
    "--on-performance",
    "perf_model",
    metavar="MODEL",
    help="Check MODEL[@ALIAS]'s labelled predictions with its pipeline's monitor rule; "
    "retrain only on an alert.",
)
@click.option(
    "--current",
    type=click.Path(),
    metavar="DATA",
    help="With --on-drift: production inputs (.csv/.parquet, or a monitor log folder).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="The configuration file (default: ./pyproject.toml [tool.nbmlops], else ./nbmlops.toml).",
)
@tracking_uri_option
@cache_dir_option
@verbose_option
def ci(
    pipelines: tuple[str, ...],
    junit: str | None,
    summary: str | None,
    do_promote: bool,
    model: str | None,
    perf_model: str | None,
    current: str | None,
    config_file: str | None,
    tracking_uri: str | None,
    cache_dir: str | None,
) -> None:
    """Run the configured pipelines, check their gates and tests, report; exit 1 on a failure.

    With --on-drift MODEL --current DATA: check MODEL for drift first, and only on drift
    retrain (and with --promote, promote) the pipeline that trains it.
    """
    from nbmlops import config, project
    from nbmlops.ci import reports
    from nbmlops.ci.core import run_ci

    if (model is None) != (current is None):
        raise click.UsageError("--on-drift MODEL and --current DATA go together")
    if (model or perf_model) and pipelines:
        raise click.UsageError("--on-drift/--on-performance retrain the model's own pipeline")
    if model and perf_model:
        raise click.UsageError("give --on-drift or --on-performance, not both")
    conf = config.load(path=config_file) if config_file else config.load()
    uri = project.tracking_uri(tracking_uri, conf.root)
    out = sys.stdout
    if model and current:
        from nbmlops.ci.drift import drift_loop

        result = drift_loop(
            conf,
            model,
            current,
            tracking_uri=uri,
            promote=do_promote,
            stream=out,
            cache_dir=cache_dir,
        )
    elif perf_model:
        from nbmlops.ci.drift import performance_loop

        result = performance_loop(
            conf, perf_model, tracking_uri=uri, promote=do_promote, stream=out, cache_dir=cache_dir
        )
    else:
        result = run_ci(
            conf, pipelines, tracking_uri=uri, promote=do_promote, stream=out, cache_dir=cache_dir
        )

    if junit:
        click.echo(f"wrote {reports.junit(result.suites(), junit)}")
    text = reports.markdown(result.outcomes, result.notes, result.promotions + result.extra)
    written = reports.write_summary(text, summary)
    if written:
        click.echo(f"wrote {written}")
    for note in result.notes:
        click.echo(note)
    failed = [c for c in result.checks if c.status == "failed"]
    if failed:
        click.secho(f"nbmlops ci: {len(failed)} of {len(result.checks)} checks failed", fg="red")
        for check in failed:
            click.secho(f"  ✗ {check.message}", fg="red")
        sys.exit(1)
    click.secho(f"nbmlops ci: {len(result.checks)} checks passed", fg="green")


@cli.command("init-ci")
@click.option("--force", is_flag=True, help="Overwrite an existing workflow file.")
@click.option(
    "--setup",
    metavar="COMMAND",
    help="The shell command that installs the project (default: a venv and pip install -e .).",
)
@verbose_option
def init_ci(force: bool, setup: str | None) -> None:
    """Write .github/workflows/nbmlops.yml: nbmlops ci on a schedule, reports, drift check."""
    from nbmlops.ci.workflow import write_workflow

    path = write_workflow(Path.cwd(), force=force, setup=setup)
    click.echo(f"wrote {path}")
