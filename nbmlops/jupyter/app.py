"""The extension application: its configuration, the handlers it adds, the jobs it owns."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Int, Unicode

from nbmlops import project
from nbmlops.run.jobs import Jobs


class Nbmlops(ExtensionApp):
    """nbmlops in Jupyter: pipelines, runs, jobs and promotion of the server's notebooks."""

    name = "nbmlops"
    load_other_extensions = True

    tracking_uri = Unicode(
        None,
        allow_none=True,
        config=True,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else <root_dir>/mlflow.db).",
    )

    output_dir = Unicode(
        "nbmlops-runs",
        config=True,
        help="Where runs started from JupyterLab write their executed notebooks, relative to "
        "root_dir (a folder per run; the CLI's default, .nbmlops/runs, is hidden from the file "
        "browser). Empty: the CLI's default.",
    )

    max_concurrent_runs = Int(
        2,
        config=True,
        help="Runs started from JupyterLab that execute at once; later ones wait in a queue "
        "(the job's status says its place).",
    )

    def initialize_settings(self) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
        assert self.serverapp is not None
        self.root = Path(self.serverapp.root_dir).resolve()
        # Hidden files stay hidden, as in JupyterLab's file browser and contents API.
        self.allow_hidden = bool(getattr(self.serverapp.contents_manager, "allow_hidden", False))
        self.store = project.tracking_uri(self.tracking_uri, self.root)
        outputs = (self.root / self.output_dir).resolve() if self.output_dir else None
        self.jobs = Jobs(self.root, self.store, outputs, self.max_concurrent_runs)

    def initialize_handlers(self) -> None:
        from nbmlops.jupyter.handlers import routes

        self.handlers.extend(routes())

    async def stop_extension(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.jobs.stop_all)
