"""Start, wait for and stop ``bentoml serve`` processes (CLI, tests, benchmark, demo).

Each server runs in its own process group, so stopping it stops its workers too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.processes import start, stop, tail
from nbmlops.serve.errors import ServeError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bentoml_command() -> list[str]:
    return [sys.executable, "-m", "bentoml"]


def serve_command(bento_tag: str, port: int, host: str = "127.0.0.1") -> list[str]:
    return [*bentoml_command(), "serve", bento_tag, "--host", host, "--port", str(port)]


# The service's limits (``bento_service.py``) and the variables that carry them.
LIMIT_VARIABLES = {
    "max_body_bytes": "NBMLOPS_MAX_BODY_BYTES",
    "max_records": "NBMLOPS_MAX_RECORDS",
    "max_depth": "NBMLOPS_MAX_DEPTH",
    "workers": "NBMLOPS_WORKERS",
}


def server_env(
    monitor_dir: str | Path | None = None,
    monitoring: bool = True,
    token_env: str | None = None,
    limits: dict[str, int] | None = None,
) -> dict[str, str]:
    """The environment of ``bentoml serve``: telemetry off, monitoring, the variable that
    holds the bearer token (``token_env``: its name, never its value), and ``limits``
    (``max_body_bytes``, ``max_records``, ``max_depth``, ``workers``)."""
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the signed Bento (serve/trust.py)
    env["NBMLOPS_MONITOR"] = "1" if monitoring else "0"
    if monitor_dir is not None:
        env["NBMLOPS_MONITOR_DIR"] = str(Path(monitor_dir).resolve())
    if token_env is not None:
        token_value(token_env)
        env["NBMLOPS_TOKEN_ENV"] = token_env
    for name, value in (limits or {}).items():
        env[LIMIT_VARIABLES[name]] = str(value)
    return env


def token_value(token_env: str) -> str:
    """The bearer token held by the variable ``token_env``; an error naming the variable
    (never a value) when it is unset or empty."""
    value = os.environ.get(token_env, "")
    if not value:
        raise ServeError(
            f"the token variable {token_env} is not set or empty",
            f"set it first (export {token_env}=<a long random secret>), or serve without a token",
        )
    return value


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120, path: str = "/readyz"
) -> None:
    """Wait until ``url + path`` answers 200; fail with the log's tail if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServeError(
                f"the server exited with status {proc.returncode} before it was ready:\n"
                + tail(log),
                "read the server's log above",
            )
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url.rstrip("/") + path, timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.25)
    raise ServeError(
        f"the server at {url} was not ready after {timeout:.0f} s:\n" + tail(log),
        "read the server's log above",
    )


@contextlib.contextmanager
def running(
    bento_tag: str,
    log: Path,
    port: int | None = None,
    monitor_dir: str | Path | None = None,
    monitoring: bool = True,
    timeout: float = 120,
    token_env: str | None = None,
    limits: dict[str, int] | None = None,
) -> Iterator[str]:
    """A ``bentoml serve`` of ``bento_tag`` on a loopback port; yields its URL."""
    port = port or free_port()
    env = server_env(monitor_dir, monitoring, token_env, limits)
    proc = start(serve_command(bento_tag, port), env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log, timeout)
        yield url
    finally:
        stop(proc)


@dataclass
class Checked:
    """What a service answered to one prediction and to ``GET /model``."""

    url: str
    status: int
    answer: Any
    info: dict[str, Any]


def check(
    model: Any,
    bento_tag: str,
    monitor_dir: str | Path | None = None,
    monitoring: bool = True,
    tracking_uri: str | None = None,
    token_env: str | None = None,
    limits: dict[str, int] | None = None,
) -> Checked:
    """Start the Bento on a free loopback port, send one training row, ask for ``/model``,
    and stop it."""
    import json
    import tempfile

    from nbmlops.serve.skew import example_rows, records

    rows = records(example_rows(model, 1, tracking_uri))
    headers = {"Content-Type": "application/json"}
    if token_env is not None:
        headers["Authorization"] = f"Bearer {token_value(token_env)}"
    log = Path(tempfile.mkdtemp(prefix="nbmlops-serve-")) / "server.log"
    with running(bento_tag, log, None, monitor_dir, monitoring, 120, token_env, limits) as url:
        body = json.dumps({"records": rows}).encode()
        request = urllib.request.Request(url + "/predict", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                status, answer = resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read().decode(errors="replace")
        info_request = urllib.request.Request(url + "/model", headers=headers)
        with urllib.request.urlopen(info_request, timeout=10) as resp:
            info = json.loads(resp.read())
    return Checked(url, status, answer, info)
