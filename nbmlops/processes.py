"""Child processes nbmlops starts (``bentoml serve``, ``mlflow server``, panel runs):
starting one in its own process group with its output in a log, reading the end of that
log, stopping the whole group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def start(
    command: list[str], env: dict[str, str], log: Path, cwd: str | Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session (a Ctrl-C to nbmlops does not reach it, and
    :func:`stop` can stop all it starts), its output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def tail(log: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of ``log``, or "(no log)"."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> int | None:
    """Stop a process started in its own session and everything it started: SIGTERM (work
    in flight finishes), then SIGKILL for whatever is left (workers of a dead arbiter)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    return proc.returncode
