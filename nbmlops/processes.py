"""Child servers nbmlops starts (``bentoml serve``, ``mlflow server``, panel runs): reading
the end of their log, stopping their whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


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
