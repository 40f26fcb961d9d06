"""``nbmlops build``, ``serve`` and ``monitor skew``: a registered model as a BentoML service."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from nbmlops.cli import _console, cli, tracking_uri_option, verbose_option
from nbmlops.cli.monitor import monitor


@cli.command()
@click.argument("model", metavar="MODEL[@ALIAS]")
@tracking_uri_option
@verbose_option
def build(model: str, tracking_uri: str | None) -> None:
    """Build a Bento of MODEL (NAME = its @champion, NAME@ALIAS or NAME/VERSION)."""
    from nbmlops.serve.build import build as do_build

    built = do_build(model, tracking_uri)
    click.echo(f"  model:  {built.model.uri} (BentoML model {built.bento_model_tag})")
    click.secho(f"built Bento {built.bento_tag}", fg="green")


@cli.command()
@click.argument("model", metavar="MODEL[@ALIAS]")
@click.option("--port", type=int, default=3000, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--monitor-dir",
    type=click.Path(file_okay=False),
    help="Where the monitor logs go (default: .nbmlops/monitoring).",
)
@click.option("--no-monitoring", is_flag=True, help="Do not log requests to the monitor.")
@click.option("--rebuild", is_flag=True, help="Build the Bento again even if it exists.")
@click.option(
    "--check",
    is_flag=True,
    help="Start on a free port, send one prediction, show the answer and stop.",
)
@click.option(
    "--token-env",
    metavar="VAR",
    help="Require Authorization: Bearer <the value of VAR> on every route but /livez and "
    "/readyz (default: token_env in [tool.nbmlops.serve]; none).",
)
@click.option(
    "--workers", type=click.IntRange(min=1), help="Service processes (default: 1, or the config's)."
)
@tracking_uri_option
@verbose_option
def serve(
    model: str,
    port: int,
    host: str,
    monitor_dir: str | None,
    no_monitoring: bool,
    rebuild: bool,
    check: bool,
    token_env: str | None,
    workers: int | None,
    tracking_uri: str | None,
) -> None:
    """Serve MODEL with `bentoml serve` (building its Bento first if needed).

    The request limits (max_body_bytes, max_records, max_depth) come from
    [tool.nbmlops.serve] in pyproject.toml or nbmlops.toml.
    """
    from nbmlops import project
    from nbmlops.config import load_serve
    from nbmlops.serve import server
    from nbmlops.serve.build import ensure_bento

    settings = load_serve()
    token_env = token_env or settings.token_env
    limits = {
        "max_body_bytes": settings.max_body_bytes,
        "max_records": settings.max_records,
        "max_depth": settings.max_depth,
        "workers": workers or settings.workers,
    }
    if token_env is not None:
        server.token_value(token_env)  # refused before anything is built
    ready = ensure_bento(model, tracking_uri, rebuild=rebuild)
    ref, tag = ready.model, ready.bento_tag
    if ready.built:
        click.echo(f"built Bento {tag}")
    logs = Path(monitor_dir or project.state_dir() / "monitoring").resolve()
    if check:
        checked = server.check(ref, tag, logs, not no_monitoring, tracking_uri, token_env, limits)
        if checked.status != 200:
            raise SystemExit(f"error: POST /predict answered {checked.status}: {checked.answer}")
        click.echo(f"  POST {checked.url}/predict -> {checked.status} {json.dumps(checked.answer)}")
        click.echo(
            f"  GET  {checked.url}/model   -> {checked.info['model']} v{checked.info['version']}"
        )
        click.secho(f"{model}: the service answered; stopped", fg="green")
        return
    click.echo(f"serving {ref} as Bento {tag} on http://{host}:{port}")
    if not no_monitoring:
        click.echo(f"  monitor logs: {logs}")
    if token_env is not None:
        click.echo(f"  bearer token required: the value of {token_env}")
    sys.stdout.flush()
    env = server.server_env(logs, not no_monitoring, token_env, limits)
    command = server.serve_command(tag, port, host)
    os.execve(command[0], command, env)


@monitor.command()
@click.argument("model", metavar="MODEL[@ALIAS]")
@click.option(
    "--url", default="http://127.0.0.1:3000", show_default=True, help="The running service."
)
@click.option("--sample", type=int, default=200, show_default=True, help="Training rows to replay.")
@click.option(
    "--tolerance",
    type=float,
    default=1e-9,
    show_default=True,
    help="Largest difference between two numeric predictions that is not skew.",
)
@tracking_uri_option
@verbose_option
def skew(model: str, url: str, sample: int, tolerance: float, tracking_uri: str | None) -> None:
    """Replay training rows through the service at --url; compare with offline predictions.

    Exits 0 when every served prediction matches, 1 on skew, 2 on bad input.
    """
    from rich.markup import escape

    from nbmlops.serve.skew import check_skew

    result = check_skew(model, url, sample, tolerance, tracking_uri)
    console = _console()
    console.print(
        escape(
            f"{result.model}: {result.rows} training rows replayed through {result.url} "
            f"(serving version {result.served_version or '?'})"
        )
    )
    if result.served_version != result.model.version:
        console.print(
            f"[red]the service serves version {escape(result.served_version)}, "
            f"not {result.model.version}[/]"
        )
    for m in result.mismatches[:20]:
        console.print(escape(f"  row {m.row}: offline {m.offline!r}, served {m.served!r}"))
    if result.ok:
        click.secho(
            f"no skew: all {result.rows} predictions match (tolerance {tolerance:g})", fg="green"
        )
        return
    click.secho(
        f"skew: {len(result.mismatches)} of {result.rows} predictions differ beyond {tolerance:g}",
        fg="red",
        bold=True,
    )
    raise SystemExit(1)
