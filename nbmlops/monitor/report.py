"""Writing a :class:`DriftResult`: the machine-readable JSON and a self-contained HTML page.

The HTML page needs nothing but itself: the summary table on top (drifted features
highlighted), then one plot per feature drawn by matplotlib and inlined as base64 SVG
(numeric: overlaid histograms and the two ECDFs; categorical: side-by-side bars of the
category shares). Everything it draws comes from the result's ``plot`` data, so a JSON
result can be rendered again later.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from pathlib import Path
from typing import Any

from nbmlops.monitor.drift import DriftResult, FeatureDrift

REFERENCE_COLOR = "#4c72b0"
CURRENT_COLOR = "#dd8452"


def write_json(result: DriftResult, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    return target


def write_html(result: DriftResult, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(result), encoding="utf-8")
    return target


def format_stat(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value == float("inf"):
            return "inf"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4f}"
    return str(value)


MARKS = {"drift": "DRIFT", "small": "small", "none": "ok"}


def table_rows(result: DriftResult) -> list[dict[str, str]]:
    """One row per feature: the columns both the terminal table and the HTML table show:
    the effect size (how much), the Holm-adjusted p-value of its test, the missing share's
    change, PSI (numeric; reported, not part of the rule) and the verdict."""
    rows = []
    for f in result.features:
        s = f.stats
        if f.kind == "numeric":
            w = s["wasserstein_sd"]
            effect = f"W {format_stat(w)} sd" if w is not None else "W –"
            pvalue = f"KS p {format_stat(s.get('ks_pvalue_holm'))}"
            extra = f"PSI {format_stat(s['psi'])}"
        else:
            effect = f"JS {format_stat(s['js_distance'])}"
            pvalue = f"chi2 p {format_stat(s.get('chi2_pvalue_holm'))}"
            extra = f"chi2 {format_stat(s['chi2_statistic'])}"
        change = s["missing_share_change"]
        rows.append(
            {
                "feature": f.name,
                "kind": f.kind,
                "stat1": effect,
                "stat2": extra,
                "pvalue": pvalue,
                "missing": f"{change:+.3f}" if change else "0",
                "drifted": MARKS[f.verdict],
                "why": "; ".join(f.reasons),
            }
        )
    return rows


def render_html(result: DriftResult) -> str:
    esc = html.escape
    rows = []
    for row, f in zip(table_rows(result), result.features, strict=True):
        cls = ' class="drifted"' if f.drifted else ' class="small"' if f.verdict == "small" else ""
        rows.append(
            f"<tr{cls}><td><a href='#f-{esc(f.name)}'>{esc(f.name)}</a></td>"
            f"<td>{row['kind']}</td><td>{esc(row['stat1'])}</td><td>{esc(row['stat2'])}</td>"
            f"<td>{esc(row['pvalue'])}</td><td>{esc(row['missing'])}</td>"
            f"<td class='mark'>{row['drifted']}</td>"
            f"<td>{esc(row['why'])}</td></tr>"
        )
    notes = [esc(note[0].upper() + note[1:]) for note in result.notes()]
    sections = []
    for f in result.features:
        mark = "<span class='badge'>drift</span>" if f.drifted else ""
        why = (
            f"<p class='why{'' if f.drifted else ' quiet'}'>{esc('; '.join(f.reasons))}</p>"
            if f.reasons
            else ""
        )
        sections.append(
            f"<section id='f-{esc(f.name)}'><h3>{esc(f.name)} <small>{f.kind}</small>{mark}</h3>"
            f"{why}<img class='plot' alt='{esc(f.name)}' src='data:image/svg+xml;base64,"
            f"{feature_svg(f)}'></section>"
        )
    state = "bad" if result.any_drift else "good"
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    notes_html = "".join(f"<li>{n}</li>" for n in notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nbmlops drift report</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}}
h1{{margin-bottom:.2em}} .meta{{color:#555;margin:.1em 0}}
.summary{{font-size:1.2em;padding:.6em 1em;border-radius:6px;margin:1em 0}}
.summary.good{{background:#e6f4ea;border:1px solid #9bd3a8}}
.summary.bad{{background:#fdecea;border:1px solid #f1a9a0}}
table{{border-collapse:collapse;width:100%;font-size:.95em}}
th,td{{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd}}
tr.drifted{{background:#fdecea}} tr.drifted td.mark{{color:#b00020;font-weight:bold}}
tr.small td.mark{{color:#a06000}}
td.mark{{color:#2e7d32}} section{{margin:1.5em 0;border-top:1px solid #eee;padding-top:.5em}}
small{{color:#777;font-weight:normal;margin-left:.4em}}
.badge{{background:#b00020;color:#fff;border-radius:4px;padding:.1em .5em;margin-left:.6em;font-size:.7em}}
.why{{color:#b00020;margin:.2em 0}} .why.quiet{{color:#555}} img.plot{{max-width:100%}}
</style></head><body>
<h1>Drift report</h1>
<p class="meta">reference: {esc(result.reference_source)} ({result.reference_rows} rows; KS on {esc(result.ks_reference)})</p>
<p class="meta">current: {esc(result.current_source)} ({result.current_rows} rows)</p>
<p class="meta">rule: {esc(result.thresholds.rule())} ({result.tests} tests in the Holm family) &middot; {created}</p>
<div class="summary {state}">{esc(result.summary())}</div>
<table><thead><tr><th>feature</th><th>kind</th><th>effect</th><th>also</th><th>test (Holm)</th><th>missing share</th><th>verdict</th><th>how much, and why</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
{f"<ul class='notes'>{notes_html}</ul>" if notes else ""}
{"".join(sections)}
</body></html>
"""


