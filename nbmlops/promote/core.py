"""Promote, roll back, read the history: the one implementation every front door calls.

``promote()`` goes through five steps, each a function here:

1. :func:`select`: the best finished pipeline run of the experiment by the metric (or
   the run given);
2. :func:`gate`: which of the gates the run fails;
3. :func:`compare`: whether it is at least as good as the version holding the alias;
4. :func:`register`: the run's model as a version (the version of the same model if there
   is one) with its lineage, the sha256 of its files (checked against the manifest taken
   when the model was logged), their ed25519 signature (:mod:`nbmlops.promote.signing`),
   its metrics and a reference profile of its training data;
5. :func:`move`: the alias to that version, and the move recorded.

A refusal (a failed gate, a worse candidate) raises :class:`PromotionRefused` after step 3,
unless ``force``: then it is recorded on the version and in the move.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nbmlops.capture import schema as s
from nbmlops.capture.records import step_runs
from nbmlops.capture.tracking import _user
from nbmlops.promote import integrity, reference, signing
from nbmlops.promote import registry as r
from nbmlops.promote.errors import (
    IntegrityError,
    NoCandidate,
    NoSuchExperiment,
    PromoteError,
    PromotionRefused,
    UnknownVersion,
)
from nbmlops.promote.gates import Gate, parse_gate


@dataclass
class Promotion:
    """What a promotion did (or would have refused, without ``force``)."""

    model_name: str
    version: str
    alias: str
    run_id: str
    metric: str
    value: float
    previous_version: str | None = None
    previous_value: float | None = None
    forced: bool = False
    overridden: list[str] = field(default_factory=list)  # refusals that --force overrode
    reason: str = ""  # why the user forced it (--reason)
    reused_version: bool = False
    unchanged: bool = False  # the version already held the alias
    reference: str | None = None
    calibration: str | None = None  # runs:/ URI of the held-out set CBPE calibrates on
    warnings: list[str] = field(default_factory=list)
    event: s.AliasEvent | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    def summary(self) -> dict[str, Any]:
        """What the JupyterLab panel and the widget show of it (JSON)."""
        return {
            "model_name": self.model_name,
            "version": str(self.version),
            "alias": self.alias,
            "run_id": self.run_id,
            "metric": self.metric,
            "value": self.value,
        }


def promote(
    experiment: str,
    metric: str,
    mode: str = s.MODES[0],
    gates: Sequence[str | Gate] = (),
    model_name: str | None = None,
    alias: str = s.DEFAULT_ALIAS,
    run_id: str | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
    reason: str = "",
) -> Promotion:
    """Register the best (or given) run's model and move ``alias`` to it; see the module doc.
    ``reason`` is the user's why for a forced promotion, recorded in the move."""
    if mode not in s.MODES:
        raise PromoteError(f"mode {mode!r} is not max or min", "use --mode max or --mode min")
    parsed = [g if isinstance(g, Gate) else parse_gate(g) for g in gates]
    client = r.client(tracking_uri)
    name = model_name or experiment
    production = r.check_can_release(client, name, alias)  # the alias lives there, if any

    run = select(client, experiment, metric, mode, run_id)
    failed = gate(run, parsed)
    against = compare(client, run, metric, mode, production or name, alias)
    refusals = failed + against.refusals
    if refusals and not force:
        raise PromotionRefused(
            f"not promoting run {run.info.run_id} to {name}@{alias}: " + "; ".join(refusals),
            "improve the model, or pass --force to promote anyway (the override is recorded)",
            holder=against.holder.version if against.holder else None,
        )

    key = signing.load_private_key()  # before anything is written
    registered = register(client, name, run, tracking_uri, forced="; ".join(refusals), key=key)
    promotion = Promotion(
        model_name=production or name,
        version=r.release_version(client, name, registered.version, production, tracking_uri)
        if production
        else registered.version,
        alias=alias,
        run_id=run.info.run_id,
        metric=metric,
        value=float(run.data.metrics[metric]),
        previous_version=against.holder.version if against.holder else None,
        previous_value=against.value,
        forced=bool(refusals),
        overridden=refusals,
        reason=reason.strip() if refusals else "",
        reused_version=registered.reused,
        reference=registered.reference,
        calibration=registered.calibration,
        warnings=against.warnings + registered.warnings,
    )
    return move(client, promotion, against.holder)


