"""The ``nbmlops`` command line: parses arguments, calls the core, prints the outcome.

A user's mistake (bad notebook, unknown parameter, failing cell) prints one clear message
and exits non-zero; the traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import click

from nbmlops.exceptions import NbmlopsError, StepFailed

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NbmlopsError as exc:
            _fail(ctx, exc, exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.secho("interrupted", fg="red", err=True)
            sys.exit(130)
        except Exception as exc:
            _fail(ctx, exc, 3, internal=True)


def _fail(ctx: click.Context, exc: BaseException, code: int, internal: bool = False) -> None:
    sub = ctx.invoked_subcommand
    verbose = bool(ctx.params.get("verbose")) or "--verbose" in sys.argv or "-v" in sys.argv
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    prefix = "internal error: " if internal else "error: "
    click.secho(prefix + (str(exc) or type(exc).__name__), fg="red", err=True)
    if isinstance(exc, StepFailed) and exc.traceback and not verbose:
        click.echo("  (run with --verbose for the full traceback)", err=True)
    elif not verbose:
        click.echo(f"  (run 'nbmlops {sub or ''} ... --verbose' for the traceback)", err=True)
    sys.exit(code)


verbose_option = click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and every cell's output.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
@click.version_option(package_name="nbmlops")
def main(verbose: bool) -> None:
    """Tagged notebooks in, tracked and reproducible pipeline runs out."""


@main.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("-p", "--parameter", "parameters", multiple=True, metavar="NAME=VALUE", help="Set a parameter (a Python literal, else text). Repeatable.")
@click.option("--experiment", help="MLflow experiment (default: the notebook's name).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db).")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Where executed notebooks go (default: .nbmlops/runs/<notebook>-<time>).")
@click.option("--seed", type=int, help="Seed for random, numpy and torch (default: the notebook's seed parameter, else a new one).")
@click.option("-q", "--quiet", is_flag=True, help="Do not echo cell output.")
@verbose_option
def run(
    notebook: str,
    parameters: tuple[str, ...],
    experiment: str | None,
    tracking_uri: str | None,
    output_dir: str | None,
    seed: int | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Run NOTEBOOK's steps as one tracked pipeline run."""
    from nbmlops.notebook.parameters import parse_assignments
    from nbmlops.run.progress import default_reporter
    from nbmlops.run.runner import run_notebook

    result = run_notebook(
        notebook,
        parse_assignments(parameters),
        experiment=experiment,
        tracking_uri=tracking_uri,
        output_dir=output_dir,
        seed=seed,
        reporter=default_reporter(quiet=quiet),
    )
    click.echo("")
    width = max((len(s.name) for s in result.steps), default=4)
    for s in result.steps:
        click.echo(f"  {s.name:<{width}}  {s.status.lower():<8} {s.seconds:6.2f}s  run {s.run_id}")
    if result.metrics:
        click.echo("  metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics.items())))
    if result.model_uri:
        click.echo(f"  model:   {result.model_uri}")
    click.echo(f"  output:  {result.output_notebook}")
    click.echo(f"  seed:    {result.seed}")
    click.secho(f"run {result.run_id} finished (experiment {result.experiment!r})", fg="green")


@main.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline as JSON.")
@verbose_option
def steps(notebook: str, as_json: bool, verbose: bool) -> None:
    """Print NOTEBOOK's pipeline: steps, their cells and upstreams, the parameters."""
    from nbmlops.notebook.pipeline import load_pipeline

    pipeline = load_pipeline(notebook)
    if as_json:
        click.echo(json.dumps(pipeline.describe(), indent=2))
        return
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
    click.echo("steps:")
    for i, s in enumerate(pipeline.steps, 1):
        cells = ", ".join(str(c.index) for c in s.cells if c.is_code)
        after = f"  after {', '.join(s.upstream)}" if s.upstream else ""
        click.echo(f"  {i}. {s.name:<14} cells {cells}{after}")


if __name__ == "__main__":
    main()
