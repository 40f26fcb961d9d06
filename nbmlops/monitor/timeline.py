"""The over-time report of a served model (``nbmlops monitor report``): one page, no files.

Per window (``1d`` by default) over the logged predictions: input drift of each feature
against the model's reference profile (:func:`nbmlops.monitor.drift.check_drift` per
window; a heat map of Wasserstein distance (in reference sds) for numeric features, Jensen-Shannon distance for categorical
ones, drifted windows marked), the prediction distribution, traffic and latency (the
logged request latency), realised and CBPE-estimated performance beside the training
figures, and the segments. Every plot is drawn by matplotlib and inlined as base64 SVG,
as ``monitor/report.py`` does, so the page reads the same in a CI artifact and JupyterLab.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbmlops.monitor.performance import PerformanceResult, Rule, parse_duration
from nbmlops.monitor.segments import Segments

if TYPE_CHECKING:
    from nbmlops.monitor.export import Production
    from nbmlops.monitor.feedback import Joined

MIN_DRIFT_ROWS = 50  # a window with fewer predictions is not compared for drift


@dataclass
class Timeline:
    """What the report shows; ``windows`` are the window starts (UTC)."""

    model: str
    window: str
    windows: list[pd.Timestamp]
    traffic: list[int]
    latency_p50: list[float]
    latency_p95: list[float]
    predictions: dict[str, list[float]]  # class -> share per window, or p10/p50/p90
    drift: dict[str, list[float | None]] = field(default_factory=dict)  # feature -> score
    drifted: dict[str, list[bool]] = field(default_factory=dict)
    drift_note: str = ""
    performance: PerformanceResult | None = None
    segments: Segments | None = None


def build_timeline(
    frame: pd.DataFrame,
    *,
    model: str,
    window: str = "1d",
    reference: dict[str, Any] | None = None,
    performance: PerformanceResult | None = None,
    segments: Segments | None = None,
) -> Timeline:
    """The report's figures from ``frame`` (``read_monitor_logs``, joined or not) and the
    model's reference profile (no drift section without one)."""
    from nbmlops.monitor.estimate import classes_of, proba_columns

    size = parse_duration(window, "--window")
    stamps = frame["timestamp"]
    origin = stamps.min().floor("D") if size >= pd.Timedelta("1D") else stamps.min().floor(size)
    slot = ((stamps - origin) // size).to_numpy()
    keys = np.unique(slot)
    groups = frame.groupby(slot, sort=True)
    latency = groups["latency_ms"] if "latency_ms" in frame else None
    line = Timeline(
        model=model,
        window=window,
        windows=[origin + int(k) * size for k in keys],
        traffic=groups.size().reindex(keys).astype(int).tolist(),
        latency_p50=latency.quantile(0.5).reindex(keys).tolist() if latency is not None else [],
        latency_p95=latency.quantile(0.95).reindex(keys).tolist() if latency is not None else [],
        predictions={},
        performance=performance,
        segments=segments,
    )
    classes = classes_of(frame)
    if classes or not pd.api.types.is_float_dtype(frame["prediction"]):
        shares = pd.crosstab(slot, frame["prediction"].astype(str), normalize="index")
        line.predictions = {str(c): shares[c].reindex(keys).fillna(0).tolist() for c in shares}
    else:
        preds = groups["prediction"]
        line.predictions = {
            f"p{int(q * 100)}": preds.quantile(q).reindex(keys).tolist() for q in (0.1, 0.5, 0.9)
        }
    if reference is None:
        line.drift_note = "no reference profile: drift is not shown"
        return line
    _drift(line, frame, slot, keys, reference, set(proba_columns(frame)))
    return line


def over_time(
    found: Production,
    *,
    since: str | None = "30d",
    window: str = "1d",
    rule: Rule | None = None,
    segments: list[str] | tuple[str, ...] = (),
    tracking_uri: str | None = None,
) -> tuple[Timeline, Joined]:
    """The report of the served ``found`` (``monitor.export.production``) over its logged
    predictions since ``since``: the one computation behind ``nbmlops monitor report`` and
    the JupyterLab panel's verdicts. :class:`MonitorInputError` when nothing was logged."""
    from nbmlops.monitor.errors import MonitorInputError
    from nbmlops.monitor.estimate import reference_set
    from nbmlops.monitor.feedback import load_joined
    from nbmlops.monitor.performance import evaluate, since_time
    from nbmlops.monitor.segments import segment
    from nbmlops.promote.errors import PromoteError
    from nbmlops.promote.registry import load_reference

    joined = load_joined(found.folder, since_time(since))
    if joined.frame.empty:
        raise MonitorInputError(
            str(found.folder),
            f"no predictions of {found.label} in the last {since}",
            "give a longer --since, or send requests to the service first",
        )
    try:
        reference = load_reference(found.ref, tracking_uri)
    except PromoteError:
        reference = None
    rule = rule or Rule()
    perf = evaluate(
        joined.frame,
        model=found.label,
        window=window,
        training=found.training_metrics(tracking_uri),
        rule=rule,
        unknown_ids=len(joined.unknown),
        duplicate_labels=len(joined.duplicates),
        reference=reference_set(found.ref, tracking_uri),
    )
    line = build_timeline(
        joined.frame,
        model=found.label,
        window=window,
        reference=reference,
        performance=perf,
        segments=segment(joined.frame, segments, rule.min_labels) if segments else None,
    )
    return line, joined


def latest_drift(line: Timeline) -> tuple[str, list[str]] | None:
    """The drift verdict of the latest window that was compared: ``("drift", features)``
    or ``("no drift", [])``; None when no window was (no reference, too few rows)."""
    if not line.drift:
        return None
    for i in range(len(line.windows) - 1, -1, -1):
        if any(scores[i] is not None for scores in line.drift.values()):
            drifted = [f for f, marks in line.drifted.items() if marks[i]]
            return ("drift" if drifted else "no drift"), drifted
    return None


def _drift(
    line: Timeline,
    frame: pd.DataFrame,
    slot: np.ndarray,
    keys: np.ndarray,
    profile: dict[str, Any],
    skip: set[str],
) -> None:
    from nbmlops.monitor.drift import check_drift
    from nbmlops.monitor.reference import Reference

    ref = Reference.from_profile(profile)
    features = [c for c in ref.columns if c in frame.columns and c not in skip]
    if not features:
        line.drift_note = "no logged column is a reference feature: drift is not shown"
        return
    line.drift = {f: [] for f in features}
    line.drifted = {f: [] for f in features}
    small = 0
    for k in keys:
        part = frame.loc[slot == k, features]
        result = (
            check_drift(ref, part, allow_missing_columns=True)
            if len(part) >= MIN_DRIFT_ROWS
            else None
        )
        small += result is None
        by_name = {f.name: f for f in result.features} if result else {}
        for name in features:
            found = by_name.get(name)
            stats = found.stats if found else {}
            score = stats.get("wasserstein_sd", stats.get("js_distance"))
            line.drift[name].append(float(score) if score is not None else None)
            line.drifted[name].append(bool(found and found.drifted))
    if small:
        line.drift_note = (
            f"{small} windows with fewer than {MIN_DRIFT_ROWS} predictions not compared"
        )


def write_html(line: Timeline, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(line), encoding="utf-8")
    return target


def render_html(line: Timeline) -> str:
    esc = html.escape
    perf = line.performance
    sections = [
        _section("Traffic and latency", _svg(_traffic, line)),
        _section("Predictions", _svg(_predictions, line)),
    ]
    if line.drift:
        sections.insert(
            0, _section("Input drift per window", _svg(_heatmap, line), line.drift_note)
        )
    elif line.drift_note:
        sections.insert(0, _section("Input drift per window", "", line.drift_note))
    if perf is not None:
        state = "bad" if perf.alert else "good"
        summary = f"<div class='summary {state}'>{esc(perf.summary())}</div>"
        note = f"rule: {perf.rule}"
        if perf.kind == "classifier":
            note += f"; estimates calibrated on: {perf.calibrated_on()}"
        sections.insert(0, _section("Performance", summary + _svg(_performance, line), note))
    if line.segments is not None:
        sections.append(_section("Segments", _segments_table(line.segments)))
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    first = line.windows[0].strftime("%Y-%m-%d %H:%M") if line.windows else "–"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nbmlops monitor report: {esc(line.model)}</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}}
.meta{{color:#555}} img.plot{{max-width:100%}} section{{margin:1.5em 0;border-top:1px solid #eee}}
.summary{{padding:.5em 1em;border-radius:6px;margin:.6em 0}}
.summary.good{{background:#e6f4ea;border:1px solid #9bd3a8}} .summary.bad{{background:#fdecea;border:1px solid #f1a9a0}}
table{{border-collapse:collapse}} th,td{{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd}}
tr.gap td{{background:#fff4e5;font-weight:bold}} .note{{color:#777}}
</style></head><body>
<h1>Monitor report: {esc(line.model)}</h1>
<p class="meta">{sum(line.traffic)} predictions in {len(line.windows)} windows of {esc(line.window)} from {first} UTC &middot; {created}</p>
{"".join(sections)}
</body></html>
"""


def _section(title: str, body: str, note: str = "") -> str:
    note_html = f"<p class='note'>{html.escape(note)}</p>" if note else ""
    return f"<section><h2>{html.escape(title)}</h2>{body}{note_html}</section>"


def _segments_table(segments: Segments) -> str:
    esc = html.escape
    largest = segments.largest
    rows = []
    for seg in segments.segments:
        for g in seg.groups:
            gap = largest is seg and g.value in seg.between
            metric = "–" if g.metric is None else f"{g.metric:.4f}"
            rows.append(
                f"<tr{' class=gap' if gap else ''}><td>{esc(seg.column)}</td><td>{esc(g.value)}</td>"
                f"<td>{g.predictions}</td><td>{g.rate:.3f}</td><td>{g.labelled}</td><td>{metric}</td></tr>"
            )
    head = segments.segments[0] if segments.segments else None
    flag = (
        f"<p>largest gap: {esc(largest.column)} {largest.gap_of} {largest.gap:.3f} between "
        f"{esc(largest.between[0])} and {esc(largest.between[1])}</p>"
        if largest
        else ""
    )
    metric_name = head.metric if head else "metric"
    rate_name = head.rate if head else "rate"
    return (
        f"{flag}<table><thead><tr><th>column</th><th>value</th><th>predictions</th>"
        f"<th>{esc(rate_name)}</th><th>labels</th><th>{esc(metric_name)}</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _svg(draw: Any, line: Timeline) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"svg.fonttype": "none", "font.size": 9}):
        fig = draw(line, plt)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight")
        plt.close(fig)
    data = base64.b64encode(buf.getvalue().encode()).decode("ascii")
    return f"<img class='plot' alt='' src='data:image/svg+xml;base64,{data}'>"


def _labels(line: Timeline) -> list[str]:
    fmt = (
        "%m-%d" if parse_duration(line.window, "--window") >= pd.Timedelta("1D") else "%m-%d %H:%M"
    )
    return [w.strftime(fmt) for w in line.windows]


def _ticks(ax: Any, labels: list[str]) -> None:
    step = max(1, len(labels) // 15)
    ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=45, ha="right")
    ax.spines[["top", "right"]].set_visible(False)


def _heatmap(line: Timeline, plt: Any) -> Any:
    names = list(line.drift)
    grid = np.array(
        [[np.nan if v is None else v for v in line.drift[n]] for n in names], dtype=float
    )
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(names) + 1.5))
    image = ax.imshow(
        grid, aspect="auto", cmap="Reds", vmin=0, vmax=max(0.3, float(np.nanmax(grid, initial=0)))
    )
    for i, n in enumerate(names):
        for j, hit in enumerate(line.drifted[n]):
            if hit:
                ax.text(j, i, "●", ha="center", va="center", color="black", fontsize=7)
    ax.set_yticks(range(len(names)), names)
    _ticks(ax, _labels(line))
    fig.colorbar(image, ax=ax, label="Wasserstein, ref. sds (numeric) / JS distance (categorical)")
    ax.set_title("drift per feature and window (● drifted)")
    return fig


def _traffic(line: Timeline, plt: Any) -> Any:
    labels = _labels(line)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4), sharex=True)
    top.bar(range(len(labels)), line.traffic, color="#4c72b0")
    top.set_ylabel("predictions")
    if line.latency_p50:
        bottom.plot(line.latency_p50, label="p50", color="#4c72b0")
        bottom.plot(line.latency_p95, label="p95", color="#dd8452")
        bottom.legend(frameon=False)
    bottom.set_ylabel("latency (ms)")
    _ticks(bottom, labels)
    top.spines[["top", "right"]].set_visible(False)
    return fig


def _predictions(line: Timeline, plt: Any) -> Any:
    labels = _labels(line)
    fig, ax = plt.subplots(figsize=(10, 2.8))
    x = np.arange(len(labels))
    if all(k.startswith("p") and k[1:].isdigit() for k in line.predictions):
        ax.fill_between(
            x, line.predictions["p10"], line.predictions["p90"], alpha=0.3, label="p10–p90"
        )
        ax.plot(x, line.predictions["p50"], label="median")
        ax.set_ylabel("prediction")
    else:
        bottom = np.zeros(len(labels))
        for name, shares in line.predictions.items():
            ax.bar(x, shares, bottom=bottom, label=name)
            bottom += np.asarray(shares)
        ax.set_ylabel("share")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    _ticks(ax, labels)
    return fig


def _performance(line: Timeline, plt: Any) -> Any:
    perf = line.performance
    assert perf is not None
    names = ("accuracy", "f1") if perf.kind == "classifier" else ("rmse", "mae")
    starts = [pd.Timestamp(w.start) for w in perf.windows]
    labels = _labels(line)
    position = {w: i for i, w in enumerate(line.windows)}
    x = [position.get(s, i) for i, s in enumerate(starts)]
    fig, ax = plt.subplots(figsize=(10, 2.8))
    for name, color in zip(names, ("#4c72b0", "#dd8452"), strict=True):
        ax.plot(
            x,
            [w.realised.get(name, np.nan) for w in perf.windows],
            "o-",
            color=color,
            label=f"{name}",
        )
        if perf.kind == "classifier":
            est = [w.estimated.get(name, np.nan) for w in perf.windows]
            ax.plot(x, est, "--", color=color, alpha=0.7, label=f"{name} (estimated)")
        if name in perf.training:
            ax.axhline(
                perf.training[name], color=color, lw=0.8, ls=":", label=f"{name} at training"
            )
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    _ticks(ax, labels)
    return fig
