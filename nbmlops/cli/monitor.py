"""``nbmlops monitor``: drift of production inputs, and training/serving skew."""

from __future__ import annotations

from typing import Any

import click

from nbmlops.capture.schema import DEFAULT_ALIAS
from nbmlops.cli import _console, cli, tracking_uri_option, verbose_option
from nbmlops.monitor.thresholds import (
    DEFAULT_JS,
    DEFAULT_MISSING,
    DEFAULT_PVALUE,
    DEFAULT_WASSERSTEIN,
    Thresholds,
)


@cli.group()
def monitor() -> None:
    """Watch a served model: input drift against its training data, serving skew."""


DRIFT_HELP = f"""Compare production inputs (--current) with MODEL's training data.

MODEL is NAME (its @{DEFAULT_ALIAS}), NAME@ALIAS or NAME/VERSION of a promoted model; or give
--reference FILE instead. A feature drifts when its change is large enough (the thresholds)
and significant (--pvalue, Holm-corrected across all features). Exits 0 without drift, 1
when a feature drifted, 2 on bad input.
"""


@monitor.command(help=DRIFT_HELP)
@click.argument("model", required=False, metavar="[MODEL[@ALIAS]]")
@click.option(
    "--current",
    required=True,
    type=click.Path(),
    help="Production inputs: the service's monitor log folder, or a .csv/.parquet file.",
)
@click.option(
    "--reference",
    type=click.Path(),
    help="Compare with this .csv/.parquet file (or saved profile .json) instead of MODEL's "
    "reference profile.",
)
@click.option("--report", type=click.Path(dir_okay=False), help="Write the HTML report here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the JSON result.")
@click.option(
    "--wasserstein-threshold",
    type=float,
    default=DEFAULT_WASSERSTEIN,
    show_default=True,
    help="A numeric feature can drift when its Wasserstein distance, in training standard "
    "deviations, is at least this.",
)
@click.option(
    "--js-threshold",
    type=float,
    default=DEFAULT_JS,
    show_default=True,
    help="A categorical feature can drift when its Jensen-Shannon distance is at least this.",
)
@click.option(
    "--missing-threshold",
    type=float,
    default=DEFAULT_MISSING,
    show_default=True,
    help="A feature can drift when its share of missing values moved by at least this.",
)
@click.option(
    "--pvalue",
    type=float,
    default=DEFAULT_PVALUE,
    show_default=True,
    help="A feature drifts only if its test's p-value (KS, chi-square, two-proportion), "
    "corrected by Holm across all features, is also below this.",
)
@click.option(
    "--allow-missing-columns",
    is_flag=True,
    help="Compare the features present even if some reference features are missing.",
)
@click.option(
    "--retrain",
    type=click.Path(dir_okay=False),
    metavar="NOTEBOOK",
    help="When drift is found, run NOTEBOOK as a pipeline tagged with the drift report.",
)
@tracking_uri_option
@verbose_option
def drift(
    model: str | None,
    current: str,
    reference: str | None,
    report: str | None,
    json_path: str | None,
    wasserstein_threshold: float,
    js_threshold: float,
    missing_threshold: float,
    pvalue: float,
    allow_missing_columns: bool,
    retrain: str | None,
    tracking_uri: str | None,
) -> None:
    from nbmlops.monitor.check import DriftOutcome, check_and_retrain
    from nbmlops.run.progress import default_reporter

    def show(found: DriftOutcome) -> None:
        _print_result(found.result)
        for path in found.reports:
            click.echo(f"  wrote {path}")
        click.secho(
            found.result.summary(),
            fg="red" if found.result.any_drift else "green",
            bold=found.result.any_drift,
        )
        if found.retrains:
            click.echo(f"retraining: running {retrain}")

    found = check_and_retrain(
        current,
        model=model,
        reference=reference,
        thresholds=Thresholds(
            wasserstein=wasserstein_threshold,
            js=js_threshold,
            missing=missing_threshold,
            pvalue=pvalue,
        ),
        allow_missing_columns=allow_missing_columns,
        retrain_notebook=retrain,
        tracking_uri=tracking_uri,
        json_path=json_path,
        html_path=report,
        on_checked=show,
        reporter=default_reporter(quiet=True) if retrain else None,
    )
    if found.failure is not None:
        raise found.failure
    if found.run is not None:
        click.secho(
            f"retrain run {found.run.run_id} finished (experiment {found.run.experiment!r})",
            fg="green",
        )
    if found.result.any_drift:
        raise SystemExit(1)


MARKS = {"DRIFT": "[bold red]✗ DRIFT[/]", "small": "[yellow]small[/]", "ok": "[green]ok[/]"}


def _print_result(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from nbmlops.monitor.report import table_rows

    console = _console()
    console.print(
        escape(
            f"reference: {result.reference_source} ({result.reference_rows} rows)   "
            f"current: {result.current_source} ({result.current_rows} rows)"
        )
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col, justify in (
        ("feature", "left"),
        ("kind", "left"),
        ("effect", "right"),
        ("", "right"),
        ("p (Holm)", "right"),
        ("missing", "right"),
        ("drift", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in table_rows(result):
        mark = MARKS[row["drifted"]]
        table.add_row(
            escape(row["feature"]),
            row["kind"],
            row["stat1"],
            row["stat2"],
            row["pvalue"],
            row["missing"],
            mark,
        )
    console.print(table)
    for note in result.notes():
        console.print(escape(note))
    console.print(f"rule: {result.thresholds.rule()}; {result.tests} tests")
