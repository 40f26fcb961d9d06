"""Runs side by side, for the JupyterLab panel's comparison view: their parameters (which
differ), their metrics (as curves, where they were logged by step), each step's time and
cache status, and which run holds which alias of the experiment's registered model.

The data comes from the same records the CLI and the widget read (``records.load``); the
panel only draws it.
"""

from __future__ import annotations

from typing import Any

from nbmlops.capture import records
from nbmlops.capture import schema as s


def aliases(client: Any, model_name: str) -> dict[str, dict[str, str]]:
    """``{alias: {"version", "run_id"}}`` of the registered model ``model_name`` ({} when
    it is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(model_name)
    except MlflowException:
        return {}
    held = {}
    for alias, version in sorted((model.aliases or {}).items()):
        mv = client.get_model_version(model_name, str(version))
        held[alias] = {
            "version": str(version),
            "run_id": str(mv.tags.get(s.MV_RUN_ID) or mv.run_id),
        }
    return held


def _row(name: str, values: list[Any]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "name": name,
        "values": values,
        "differs": len(set(map(str, values))) > 1
        or (len(present) != len(values) and bool(present)),
    }


def curves(client: Any, run_ids: list[str], names: list[str]) -> list[dict[str, Any]]:
    """The metrics of ``names`` logged at more than one step (``log_metric(name, value,
    step=i)``) in any of the runs: ``{"name", "runs": [[[step, value], ...] per run]}``,
    each run's points by step (the last value logged at a step)."""
    out = []
    for name in names:
        per_run = []
        for run_id in run_ids:
            points = {m.step: m.value for m in client.get_metric_history(run_id, name)}
            per_run.append([[step, points[step]] for step in sorted(points)])
        if any(len(points) > 1 for points in per_run):
            out.append({"name": name, "runs": per_run})
    return out


def compare(client: Any, experiment: str, run_ids: list[str]) -> dict[str, Any]:
    """The runs ``run_ids`` (pipeline runs) side by side, and the aliases of the model
    named after ``experiment`` (the promotion's default); :class:`records.RunNotFound`
    for an id that is not a pipeline run."""
    views = [records.load(client, run_id) for run_id in run_ids]
    held = aliases(client, experiment)
    metrics = [s.user_metrics(v.metrics) for v in views]
    param_names = sorted({k for v in views for k in v.params})
    metric_names = sorted({k for m in metrics for k in m})
    step_names: list[str] = []
    for v in views:
        step_names += [st.name for st in v.steps if st.name not in step_names]
    steps = []
    for name in step_names:
        cells: list[dict[str, Any] | None] = []
        for v in views:
            st = next((x for x in v.steps if x.name == name), None)
            cells.append(
                None
                if st is None
                else {"status": st.status, "cache": st.cache or None, "seconds": st.seconds}
            )
        steps.append({"name": name, "runs": cells})
    return {
        "experiment": experiment,
        "aliases": held,
        "runs": [
            {
                "run_id": v.run_id,
                "status": v.status,
                "start_time": records._iso(v.start_time),
                "aliases": [a for a, h in held.items() if h["run_id"] == v.run_id],
            }
            for v in views
        ],
        "params": [_row(n, [v.params.get(n) for v in views]) for n in param_names],
        "metrics": [_row(n, [m.get(n) for m in metrics]) for n in metric_names],
        "steps": steps,
        "curves": curves(client, [v.run_id for v in views], metric_names),
    }
