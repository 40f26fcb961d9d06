"""``nbmlops promote``, ``history`` and ``rollback``: the model registry side."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from nbmlops.capture.schema import DEFAULT_ALIAS, MODES
from nbmlops.cli import cli, tracking_uri_option, verbose_option

if TYPE_CHECKING:
    from nbmlops.promote.core import Promotion


@cli.command()
@click.option("--experiment", required=True, help="Experiment whose pipeline runs compete.")
@click.option("--metric", required=True, help="Metric that ranks the runs (and must not regress).")
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=MODES[0],
    show_default=True,
    help="Whether a higher or a lower metric is better.",
)
@click.option(
    "--gate",
    "gates",
    multiple=True,
    metavar='"M>=X"',
    help='A condition the run must meet, e.g. --gate "f1>=0.9". Repeatable.',
)
@click.option("--model-name", help="Registered model name (default: the experiment's name).")
@click.option("--alias", default=DEFAULT_ALIAS, show_default=True, help="Alias to move.")
@click.option("--run", "run_id", help="Promote this pipeline run instead of the best one.")
@click.option("--force", is_flag=True, help="Promote even if a gate fails or the model is worse.")
@click.option("--reason", default="", help="With --force: why, recorded in the history.")
@click.option(
    "--build", is_flag=True, help="Then build the promoted version's Bento (as nbmlops build)."
)
@tracking_uri_option
@verbose_option
def promote(
    experiment: str,
    metric: str,
    mode: str,
    gates: tuple[str, ...],
    model_name: str | None,
    alias: str,
    run_id: str | None,
    force: bool,
    reason: str,
    build: bool,
    tracking_uri: str | None,
) -> None:
    """Register the best finished run's model and move the alias to it."""
    from nbmlops.serve.release import release

    if reason and not force:
        raise click.UsageError("--reason explains a --force: pass --force too, or drop --reason")
    done = release(
        experiment,
        metric,
        mode=mode,
        gates=gates,
        model_name=model_name,
        alias=alias,
        run_id=run_id,
        force=force,
        tracking_uri=tracking_uri,
        build=build,
        reason=reason,
    )
    _show(done.promotion)
    if done.bento is not None:
        click.secho(done.bento.outcome, fg="green")
    if done.build_error is not None:
        raise done.build_error


def _show(p: Promotion) -> None:
    for warning in p.warnings:
        click.secho(warning, fg="yellow", err=True)
    for reason in p.overridden:
        click.secho(f"forced: {reason}", fg="yellow", err=True)
    click.echo(f"  run:      {p.run_id}  ({p.metric}={p.value:.6g})")
    reused = " (existing version of this run's model)" if p.reused_version else ""
    click.echo(f"  version:  {p.uri}{reused}")
    if p.reference:
        click.echo(f"  reference profile: {p.reference}")
    if p.calibration:
        click.echo(f"  calibration set:   {p.calibration}")
    if p.unchanged:
        click.secho(f"{p.model_name}@{p.alias} is already version {p.version}", fg="green")
        return
    before = (
        f"v{p.previous_version} ({p.metric}={p.previous_value:.6g})"
        if p.previous_version and p.previous_value is not None
        else (f"v{p.previous_version}" if p.previous_version else "nothing")
    )
    click.secho(
        f"{p.model_name}@{p.alias}: {before} -> v{p.version}{' (forced)' if p.forced else ''}",
        fg="green",
    )


@cli.command()
@click.argument("model")
@tracking_uri_option
@verbose_option
def history(model: str, tracking_uri: str | None) -> None:
    """Every alias move of registered MODEL: promotions and rollbacks, oldest first."""
    from nbmlops.promote import history as do_history

    events = do_history(model, tracking_uri=tracking_uri)
    if not events:
        click.echo(f"no alias moves recorded for {model!r} yet")
        return
    for e in events:
        metric = ""
        if e.metric and e.value is not None:
            metric = f"  {e.metric}={e.value:.6g}"
            if e.previous_value is not None:
                metric += f" (was {e.previous_value:.6g})"
        move = f"{'v' + e.from_version if e.from_version else '-'} -> v{e.to_version}"
        run = f"  run {e.run_id}" if e.run_id else ""
        forced = f"  FORCED: {e.reason}" if e.forced else ""
        click.echo(
            f"{e.seq:>3}  {e.time}  {e.user}  {e.action:<8}  @{e.alias}  {move}{run}{metric}{forced}"
        )


@cli.command()
@click.argument("model")
@click.option("--to", "to_version", help="Version to move the alias to (default: the previous).")
@click.option("--alias", default=DEFAULT_ALIAS, show_default=True, help="Alias to move back.")
@tracking_uri_option
@verbose_option
def rollback(model: str, to_version: str | None, alias: str, tracking_uri: str | None) -> None:
    """Move MODEL's alias back to the version it held before (or to --to VERSION)."""
    from nbmlops.promote import rollback as do_rollback

    event = do_rollback(model, to_version=to_version, alias=alias, tracking_uri=tracking_uri)
    click.secho(f"{model}@{event.alias}: v{event.from_version} -> v{event.to_version}", fg="green")
