"""The runs widget: a notebook's pipeline runs, a metric across runs, one run's lineage,
runs side by side, and promotion, in the notebook itself.

The data (table rows, chart points, a run's steps) is computed here from the same core
the CLI and the JupyterLab panel use (``records.run_table``, ``records.load``,
``capture.compare`` for the rows ticked); the
JavaScript in ``runs.js`` only draws it. "Promote best" and "Promote selected" call
:meth:`RunsWidget.promote_best` and :meth:`RunsWidget.promote_selected` (a script calls them
too), which run ``serve.release.release()`` (promote, then build the Bento) on a background
thread; a request while one is under way is ignored (``busy``).
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from nbmlops import project
from nbmlops.capture import records
from nbmlops.capture.schema import DEFAULT_ALIAS, MODES
from nbmlops.exceptions import NbmlopsError
from nbmlops.notebook import identity
from nbmlops.promote.core import Promotion
from nbmlops.promote.errors import PromotionRefused

HERE = Path(__file__).parent


def notebook_experiment() -> str:
    """The experiment of the notebook this kernel runs: the notebook's name, as
    ``nbmlops run`` uses it by default; the name it has now (its live Jupyter session),
    not the one it had when the kernel started."""
    path = identity.notebook_path()
    if not path:
        try:
            from IPython import get_ipython

            shell = get_ipython()
            path = shell.user_ns.get("__vsc_ipynb_file__") if shell is not None else None
        except ImportError:
            path = None
    if not path or not str(path).endswith(".ipynb"):
        raise NbmlopsError(
            "cannot tell which notebook this kernel runs (no Jupyter session holds it)",
            "name the experiment: nbmlops.widgets.runs(experiment='my_notebook')",
        )
    return project.experiment_name(str(path))


def chart_points(rows: list[dict[str, Any]], metric: str, x: str) -> dict[str, Any]:
    """Points of ``metric`` across runs, against parameter ``x`` (``""``: the start time).

    ``numeric`` tells whether every x is a number (else they are categories in run order);
    points are sorted by x. Runs without the metric or the parameter are left out.
    """
    points = []
    for row in rows:
        if metric not in row["metrics"]:
            continue
        if x:
            if x not in row["params"]:
                continue
            raw: Any = row["params"][x]
        else:
            raw = row["start_time"]
        points.append({"run_id": row["run_id"], "x": raw, "y": row["metrics"][metric]})
    numeric = True
    for p in points:
        if x:
            try:
                p["x"] = float(p["x"])
            except ValueError:
                numeric = False
        else:
            p["x"] = dt.datetime.fromisoformat(p["x"]).timestamp()
    if numeric:
        points.sort(key=lambda p: (p["x"], p["y"]))
    else:
        for p in points:
            p["x"] = str(p["x"])
    return {"metric": metric, "x": x or "start_time", "numeric": numeric, "points": points}


def run_details(client: Any, run_id: str) -> dict[str, Any]:
    """One run's steps and lineage, for the panel under the table."""
    view = records.load(client, run_id)
    return {
        "run_id": view.run_id,
        "status": view.status,
        "notebook": view.notebook,
        "seed": view.seed,
        "git_commit": view.git_commit,
        "git_dirty": view.git_dirty,
        "env_hash": view.env_hash,
        "model_uri": view.model_uri,
        "data": dict(sorted(view.data.items())),
        "failed_step": view.failed_step,
        "error": view.error,
        "steps": [
            {
                "name": s.name,
                "run_id": s.run_id,
                "status": s.status,
                "cache": s.cache or None,
                "cached_from": s.cached_from or None,
                "code_hash": s.code_hash,
                "seconds": s.seconds,
            }
            for s in view.steps
        ],
    }


