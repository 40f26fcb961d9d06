"""Run the configured pipelines and check them: steps, gates, test commands.

Each pipeline is one :func:`nbmlops.run.runner.run_notebook` call with the configured
parameters; its cell output streams to the log through ``PlainReporter``. What was checked
comes back as :class:`Check` objects (one per step, gate and test command), which the
reports turn into JUnit test cases and the Markdown summary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from nbmlops.capture.schema import CI, is_user_metric
from nbmlops.config import ConfigError, PipelineConfig
from nbmlops.exceptions import NbmlopsError, ParameterError, StepFailed
from nbmlops.run.progress import PlainReporter

if TYPE_CHECKING:
    from nbmlops.run.runner import RunResult

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
TAIL = 60  # lines of a failed test command's output kept in the report


@dataclass
class Check:
    """One thing ``nbmlops ci`` checked: a JUnit test case, a line of the summary."""

    kind: str  # step, gate, test, promote, drift
    name: str
    status: str = PASSED
    seconds: float = 0.0
    message: str = ""  # one line: what happened, or why it failed
    detail: str = ""  # the failure's full text, or the output


@dataclass
class Outcome:
    """A pipeline's run and its checks."""

    pipeline: PipelineConfig
    run_id: str | None = None
    experiment_id: str | None = None
    url: str | None = None
    output_notebook: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    trigger: str = ""  # why it ran, e.g. "drift in age, plan"

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def passed(self) -> bool:
        return all(c.status != FAILED for c in self.checks)

    @property
    def finished(self) -> bool:
        """The run itself finished (its gates may still have failed)."""
        steps = [c for c in self.checks if c.kind == "step"]
        return bool(steps) and all(c.status == PASSED for c in steps)


