"""Errors of building and serving a model."""

from __future__ import annotations

from nbmlops.exceptions import NbmlopsError


class ServeError(NbmlopsError):
    """A model that cannot be built or served as asked (not a registry error: a model
    that cannot be found or whose files changed raises :mod:`nbmlops.promote.errors`'
    errors)."""