class RunsWidget(anywidget.AnyWidget):
    """Pipeline runs of one experiment: table, chart, lineage, promotion."""

    _esm = HERE / "runs.js"
    _css = HERE / "runs.css"

    experiment = traitlets.Unicode("").tag(sync=True)
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    metrics = traitlets.List(traitlets.Unicode()).tag(sync=True)
    params = traitlets.List(traitlets.Unicode()).tag(sync=True)
    metric = traitlets.Unicode("").tag(sync=True)
    x_param = traitlets.Unicode("").tag(sync=True)  # "": start time
    chart = traitlets.Dict().tag(sync=True)
    selected_run = traitlets.Unicode("").tag(sync=True)
    details = traitlets.Dict().tag(sync=True)
    compared = traitlets.List(traitlets.Unicode()).tag(sync=True)  # the rows ticked
    comparison = traitlets.Dict().tag(sync=True)  # capture.compare of two or more
    modes = traitlets.List(traitlets.Unicode(), default_value=list(MODES)).tag(sync=True)
    mode = traitlets.Unicode(MODES[0]).tag(sync=True)
    gates = traitlets.List(traitlets.Unicode()).tag(sync=True)
    alias = traitlets.Unicode(DEFAULT_ALIAS).tag(sync=True)
    model_name = traitlets.Unicode("").tag(sync=True)  # "": the experiment's name
    busy = traitlets.Bool(False).tag(sync=True)
    result = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, experiment: str, tracking_uri: str | None = None, limit: int = 50) -> None:
        super().__init__(experiment=experiment)
        self.tracking_uri = project.tracking_uri(tracking_uri)
        self.limit = limit
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.on_msg(self._on_message)
        self.refresh()

    def client(self) -> Any:
        from nbmlops.capture.tracking import open_client

        return open_client(self.tracking_uri)

    def refresh(self) -> None:
        """Read the runs again (after new runs, or a promotion)."""
        table = records.run_table(self.client(), self.experiment, self.limit, self.tracking_uri)
        rows = [r.to_json() for r in table.runs]
        with self.hold_sync():
            self.rows = rows
            self.metrics = table.metrics
            self.params = sorted({k for r in rows for k in r["params"]})
            if self.metric not in table.metrics:
                self.metric = table.metrics[0] if table.metrics else ""
            self._update_chart()
            self.error = "" if rows else f"no pipeline runs in experiment {self.experiment!r} yet"

    @traitlets.observe("metric", "x_param")
    def _axes_changed(self, change: dict[str, Any]) -> None:
        self._update_chart()

    def _update_chart(self) -> None:
        self.chart = chart_points(self.rows, self.metric, self.x_param) if self.metric else {}

    @traitlets.observe("selected_run")
    def _selected(self, change: dict[str, Any]) -> None:
        run_id = change["new"]
        try:
            self.details = run_details(self.client(), run_id) if run_id else {}
        except NbmlopsError as exc:
            self.details = {"run_id": run_id, "error": exc.problem, "fix": exc.fix, "steps": []}

    @traitlets.observe("compared")
    def _compare(self, change: dict[str, Any]) -> None:
        """Two or more runs ticked: them side by side, as the JupyterLab panel shows them."""
        from nbmlops.capture.compare import compare

        ids = list(dict.fromkeys(change["new"]))
        try:
            self.comparison = compare(self.client(), self.experiment, ids) if len(ids) > 1 else {}
        except NbmlopsError as exc:
            self.comparison = {"error": exc.problem, "fix": exc.fix}

    def _on_message(self, widget: Any, content: dict[str, Any], buffers: Any) -> None:
        """What the buttons send: ``{"action": "promote_best" | "promote" | "refresh"}``."""
        action = content.get("action")
        if action == "promote":
            self.request_promote(content.get("run_id") or self.selected_run or None)
        elif action == "promote_best":
            self.promote_best()
        elif action == "refresh":
            self.refresh()

    def promote_best(self) -> bool:
        """What "Promote best" does: promote the best run by ``metric``, then build."""
        return self.request_promote(None)

    def promote_selected(self) -> bool:
        """What "Promote selected" does: promote ``selected_run``, then build."""
        if not self.selected_run:
            raise NbmlopsError("no run selected", "select a run in the table first")
        return self.request_promote(self.selected_run)

    def request_promote(self, run_id: str | None) -> bool:
        """Promote ``run_id`` (None: the best run by ``metric``) on a background thread,
        then build its Bento; :meth:`wait` for the outcome (``result``).

        Returns False, doing nothing, while a promotion is under way.
        """
        with self._lock:
            if self.busy:
                return False
            self.busy = True
        target = "the best run" if run_id is None else f"run {run_id}"
        self.result = {"state": "working", "message": f"promoting {target} by {self.metric}"}
        self._worker = threading.Thread(
            target=self._promote, args=(run_id,), name="nbmlops-promote", daemon=True
        )
        self._worker.start()
        return True

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for the promotion under way (for scripts and tests); its ``result``.

        :class:`TimeoutError`, with the result so far, if it takes longer than ``timeout``
        seconds."""
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                raise TimeoutError(f"promotion not done after {timeout:g} s: {self.result}")
        return dict(self.result)

    def _promote(self, run_id: str | None) -> None:
        from nbmlops.serve.release import release

        try:
            if not self.metric:
                raise NbmlopsError("no metric chosen", "log a metric in the notebook, then refresh")
            done = release(
                self.experiment,
                self.metric,
                mode=self.mode,
                gates=list(self.gates),
                model_name=self.model_name or None,
                alias=self.alias or DEFAULT_ALIAS,
                run_id=run_id,
                tracking_uri=self.tracking_uri,
                build=True,
                on_promoted=self._promoted,
            )
            if done.build_error is not None:
                self.result = {**self.result, **_failure(done.build_error)}
            elif done.bento is not None:
                self.result = {
                    **self.result,
                    "state": "built",
                    "bento": done.bento.bento_tag,
                    "message": f"{_promoted(done.promotion)}; Bento {done.bento.bento_tag}",
                }
        except PromotionRefused as exc:
            self.result = {"state": "refused", "message": exc.problem, "fix": exc.fix}
        except NbmlopsError as exc:
            self.result = {**self.result, **_failure(exc)}
        except Exception as exc:  # shown in the widget: the thread has no one else to tell
            self.result = {
                **self.result,
                "state": "error",
                "message": f"{type(exc).__name__}: {exc}",
            }
        finally:
            self.busy = False

    def _promoted(self, done: Promotion) -> None:
        self.result = {
            "state": "promoted",
            **done.summary(),
            "message": f"{_promoted(done)}; building its Bento",
        }


def _promoted(done: Promotion) -> str:
    return f"{done.model_name} v{done.version} is @{done.alias} ({done.metric}={done.value:.4g})"


def _failure(exc: NbmlopsError) -> dict[str, str]:
    return {"state": "error", "message": exc.problem, "fix": exc.fix}


def runs(
    experiment: str | None = None, tracking_uri: str | None = None, limit: int = 50
) -> RunsWidget:
    """The runs widget for ``experiment`` (default: this notebook's experiment).

    ``tracking_uri``: the MLflow store (default: ``$MLFLOW_TRACKING_URI``, else the
    project's ``mlflow.db``).
    """
    return RunsWidget(experiment or notebook_experiment(), tracking_uri, limit)
