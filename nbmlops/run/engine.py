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
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellExecutionError, DeadKernelError
from traitlets import default

from nbmlops.cache.store import Entry
from nbmlops.exceptions import NbmlopsError

if TYPE_CHECKING:
    from nbmlops.run.session import Session


def __getattr__(name: str) -> None:
    """What papermill finds here while this module is half-initialised.

    Importing papermill (below) loads the engines of its ``papermill.engine`` entry point,
    this module's among them: imported before papermill, this module is then only partly
    run. The engine reads as None until the class exists; the last line registers it.
    """
    if name == "NbmlopsEngine":
        return None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from papermill.clientwrap import PapermillNotebookClient  # noqa: E402
from papermill.engines import NBClientEngine, papermill_engines  # noqa: E402
from papermill.utils import merge_kwargs, remove_args  # noqa: E402

KERNEL_MODULE = "nbmlops.run.kernel"
# What a cell's SystemExit says for sys.exit(), sys.exit(0), sys.exit(None), SystemExit():
# "stop here, successfully" (papermill reads the same values as no error).
SUCCESSFUL_EXIT = ("", "0")
OK, FAILED, STOPPED = "ok", "failed", "stopped"  # how a run of cells ended


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

    cleanup_resources = _async_cleanup_resources


class KernelCallError(NbmlopsError):
    """An nbmlops call inside the kernel failed (not the user's code)."""