# ---------------------------------------------------------------- 1. select


def select(client: Any, experiment: str, metric: str, mode: str, run_id: str | None) -> Any:
    """The MLflow run to promote: ``run_id`` if given (checked), else the best by ``metric``."""
    exp = _experiment(client, experiment)
    return (
        _given_run(client, exp, run_id, metric) if run_id else _best_run(client, exp, metric, mode)
    )


def _experiment(client: Any, name: str) -> Any:
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none yet"
        raise NoSuchExperiment(
            f"no experiment {name!r} in the store",
            f"pick one of: {known} (or check --tracking-uri)",
        )
    return exp


def _finished_pipelines(client: Any, exp: Any) -> list[Any]:
    return list(
        client.search_runs(
            [exp.experiment_id],
            f"tags.`{s.KIND}` = '{s.PIPELINE}' and attributes.status = 'FINISHED'",
            max_results=5000,
        )
    )


def _best_run(client: Any, exp: Any, metric: str, mode: str) -> Any:
    runs = _finished_pipelines(client, exp)
    usable = [
        run
        for run in runs
        if metric in run.data.metrics
        and math.isfinite(run.data.metrics[metric])
        and run.data.tags.get(s.MODEL_URI)
    ]
    if not usable:
        if not runs:
            raise NoCandidate(
                f"experiment {exp.name!r} has no finished pipeline run",
                "run the notebook to the end first: nbmlops run NOTEBOOK",
            )
        if any(metric in run.data.metrics for run in runs):
            raise NoCandidate(
                f"no finished pipeline run of {exp.name!r} with metric {metric!r} logged a model",
                "call nbmlops.log_model(model, input_example=X) in a step",
            )
        metrics = _user_metrics(runs)
        raise NoCandidate(
            f"no finished pipeline run of {exp.name!r} has metric {metric!r}",
            f"pick one of: {', '.join(metrics) or 'none (log one with nbmlops.log_metric)'}",
        )
    sign = -1.0 if mode == "max" else 1.0
    return min(usable, key=lambda run: (sign * run.data.metrics[metric], -run.info.start_time))


def _user_metrics(runs: list[Any]) -> list[str]:
    return sorted({m for run in runs for m in run.data.metrics if s.is_user_metric(m)})


def _given_run(client: Any, exp: Any, run_id: str, metric: str) -> Any:
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        if not r.missing(exc):
            raise
        raise NoCandidate(
            f"no run {run_id!r} in the store", "list runs with: nbmlops runs --experiment NAME"
        ) from None
    if run.info.experiment_id != exp.experiment_id:
        raise NoCandidate(f"run {run_id} is not in experiment {exp.name!r}", "check --experiment")
    kind = run.data.tags.get(s.KIND)
    if kind != s.PIPELINE:
        raise NoCandidate(
            f"run {run_id} is not a pipeline run (it is {kind or 'not from nbmlops'})",
            "give the pipeline (parent) run's id, as `nbmlops runs` lists it",
        )
    if run.info.status != "FINISHED":
        raise NoCandidate(
            f"run {run_id} is {run.info.status.lower()}, not finished",
            "promote a run that finished",
        )
    if metric not in run.data.metrics:
        raise NoCandidate(
            f"run {run_id} has no metric {metric!r}",
            f"pick one of: {', '.join(_user_metrics([run])) or 'none'}",
        )
    if not run.data.tags.get(s.MODEL_URI):
        raise NoCandidate(
            f"run {run_id} logged no model",
            "call nbmlops.log_model(model, input_example=X) in a step",
        )
    return run


# ---------------------------------------------------------------- 2. gate


def gate(run: Any, gates: Sequence[Gate]) -> list[str]:
    """The gates ``run`` fails, each as ``gate G failed: metric=value``."""
    failed = []
    for g in gates:
        if g.metric not in run.data.metrics:
            raise NoCandidate(
                f"gate {g}: run {run.info.run_id} has no metric {g.metric!r} "
                f"(it has: {', '.join(sorted(run.data.metrics)) or 'none'})",
                "gate on a metric the notebook logs",
            )
        got = float(run.data.metrics[g.metric])
        if not g.passes(got):
            failed.append(f"gate {g} failed: {g.metric}={got:.6g}")
    return failed


# ---------------------------------------------------------------- 3. compare


