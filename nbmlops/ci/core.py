"""``nbmlops ci``: run the configured pipelines, check them, report, maybe promote.

:func:`run_ci` is what the CLI calls. Before each pipeline it ends the runs of that
experiment whose driver died (``orphans.end_dead_runs``). Every pipeline runs, even after
one failed, so the report shows everything; then, with ``promote``, the runs are promoted
only if **every** check of **every** pipeline passed: a failed step, a missed gate or a
failed test command means none of the models is promoted (a scheduled job promotes a
consistent set or nothing).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from nbmlops.capture import orphans
from nbmlops.ci.pipelines import FAILED, Check, Outcome, check_parameters, run_pipeline
from nbmlops.ci.promotion import promote_outcome
from nbmlops.ci.reports import Suite
from nbmlops.config import ProjectConfig


@dataclass
class CiResult:
    outcomes: list[Outcome]
    promotions: list[Check] = field(default_factory=list)
    extra: list[Check] = field(default_factory=list)  # checks outside a pipeline (drift)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def checks(self) -> list[Check]:
        return [c for o in self.outcomes for c in o.checks] + self.promotions + self.extra

    @property
    def passed(self) -> bool:
        return all(c.status != FAILED for c in self.checks)

    def suites(self) -> list[Suite]:
        """The JUnit suites: one per pipeline (its promotion included), then the extra."""
        by_model = {c.name: c for c in self.promotions}
        suites = []
        for o in self.outcomes:
            label = (
                f"{o.pipeline.model_name}@{o.pipeline.promote.alias}" if o.pipeline.promote else ""
            )
            promoted = [by_model[label]] if label in by_model else []
            seconds = o.seconds + sum(c.seconds for c in promoted)
            suites.append(Suite(o.name, o.started, seconds, o.checks + promoted))
        if self.extra:
            suites.append(
                Suite("drift", self.started, sum(c.seconds for c in self.extra), self.extra)
            )
        return suites


def run_ci(
    config: ProjectConfig,
    names: tuple[str, ...] = (),
    *,
    tracking_uri: str,
    promote: bool = False,
    stream: TextIO | None = None,
    cache_dir: str | None = None,
) -> CiResult:
    """Run the pipelines ``names`` (default: all configured) and check them; see the module doc."""
    out = stream or sys.stdout
    pipelines = config.select(names)
    for pipeline in pipelines:  # every mistake in the configuration before anything runs
        check_parameters(pipeline, config.path.name)
    result = CiResult([])
    for pipeline in pipelines:
        end_dead(pipeline.experiment, tracking_uri, out)
        out.write(f"== pipeline {pipeline.name}: {pipeline.notebook.name}\n")
        out.flush()
        outcome = run_pipeline(
            pipeline, root=config.root, tracking_uri=tracking_uri, stream=out, cache_dir=cache_dir
        )
        result.outcomes.append(outcome)
        for check in outcome.checks:
            if check.status == FAILED:
                out.write(f"FAILED {pipeline.name}: {check.message}\n")
    if promote:
        if result.passed:
            for outcome in result.outcomes:
                check = promote_outcome(outcome, tracking_uri)
                result.promotions.append(check)
                out.write(f"{check.name}: {check.message}\n")
        else:
            result.notes.append("nothing promoted: a check failed (every check must pass)")
    return result


def end_dead(experiment: str, tracking_uri: str, out: TextIO) -> list[str]:
    """End the runs of ``experiment`` whose driver died, saying so in the log."""
    from nbmlops.capture.tracking import open_client

    client = open_client(tracking_uri)
    ended = orphans.end_dead_runs(client, experiment)
    for run_id in ended:
        out.write(f"marked run {run_id} FAILED: its driver process is gone (killed?)\n")
    return ended
