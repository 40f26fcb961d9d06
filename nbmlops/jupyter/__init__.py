"""The Jupyter server extension: nbmlops' REST endpoints for the JupyterLab panel.

Enabled by ``jupyter-config/server-config/nbmlops.json``; the endpoints are under
``<base_url>nbmlops/api/`` (see ``handlers.py``). Configure the MLflow store with
``c.Nbmlops.tracking_uri`` (default: ``$MLFLOW_TRACKING_URI``, else ``<root_dir>/mlflow.db``).
"""

from __future__ import annotations

from typing import Any

from nbmlops.jupyter.app import Nbmlops


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "nbmlops.jupyter", "app": Nbmlops}]


__all__ = ["Nbmlops"]
