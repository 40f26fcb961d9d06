"""Select, gate and register models; move aliases; lineage, integrity, reference profiles.

Front doors (the CLI, the JupyterLab server, the widget, ``nbmlops ci``) call
:func:`promote` (through :func:`nbmlops.serve.release.release` when they also build),
:func:`rollback` and :func:`history`; the monitor calls
:func:`nbmlops.promote.registry.resolve_model` and
:func:`nbmlops.promote.registry.load_reference`. An alias move is a
:class:`nbmlops.capture.schema.AliasEvent`.
"""

from nbmlops.promote.core import Promotion, history, promote, rollback
from nbmlops.promote.registry import ModelRef, load_reference, resolve_model

__all__ = [
    "ModelRef",
    "Promotion",
    "history",
    "load_reference",
    "promote",
    "resolve_model",
    "rollback",
]
