"""Errors nbmlops raises for a user's mistake or a failed run.

Every error derives from :class:`NbmlopsError`, carries structured fields (the notebook,
the step, the cell, the parameter) and formats a message that says what to do about it.
The CLI prints ``str(error)`` alone; the traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class NbmlopsError(Exception):
    """Root of every error nbmlops raises on purpose: the problem, and the fix if known."""

    exit_code = 2

    def __init__(self, problem: str = "", fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem + (f"\n  fix: {fix}" if fix else ""))


class NotebookError(NbmlopsError):
    """The notebook cannot be read or its tags do not make a valid pipeline."""

    def __init__(self, path: str, problem: str, fix: str = "", cell: int | None = None) -> None:
        where = f"{path}" + (f", cell {cell}" if cell is not None else "")
        super().__init__(f"{where}: {problem}", fix)
        self.path = path
        self.problem = problem
        self.cell = cell


class ParameterError(NbmlopsError):
    """A ``-p name=value`` that does not fit the notebook's parameters cell."""

    def __init__(self, name: str, problem: str, fix: str = "") -> None:
        super().__init__(f"parameter {name!r}: {problem}", fix)
        self.name = name
        self.problem = problem


@dataclass
class StepFailed(NbmlopsError):
    """A cell of a step raised: the pipeline stopped there."""

    step: str
    cell_index: int
    source: str
    ename: str
    evalue: str
    output_notebook: str
    run_id: str
    step_run_id: str
    traceback: list[str] = field(default_factory=list)
    exit_code = 1

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        head = "\n".join(f"    | {line}" for line in self.source.splitlines()[:4])
        return (
            f"step {self.step!r} failed in cell {self.cell_index}:\n"
            f"{head}\n"
            f"  {self.ename}: {self.evalue}\n"
            f"  partial output notebook: {self.output_notebook}\n"
            f"  MLflow run: {self.run_id} (step run {self.step_run_id})"
        )


class RunInterrupted(NbmlopsError):
    """The run was stopped by Ctrl-C or SIGTERM; its MLflow runs are marked KILLED."""

    exit_code = 130

    def __init__(self, run_id: str | None, output_notebook: str | None) -> None:
        self.run_id = run_id
        self.output_notebook = output_notebook
        recorded = (
            f"MLflow run {run_id} marked KILLED" if run_id else "before its MLflow run was created"
        )
        super().__init__(
            f"run interrupted; {recorded}"
            + (f"\n  partial output notebook: {output_notebook}" if output_notebook else "")
        )


class TrackingError(NbmlopsError):
    """The MLflow tracking store could not be reached or written."""

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        super().__init__(
            f"MLflow tracking store {uri}: {problem}\n"
            "  fix: check --tracking-uri / MLFLOW_TRACKING_URI, or leave both unset "
            "to use the local SQLite store"
        )
