"""Promote, roll back, read the history: the one implementation every front door calls.

``promote()`` selects the best finished pipeline run of an experiment (or the run given),
checks the gates and that the candidate is at least as good as the model holding the
alias, registers the run's model (reusing the version of the same source if there is
one), tags the version with its lineage, the sha256 of its files and a reference profile
of its training data, moves the alias and records the move.
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

from nbmlops.capture import tracking as t
from nbmlops.promote import integrity, reference
from nbmlops.promote import registry as r
from nbmlops.promote.errors import (
    NoCandidate,
    NoSuchExperiment,
    PromoteError,
    PromotionRefused,
    UnknownVersion,
)
from nbmlops.promote.gates import Gate, parse_gate

_TAG_SAFE = t._TAG_SAFE

MODES = ("max", "min")


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
    reused_version: bool = False
    unchanged: bool = False  # the version already held the alias
    reference: str | None = None
    warnings: list[str] = field(default_factory=list)
    event: r.Event | None = None

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
    mode: str = "max",
    gates: Sequence[str | Gate] = (),
    model_name: str | None = None,
    alias: str = r.DEFAULT_ALIAS,
    run_id: str | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
) -> Promotion:
    """Register the best (or given) run's model and move ``alias`` to it; see the module doc."""
    if mode not in MODES:
        raise PromoteError(f"mode {mode!r} is not max or min", "use --mode max or --mode min")
    parsed = [g if isinstance(g, Gate) else parse_gate(g) for g in gates]
    client = r.client(tracking_uri)
    exp = _experiment(client, experiment)
    run = (
        _given_run(client, exp, run_id, metric) if run_id else _best_run(client, exp, metric, mode)
    )
    value = float(run.data.metrics[metric])
    name = model_name or experiment

    overridden = []
    for gate in parsed:
        if gate.metric not in run.data.metrics:
            raise NoCandidate(
                f"gate {gate}: run {run.info.run_id} has no metric {gate.metric!r} "
                f"(it has: {', '.join(sorted(run.data.metrics)) or 'none'})",
                "gate on a metric the notebook logs",
            )
        got = float(run.data.metrics[gate.metric])
        if not gate.passes(got):
            overridden.append(f"gate {gate} failed: {gate.metric}={got:.6g}")

    current = _alias_holder(client, name, alias)
    previous_value = None
    notes = []
    if current is not None:
        previous_value = _version_metric(client, current, metric)
        if previous_value is None:
            notes.append(
                f"warning: {name} v{current.version} (@{alias}) has no metric {metric!r}: "
                "the candidate was not compared with it"
            )
        if previous_value is not None and _worse(value, previous_value, mode):
            overridden.append(
                f"{metric}={value:.6g} of run {run.info.run_id} is "
                f"{'lower' if mode == 'max' else 'higher'} than {metric}={previous_value:.6g} "
                f"of {name} v{current.version} (@{alias})"
            )
    if overridden and not force:
        raise PromotionRefused(
            f"not promoting run {run.info.run_id} to {name}@{alias}: " + "; ".join(overridden),
            "improve the model, or pass --force to promote anyway (the override is recorded)",
        )

    model_uri = run.data.tags[t.MODEL_URI]
    version, reused, _files, columns = _register(client, name, run, model_uri, tracking_uri)
    promotion = Promotion(
        model_name=name,
        version=version,
        alias=alias,
        run_id=run.info.run_id,
        metric=metric,
        value=value,
        previous_version=current.version if current else None,
        previous_value=previous_value,
        forced=bool(overridden) and force,
        overridden=overridden if force else [],
        reused_version=reused,
        warnings=notes,
    )
    tags = {f"{r.METRIC_PREFIX}{k}": f"{v:.17g}" for k, v in run.data.metrics.items()}
    if promotion.forced:
        tags[r.FORCED] = "; ".join(overridden)
    for key, val in tags.items():
        client.set_model_version_tag(name, version, key, val)

    existing = client.get_model_version(name, version).tags or {}
    promotion.reference = existing.get(r.REFERENCE)
    if not promotion.reference:
        promotion.reference, warning = _store_reference(client, name, version, run, columns)
        if warning:
            promotion.warnings.append(warning)

    if current is not None and current.version == version:
        promotion.unchanged = True
        return promotion
    client.set_registered_model_alias(name, alias, version)
    promotion.event = r.record_event(
        client,
        name,
        r.Event(
            seq=0,
            action="promote",
            alias=alias,
            from_version=current.version if current else None,
            to_version=version,
            user=t._user(),
            time=_now(),
            run_id=run.info.run_id,
            metric=metric,
            value=value,
            previous_value=previous_value,
            forced=promotion.forced,
            reason="; ".join(overridden),
        ),
    )
    return promotion


