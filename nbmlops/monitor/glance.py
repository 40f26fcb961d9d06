"""The served model at a glance, for the JupyterLab panel: which version holds the alias
(its run, when and by whom it was promoted, and why when forced) and the latest drift and
performance verdicts over its logged predictions, computed by :func:`timeline.over_time`
as ``nbmlops monitor report`` does.
"""

from __future__ import annotations

from typing import Any

from nbmlops.monitor.errors import MonitorInputError
from nbmlops.monitor.performance import Rule
from nbmlops.monitor.timeline import Timeline, latest_drift, over_time


def glance(
    model_name: str,
    alias: str,
    *,
    rule: Rule | None = None,
    monitor_dir: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """``{"model", "alias", "champion", "drift", "performance", "note"}``: ``champion`` is
    None when no version holds ``alias``; ``drift``/``performance`` are None (and ``note``
    says why) when the service logged nothing yet or no window could be judged."""
    from nbmlops.promote import registry
    from nbmlops.promote.core import history

    out: dict[str, Any] = {
        "model": model_name,
        "alias": alias,
        "champion": None,
        "drift": None,
        "performance": None,
        "note": "",
    }
    holder = registry.alias_holder(registry.client(tracking_uri), model_name, alias)
    if holder is None:
        out["note"] = f"no version of {model_name} holds @{alias} yet: promote a run"
        return out
    moves = [e for e in history(model_name, tracking_uri) if e.alias == alias]
    last = next((e for e in reversed(moves) if e.to_version == holder.version), None)
    out["champion"] = {
        "version": holder.version,
        "run_id": holder.run_id,
        "promoted_at": last.time if last else None,
        "promoted_by": last.user if last else None,
        "action": last.action if last else None,
        "forced": bool(last and last.forced),
        "reason": last.reason if last else "",
    }
    line = report(model_name, alias, rule, monitor_dir, tracking_uri, out)
    if line is None:
        return out
    drift = latest_drift(line)
    if drift is None:
        out["note"] = line.drift_note or "no window had enough predictions to compare"
    else:
        verdict, features = drift
        out["drift"] = {"verdict": verdict, "features": features, "window": line.window}
    perf = line.performance
    if perf is not None:
        out["performance"] = {
            "verdict": "alert" if perf.alert else "ok",
            "summary": perf.summary(),
            "labelled": sum(w.labelled for w in perf.windows),
        }
    return out


def report(
    model_name: str,
    alias: str,
    rule: Rule | None,
    monitor_dir: str | None,
    tracking_uri: str | None,
    out: dict[str, Any] | None = None,
) -> Timeline | None:
    """The over-time report of ``model_name@alias``; None (the reason in ``out["note"]``)
    when its service logged nothing yet."""
    from nbmlops.monitor.export import production

    try:
        found = production(f"{model_name}@{alias}", monitor_dir, tracking_uri)
        line, _ = over_time(found, rule=rule, tracking_uri=tracking_uri)
    except MonitorInputError as exc:
        if out is None:
            raise
        out["note"] = exc.problem.removeprefix(f"{exc.source}: ")  # the folder: too long
        return None
    return line
