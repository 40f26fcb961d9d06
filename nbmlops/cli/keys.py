"""``nbmlops keys``: the ed25519 key pair that signs promoted versions and built Bentos."""

from __future__ import annotations

from pathlib import Path

import click

from nbmlops.cli import cli, verbose_option


@cli.group()
def keys() -> None:
    """Make and show the signing key (see docs/security.md)."""


@keys.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False),
    help="Where to write signing.key and signing.pub (default: ~/.nbmlops/keys).",
)
@click.option(
    "--force", is_flag=True, help="Replace an existing key (its versions stop verifying)."
)
@verbose_option
def init(folder: str | None, force: bool) -> None:
    """Write a new signing key (0600) and its public key."""
    from nbmlops.promote import signing

    private, public, key_id = signing.init_keys(
        Path(folder).expanduser() if folder else signing.default_dir(), force
    )
    click.echo(f"  private key: {private} (keep it off the tracking store)")
    click.echo(f"  public key:  {public}")
    if private != signing.private_key_path():
        click.echo(f"  sign with it: export {signing.KEY_ENV}={private}")
    click.secho(f"signing key {key_id} created", fg="green")


@keys.command()
@verbose_option
def show() -> None:
    """Show the signing key in use and the trusted public keys."""
    from nbmlops.promote import signing

    private = signing.private_key_path()
    state = (
        f"key {signing.key_id(signing.load_private_key().public_key())}"
        if private.exists()
        else "missing"
    )
    click.echo(f"signing key: {private} ({state})")
    trusted = signing.trusted_keys()
    if not trusted:
        click.echo("trusted:     none (nbmlops keys init, or [tool.nbmlops.signing] trusted_keys)")
    for key_id in trusted:
        click.echo(f"trusted:     key {key_id}")