def feature_svg(feature: FeatureDrift) -> str:
    """The feature's plot as base64 SVG text (an empty plot when there are no values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"svg.fonttype": "none", "font.size": 9}):
        if not feature.plot:
            fig, ax = plt.subplots(figsize=(9, 1))
            ax.axis("off")
            ax.text(0.5, 0.5, "no values to plot", ha="center", va="center")
        elif feature.kind == "numeric":
            fig = _numeric_figure(feature, plt)
        else:
            fig = _categorical_figure(feature, plt)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight")
        plt.close(fig)
    return base64.b64encode(buf.getvalue().encode()).decode("ascii")


def _numeric_figure(feature: FeatureDrift, plt: Any) -> Any:
    p = feature.plot
    fig, (hist, ecdf) = plt.subplots(1, 2, figsize=(9, 2.8))
    edges = p["edges"]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    for key, color, label in (
        ("reference", REFERENCE_COLOR, "reference"),
        ("current", CURRENT_COLOR, "current"),
    ):
        total = max(sum(p[key]), 1)
        density = [c / total / w if w else 0 for c, w in zip(p[key], widths, strict=True)]
        hist.stairs(density, edges, fill=True, alpha=0.45, color=color, label=label)
        ecdf.step(p["ecdf_x"], p[f"ecdf_{key}"], where="post", color=color, label=label)
    hist.set_title("histogram (density)")
    ecdf.set_title("ECDF")
    ecdf.set_ylim(0, 1.02)
    hist.legend(frameon=False, loc="upper left")
    for ax in (hist, ecdf):
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def _categorical_figure(feature: FeatureDrift, plt: Any) -> Any:
    p = feature.plot
    labels = p["labels"]
    fig, ax = plt.subplots(figsize=(9, 2.8))
    x = range(len(labels))
    ax.bar(
        [i - 0.2 for i in x], p["reference"], width=0.4, color=REFERENCE_COLOR, label="reference"
    )
    ax.bar([i + 0.2 for i in x], p["current"], width=0.4, color=CURRENT_COLOR, label="current")
    ax.set_xticks(
        list(x), [str(label)[:20] for label in labels], rotation=30 if len(labels) > 6 else 0
    )
    ax.set_ylabel("share")
    ax.set_title("category shares")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig
