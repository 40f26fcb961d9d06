"""The error contract: every error nbmlops raises on purpose is an :class:`NbmlopsError`.

An error carries its ``problem`` (what is wrong, naming the notebook, step, cell,
parameter or field) and its ``fix`` (what to do about it) as separate fields, never the
fix inside the problem, plus the ``exit_code`` the command line exits with and the
``http_status`` the Jupyter server answers with. Every front door renders from those
fields alone: the CLI prints ``error: <problem>`` and ``  fix: <fix>`` (the traceback only
with ``--verbose``), the server answers ``{"error": error.to_json()}`` with
``http_status``, the widget shows the problem and the fix.

Subclasses add structured fields (``path``, ``cell``, ``parameter``, ``step``...); those
listed by :meth:`NbmlopsError.details` go into the JSON answer too. ``ARCHITECTURE.md``
lists every error class and where it is raised.
"""

from __future__ import annotations

from typing import Any, ClassVar


class NbmlopsError(Exception):
    """Root of every error nbmlops raises on purpose: the problem, and the fix if known."""

    exit_code: ClassVar[int] = 2  # a user's mistake
    http_status: int = 400

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return self.problem + (f"\n  fix: {self.fix}" if self.fix else "")

    def details(self) -> dict[str, Any]:
        """Structured fields for the JSON answer, beside ``problem`` and ``fix``."""
        return {}

    def to_json(self) -> dict[str, Any]:
        return {"problem": self.problem, "fix": self.fix, **self.details()}


class NotFound(NbmlopsError):
    """What was asked for (a run, an experiment, a model version, a job) does not exist."""

    http_status = 404


class NotebookError(NbmlopsError):
    """The notebook cannot be read or its tags do not make a valid pipeline."""

    http_status = 422

    def __init__(self, path: str, problem: str, fix: str = "", cell: int | None = None) -> None:
        where = path + (f", cell {cell}" if cell is not None else "")
        super().__init__(f"{where}: {problem}", fix)
        self.path = path
        self.cell = cell

    def details(self) -> dict[str, Any]:
        return {"cell": self.cell}


class ParameterError(NbmlopsError):
    """A ``-p name=value`` that does not fit the notebook's parameters cell."""

    def __init__(self, name: str, problem: str, fix: str = "") -> None:
        super().__init__(f"parameter {name!r}: {problem}", fix)
        self.name = name

    def details(self) -> dict[str, Any]:
        return {"parameter": self.name}


class StepFailed(NbmlopsError):
    """A cell of a step raised: the pipeline stopped there, and the run is recorded FAILED."""

    exit_code = 1
    http_status = 422

    def __init__(
        self,
        step: str,
        cell_index: int,
        source: str,
        ename: str,
        evalue: str,
        output_notebook: str,
        run_id: str,
        step_run_id: str,
        traceback: list[str] | None = None,
    ) -> None:
        head = "\n".join(f"    | {line}" for line in source.splitlines()[:4])
        super().__init__(
            f"step {step!r} failed in cell {cell_index}:\n{head}\n"
            f"  {ename}: {evalue}\n"
            f"  partial output notebook: {output_notebook}\n"
            f"  MLflow run: {run_id} (step run {step_run_id})",
            "fix the cell, then re-run: the steps that succeeded come from the cache "
            f"(or continue this run with --resume {run_id})"
            if run_id
            else "fix the cell, then re-run",
        )
        self.step = step
        self.cell_index = cell_index
        self.source = source
        self.ename = ename
        self.evalue = evalue
        self.output_notebook = output_notebook
        self.run_id = run_id
        self.step_run_id = step_run_id
        self.traceback = traceback or []

    def details(self) -> dict[str, Any]:
        return {"step": self.step, "cell": self.cell_index, "line": f"{self.ename}: {self.evalue}"}


class RunInterrupted(NbmlopsError):
    """The run was stopped by Ctrl-C or SIGTERM; its MLflow runs are marked KILLED."""

    exit_code = 130
    http_status = 409

    def __init__(self, run_id: str | None, output_notebook: str | None) -> None:
        recorded = (
            f"MLflow run {run_id} marked KILLED" if run_id else "before its MLflow run was created"
        )
        partial = f"\n  partial output notebook: {output_notebook}" if output_notebook else ""
        super().__init__(f"run interrupted; {recorded}{partial}")
        self.run_id = run_id
        self.output_notebook = output_notebook


class TrackingError(NbmlopsError):
    """The MLflow tracking store could not be reached or written."""

    http_status = 503

    def __init__(self, uri: str, problem: str, fix: str = "") -> None:
        from nbmlops.project import redact

        super().__init__(
            f"MLflow tracking store {redact(uri)}: {problem}",
            fix
            or "check --tracking-uri / MLFLOW_TRACKING_URI, or leave both unset to use the "
            "local SQLite store",
        )
        self.uri = uri


class PathError(NbmlopsError):
    """A folder nbmlops must write (run outputs, the step cache) cannot be written."""

    def __init__(self, what: str, path: str, problem: str, fix: str = "") -> None:
        super().__init__(
            f"{what} {path}: {problem}",
            fix or "name a folder you can write (it is created if missing)",
        )
        self.path = path

    def details(self) -> dict[str, Any]:
        return {"path": self.path}
