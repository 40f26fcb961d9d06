"""``nbmlops server start``: a shared MLflow tracking server, in the foreground."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from nbmlops.cli import cli, tracking_uri_option, verbose_option


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
@click.option(
    "--auth",
    is_flag=True,
    help="MLflow's basic authentication (users, roles; the admin's first password from "
    "$MLFLOW_AUTH_ADMIN_PASSWORD). See `nbmlops server users add` and `nbmlops server protect`.",
)
@click.option(
    "--auth-db",
    metavar="URI",
    envvar="NBMLOPS_AUTH_DATABASE_URI",
    help="With --auth: where users and permissions are kept (a database URI; default: "
    ".nbmlops/server/basic_auth.db).",
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
    auth: bool,
    auth_db: str | None,
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
        root,
        backend_store_uri,
        artifacts_destination,
        host,
        port,
        workers,
        allowed_hosts,
        auth,
        auth_db,
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
            + (
                f"  users:     {project.redact(config.auth_db)} (basic auth)\n"
                if config.auth_db
                else ""
            )
            + "point nbmlops (and MLflow) at it:\n"
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


@server.group()
def users() -> None:
    """Users of a tracking server started with --auth (run as its admin)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["scientist", "release"]), required=True)
@click.option(
    "--password-env",
    metavar="VAR",
    help="Read the new user's password from this variable (default: ask for it).",
)
@tracking_uri_option
@verbose_option
def users_add(name: str, role: str, password_env: str | None, tracking_uri: str | None) -> None:
    """Create user NAME (if new) with ROLE: scientists log runs and register models; the
    release role may also move the aliases of production models.

    The admin's own credentials come from MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials).
    """
    import os

    from nbmlops import project
    from nbmlops.capture import access

    if password_env:
        password = os.environ.get(password_env, "")
        if not password:
            raise access.AccessSetupError(
                f"--password-env {password_env}: the variable is not set",
                f"export {password_env}=... (12 characters or more)",
            )
    else:
        password = click.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True)
    access.add_user(project.tracking_uri(tracking_uri), name, password, role)
    click.echo(f"user {name}: role {role} ({access.role_name(role)})")


@server.command()
@click.argument("model_name")
@tracking_uri_option
@verbose_option
def protect(model_name: str, tracking_uri: str | None) -> None:
    """Give MODEL_NAME a production model only the release role may edit (run as the
    admin): promotions then copy the version into it and move the alias there."""
    from nbmlops import project
    from nbmlops.capture import access

    production = access.protect(project.tracking_uri(tracking_uri), model_name)
    click.echo(
        f"{production}: the aliases of {model_name} now live here; only users with the "
        f"release role ({access.role_name('release')}) may move them"
    )
