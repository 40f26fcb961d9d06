"""Runs started from a front end (the JupyterLab panel) as child processes of the server.

A job is the real command line, ``nbmlops run NOTEBOOK -p ... --events FILE``, started in
the project folder; its progress is read back from the events it writes (``run/events.py``
holds that contract) and its exit code. Nothing here re-implements
running a notebook: the job's parameters are checked exactly as ``-p`` is, before any
process starts, and the CLI does the rest.
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


class JobNotFound(NotFound):
    """No job of that id on this server (jobs last as long as the server)."""


@dataclass
class Job:
    job_id: str
    path: str  # the notebook as the front end named it
    folder: Path  # events.jsonl and output.log
    process: subprocess.Popen[bytes] | None  # None while the job waits in the queue
    experiment_id: str | None = field(default=None)
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the queued run could not start

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

    def start(self, notebook: Path, parameters: dict[str, str], path: str | None = None) -> Job:
        """Check ``parameters`` (``-p`` texts) against ``notebook``, then start the run.

        Raises :class:`~nbmlops.exceptions.NotebookError` or
        :class:`~nbmlops.exceptions.ParameterError` before any process starts.
        """
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
        job = Job(job_id, path or str(notebook), folder, None, command=args, env=env)
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
        threading.Thread(
            target=self._reap, args=(job.process,), name=f"nbmlops-job-{job.job_id}", daemon=True
        ).start()

    def _reap(self, process: subprocess.Popen[bytes]) -> None:
        """Wait for the run to end (no zombies), then start the queued runs it made room for."""
        process.wait()
        with self._lock:
            while self._queue and self._running() < self.max_running:
                self._launch(self._queue.pop(0))

    def status(self, job_id: str) -> dict[str, Any]:
        """The job as the ``jobs/<id>`` endpoint answers it (see the REST contract)."""
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(
                f"no job {job_id!r} on this server",
                "jobs last as long as the server; start the run again from the panel",
            )
        if job.process is None:
            with self._lock:
                place = self._queue.index(job) + 1 if job in self._queue else None
            return {
                "job_id": job.job_id,
                "path": job.path,
                "status": "queued" if job.error is None else "error",
                "queue_position": place,
                "current_step": None,
                "steps": [],
                "run_id": None,
                "output_path": None,
                "run_url": None,
                "error": None if job.error is None else {"problem": job.error, "fix": ""},
            }
        exit_code = job.process.poll()  # before reading: the final event precedes the exit
        found, _ = events.read_json_lines(job.events_file)
        run = events.progress(
            found, exit_code, lambda: tail(job.log_file, 20) if job.log_file.exists() else ""
        )
        return {
            "job_id": job.job_id,
            "path": job.path,
            "status": run.status,
            "current_step": run.current_step,
            "steps": run.steps,
            "run_id": run.run_id,
            "output_path": self._relative(run.output_path),
            "run_url": self._run_url(job, run.run_id) if run.run_id else None,
            "error": run.error,
        }

    def stop_all(self, timeout: float = 30) -> None:
        """SIGTERM every running job (the run is recorded as KILLED and stops its kernel);
        whatever of a job is left after ``timeout`` (a hung kernel) is killed."""
        with self._lock:
            self._queue.clear()  # queued runs never start
            jobs = [j for j in self._jobs.values() if j.process is not None]
        for job in jobs:
            assert job.process is not None
            if job.process.poll() is None:
                job.process.terminate()
        deadline = time.monotonic() + timeout
        for job in jobs:
            assert job.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                job.process.wait(max(0.1, deadline - time.monotonic()))
            stop(job.process, timeout=1)

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
