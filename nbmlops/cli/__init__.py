"""The ``nbmlops`` command line: parses arguments, calls the core, prints the outcome.

One module per stage: ``run`` (run, steps, runs, show), ``promote`` (promote, history,
rollback), ``serve`` (build, serve), ``monitor`` (drift, skew).

A user's mistake (bad notebook, unknown parameter, failing cell) prints one clear message
and exits non-zero; the traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Any

import click

from nbmlops.exceptions import NbmlopsError, StepFailed

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# Against a tracking server MLflow prints two "View run" links per ended run; nbmlops
# prints its own summary.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


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
    """Print the error from its fields (problem, fix); the traceback only with --verbose."""
    verbose = bool(ctx.meta.get(VERBOSE))
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
        if isinstance(exc, StepFailed) and exc.traceback:
            click.echo("the cell's traceback:", err=True)
            text = "\n".join(exc.traceback)
            click.echo(text if sys.stderr.isatty() else _ANSI.sub("", text), err=True)
    if isinstance(exc, NbmlopsError):
        click.secho(f"error: {exc.problem}", fg="red", err=True)
        if exc.fix:
            click.echo(f"  fix: {exc.fix}", err=True)
    else:
        from nbmlops.project import redact_text

        message = redact_text(str(exc)) or type(exc).__name__
        click.secho(f"internal error: {message}", fg="red", err=True)
    if not verbose and (internal or isinstance(exc, StepFailed)):
        click.echo("  (run with --verbose for the full traceback)", err=True)
    sys.exit(code)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
VERBOSE = "nbmlops.verbose"


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[VERBOSE] = True


# ``nbmlops -v run ...`` and ``nbmlops run ... -v`` both work: the flag is the group's, and
# every command accepts it too; either sets it for the whole invocation (ctx.meta).
verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_verbose,
    help="Show tracebacks on errors.",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
@click.version_option(package_name="nbmlops")
def cli() -> None:
    """Tagged notebooks in, tracked and reproducible pipeline runs out."""


def main() -> None:
    """The console script: run the command, then exit without a slow interpreter teardown.

    Tearing down MLflow's module graph costs ~0.5 s; every record is flushed by then.
    """
    # nbformat validates notebooks with jsonschema, whose optional IRI format checker
    # (rfc3987_syntax) compiles 38 Lark grammars when imported: 0.3 to 1 s of every command,
    # for a format no notebook schema uses. jsonschema skips the checker when the import
    # fails, and the command line is the whole process, so it is left out here.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    try:
        cli()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    sys.stderr.flush()
    if "mlflow" in sys.modules and isinstance(code, int | None):
        os._exit(code or 0)
    raise SystemExit(code)


def _console() -> Any:
    """Rich output for terminals; wide plain lines (no wrapping of run ids) in CI logs."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _client(tracking_uri: str | None) -> Any:
    from nbmlops import project
    from nbmlops.capture.tracking import open_client

    return open_client(project.tracking_uri(tracking_uri))


tracking_uri_option = click.option(
    "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)."
)

cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    envvar="NBMLOPS_CACHE_DIR",
    help="Step cache folder (default: $NBMLOPS_CACHE_DIR, else .nbmlops/ in the project).",
)

# Commands register themselves on ``cli`` when their module is imported.
from nbmlops.cli import cache, ci, monitor, performance, promote, report, run, serve, server, sweep  # noqa: E402,F401  # noqa: E402,F401

# isort: split
from nbmlops.cli import keys  # noqa: E402,F401

if __name__ == "__main__":
    main()
