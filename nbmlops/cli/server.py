"""``nbmlops server start``: a shared MLflow tracking server, in the foreground."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from nbmlops.cli import cli, verbose_option


@cli.group()
def server() -> None:
    """A shared MLflow tracking server for a team (PostgreSQL or SQLite, artifacts served)."""


@server.command()
@click.option(
    "--backend-store-uri",
    metavar="URI",
    envvar="MLFLOW_BACKEND_STORE_URI",
    help="Where runs are stored: postgresql://USER:PASSWORD@HOST:5432/DB "
    "(default: $MLFLOW_BACKEND_STORE_URI, else the project's mlflow.db). Prefer the "
    "variable for a URI with a password: a command line is visible to every local user.",
)
@click.option(
    "--artifacts-destination",
    metavar="DIR_OR_URI",
    help="Where the server keeps artifacts: a folder or s3://... (default: ./mlartifacts).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--workers", type=int, help="Server processes (default: MLflow's, 4).")
@click.option(
    "--allowed-hosts",
    metavar="HOSTS",
    help="Host names clients may use, comma-separated (needed with --host 0.0.0.0 "
    "when clients use a DNS name).",
)
@click.option("--timeout", type=float, default=180, show_default=True, help="Seconds to wait.")
@verbose_option
def start(
    backend_store_uri: str | None,
    artifacts_destination: str | None,
    host: str,
    port: int,
    workers: int | None,
    allowed_hosts: str | None,
    timeout: float,
) -> None:
    """Start the tracking server, wait until it answers, and run until Ctrl-C.

    Point every nbmlops command at it with the MLFLOW_TRACKING_URI it prints (or
    --tracking-uri). Ctrl-C or SIGTERM stops the server cleanly.
    """
    from nbmlops import project
    from nbmlops.capture import server as s
    from nbmlops.processes import stop

    root = project.project_root()
    config = s.configure(
        root, backend_store_uri, artifacts_destination, host, port, workers, allowed_hosts
    )
    log = project.state_dir(root) / s.SERVER_DIR / "server.log"
    previous = signal.signal(signal.SIGTERM, _interrupt)
    proc = None
    try:
        proc = s.start(config, log)
        s.wait_ready(config, proc, log, timeout)
        click.echo(
            f"MLflow tracking server on {config.url}\n"
            f"  store:     {project.redact(config.backend_store_uri)}\n"
            f"  artifacts: {config.artifacts_destination}\n"
            f"  log:       {log}\n"
            "point nbmlops (and MLflow) at it:\n"
            f"export MLFLOW_TRACKING_URI={config.url}\n"
            "Ctrl-C stops the server."
        )
        sys.stdout.flush()
        code = proc.wait()
        raise s.exited_error(config, code, log)
    except KeyboardInterrupt:
        if proc is None:
            raise
        click.echo("stopping the tracking server ...")
        stop(proc, timeout=20)
        click.echo("stopped")
    finally:
        if proc is not None and proc.poll() is None:
            stop(proc, timeout=20)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
