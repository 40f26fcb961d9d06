"""Runs started from a front end (the JupyterLab panel) as child processes of the server.

A job is the real command line, ``nbmlops run NOTEBOOK -p ... --events FILE``, started in
the project folder; its progress is read back from the events it writes (``run/events.py``
holds that contract) and its exit code. Nothing here re-implements
running a notebook: the job's parameters are checked exactly as ``-p`` is, before any
process starts, and the CLI does the rest.

One run per notebook at a time, unless the caller asks for another (``concurrent``):
two runs of one notebook would race for the same steps and the panel follows one.
:meth:`Jobs.stop` ends a run as ``nbmlops run`` ends on Ctrl-C: its MLflow runs are marked
KILLED, the steps that finished stay cached, and the job's status is ``killed``.
At most ``max_running`` runs go at once (the server's ``max_concurrent_runs``); later ones
wait in a queue, in order, and their status says their place in it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops import processes, project
from nbmlops.exceptions import NbmlopsError, NotFound
from nbmlops.notebook.parameters import parse_assignments, resolve
from nbmlops.notebook.pipeline import load_pipeline
from nbmlops.processes import stop, tail
from nbmlops.run import events

_CLI = "from nbmlops.cli import main; main()"


KILLED = "killed"  # a job's status once stopped (besides running, succeeded, failed)


class JobNotFound(NotFound):
    """No job of that id on this server (jobs last as long as the server)."""


class RunAlreadyGoing(NbmlopsError):
    """A run of this notebook is under way on this server."""

    http_status = 409

    def __init__(self, path: str, job_id: str) -> None:
        super().__init__(
            f"a run of {path} is under way (job {job_id})",
            "wait for it, stop it, or start another run anyway",
        )
        self.job_id = job_id

    def details(self) -> dict[str, Any]:
        return {"job_id": self.job_id}


@dataclass
class Job:
    job_id: str
    path: str  # the notebook as the front end named it
    folder: Path  # events.jsonl and output.log
    process: subprocess.Popen[bytes] | None  # None while the job waits in the queue
    notebook: Path | None = field(default=None)  # resolved: one run per notebook
    experiment_id: str | None = field(default=None)
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the queued run could not start
    stopped: bool = field(default=False)  # stopped on request: its end is "killed"
    started: float = field(default_factory=time.monotonic)
    ended: float | None = field(default=None)  # when the process exited

    @property
    def going(self) -> bool:
        """Queued, or its process has not ended."""
        if self.process is None:
            return self.error is None and not self.stopped
        return self.process.poll() is None

    @property
    def seconds(self) -> float:
        """Wall time of the run so far (kernel start and record keeping included)."""
        return (self.ended or time.monotonic()) - self.started

    @property
    def events_file(self) -> Path:
        return self.folder / "events.jsonl"

    @property
    def log_file(self) -> Path:
        return self.folder / "output.log"


class Jobs:
    """The jobs one server started in the project folder ``root``, tracked in ``tracking_uri``."""

    def __init__(
        self,
        root: Path,
        tracking_uri: str,
        output_root: Path | None = None,
        max_running: int = 2,
    ) -> None:
        """``output_root``: where each job's executed notebooks go (a folder per job; default:
        the CLI's ``.nbmlops/runs/``, which Jupyter's file browser hides). At most
        ``max_running`` runs at once; later ones wait in a queue, in order."""
        self.root = root.resolve()
        self.tracking_uri = tracking_uri
        self.output_root = output_root
        self.max_running = max(1, max_running)
        self._jobs: dict[str, Job] = {}
        self._queue: list[Job] = []
        self._lock = threading.Lock()

    def running(self, notebook: Path) -> Job | None:
        """The job running ``notebook`` now, if any."""
        resolved = notebook.resolve()
        for job in list(self._jobs.values()):
            if job.notebook == resolved and job.going:
                return job
        return None

    def start(
        self,
        notebook: Path,
        parameters: dict[str, str],
        path: str | None = None,
        concurrent: bool = False,
    ) -> Job:
        """Check ``parameters`` (``-p`` texts) against ``notebook``, then start the run.

        Raises :class:`RunAlreadyGoing` while another run of ``notebook`` goes (unless
        ``concurrent``), :class:`~nbmlops.exceptions.NotebookError` or
        :class:`~nbmlops.exceptions.ParameterError`, before any process starts.
        """
        going = None if concurrent else self.running(notebook)
        if going is not None:
            raise RunAlreadyGoing(path or str(notebook), going.job_id)
        pipeline = load_pipeline(notebook)
        pairs = [f"{name}={text}" for name, text in parameters.items()]
        resolve(pipeline.parameters, parse_assignments(pairs))
        job_id = secrets.token_hex(8)
        folder = project.state_dir(self.root) / "jobs" / job_id
        folder.mkdir(parents=True)
        args = [sys.executable, "-c", _CLI, "run", str(notebook), "-q"]
        args += ["--events", str(folder / "events.jsonl")]
        for pair in pairs:
            args += ["-p", pair]
        if self.output_root is not None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            args += [
                "--output-dir",
                str(self.output_root / f"{pipeline.stem}-{stamp}-{job_id[:4]}"),
            ]
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.tracking_uri,  # not in argv: it may hold a password
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "BENTOML_DO_NOT_TRACK": "true",
        }
        job = Job(
            job_id, path or str(notebook), folder, None, notebook.resolve(), command=args, env=env
        )
        with self._lock:
            if self._running() < self.max_running:
                self._launch(job)
                if job.error is not None:
                    raise NbmlopsError(
                        f"the run could not start: {job.error}",
                        "shorten the parameters (pass large data as a file) and the path",
                    )
            else:
                self._queue.append(job)
            self._jobs[job_id] = job
        return job

    def _running(self) -> int:
        return sum(1 for j in self._jobs.values() if j.process and j.process.poll() is None)

    def _launch(self, job: Job) -> None:
        """Start ``job``'s process (under the lock); a thread reaps it and starts the next."""
        try:
            job.process = processes.start(job.command, job.env, job.log_file, cwd=self.root)
        except OSError as exc:  # E2BIG, ENAMETOOLONG...: no job folder left behind
            job.error = str(exc.strerror or exc)
            shutil.rmtree(job.folder, ignore_errors=True)
            return
        job.started = time.monotonic()
        threading.Thread(
            target=self._reap, args=(job,), name=f"nbmlops-job-{job.job_id}", daemon=True
        ).start()

    def _reap(self, job: Job) -> None:
        """Wait for the run to end (no zombies), then start the queued runs it made room for."""
        assert job.process is not None
        job.process.wait()
        job.ended = time.monotonic()
        with self._lock:
            while self._queue and self._running() < self.max_running:
                self._launch(self._queue.pop(0))

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(
                f"no job {job_id!r} on this server",
                "jobs last as long as the server; start the run again from the panel",
            )
        return job

    def stop(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        """Stop the job as Ctrl-C stops ``nbmlops run`` (SIGTERM: the run is recorded as
        KILLED, the steps that finished stay cached), then answer its status. Whatever is
        left after ``timeout`` (a hung kernel) is killed. A job that ended is left as it was.
        """
        job = self._job(job_id)
        with self._lock:
            if job in self._queue:  # never started: it leaves the queue
                self._queue.remove(job)
                job.stopped = True
        if job.process is not None and job.process.poll() is None:
            job.stopped = True
            job.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                job.process.wait(timeout)
            stop(job.process, timeout=1)
        return self.status(job_id)

    def status(self, job_id: str) -> dict[str, Any]:
        """The job as the ``jobs/<id>`` endpoint answers it (see the REST contract)."""
        job = self._job(job_id)
        if job.process is None:
            with self._lock:
                place = self._queue.index(job) + 1 if job in self._queue else None
            status = KILLED if job.stopped else "queued" if job.error is None else events.FAILED
            return {
                "job_id": job.job_id,
                "path": job.path,
                "status": status,
                "queue_position": place,
                "current_step": None,
                "steps": [],
                "run_id": None,
                "output_path": None,
                "run_url": None,
                "error": None
                if job.error is None
                else {"step": None, "cell": None, "line": job.error, "message": job.error},
                "seconds": 0.0,
            }
        exit_code = job.process.poll()  # before reading: the final event precedes the exit
        found, _ = events.read_json_lines(job.events_file)
        run = events.progress(
            found, exit_code, lambda: tail(job.log_file, 20) if job.log_file.exists() else ""
        )
        stopped = job.stopped and run.status == events.FAILED
        return {
            "job_id": job.job_id,
            "path": job.path,
            "status": KILLED if stopped else run.status,
            "current_step": run.current_step,
            "steps": run.steps,
            "run_id": run.run_id,
            "output_path": self._relative(run.output_path),
            "run_url": self._run_url(job, run.run_id) if run.run_id else None,
            "error": run.error,
            "seconds": round(job.seconds, 1),
        }

    def stop_all(self, timeout: float = 30) -> None:
        """SIGTERM every running job (the run is recorded as KILLED and stops its kernel);
        whatever of a job is left after ``timeout`` (a hung kernel) is killed."""
        with self._lock:
            self._queue.clear()  # queued runs never start
            jobs = [j.process for j in self._jobs.values() if j.process is not None]
        for process in jobs:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in jobs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            stop(process, timeout=1)

    def _relative(self, output: str | None) -> str | None:
        if not output:
            return None
        path = Path(output).resolve()
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def _run_url(self, job: Job, run_id: str) -> str | None:
        from nbmlops.capture.records import run_url

        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        if job.experiment_id is None:
            from nbmlops.capture.tracking import open_client

            job.experiment_id = open_client(self.tracking_uri).get_run(run_id).info.experiment_id
        return run_url(self.tracking_uri, job.experiment_id, run_id)
