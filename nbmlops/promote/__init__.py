"""Select, gate and register models; move aliases; lineage, integrity, reference profiles.

Front doors (the CLI, the JupyterLab widget) call :func:`promote`, :func:`rollback` and
:func:`history`; the monitor calls :func:`nbmlops.promote.registry.resolve_model` and
:func:`nbmlops.promote.registry.load_reference`.
"""

from nbmlops.promote.core import Promotion, history, promote, rollback
from nbmlops.promote.registry import Event, ModelRef, load_reference, resolve_model

__all__ = [
    "Event",
    "ModelRef",
    "Promotion",
    "history",
    "load_reference",
    "promote",
    "resolve_model",
    "rollback",
]
