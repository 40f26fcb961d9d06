"""``nbmlops cache ls`` and ``nbmlops cache prune``: look after the step cache."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import click

from nbmlops.cli import _console, cache_dir_option, cli, verbose_option
from nbmlops.exceptions import NbmlopsError

if TYPE_CHECKING:
    from nbmlops.cache.store import StepCache


def _cache(cache_dir: str | None) -> StepCache:
    from nbmlops.cache.store import StepCache

    return StepCache.at(cache_dir)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@cli.group()
def cache() -> None:
    """The step cache: what it holds, and pruning it."""


@cache.command("ls")
@cache_dir_option
@verbose_option
def ls(cache_dir: str | None) -> None:
    """List cache entries, most recently used first."""
    from rich.table import Table

    entries = _cache(cache_dir).ls()
    if not entries:
        click.echo("the step cache is empty")
        return
    table = Table("key", "notebook", "step", "last used", "size", "computed by run", box=None)
    for e in entries:
        used = dt.datetime.fromtimestamp(e.used).strftime("%Y-%m-%d %H:%M")
        table.add_row(e.key[:12], e.notebook, e.step, used, _size(e.size), e.source_run)
    _console().print(table)
    click.echo(f"{len(entries)} entries, {_size(sum(e.size for e in entries))}")


@cache.command()
@click.option("--older-than", metavar="AGE", help="Remove entries unused for AGE (30d, 12h).")
@click.option("--max-size", metavar="SIZE", help="Then remove the least recently used to fit SIZE.")
@cache_dir_option
@verbose_option
def prune(older_than: str | None, max_size: str | None, cache_dir: str | None) -> None:
    """Remove old entries, and the saved outputs only they used."""
    from nbmlops.cache.store import AGE_EXAMPLES, SIZE_EXAMPLES, parse_age, parse_size

    if older_than is None and max_size is None:
        raise NbmlopsError("cache prune: say what to remove", "--older-than 30d or --max-size 5GB")
    try:
        age = parse_age(older_than) if older_than else None
    except ValueError as exc:
        raise NbmlopsError(
            f"cache prune --older-than: {exc}", f"write e.g. {AGE_EXAMPLES}"
        ) from None
    try:
        size = parse_size(max_size) if max_size else None
    except ValueError as exc:
        raise NbmlopsError(
            f"cache prune --max-size: {exc}", f"write e.g. {SIZE_EXAMPLES}"
        ) from None
    removed = _cache(cache_dir).prune(older_than=age, max_size=size)
    click.echo(f"removed {len(removed)} entries, {_size(sum(e.size for e in removed))} freed")
