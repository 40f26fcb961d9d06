"""How a run shows itself: a live progress display on a terminal, plain lines in a CI log.

A front end reads a run's progress as JSON lines instead (``run/events.py``).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from pathlib import Path

    from nbmlops.notebook.pipeline import Pipeline


class Reporter(Protocol):
    def run_started(self, pipeline: Pipeline, run_dir: Path) -> None: ...
    def step_started(self, name: str, index: int, total: int, reason: str = "") -> None:
        """``reason``: why the step executes (not from the cache)."""

    def cell_started(self, step: str | None, cell: int, source: str) -> None: ...
    def cell_output(self, step: str | None, text: str) -> None: ...
    def step_finished(self, name: str, status: str, seconds: float) -> None:
        """``status``: FINISHED, FAILED, KILLED, or CACHED (a hit: not executed)."""

    def warn(self, message: str) -> None: ...
    def close(self) -> None: ...


def first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:60]
    return ""


class PlainReporter:
    """One line per event, cell output streamed as it comes: for CI logs and pipes."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self._t0 = time.monotonic()

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def run_started(self, pipeline: Pipeline, run_dir: Path) -> None:
        steps = " -> ".join(s.name for s in pipeline.steps)
        self._print(f"nbmlops: {pipeline.path.name}: {steps}")

    def step_started(self, name: str, index: int, total: int, reason: str = "") -> None:
        why = f" ({reason})" if reason else ""
        self._print(
            f"[{time.monotonic() - self._t0:7.1f}s] step {index + 1}/{total} {name}: started{why}"
        )

    def cell_started(self, step: str | None, cell: int, source: str) -> None:
        if not self.quiet:
            self._print(
                f"[{time.monotonic() - self._t0:7.1f}s]   {step or 'setup'} cell {cell}: {first_line(source)}"
            )

    def cell_output(self, step: str | None, text: str) -> None:
        if self.quiet:
            return
        for line in text.rstrip("\n").splitlines():
            self._print(f"  {step or 'setup'} | {line}")

    def step_finished(self, name: str, status: str, seconds: float) -> None:
        outcome = (
            "cached (not executed)" if status == "CACHED" else f"{status.lower()} in {seconds:.2f}s"
        )
        self._print(f"[{time.monotonic() - self._t0:7.1f}s] step {name}: {outcome}")

    def warn(self, message: str) -> None:
        self._print(f"warning: {message}")

    def close(self) -> None:
        pass


class RichReporter:
    """A live line with the current step, cell and elapsed time; output scrolls above it."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TaskID,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console()
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._step = ""

    def run_started(self, pipeline: Pipeline, run_dir: Path) -> None:
        self.progress.start()
        self._task = self.progress.add_task("setup", total=len(pipeline.steps))
        self.console.print(
            f"[bold]nbmlops[/] {pipeline.path.name}: " + " → ".join(s.name for s in pipeline.steps)
        )

    def step_started(self, name: str, index: int, total: int, reason: str = "") -> None:
        self._step = name
        if reason:
            self.console.print(
                f"[dim]→ step [bold]{name}[/bold] runs: {reason}[/]", highlight=False
            )
        self._update(f"step {name}")

    def cell_started(self, step: str | None, cell: int, source: str) -> None:
        self._update(
            f"{'step ' + step if step else 'setup'} · cell {cell}: {first_line(source)[:40]}"
        )

    def cell_output(self, step: str | None, text: str) -> None:
        if self.quiet:
            return
        from rich.text import Text

        for line in text.rstrip("\n").splitlines():
            self.console.print(
                Text.assemble((f"{step or 'setup'} │ ", "dim"), line), highlight=False
            )

    def step_finished(self, name: str, status: str, seconds: float) -> None:
        if status == "CACHED":
            self.console.print(f"[cyan]↺[/] step [bold]{name}[/] cached")
        else:
            mark = "[green]✓[/]" if status == "FINISHED" else "[red]✗[/]"
            self.console.print(f"{mark} step [bold]{name}[/] {seconds:.2f}s")
        if self._task is not None:
            self.progress.advance(self._task)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}")

    def _update(self, description: str) -> None:
        if self._task is not None:
            self.progress.update(self._task, description=description)

    def close(self) -> None:
        self.progress.stop()


def default_reporter(quiet: bool = False) -> Reporter:
    if sys.stdout.isatty():
        return RichReporter(quiet=quiet)
    return PlainReporter(quiet=quiet)
