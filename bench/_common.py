"""Helpers the benchmarks share: running a command as a user would, timing a call."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``cmd``; its stdout, or exit with the end of its output when it fails."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes (wall clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
