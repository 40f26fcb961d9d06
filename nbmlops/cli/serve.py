"""``nbmlops build`` and ``serve``: a registered model as a BentoML service."""

from __future__ import annotations
