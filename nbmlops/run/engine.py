"""nbmlops' papermill engine: one kernel per pipeline run, with step boundaries.

papermill stays in charge of what it does well: loading the notebook, injecting parameters
as literals after the ``parameters`` cell, the ``metadata.papermill`` of the output notebook,
saving it as cells run, and the error cell when a cell fails. This engine replaces only the
cell loop: it runs every step in the same kernel (no kernel start per step) and, between
steps, asks the kernel (through ``user_expressions``, invisible in the notebook) what the
step produced. A :class:`~nbmlops.run.session.Session` passed as an engine argument receives
the step and cell events; without one the engine behaves like papermill's default.

Registered under papermill's ``papermill.engine`` entry point as ``nbmlops``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellExecutionError, DeadKernelError
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.utils import merge_kwargs, remove_args
from traitlets import default

from nbmlops.exceptions import NbmlopsError

if TYPE_CHECKING:
    from nbmlops.run.session import Session

KERNEL_MODULE = "nbmlops.run.kernel"


class IPCKernelManager(AsyncKernelManager):
    """Kernels on Unix sockets instead of loopback TCP: no other local user can reach them.

    The sockets live in a private temporary folder per kernel (never in the notebook's
    folder, where concurrent runs would race for the same names), removed at shutdown.
    """

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("ip")
    def _default_ip(self) -> str:
        return os.path.join(tempfile.mkdtemp(prefix="nbmlops-kernel-"), "k")

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(os.path.dirname(self.ip), ignore_errors=True)

    cleanup_resources = _async_cleanup_resources  # type: ignore[assignment]


class KernelCallError(NbmlopsError):
    """An nbmlops call inside the kernel failed (not the user's code)."""


class StepClient(PapermillNotebookClient):
    """papermill's notebook client, with step boundaries and events for a Session."""

    def __init__(self, nb_man: Any, session: Session, **kw: Any) -> None:
        super().__init__(nb_man, **kw)
        self.session = session

    def kernel_call(self, call: str) -> Any:
        """Evaluate ``nbmlops.run.kernel.<call>`` in the kernel and return its JSON result."""
        expr = f"__import__({KERNEL_MODULE!r}, fromlist=['_']).{call}"
        msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"r": expr})
        reply = self.wait_for_reply(msg_id)
        result = reply["content"].get("user_expressions", {}).get("r", {})
        if result.get("status") != "ok":
            ename, evalue = result.get("ename", "Error"), result.get("evalue", "")
            if ename == "ModuleNotFoundError" and "nbmlops" in evalue:
                raise KernelCallError(
                    f"the notebook's kernel {self.kernel_name!r} runs a Python without nbmlops\n"
                    "  fix: install nbmlops in that environment, or register this one as a kernel: "
                    "python -m ipykernel install --user"
                )
            raise KernelCallError(
                f"nbmlops kernel call {call.split('(')[0]} failed: {ename}: {evalue}"
            )
        return json.loads(ast.literal_eval(result["data"]["text/plain"]))

    def papermill_execute_cells(self) -> None:
        session = self.session
        session.kernel_started(self.kernel_call(session.kernel_start_call()))
        current: str | None = None
        failed = False
        for index, cell in enumerate(self.nb.cells):
            step = cell.metadata.get("nbmlops", {}).get("step")
            if step != current:
                if current is not None:
                    self._end_step(current, failed=False)
                if step is not None:
                    watched, _ = session.watched_names(step)
                    self.kernel_call(f"begin_step({step!r}, {watched!r})")
                    session.step_started(step)
                current = step
            try:
                self.nb_man.cell_start(cell, index)
                session.cell_started(cell)
                self.execute_cell(cell, index)
            except CellExecutionError as ex:
                self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=ex)
                session.cell_failed(self.nb.cells[index], ex)
                failed = True
                break
            except DeadKernelError as ex:
                session.cell_failed(self.nb.cells[index], ex)
                raise
            finally:
                self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)
        if current is not None:
            self._end_step(current, failed=failed)

    def _end_step(self, step: str, failed: bool) -> None:
        watched, writes = self.session.watched_names(step)
        result = self.kernel_call(f"end_step({watched!r}, {writes!r}, failed={failed})")
        self.session.step_finished(step, self.nb, result, failed=failed)

    def process_message(self, *args: Any, **kwargs: Any) -> Any:
        output = super().process_message(*args, **kwargs)
        if output is not None:
            self.session.cell_output(output)
        return output


class NbmlopsEngine(NBClientEngine):
    """The papermill engine behind ``nbmlops run``."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        session: Session | None = None,
        **kwargs: Any,
    ) -> Any:
        if session is None:
            return super().execute_managed_notebook(
                nb_man,
                kernel_name,
                log_output,
                stdout_file,
                stderr_file,
                start_timeout,
                execution_timeout,
                **kwargs,
            )
        session.prepare(nb_man.nb)
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        final_kwargs = merge_kwargs(
            kwargs,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=session.log,
            log_output=False,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        client = StepClient(nb_man, session, kernel_manager_class=IPCKernelManager, **final_kwargs)
        # The kernel process's own log (not cell output, which comes as messages) goes to a
        # file: its noise on Ctrl-C or at shutdown is not the user's business.
        with open(session.run_dir / "kernel.log", "wb") as log:
            return client.execute(env=session.kernel_env(), stdout=log, stderr=log)


def ensure_registered() -> None:
    """Register the engine when nbmlops runs from a source tree without its entry points."""
    if "nbmlops" not in papermill_engines._engines:
        papermill_engines.register("nbmlops", NbmlopsEngine)
