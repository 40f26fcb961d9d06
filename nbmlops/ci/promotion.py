"""``nbmlops ci --promote``: promote a run that passed, build its Bento.

The rule is ``nbmlops promote``'s own (:func:`nbmlops.promote.core.promote` decides): the
run must pass its gates and be at least as good as the version holding the alias. A
candidate that is worse is not a failure: the check passes with "kept champion vN". A
run whose model already is that version (an identical, cached re-run) keeps it too.
"""

from __future__ import annotations

import time

from nbmlops.ci.pipelines import FAILED, PASSED, SKIPPED, Check, Outcome
from nbmlops.exceptions import NbmlopsError
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
    from nbmlops.promote.core import promote

    pipeline, rule = outcome.pipeline, outcome.pipeline.promote
    if rule is None:
        return Check(
            "promote",
            pipeline.model_name,
            SKIPPED,
            message=f"no promotion rule: add promote = {{ metric = ... }} to {pipeline.key}",
        )
    name = pipeline.model_name
    label = f"{name}@{rule.alias}"
    try:
        done = promote(
            pipeline.experiment,
            rule.metric,
            rule.mode,
            pipeline.gates,
            name,
            rule.alias,
            run_id=outcome.run_id,
            force=force,
            tracking_uri=tracking_uri,
        )
    except PromotionRefused as exc:
        holder = _holder(label, tracking_uri)
        return Check(
            "promote", label, PASSED, message=f"kept {rule.alias} v{holder}: {exc.problem}"
        )
    except PromoteError as exc:
        return Check("promote", label, FAILED, message=exc.problem, detail=str(exc))
    if done.unchanged:
        message = f"kept {rule.alias} v{done.version}: this run's model is that version"
    else:
        was = (
            f"was v{done.previous_version} ({rule.metric}={done.previous_value:.6g})"
            if done.previous_version and done.previous_value is not None
            else f"was v{done.previous_version}"
            if done.previous_version
            else "first version"
        )
        message = (
            f"promoted {name} v{done.version} to @{rule.alias} "
            f"({rule.metric}={done.value:.6g}; {was})" + (" [forced]" if done.forced else "")
        )
        if rule.build:
            try:
                message += "; " + _build(f"{name}/{done.version}", tracking_uri)
            except NbmlopsError as exc:
                return Check(
                    "promote",
                    label,
                    FAILED,
                    message=f"{message}; build failed: {exc.problem}",
                    detail=str(exc),
                )
    return Check("promote", label, PASSED, message=message, detail="\n".join(done.warnings))


def _build(ref: str, tracking_uri: str) -> str:
    from nbmlops.serve.build import ensure_bento

    servable = ensure_bento(ref, tracking_uri)
    return f"Bento {servable.bento_tag} {'built' if servable.built else 'found and verified'}"


def _holder(label: str, tracking_uri: str) -> str:
    from nbmlops.promote.registry import resolve_model

    try:
        return resolve_model(label, tracking_uri).version
    except PromoteError:
        return "?"
