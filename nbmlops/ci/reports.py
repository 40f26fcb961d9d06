"""What ``nbmlops ci`` reports: a JUnit XML file and a Markdown summary.

JUnit: ``<testsuites>`` with one ``<testsuite>`` per pipeline (and one for the drift
check), one ``<testcase>`` per step, gate, test command and promotion; a failed one has a
``<failure message=...>`` naming the step, cell and error line, or the gate with the
metric's value and the threshold; a step that never ran is ``<skipped/>``. Counts and
times are on every suite and on the root, as the common JUnit schema has them.

Markdown: a metrics table (one row per pipeline run), then each pipeline's checks with
✅ / ❌ / ⏭️, and the notes (promotions, drift). Written to ``--summary``, else appended
to ``$GITHUB_STEP_SUMMARY`` when that is set (GitHub Actions shows it on the run's page).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

from nbmlops.capture.schema import is_user_metric
from nbmlops.ci.pipelines import FAILED, PASSED, SKIPPED, Check, Outcome

CLASSNAME = "nbmlops.{suite}"  # a JUnit test case's classname: its suite (pipeline, drift)
MARKS = {PASSED: "✅", FAILED: "❌", SKIPPED: "⏭️"}


class Suite(NamedTuple):
    """A JUnit test suite: a pipeline's checks (or the drift check's)."""

    name: str
    started: float  # epoch seconds
    seconds: float  # wall time, kernel start included
    checks: list[Check]


def _counts(checks: list[Check], seconds: float | None = None) -> dict[str, str]:
    return {
        "tests": str(len(checks)),
        "failures": str(sum(c.status == FAILED for c in checks)),
        "errors": "0",
        "skipped": str(sum(c.status == SKIPPED for c in checks)),
        "time": f"{sum(c.seconds for c in checks) if seconds is None else seconds:.3f}",
    }


def junit(suites: list[Suite], path: str | Path) -> Path:
    """Write the JUnit report: one ``<testsuite>`` per :class:`Suite`."""
    every = [c for suite in suites for c in suite.checks]
    total = sum(suite.seconds for suite in suites)
    root = ET.Element("testsuites", {"name": "nbmlops ci", **_counts(every, total)})
    host = socket.gethostname()
    for i, (name, started, seconds, checks) in enumerate(suites):
        stamp = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        suite = ET.SubElement(
            root,
            "testsuite",
            {
                "name": name,
                "id": str(i),
                "hostname": host,
                "timestamp": stamp,
                **_counts(checks, seconds),
            },
        )
        for check in checks:
            case = ET.SubElement(
                suite,
                "testcase",
                {
                    "classname": CLASSNAME.format(suite=name),
                    "name": f"{check.kind} {check.name}",
                    "time": f"{check.seconds:.3f}",
                },
            )
            if check.status == FAILED:
                failure = ET.SubElement(
                    case, "failure", {"message": check.message, "type": f"{check.kind}-failed"}
                )
                failure.text = check.detail or check.message
            elif check.status == SKIPPED:
                ET.SubElement(case, "skipped", {"message": check.message})
            elif check.detail or check.message:
                ET.SubElement(case, "system-out").text = check.detail or check.message
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(root)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out


def markdown(outcomes: list[Outcome], notes: list[str], extra: list[Check] | None = None) -> str:
    """The summary: a metrics table, each pipeline's checks, the notes at the end."""
    checks = [c for o in outcomes for c in o.checks] + list(extra or [])
    failed = sum(c.status == FAILED for c in checks)
    head = (
        f"## nbmlops ci: ❌ {failed} of {len(checks)} checks failed"
        if failed
        else f"## nbmlops ci: ✅ {len(checks)} checks passed"
    )
    lines = [head, ""]
    if outcomes:
        metrics = sorted({m for o in outcomes for m in o.metrics if is_user_metric(m)})
        lines.append("| pipeline | result | run | " + " | ".join(metrics) + " |")
        lines.append("| --- | --- | --- | " + " | ".join("---:" for _ in metrics) + " |")
        for o in outcomes:
            run = o.run_id or "(no run)"
            if o.url:
                run = f"[{run}]({o.url})"
            elif o.run_id:
                run = f"`{run}`"
            values = [f"{o.metrics[m]:.4g}" if m in o.metrics else "" for m in metrics]
            mark = MARKS[PASSED if o.passed else FAILED]
            lines.append(f"| {o.name} | {mark} | {run} | " + " | ".join(values) + " |")
        lines.append("")
    for o in outcomes:
        lines.append(
            f"### {o.name} ({o.pipeline.experiment}) {MARKS[PASSED if o.passed else FAILED]}"
        )
        if o.trigger:
            lines.append(f"_{o.trigger}_")
        lines.append("")
        lines += [_line(c) for c in o.checks]
        if o.output_notebook:
            lines.append(f"- output notebook: `{o.output_notebook}`")
        lines.append("")
    if extra:
        lines += [_line(c) for c in extra] + [""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def _line(check: Check) -> str:
    text = f"- {MARKS[check.status]} {check.kind} `{check.name}`"
    return text + (f": {check.message}" if check.message else "")


def write_summary(text: str, path: str | Path | None) -> Path | None:
    """Write the summary to ``path``; without one, append it to ``$GITHUB_STEP_SUMMARY``."""
    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        return out
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
        return Path(step_summary)
    return None
