"""Notebook widgets (anywidget: a Python class and a JavaScript module, no build step).

``nbmlops.widgets.runs()`` shows the current notebook's pipeline runs, a metric across
them, a run's lineage, and promotes from the notebook (``runs.py``).
"""

from nbmlops.widgets.runs import RunsWidget, runs

__all__ = ["RunsWidget", "runs"]
