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


def server_env(monitor_dir: str | Path | None = None, monitoring: bool = True) -> dict[str, str]:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the signed Bento (serve/trust.py)
    env["NBMLOPS_MONITOR"] = "1" if monitoring else "0"
    if monitor_dir is not None:
        env["NBMLOPS_MONITOR_DIR"] = str(Path(monitor_dir).resolve())
    return env


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
) -> Iterator[str]:
    """A ``bentoml serve`` of ``bento_tag`` on a loopback port; yields its URL."""
    port = port or free_port()
    proc = start(serve_command(bento_tag, port), server_env(monitor_dir, monitoring), log)
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
) -> Checked:
    """Start the Bento on a free loopback port, send one training row, ask for ``/model``,
    and stop it."""
    import json
    import tempfile

    from nbmlops.serve.skew import example_rows, post_json, records

    rows = records(example_rows(model, 1, tracking_uri))
    log = Path(tempfile.mkdtemp(prefix="nbmlops-serve-")) / "server.log"
    with running(bento_tag, log, monitor_dir=monitor_dir, monitoring=monitoring) as url:
        status, answer = post_json(url + "/predict", {"records": rows})
        with urllib.request.urlopen(url + "/model", timeout=10) as resp:
            info = json.loads(resp.read())
    return Checked(url, status, answer, info)
