"""Errors of building and serving a model."""

from __future__ import annotations

from nbmlops.promote.errors import PromoteError


class ServeError(PromoteError):
    """A model that cannot be built or served as asked."""
