"""``nbmlops monitor feedback`` and ``monitor performance``: ground truth for logged
predictions, and the performance it shows against the training metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nbmlops.capture.schema import DEFAULT_ALIAS
from nbmlops.cli import _console, tracking_uri_option, verbose_option
from nbmlops.cli.monitor import monitor

monitor_dir_option = click.option(
    "--monitor-dir",
    type=click.Path(file_okay=False),
    help="Where the service logs (default: $NBMLOPS_MONITOR_DIR, else .nbmlops/monitoring).",
)
since_option = click.option(
    "--since", default="30d", show_default=True, help="How far back: 30m, 12h, 30d, 2w."
)


@monitor.command()
@click.argument("model", metavar="MODEL[@ALIAS]")
@click.argument("labels", type=click.Path(dir_okay=False))
@click.option("--id-column", default="request_id", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@monitor_dir_option
@tracking_uri_option
@verbose_option
def feedback(
    model: str,
    labels: str,
    id_column: str,
    label_column: str,
    monitor_dir: str | None,
    tracking_uri: str | None,
) -> None:
    """Record the true LABELS (.csv/.parquet: request id, label) of MODEL's predictions.

    The labels go where POST /feedback writes them; then they are joined with the logged
    predictions and the matched, unknown and duplicate ids counted (nothing is dropped:
    an unknown id may be predicted later or by a log not read here).
    """
    from nbmlops.monitor.export import production
    from nbmlops.monitor.feedback import load_joined, read_labels_file, write_feedback

    found = production(model, monitor_dir, tracking_uri)
    table = read_labels_file(labels, id_column, label_column)
    written = write_feedback(found.folder, table)
    ids = set(table["request_id"])
    joined = load_joined(found.folder)
    unknown = sorted(ids & set(joined.unknown))
    click.echo(f"wrote {len(table)} labels to {written}")
    click.echo(
        f"matched {len(ids) - len(unknown)}, unknown {len(unknown)}, "
        f"duplicate {len(ids & set(joined.duplicates))} (of {len(ids)} ids in {labels})"
    )
    if unknown:
        click.echo("unknown ids (no logged prediction): " + ", ".join(unknown[:10]))
    click.echo(joined.summary())


PERFORMANCE_HELP = f"""Accuracy/F1/ROC AUC (classifier) or RMSE/MAE (regressor) of MODEL's
labelled predictions per window, beside the CBPE estimate and the training metrics.