@dataclass
class Comparison:
    """The candidate against the version holding the alias."""

    holder: r.ModelRef | None  # None: no version holds the alias yet
    value: float | None = None  # the holder's value of the metric, if it has one
    refusals: list[str] = field(default_factory=list)  # the candidate is worse
    warnings: list[str] = field(default_factory=list)  # the holder could not be compared


def compare(client: Any, run: Any, metric: str, mode: str, name: str, alias: str) -> Comparison:
    """Whether ``run`` is at least as good by ``metric`` as the holder of ``name@alias``."""
    holder = r.alias_holder(client, name, alias)
    if holder is None:
        return Comparison(None)
    done = Comparison(holder, _version_metric(client, holder, metric))
    value = float(run.data.metrics[metric])
    if done.value is None:
        done.warnings.append(
            f"warning: {name} v{holder.version} (@{alias}) has no metric {metric!r}: "
            "the candidate was not compared with it"
        )
    elif _worse(value, done.value, mode):
        done.refusals.append(
            f"{metric}={value:.6g} of run {run.info.run_id} is "
            f"{'lower' if mode == 'max' else 'higher'} than {metric}={done.value:.6g} "
            f"of {name} v{holder.version} (@{alias})"
        )
    return done


def _worse(value: float, previous: float, mode: str) -> bool:
    return value < previous if mode == "max" else value > previous


def _version_metric(client: Any, version: r.ModelRef, metric: str) -> float | None:
    """The metric as recorded on the version at promotion, else as its run logged it."""
    recorded = s.recorded_metric(version.tags, metric)
    if recorded is not None or not version.run_id:
        return recorded
    try:
        value = client.get_run(version.run_id).data.metrics.get(metric)
    except Exception as exc:
        if not r.missing(exc):
            raise
        return None
    return None if value is None else float(value)


# ---------------------------------------------------------------- 4. register


@dataclass
class Registered:
    """The version a run's model is registered as, with its reference profile."""

    version: str
    reused: bool  # the version of this same model, registered before
    reference: str | None  # runs:/ URI of the reference profile, if there is one
    warnings: list[str] = field(default_factory=list)
    calibration: str | None = None  # runs:/ URI of log_model's held-out set, if there is one


def register(
    client: Any,
    name: str,
    run: Any,
    tracking_uri: str | None,
    forced: str = "",
    key: Any | None = None,
) -> Registered:
    """Register ``run``'s model as a version of ``name`` (reusing the version of the same
    model) once its files match the manifest taken when it was logged, sign it with ``key``
    (default: :func:`~nbmlops.promote.signing.load_private_key`), tag it with the run's
    metrics and ``forced`` (the refusals overridden), and store a reference profile of its
    training data unless the version has one."""
    key = key if key is not None else signing.load_private_key()
    model_uri = run.data.tags[s.MODEL_URI]
    files, columns = _model_files(model_uri, tracking_uri)
    _check_logged(run, model_uri, files)
    _ensure_registered_model(client, name)
    version = _existing_version(client, name, model_uri, files)
    reused = version is not None
    if version is None:
        version = _create_version(client, name, run, model_uri, files, tracking_uri)
    signed_run = client.get_model_version(name, version).run_id  # a reused version's run
    document = signing.version_document(name, version, signed_run, files)
    tags = signing.version_tags(signing.sign(document, key)) | s.metric_tags(run.data.metrics)
    if forced:
        tags[s.FORCED] = forced
    for tag, value in tags.items():
        client.set_model_version_tag(name, version, tag, value)

    stored = client.get_model_version(name, version).tags or {}
    done = Registered(version, reused, stored.get(s.REFERENCE))
    done.calibration = stored.get(s.CALIBRATION) or run.data.tags.get(s.CALIBRATION)
    if done.calibration and not stored.get(s.CALIBRATION):
        # the held-out set log_model(reference=...) stored: CBPE calibrates on it
        client.set_model_version_tag(name, version, s.CALIBRATION, done.calibration)
    if not done.reference:
        done.reference, warning = _store_reference(client, name, version, run, columns)
        if warning:
            done.warnings.append(warning)
    return done


def _check_logged(run: Any, model_uri: str, files: dict[str, str]) -> None:
    """Refuse a model whose files differ from the manifest its run took at log time."""
    raw = run.data.tags.get(s.MODEL_FILES)
    if not raw:
        raise PromoteError(
            f"run {run.info.run_id} recorded no sha256 of its model's files when it logged "
            f"{model_uri}: its files cannot be checked",
            "run the notebook again (nbmlops.log_model records them), then promote that run",
        )
    found = integrity.difference(json.loads(raw), files)
    if found is not None:
        raise IntegrityError(f"{model_uri} of run {run.info.run_id}", *found, since="training")


def _ensure_registered_model(client: Any, name: str) -> None:
    if r.find_registered_model(client, name) is not None:
        return
    try:
        client.create_registered_model(
            name, tags={s.MANAGED: "true"}, description="Promoted by nbmlops."
        )
    except Exception:
        client.get_registered_model(name)  # created concurrently (else: the real error)


def _existing_version(client: Any, name: str, model_uri: str, files: dict[str, str]) -> str | None:
    """The version of ``name`` registered from ``model_uri``, whose files must not have
    changed since (:class:`IntegrityError` naming the first that did)."""
    for mv in client.search_model_versions(f"name='{name}'"):
        tags = mv.tags or {}
        if tags.get(s.MODEL_URI) == model_uri:
            recorded = json.loads(tags.get(s.FILES, "{}"))
            if recorded and recorded != files:
                changed = sorted(
                    p for p in set(recorded) | set(files) if recorded.get(p) != files.get(p)
                )
                raise IntegrityError(f"{name} v{mv.version}", changed[0], "has changed")
            return str(mv.version)
    return None


def _create_version(
    client: Any,
    name: str,
    run: Any,
    model_uri: str,
    files: dict[str, str],
    tracking_uri: str | None,
) -> str:
    tags = lineage(client, run).tags()
    tags[s.FILES] = json.dumps(files, sort_keys=True, separators=(",", ":"))
    tags[s.DIGEST] = integrity.total_digest(files)
    # MLflow looks the logged model up in the global store: make it this one (a server or a
    # kernel calling promote() may have another global store, or none).
    with warnings.catch_warnings(), r.using_store(tracking_uri):
        warnings.simplefilter("ignore")
        mv = client.create_model_version(
            name,
            source=model_uri,
            run_id=run.info.run_id,
            tags=tags,
            description=f"run {run.info.run_id} of {tags.get(s.NOTEBOOK, 'a notebook')}",
            model_id=model_uri.removeprefix("models:/")
            if model_uri.startswith("models:/m-")
            else None,
        )
    return str(mv.version)


def lineage(client: Any, run: Any) -> s.Lineage:
    """What the version records of ``run``: its notebook, git commit, seed, environment,
    data digests and the code hash of every step."""
    tags = run.data.tags
    code_hashes = {}
    for step in step_runs(client, run):
        step_name, code_hash = step.data.tags.get(s.STEP), step.data.tags.get(s.CODE_HASH)
        if step_name and code_hash:
            code_hashes[step_name] = code_hash
    return s.Lineage(
        run_id=run.info.run_id,
        experiment=client.get_experiment(run.info.experiment_id).name,
        model_uri=tags[s.MODEL_URI],
        notebook=tags.get(s.NOTEBOOK),
        git_commit=tags.get(s.GIT_COMMIT),
        git_dirty=tags.get(s.GIT_DIRTY),
        seed=tags.get(s.SEED),
        env_hash=tags.get(s.ENV_HASH),
        code_hashes=code_hashes,
        data=s.data_digests(tags),
    )


def _model_files(model_uri: str, tracking_uri: str | None) -> tuple[dict[str, str], list[str]]:
    """The sha256 manifest of the model's files and its signature's input column names."""
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="nbmlops-model-") as tmp:
        try:
            path = r.download(model_uri, tmp, tracking_uri)
        except Exception as exc:
            raise PromoteError(
                f"cannot read the model {model_uri} ({exc})",
                "check that the run's artifacts are still in the artifact store",
            ) from exc
        files = integrity.manifest(path)
        signature = Model.load(path).signature
    columns = signature.inputs.input_names() if signature is not None else []
    return files, [str(c) for c in columns]