class _Recorder(PlainReporter):
    """The plain log, plus what each step ended as."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.steps: dict[str, tuple[str, float]] = {}

    def step_finished(self, name: str, status: str, seconds: float) -> None:
        super().step_finished(name, status, seconds)
        self.steps[name] = (status, seconds)


def check_parameters(pipeline: PipelineConfig, config_file: str) -> None:
    """Read the notebook and check the configured parameters, before anything runs."""
    from nbmlops.notebook.parameters import resolve
    from nbmlops.notebook.pipeline import load_pipeline

    parsed = load_pipeline(pipeline.notebook)
    try:
        resolve(parsed.parameters, pipeline.parameter_texts())
    except ParameterError as exc:  # its problem names the parameter
        raise ConfigError(config_file, f"{pipeline.key}.parameters", exc.problem, exc.fix) from None


def run_pipeline(
    pipeline: PipelineConfig,
    *,
    root: Path,
    tracking_uri: str,
    stream: TextIO,
    cache_dir: str | None = None,
) -> Outcome:
    """Run ``pipeline`` with its configured parameters, then check its gates and run its
    test commands."""
    from nbmlops.run.runner import run_notebook

    run = PipelineRun(
        pipeline, root=root, tracking_uri=tracking_uri, stream=stream, cache_dir=cache_dir
    )
    try:
        result = run_notebook(
            pipeline.notebook,
            pipeline.parameter_texts(),
            tracking_uri=tracking_uri,
            **run.options(),
        )
    except NbmlopsError as exc:
        return run.checked(None, exc)
    return run.checked(result, None)


class PipelineRun:
    """A configured pipeline's run under ``nbmlops ci``: what ``run_notebook`` is given
    besides the parameters (:meth:`options`: the experiment, the ``ci`` tag, a reporter
    that streams the log and records each step), then the checks of what came back
    (:meth:`checked`). ``run_pipeline`` runs it; the drift loop retrains through it."""

    def __init__(
        self,
        pipeline: PipelineConfig,
        *,
        root: Path,
        tracking_uri: str,
        stream: TextIO,
        cache_dir: str | None = None,
    ) -> None:
        from nbmlops.notebook.pipeline import load_pipeline

        self.pipeline = pipeline
        self.root = root
        self.tracking_uri = tracking_uri
        self.stream = stream
        self.cache_dir = cache_dir
        self.steps = [s.name for s in load_pipeline(pipeline.notebook).steps]
        self.recorder = _Recorder(stream)
        self.start()

    def start(self) -> None:
        """Start the clock (the run's time in the reports counts from here)."""
        self.started = time.time()
        self._t0 = time.monotonic()

    def options(self) -> dict[str, Any]:
        return {
            "experiment": self.pipeline.experiment,
            "reporter": self.recorder,
            "project_dir": self.root,
            "tags": {CI: self.pipeline.name},
            "cache_dir": self.cache_dir,
        }

    def checked(self, result: RunResult | None, error: NbmlopsError | None) -> Outcome:
        """The run's outcome: a check per step, then its gates and test commands."""
        from nbmlops.capture.records import run_url

        outcome = Outcome(self.pipeline, started=self.started)
        if isinstance(error, StepFailed):
            outcome.run_id, outcome.output_notebook = error.run_id or None, error.output_notebook
        elif error is not None:
            outcome.run_id = getattr(error, "run_id", None)
        if result is not None:
            outcome.run_id, outcome.output_notebook = result.run_id, str(result.output_notebook)
            outcome.metrics = dict(result.metrics)
        outcome.checks += _step_checks(self.steps, self.recorder.steps, error)
        if outcome.run_id:
            outcome.experiment_id = _experiment_id(self.tracking_uri, outcome.run_id)
            if outcome.experiment_id:
                outcome.url = run_url(self.tracking_uri, outcome.experiment_id, outcome.run_id)
        outcome.checks += gate_checks(self.pipeline, outcome.metrics, ran=result is not None)
        for command in self.pipeline.tests:
            if result is None:
                outcome.checks.append(Check("test", command, SKIPPED, message="the run failed"))
            else:
                env = _test_env(self.pipeline, result, self.tracking_uri)
                outcome.checks.append(run_test(command, self.root, env, self.stream))
        outcome.seconds = time.monotonic() - self._t0
        return outcome


def _step_checks(
    steps: list[str], recorded: dict[str, tuple[str, float]], error: NbmlopsError | None
) -> list[Check]:
    """A check per step (from what the reporter recorded); an error that is not a failed
    cell is one more failed check, ``run``."""
    failure = error if isinstance(error, StepFailed) else None
    checks = []
    if failure is not None and failure.step not in steps:  # a setup cell failed
        checks.append(_failed_step(failure, 0.0))
    for name in steps:
        status, seconds = recorded.get(name, ("", 0.0))
        if failure is not None and failure.step == name:
            checks.append(_failed_step(failure, seconds))
        elif status in ("FINISHED", "CACHED"):
            message = "cached (not executed)" if status == "CACHED" else "finished"
            checks.append(Check("step", name, PASSED, seconds, message))
        elif status:
            checks.append(Check("step", name, FAILED, seconds, f"step {name} {status.lower()}"))
        else:
            why = "an earlier step failed" if error else "not run"
            checks.append(Check("step", name, SKIPPED, message=why))
    if error is not None and failure is None:
        checks.append(Check("step", "run", FAILED, message=error.problem, detail=str(error)))
    return checks


def _failed_step(failure: StepFailed, seconds: float) -> Check:
    detail = str(failure)
    if failure.traceback:
        detail += "\n\n" + _ANSI.sub("", "\n".join(failure.traceback))
    return Check(
        "step",
        failure.step,
        FAILED,
        seconds,
        f"step {failure.step} failed in cell {failure.cell_index}: "
        f"{failure.ename}: {failure.evalue}",
        detail,
    )


def gate_checks(pipeline: PipelineConfig, metrics: dict[str, float], ran: bool) -> list[Check]:
    """One check per gate: the metric's value against the threshold, both in the message."""
    checks = []
    for gate in pipeline.gates:
        name = str(gate)
        if not ran:
            checks.append(Check("gate", name, SKIPPED, message="the run failed"))
        elif gate.metric not in metrics:
            logged = ", ".join(sorted(filter(is_user_metric, metrics)))
            checks.append(
                Check(
                    "gate",
                    name,
                    FAILED,
                    message=f"gate {name}: the run logged no metric {gate.metric!r} "
                    f"(it logged: {logged or 'none'})",
                )
            )
        elif gate.passes(metrics[gate.metric]):
            checks.append(
                Check("gate", name, PASSED, message=f"{gate.metric}={metrics[gate.metric]:.6g}")
            )
        else:
            checks.append(
                Check(
                    "gate",
                    name,
                    FAILED,
                    message=f"gate {name} missed: {gate.metric}={metrics[gate.metric]:.6g}, "
                    f"needs {gate.op} {gate.threshold:g}",
                )
            )
    return checks


def _test_env(pipeline: PipelineConfig, result: RunResult, tracking_uri: str) -> dict[str, str]:
    """What a test command gets to find the run: ids, the output notebook, the store."""
    bindir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "NBMLOPS_PIPELINE": pipeline.name,
        "NBMLOPS_EXPERIMENT": pipeline.experiment,
        "NBMLOPS_RUN_ID": result.run_id,
        "NBMLOPS_OUTPUT_NOTEBOOK": str(result.output_notebook),
        "NBMLOPS_OUTPUT_DIR": str(result.output_dir),
        "NBMLOPS_MODEL_URI": result.model_uri or "",
    }


def run_test(command: str, root: Path, env: dict[str, str], stream: TextIO) -> Check:
    """Run a test command in the project folder (a shell command line), streaming its output."""
    t0 = time.monotonic()
    stream.write(f"test: {command}\n")
    stream.flush()
    lines: list[str] = []
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        stream.write(f"  test | {line}")
        stream.flush()
    code = proc.wait()
    seconds = time.monotonic() - t0
    output = "\n".join(lines[-TAIL:])
    if code == 0:
        return Check("test", command, PASSED, seconds, "passed", output)
    last = next((li for li in reversed(lines) if li.strip()), "")
    return Check("test", command, FAILED, seconds, f"{command!r} exited {code}: {last}", output)


def _experiment_id(tracking_uri: str, run_id: str) -> str | None:
    from nbmlops.capture.tracking import open_client

    try:
        return str(open_client(tracking_uri).get_run(run_id).info.experiment_id)
    except Exception:
        return None
