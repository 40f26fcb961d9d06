"""``nbmlops promote``, ``history`` and ``rollback``: the model registry side."""

from __future__ import annotations