class StepClient(PapermillNotebookClient):  # type: ignore[misc]  # papermill is untyped
    """papermill's notebook client, with step boundaries and events for a Session."""

    _start_kernel: Callable[[], object]  # set by execute(): starts the kernel on first use

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
                    f"the notebook's kernel {self.kernel_name!r} runs a Python without nbmlops",
                    "install nbmlops in that environment, or register this one as a kernel: "
                    "python -m ipykernel install --user",
                )
            raise KernelCallError(
                f"nbmlops kernel call {call.split('(')[0]} failed: {ename}: {evalue}"
            )
        return json.loads(ast.literal_eval(result["data"]["text/plain"]))

    def execute(self, **kwargs: Any) -> Any:
        """papermill's ``execute``, except that the kernel starts only when a step must run:
        a run whose steps all come from the cache starts no kernel at all."""
        self.reset_execution_trackers()
        with contextlib.ExitStack() as stack:
            self._start_kernel = lambda: stack.enter_context(self.setup_kernel(**kwargs))
            self.papermill_execute_cells()
            if self.kc is not None:
                info_msg = self.wait_for_reply(self.kc.kernel_info())
                self.nb.metadata["language_info"] = info_msg["content"]["language_info"]
                self.set_widgets_metadata()
        return self.nb

    def papermill_execute_cells(self) -> None:
        self._execute_steps()
        if self.kc is not None:  # the run ended (or a step failed): the last saves
            self.session.objects_saved(self.kernel_call("flush()")["saved"])  # the last entries

    def _execute_steps(self) -> None:
        session = self.session
        session.reporter.run_started(session.pipeline, session.run_dir)
        session.warn_tags()
        setup: list[tuple[int, Any]] = []
        steps: dict[str, list[tuple[int, Any]]] = {}
        for index, cell in enumerate(self.nb.cells):
            if cell.metadata.get("nbmlops", {}).get("widget"):
                continue  # only shows nbmlops widgets: not part of the pipeline
            step = cell.metadata.get("nbmlops", {}).get("step")
            (steps.setdefault(step, []) if step else setup).append((index, cell))
        kernel_ready = False
        skipped: list[dict[str, Any]] = []  # outputs of cached steps the kernel has not seen
        first_hit: Entry | None = None
        order = list(steps)
        for name, cells in steps.items():
            key, entry = session.lookup(name)
            if entry is None:
                lock = session.cache.lock(
                    key,
                    on_wait=lambda name=name: session.reporter.warn(  # type: ignore[misc]
                        f"step {name!r} is being computed by another run: waiting to reuse it"
                    ),
                )
                key, entry = session.lookup(name)  # another run may have computed it
                if entry is not None:
                    lock.release()
                else:
                    session.hold(name, lock)  # released once its entry is written
            if entry is not None:
                self._show_cached(cells, entry)
                session.step_hit(name, entry, self.nb)
                skipped.append({"outputs": entry.outputs, "rng": entry.rng})
                first_hit = first_hit or entry
                continue
            if not kernel_ready:
                kernel_ready = True
                ended = self._start_and_setup(setup)
                if ended == STOPPED:
                    session.pipeline_stopped(None, order[order.index(name) :])
                if ended != OK:
                    return
            if skipped:
                self.kernel_call(f"restore({skipped!r})")
                skipped = []
            watched, _ = session.watched_names(name)
            self.kernel_call(f"begin_step({name!r}, {watched!r})")
            session.step_started(name)
            ended = self._run_cells(cells)
            self._end_step(name, failed=ended == FAILED, stopped=ended == STOPPED)
            if ended == STOPPED:
                session.pipeline_stopped(name, order[order.index(name) + 1 :])
            if ended != OK:
                return
        if not kernel_ready and first_hit is not None:
            self._show_cached(setup, first_hit, setup=True)
        elif not steps:  # nothing but setup cells: run them
            self._start_and_setup(setup)

    def _start_and_setup(self, setup: list[tuple[int, Any]]) -> str:
        """Start the kernel (first step to execute) and run the setup cells in it."""
        self._start_kernel()
        self.session.kernel_started(self.kernel_call(self.session.kernel_start_call()))
        return self._run_cells(setup)

    def _run_cells(self, cells: list[tuple[int, Any]]) -> str:
        """Execute cells as papermill does, until one fails (FAILED) or ends the run with
        ``sys.exit(0)`` (STOPPED): the rest do not run."""
        session = self.session
        for index, cell in cells:
            try:
                self.nb_man.cell_start(cell, index)
                session.cell_started(cell)
                self.execute_cell(cell, index)
            except CellExecutionError as ex:
                if ex.ename == "SystemExit" and ex.evalue in SUCCESSFUL_EXIT:
                    return STOPPED  # not an exception for papermill either
                self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=ex)
                session.cell_failed(self.nb.cells[index], ex)
                return FAILED
            except DeadKernelError as ex:
                session.cell_failed(self.nb.cells[index], ex)
                raise
            finally:
                self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)
        return OK

    def _show_cached(self, cells: list[tuple[int, Any]], entry: Entry, setup: bool = False) -> None:
        """Fill skipped cells with the outputs they had in the run that computed them."""
        saved = entry.setup_cells if setup else entry.cells
        by_index = {c["metadata"]["nbmlops"]["cell"]: c for c in saved}
        code = iter(c for c in saved if c["cell_type"] == "code")
        for index, cell in cells:
            if cell.cell_type != "code":
                continue
            source = by_index.get(cell.metadata["nbmlops"]["cell"]) if setup else next(code, None)
            self.nb_man.cell_start(cell, index)
            if source is not None:
                cell.outputs = nbformat.from_dict(source.get("outputs", []))  # type: ignore[no-untyped-call]
                cell.execution_count = source.get("execution_count")
            cell.metadata["nbmlops"]["cached_from"] = entry.source_run
            self.nb_man.cell_complete(cell, cell_index=index)

    def _end_step(self, step: str, failed: bool, stopped: bool = False) -> None:
        watched, writes = self.session.watched_names(step)
        result = self.kernel_call(f"end_step({watched!r}, {writes!r}, failed={failed})")
        self.session.step_finished(step, self.nb, result, failed=failed, stopped=stopped)
        unsealed = self.session.unsealed(step)
        if unsealed:  # the kernel seals the entry once the step's objects are saved
            self.kernel_call(f"seal_when_saved({step!r}, {unsealed[0]!r}, {unsealed[1]!r})")

    def process_message(self, *args: Any, **kwargs: Any) -> Any:
        output = super().process_message(*args, **kwargs)
        if output is not None:
            self.session.cell_output(output)
        return output


class NbmlopsEngine(NBClientEngine):  # type: ignore[misc]  # papermill is untyped
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
        kernel_manager: Any = None,
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
        # A kernel manager handed in (a warm kernel, see run/sweep.py) is used and left running.
        client = StepClient(
            nb_man,
            session,
            km=kernel_manager,
            kernel_manager_class=IPCKernelManager,
            **final_kwargs,
        )
        # The kernel process's own log (not cell output, which comes as messages) goes to a
        # file: its noise on Ctrl-C or at shutdown is not the user's business.
        with open(session.run_dir / "kernel.log", "wb") as log:
            try:
                return client.execute(env=session.kernel_env(), stdout=log, stderr=log)
            finally:
                if kernel_manager is not None and client.kc is not None:
                    client.kc.stop_channels()


# Also what a source tree without the entry point needs, and what completes a registration
# made while this module was half-initialised (see __getattr__ above).
papermill_engines.register("nbmlops", NbmlopsEngine)