def rollback(
    model_name: str,
    to_version: str | None = None,
    alias: str = r.DEFAULT_ALIAS,
    tracking_uri: str | None = None,
) -> r.Event:
    """Move ``alias`` back: to ``to_version``, else to the version it held before.

    ``model_name`` may also be ``NAME@ALIAS`` (that alias is moved).
    """
    if "@" in model_name:
        model_name, named_alias, _ = r.parse_ref(model_name)
        alias = named_alias or alias
    client = r.client(tracking_uri)
    r.registered_model(client, model_name)
    current = _alias_holder(client, model_name, alias)
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
    target = r._version_ref(client, model_name, str(to_version), None)
    if target.version == current.version:
        raise PromoteError(
            f"{model_name}@{alias} is already v{current.version}",
            f"pick another version (see nbmlops history {model_name})",
        )
    client.set_registered_model_alias(model_name, alias, target.version)
    return r.record_event(
        client,
        model_name,
        r.Event(
            seq=0,
            action="rollback",
            alias=alias,
            from_version=current.version,
            to_version=target.version,
            user=t._user(),
            time=_now(),
            run_id=target.run_id,
        ),
    )


def history(model_name: str, tracking_uri: str | None = None) -> list[r.Event]:
    """Every alias move of ``model_name`` (or of the model ``NAME@ALIAS`` names), oldest first."""
    name = model_name.rsplit("@", 1)[0] if "@" in model_name else model_name
    return r.events(r.client(tracking_uri), name)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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
            f"tags.`{t.KIND}` = 'pipeline' and attributes.status = 'FINISHED'",
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
        and run.data.tags.get(t.MODEL_URI)
    ]
    if not usable:
        if not runs:
            raise NoCandidate(
                f"experiment {exp.name!r} has no finished pipeline run",
                "run the notebook to the end first: nbmlops run NOTEBOOK",
            )
        metrics = _user_metrics(runs)
        with_metric = [run for run in runs if metric in run.data.metrics]
        if with_metric:
            raise NoCandidate(
                f"no finished pipeline run of {exp.name!r} with metric {metric!r} logged a model",
                "call nbmlops.log_model(model, input_example=X) in a step",
            )
        raise NoCandidate(
            f"no finished pipeline run of {exp.name!r} has metric {metric!r}",
            f"pick one of: {', '.join(metrics) or 'none (log one with nbmlops.log_metric)'}",
        )
    sign = -1.0 if mode == "max" else 1.0
    return min(usable, key=lambda run: (sign * run.data.metrics[metric], -run.info.start_time))


def _user_metrics(runs: list[Any]) -> list[str]:
    return sorted({m for run in runs for m in run.data.metrics if not m.startswith("nbmlops.")})


def _given_run(client: Any, exp: Any, run_id: str, metric: str) -> Any:
    try:
        run = client.get_run(run_id)
    except Exception:
        raise NoCandidate(
            f"no run {run_id!r} in the store", "list runs with: nbmlops runs --experiment NAME"
        ) from None
    if run.info.experiment_id != exp.experiment_id:
        raise NoCandidate(f"run {run_id} is not in experiment {exp.name!r}", "check --experiment")
    kind = run.data.tags.get(t.KIND)
    if kind != "pipeline":
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
    if not run.data.tags.get(t.MODEL_URI):
        raise NoCandidate(
            f"run {run_id} logged no model",
            "call nbmlops.log_model(model, input_example=X) in a step",
        )
    return run


def _alias_holder(client: Any, name: str, alias: str) -> r.ModelRef | None:
    try:
        model = client.get_registered_model(name)
    except Exception:
        return None
    aliases = dict(getattr(model, "aliases", {}) or {})
    if alias not in aliases:
        return None
    return r._version_ref(client, name, str(aliases[alias]), alias)


