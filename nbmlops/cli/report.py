"""``nbmlops monitor report`` (the over-time HTML page) and ``monitor export`` (production
data back into training)."""

from __future__ import annotations

import click

from nbmlops.cli import tracking_uri_option, verbose_option
from nbmlops.cli.monitor import monitor
from nbmlops.cli.performance import monitor_dir_option, performance_rule, since_option


@monitor.command()
@click.argument("model", metavar="MODEL[@ALIAS]")
@since_option
@click.option("--window", default="1d", show_default=True, help="Window size: 1h, 1d, 1w.")
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False))
@click.option("--segment", "segments", multiple=True, help="A logged column to compare by (bias).")
@click.option("--threshold", help='The performance rule, e.g. "f1>=0.9" (default: the config).')
@click.option("--min-labels", type=int, default=30, show_default=True)
@monitor_dir_option
@tracking_uri_option
@verbose_option
def report(
    model: str,
    since: str,
    window: str,
    html_path: str,
    segments: tuple[str, ...],
    threshold: str | None,
    min_labels: int,
    monitor_dir: str | None,
    tracking_uri: str | None,
) -> None:
    """Write one self-contained HTML page of MODEL over time: drift per feature per window,
    predictions, traffic and latency, realised and estimated performance, segments."""
    from nbmlops.monitor.errors import MonitorInputError
    from nbmlops.monitor.estimate import reference_set
    from nbmlops.monitor.export import production
    from nbmlops.monitor.feedback import load_joined
    from nbmlops.monitor.performance import evaluate, since_time
    from nbmlops.monitor.segments import segment
    from nbmlops.monitor.timeline import build_timeline, write_html
    from nbmlops.promote.errors import PromoteError
    from nbmlops.promote.registry import load_reference

    rule, configured = performance_rule(model, threshold, None, min_labels)
    found = production(model, monitor_dir, tracking_uri)
    joined = load_joined(found.folder, since_time(since))
    if joined.frame.empty:
        raise MonitorInputError(
            str(found.folder),
            f"no predictions of {found.label} in the last {since}",
            "give a longer --since, or send requests to the service first",
        )
    try:
        reference = load_reference(found.ref, tracking_uri)
    except PromoteError:
        reference = None
    perf = evaluate(
        joined.frame,
        model=found.label,
        window=window,
        training=found.training_metrics(tracking_uri),
        rule=rule,
        unknown_ids=len(joined.unknown),
        duplicate_labels=len(joined.duplicates),
        reference=reference_set(found.ref, tracking_uri),
    )
    columns = list(segments) or list(configured)
    line = build_timeline(
        joined.frame,
        model=found.label,
        window=window,
        reference=reference,
        performance=perf,
        segments=segment(joined.frame, columns, min_labels) if columns else None,
    )
    path = write_html(line, html_path)
    click.echo(
        f"{len(joined.frame)} predictions ({joined.matched} labelled) in "
        f"{len(line.windows)} windows; wrote {path}"
    )
    click.secho(perf.summary(), fg="red" if perf.alert else "green")


@monitor.command()
@click.argument("model", metavar="MODEL[@ALIAS]")
@click.argument("out", type=click.Path(dir_okay=False), metavar="OUT.parquet")
@since_option
@click.option("--all", "everything", is_flag=True, help="Also the predictions without a label.")
@monitor_dir_option
@tracking_uri_option
@verbose_option
def export(
    model: str,
    out: str,
    since: str,
    everything: bool,
    monitor_dir: str | None,
    tracking_uri: str | None,
) -> None:
    """Write MODEL's logged features joined with their labels to OUT.parquet, with its
    content digest (a training notebook reads it with nbmlops.read_production or
    nbmlops.read_parquet, which records it as the run's dataset input)."""
    from nbmlops.monitor.export import export as write
    from nbmlops.monitor.export import read_production

    frame, found = read_production(
        model,
        since,
        labelled_only=not everything,
        monitor_dir=monitor_dir,
        tracking_uri=tracking_uri,
    )
    path, digest = write(frame, out)
    click.echo(f"wrote {len(frame)} rows of {found.label} to {path} (digest {digest})")