def _store_reference(
    client: Any, name: str, version: str, run: Any, columns: list[str]
) -> tuple[str | None, str]:
    """Profile the run's training data, store it on the run, point the version at it."""
    from nbmlops.capture.profile import build_profile

    advice = "drift checks (nbmlops monitor drift) need it"
    if not columns:
        return (
            None,
            f"warning: the model has no signature with input columns: no reference profile stored; {advice}",
        )
    found, why = reference.find_training_data(client, run, columns, reference.state_dirs(run))
    if found is None:
        return (
            None,
            f"warning: no training data found ({why}): no reference profile stored; {advice}",
        )
    artifact = s.reference_artifact(name, version)
    client.log_text(
        run.info.run_id, json.dumps(build_profile(found.frame), allow_nan=False), artifact
    )
    uri = f"runs:/{run.info.run_id}/{artifact}"
    client.set_model_version_tag(name, version, s.REFERENCE, uri)
    client.set_model_version_tag(name, version, s.REFERENCE_DATA, f"{found.name} {found.digest}")
    return uri, ""


# ---------------------------------------------------------------- 5. move


def move(client: Any, promotion: Promotion, holder: r.ModelRef | None) -> Promotion:
    """Move the alias to the promoted version and record the move (nothing to do if that
    version holds it already: ``unchanged``)."""
    if holder is not None and holder.version == promotion.version:
        promotion.unchanged = True
        return promotion
    client.set_registered_model_alias(promotion.model_name, promotion.alias, promotion.version)
    promotion.event = r.record_event(
        client,
        promotion.model_name,
        s.AliasEvent(
            seq=0,
            action="promote",
            alias=promotion.alias,
            from_version=holder.version if holder else None,
            to_version=promotion.version,
            user=_user(),
            time=_now(),
            run_id=promotion.run_id,
            metric=promotion.metric,
            value=promotion.value,
            previous_value=promotion.previous_value,
            forced=promotion.forced,
            reason=_reason(promotion),
        ),
    )
    return promotion


def _reason(promotion: Promotion) -> str:
    """The move's recorded reason: the refusals overridden, and the user's why."""
    overridden = "; ".join(promotion.overridden)
    if promotion.reason and overridden:
        return f"{promotion.reason} (overrode: {overridden})"
    return promotion.reason or overridden


# ---------------------------------------------------------------- rollback, history


def rollback(
    model_name: str,
    to_version: str | None = None,
    alias: str = s.DEFAULT_ALIAS,
    tracking_uri: str | None = None,
) -> s.AliasEvent:
    """Move ``alias`` back: to ``to_version``, else to the version it held before.

    ``model_name`` may also be ``NAME@ALIAS`` (that alias is moved).
    """
    if "@" in model_name:
        model_name, named_alias, _ = r.parse_ref(model_name)
        alias = named_alias or alias
    client = r.client(tracking_uri)
    model_name = r.check_can_release(client, model_name, alias) or model_name
    r.registered_model(client, model_name)
    current = r.alias_holder(client, model_name, alias)
    if current is None:
        raise UnknownVersion(
            f"model {model_name!r} has no alias @{alias} to roll back",
            "promote a run first, or name the alias with --alias",
        )
    if to_version is None:
        moves = [e for e in r.events(client, model_name) if e.alias == alias]
        arrived = [e for e in moves if e.to_version == current.version and e.from_version]
        if not arrived:
            raise UnknownVersion(
                f"{model_name}@{alias} (v{current.version}) has no earlier version to go back to",
                f"name one with --to VERSION (see nbmlops history {model_name})",
            )
        to_version = str(arrived[-1].from_version)
    target = r.version_ref(client, model_name, str(to_version), None)
    if target.version == current.version:
        raise PromoteError(
            f"{model_name}@{alias} is already v{current.version}",
            f"pick another version (see nbmlops history {model_name})",
        )
    client.set_registered_model_alias(model_name, alias, target.version)
    return r.record_event(
        client,
        model_name,
        s.AliasEvent(
            seq=0,
            action="rollback",
            alias=alias,
            from_version=current.version,
            to_version=target.version,
            user=_user(),
            time=_now(),
            run_id=target.run_id,
        ),
    )


def history(model_name: str, tracking_uri: str | None = None) -> list[s.AliasEvent]:
    """Every alias move of ``model_name`` (or of the model ``NAME@ALIAS`` names), oldest first."""
    name = model_name.rsplit("@", 1)[0] if "@" in model_name else model_name
    client = r.client(tracking_uri)
    return r.events(client, r.production_model(client, name) or name)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