def _version_metric(client: Any, version: r.ModelRef, metric: str) -> float | None:
    tag = version.tags.get(f"{r.METRIC_PREFIX}{metric}")
    if tag is not None:
        return float(tag)
    if version.run_id:
        try:
            value = client.get_run(version.run_id).data.metrics.get(metric)
        except Exception:
            return None
        return None if value is None else float(value)
    return None


def _worse(value: float, previous: float, mode: str) -> bool:
    return value < previous if mode == "max" else value > previous


def _lineage(client: Any, run: Any) -> dict[str, str]:
    tags = run.data.tags
    lineage = {
        r.RUN_ID: run.info.run_id,
        r.EXPERIMENT: client.get_experiment(run.info.experiment_id).name,
        r.MODEL_URI: tags[t.MODEL_URI],
    }
    for key, tag in (
        (r.NOTEBOOK, t.NOTEBOOK),
        (r.GIT_COMMIT, t.GIT_COMMIT),
        (r.GIT_DIRTY, t.GIT_DIRTY),
        (r.SEED, t.SEED),
        (r.ENV_HASH, t.ENV_HASH),
    ):
        if tags.get(tag):
            lineage[key] = tags[tag]
    lineage.update({k: v for k, v in tags.items() if k.startswith(t.DATA_PREFIX)})
    for step in reference.step_runs(client, run):
        name = step.data.tags.get(t.STEP)
        code_hash = step.data.tags.get(t.CODE_HASH)
        if name and code_hash:
            lineage[f"{r.CODE_HASH_PREFIX}{t._TAG_SAFE.sub('_', name)}"] = code_hash
    return lineage


def _register(
    client: Any, name: str, run: Any, model_uri: str, tracking_uri: str | None
) -> tuple[str, bool, dict[str, str], list[str]]:
    """The version of ``model_uri`` in ``name`` (reused if registered), its files, its inputs."""
    files, columns = _model_files(model_uri, tracking_uri)
    try:
        client.get_registered_model(name)
    except Exception:
        try:
            client.create_registered_model(
                name, tags={"nbmlops.managed": "true"}, description="Promoted by nbmlops."
            )
        except Exception:
            client.get_registered_model(name)  # created concurrently
    for mv in client.search_model_versions(f"name='{name}'"):
        if (mv.tags or {}).get(r.MODEL_URI) == model_uri:
            recorded = json.loads((mv.tags or {}).get(r.FILES, "{}"))
            if recorded and recorded != files:
                changed = sorted(
                    p for p in set(recorded) | set(files) if recorded.get(p) != files.get(p)
                )
                raise integrity.IntegrityError(f"{name} v{mv.version}", changed[0], "has changed")
            return str(mv.version), True, files, columns
    tags = _lineage(client, run)
    tags[r.FILES] = json.dumps(files, sort_keys=True, separators=(",", ":"))
    tags[r.DIGEST] = integrity.total_digest(files)
    # MLflow looks the logged model up in the global store: make it this one (a server or a
    # kernel calling promote() may have another global store, or none).
    with warnings.catch_warnings(), r.using_store(tracking_uri):
        warnings.simplefilter("ignore")
        mv = client.create_model_version(
            name,
            source=model_uri,
            run_id=run.info.run_id,
            tags=tags,
            description=f"run {run.info.run_id} of {tags.get(r.NOTEBOOK, 'a notebook')}",
            model_id=model_uri.removeprefix("models:/")
            if model_uri.startswith("models:/m-")
            else None,
        )
    return str(mv.version), False, files, columns


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
    try:
        profile = reference.build_profile(found.frame)
    except ImportError:
        return (
            None,
            f"warning: nbmlops.capture.profile is not available: no reference profile stored; {advice}",
        )
    artifact = f"nbmlops/reference/{_TAG_SAFE.sub('_', name)}-v{version}.json"
    client.log_text(run.info.run_id, json.dumps(profile, allow_nan=False), artifact)
    uri = f"runs:/{run.info.run_id}/{artifact}"
    client.set_model_version_tag(name, version, r.REFERENCE, uri)
    client.set_model_version_tag(name, version, r.REFERENCE_DATA, f"{found.name} {found.digest}")
    return uri, ""