MODEL is NAME (its @{DEFAULT_ALIAS}), NAME@ALIAS or NAME/VERSION. The rule (--threshold,
--max-drop, else the config's [tool.nbmlops.pipelines.X.monitor]) is checked on the latest
window with --min-labels labels. Exits 0 when it holds, 1 on an alert, 2 on bad input.
"""


@monitor.command(help=PERFORMANCE_HELP)
@click.argument("model", metavar="MODEL[@ALIAS]")
@click.option("--window", default="1d", show_default=True, help="Window size: 1h, 1d, 1w.")
@since_option
@click.option("--threshold", help='Alert unless the latest window passes it, e.g. "f1>=0.9".')
@click.option(
    "--max-drop", type=float, help="Alert when a metric is this much worse than at training."
)
@click.option("--min-labels", type=int, default=30, show_default=True)
@click.option("--segment", "segments", multiple=True, help="A logged column to compare by (bias).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the JSON result.")
@click.option(
    "--retrain",
    type=click.Path(dir_okay=False),
    metavar="NOTEBOOK",
    help="On an alert, run NOTEBOOK as a pipeline tagged with the performance report.",
)
@monitor_dir_option
@tracking_uri_option
@verbose_option
def performance(
    model: str,
    window: str,
    since: str,
    threshold: str | None,
    max_drop: float | None,
    min_labels: int,
    segments: tuple[str, ...],
    json_path: str | None,
    retrain: str | None,
    monitor_dir: str | None,
    tracking_uri: str | None,
) -> None:
    from nbmlops.monitor.check import check_performance
    from nbmlops.run.progress import default_reporter

    rule, configured = performance_rule(model, threshold, max_drop, min_labels)
    checked = check_performance(
        model,
        window=window,
        since=since,
        rule=rule,
        segments=segments or configured,
        reporter=default_reporter(quiet=True) if retrain else None,
        json_path=json_path,
        retrain_notebook=retrain,
        monitor_dir=monitor_dir,
        tracking_uri=tracking_uri,
        on_checked=_show,
    )
    if checked.failure is not None:
        raise checked.failure
    if checked.run is not None:
        click.secho(f"retrain run {checked.run.run_id} finished", fg="green")
    if checked.result.alert:
        raise SystemExit(1)


def _show(checked: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    result = checked.result
    console = _console()
    console.print(escape(f"{result.model} ({result.kind}), windows of {result.window}"))
    names = ("accuracy", "f1", "roc_auc") if result.kind == "classifier" else ("rmse", "mae")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("window", "predictions", "labels", *names, *(f"est. {n}" for n in names[:2])):
        table.add_column(col, justify="left" if col == "window" else "right", no_wrap=True)
    estimated = result.kind == "classifier"
    for w in result.windows:
        row = [w.start[:16].replace("T", " "), str(w.predictions), str(w.labelled)]
        row += [_num(w.realised.get(n)) for n in names]
        row += [_num(w.estimated.get(n)) for n in names[:2]] if estimated else ["", ""]
        table.add_row(*row)
    if result.training:
        table.add_row("at training", "", "", *[_num(result.training.get(n)) for n in names])
    console.print(table)
    if estimated:
        console.print(f"estimates calibrated on: {escape(result.calibrated_on())}")
    if result.unknown_ids or result.duplicate_labels:
        console.print(
            f"labels: {result.unknown_ids} unknown ids, {result.duplicate_labels} duplicates"
        )
    for seg in checked.segments.segments if checked.segments else []:
        groups = Table(box=None, header_style="bold", pad_edge=False)
        for col in (f"segment {seg.column}", "predictions", seg.rate, "labels", seg.metric):
            groups.add_column(col, justify="left" if col.startswith("segment") else "right")
        for g in seg.groups:
            groups.add_row(
                escape(g.value),
                str(g.predictions),
                f"{g.rate:.3f}",
                str(g.labelled),
                _num(g.metric),
            )
        console.print(groups)
    largest = checked.segments.largest if checked.segments else None
    if largest is not None:
        console.print(
            escape(
                f"largest gap: {largest.column} {largest.gap_of} {largest.gap:.3f} between "
                f"{largest.between[0]} and {largest.between[1]}"
            )
        )
    console.print(f"rule: {escape(result.rule)}")
    for path in checked.reports:
        click.echo(f"  wrote {path}")
    click.secho(result.summary(), fg="red" if result.alert else "green", bold=result.alert)
    if checked.retrains:
        click.echo(f"retraining: running {checked.notebook}")


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def performance_rule(
    model: str, threshold: str | None, max_drop: float | None, min_labels: int
) -> tuple[Any, tuple[str, ...]]:
    """The rule and segments: the options, else the project configuration's ``monitor``
    table of the pipeline that trains ``model`` (none when there is no configuration)."""
    from nbmlops import config
    from nbmlops.exceptions import NbmlopsError
    from nbmlops.monitor.errors import MonitorInputError
    from nbmlops.monitor.performance import Rule
    from nbmlops.promote.errors import GateSyntaxError
    from nbmlops.promote.gates import parse_gate

    configured = config.Monitor()
    try:
        config.find(Path.cwd())
        has_config = True
    except config.ConfigError:
        has_config = False
    if has_config:
        try:
            configured = config.load().for_model(model).monitor
        except config.ConfigError:
            raise
        except NbmlopsError:
            pass  # no pipeline trains it: the options alone
    try:
        gate = parse_gate(threshold) if threshold else configured.performance
    except GateSyntaxError as exc:
        raise MonitorInputError("--threshold", exc.problem, 'write e.g. "f1>=0.9"') from None
    drop = max_drop if max_drop is not None else configured.max_drop
    return Rule(gate=gate, max_drop=drop, min_labels=min_labels), configured.segments
