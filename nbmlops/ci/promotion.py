"""``nbmlops ci --promote``: promote a run that passed, build its Bento.

The rule is ``nbmlops promote``'s own (:func:`nbmlops.serve.release.release` promotes, then
builds): the run must pass its gates and be at least as good as the version holding the
alias. A candidate that is worse is not a failure: the check passes with "kept champion
vN". A run whose model already is that version (an identical, cached re-run) keeps it too.
"""

from __future__ import annotations

import time

from nbmlops.ci.pipelines import FAILED, PASSED, SKIPPED, Check, Outcome
from nbmlops.promote.core import Promotion
from nbmlops.promote.errors import PromoteError, PromotionRefused


def promote_outcome(outcome: Outcome, tracking_uri: str, force: bool = False) -> Check:
    """Promote ``outcome``'s run by its pipeline's rule; the check says what happened.

    ``force`` overrides promote's own comparison (the drift loop, after scoring both models
    on fresh data, passes it; the override is recorded in the model's history).
    """
    t0 = time.monotonic()
    check = _promote(outcome, tracking_uri, force)
    check.seconds = time.monotonic() - t0
    return check


def _promote(outcome: Outcome, tracking_uri: str, force: bool) -> Check:
    from nbmlops.serve.release import release

    pipeline, rule = outcome.pipeline, outcome.pipeline.promote
    if rule is None:
        return Check(
            "promote",
            pipeline.model_name,
            SKIPPED,
            message=f"no promotion rule: add promote = {{ metric = ... }} to {pipeline.key}",
        )
    label = f"{pipeline.model_name}@{rule.alias}"
    try:
        done = release(
            pipeline.experiment,
            rule.metric,
            mode=rule.mode,
            gates=pipeline.gates,
            model_name=pipeline.model_name,
            alias=rule.alias,
            run_id=outcome.run_id,
            force=force,
            tracking_uri=tracking_uri,
            build=rule.build,
        )
    except PromotionRefused as exc:
        return Check(
            "promote",
            label,
            PASSED,
            message=f"kept {rule.alias} v{exc.holder or '?'}: {exc.problem}",
        )
    except PromoteError as exc:
        return Check("promote", label, FAILED, message=exc.problem, detail=str(exc))
    message = _moved(done.promotion)
    if done.build_error is not None:
        return Check(
            "promote",
            label,
            FAILED,
            message=f"{message}; build failed: {done.build_error.problem}",
            detail=str(done.build_error),
        )
    if done.bento is not None:
        message += "; " + done.bento.outcome
    return Check(
        "promote", label, PASSED, message=message, detail="\n".join(done.promotion.warnings)
    )


def _moved(done: Promotion) -> str:
    """What the alias did: kept, or moved from which version."""
    if done.unchanged:
        return f"kept {done.alias} v{done.version}: this run's model is that version"
    was = (
        f"was v{done.previous_version} ({done.metric}={done.previous_value:.6g})"
        if done.previous_version and done.previous_value is not None
        else f"was v{done.previous_version}"
        if done.previous_version
        else "first version"
    )
    return (
        f"promoted {done.model_name} v{done.version} to @{done.alias} "
        f"({done.metric}={done.value:.6g}; {was})" + (" [forced]" if done.forced else "")
    )
