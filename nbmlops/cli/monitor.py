"""``nbmlops monitor``: drift of production inputs, and training/serving skew."""

from __future__ import annotations

from nbmlops.cli import cli


@cli.group()
def monitor() -> None:
    """Watch a served model: input drift against its training data, serving skew."""
