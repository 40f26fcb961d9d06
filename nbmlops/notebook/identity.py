"""Which notebook this kernel runs, as the Jupyter server knows it now.

jupyter_server sets ``JPY_SESSION_NAME`` when it starts a kernel, and never again: after
the notebook is renamed (JupyterLab moves the session to the new path) the variable still
names the old file until the kernel restarts. :func:`notebook_path` asks the running
servers' ``/api/sessions`` which session holds this kernel (by the kernel id in the
kernel's connection file) and answers that session's path; it falls back to
``JPY_SESSION_NAME`` when no server answers (a kernel started by another front end).
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

# A server on this machine answers in milliseconds; one that does not is not ours.
_TIMEOUT_S = 2.0


def kernel_id() -> str | None:
    """This kernel's id (from its connection file ``kernel-<id>.json``), or None outside a
    Jupyter kernel."""
    try:
        from ipykernel.connect import get_connection_file

        name = Path(get_connection_file()).name
    except Exception:  # not in an ipykernel (a script, a test): no session to ask
        return None
    if not name.startswith("kernel-") or not name.endswith(".json"):
        return None
    return name.removeprefix("kernel-").removesuffix(".json")


def _servers() -> list[dict[str, Any]]:
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return []
    try:
        return list(list_running_servers())
    except OSError:
        return []


def _sessions(server: dict[str, Any]) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        str(server["url"]).rstrip("/") + "/api/sessions",
        headers={"Authorization": f"token {server.get('token', '')}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as answer:  # noqa: S310
            found = json.loads(answer.read())
    except (OSError, ValueError):
        return []
    return found if isinstance(found, list) else []


def session_path(kernel: str) -> str | None:
    """The path (relative to its server's root) of the notebook whose session holds
    ``kernel`` on a running Jupyter server, or None."""
    for server in _servers():
        for session in _sessions(server):
            if (session.get("kernel") or {}).get("id") == kernel and session.get("path"):
                return str(session["path"])
    return None


def notebook_path() -> str | None:
    """The notebook this kernel runs: its live Jupyter session's path (rename-safe), else
    ``JPY_SESSION_NAME``, else None."""
    kernel = kernel_id()
    live = session_path(kernel) if kernel else None
    return live or os.environ.get("JPY_SESSION_NAME") or None
