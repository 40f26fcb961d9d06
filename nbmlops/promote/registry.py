"""The MLflow Model Registry as nbmlops uses it: model references, reference profiles,
and the promotion history kept on the registered model (tag names: ``capture/schema.py``).

A model reference is ``name`` (the ``champion`` alias), ``name@alias`` or ``name/version``.
Aliases, not the deprecated stages, say which version is live. Every alias move is an
:class:`~nbmlops.capture.schema.AliasEvent`, a JSON tag on the registered model, so the
history lives in the registry itself and survives with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nbmlops.capture import schema as s
from nbmlops.capture.access import PRODUCTION_SUFFIX, check_can_edit, production_name
from nbmlops.capture.schema import DEFAULT_ALIAS
from nbmlops.promote.errors import PromoteError, UnknownModel, UnknownVersion

_GLOBAL_URIS = threading.RLock()

# MLflow's download progress bars would interleave with the CLI's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_VERSION_REF = re.compile(r"^(?P<name>.+)/(?P<version>\d+)$")


@dataclass
class ModelRef:
    """One registered model version, as a reference resolved it."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    source: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The registry URI of this exact version: ``models:/name/version``."""
        return f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:
        return f"{self.name} v{self.version}" + (f" (@{self.alias})" if self.alias else "")


def client(tracking_uri: str | None = None) -> Any:
    """An ``MlflowClient`` on the project's store, retried while SQLite is locked."""
    from nbmlops import project
    from nbmlops.capture.tracking import open_client

    return open_client(project.tracking_uri(tracking_uri))


@contextlib.contextmanager
def using_store(tracking_uri: str | None) -> Iterator[str]:
    """MLflow's global tracking and registry URIs set to the store, then put back exactly.

    ``download_artifacts(tracking_uri=...)`` does not apply to the registry: a
    ``models:/name/version`` URI is resolved against the global registry URI, and
    registering ``models:/m-<id>`` looks the logged model up through the global tracking
    URI. ``mlflow.set_*_uri`` also export ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI``
    (which child processes inherit), and "put back" must mean "unset" when nothing was
    set: a Jupyter server or a kernel that promoted once must not keep pointing every later
    client, or every run it starts, at that store. A lock keeps threads (the server's
    executor, the widget's worker) from interleaving.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from nbmlops import project

    store = project.tracking_uri(tracking_uri)
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    with _GLOBAL_URIS:
        saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
        saved_env = {name: os.environ.get(name) for name in names}
        mlflow.set_tracking_uri(store)
        mlflow.set_registry_uri(store)
        try:
            yield store
        finally:
            tracking_utils._tracking_uri, registry_utils._registry_uri = saved
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def download(uri: str, dst: str, tracking_uri: str | None = None) -> str:
    """Download ``uri`` (``models:/``, ``runs:/``, ...) of the project's store into ``dst``."""
    import mlflow

    with using_store(tracking_uri) as store:
        return str(
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst, tracking_uri=store)
        )


def download_json(uri: str, tracking_uri: str | None = None) -> Any:
    """The JSON document at ``uri`` (an artifact of the project's store)."""
    with tempfile.TemporaryDirectory(prefix="nbmlops-json-") as tmp:
        path = download(uri, tmp, tracking_uri)
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``(name, alias, version)`` of ``name``, ``name@alias`` or ``name/version``."""
    ref = ref.strip()
    if not ref:
        raise UnknownModel("empty model reference", "give NAME, NAME@ALIAS or NAME/VERSION")
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        if not name or not alias:
            raise UnknownModel(
                f"bad model reference {ref!r}", "give NAME, NAME@ALIAS or NAME/VERSION"
            )
        return name, alias, None
    match = _VERSION_REF.match(ref)
    if match:
        return match["name"], None, match["version"]
    return ref, DEFAULT_ALIAS, None


def missing(exc: BaseException) -> bool:
    """Whether MLflow answered ``exc`` because what was asked for does not exist, or cannot
    (a malformed run id or version: ``INVALID_PARAMETER_VALUE``)."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",
    )


def find_registered_model(mlflow_client: Any, name: str) -> Any | None:
    """The registered model ``name``, or None if there is none."""
    try:
        return mlflow_client.get_registered_model(name)
    except Exception as exc:
        if not missing(exc):
            raise
        return None


def registered_model(mlflow_client: Any, name: str) -> Any:
    """The registered model ``name``, or :class:`UnknownModel` listing the known ones."""
    model = find_registered_model(mlflow_client, name)
    if model is None:
        known = sorted(m.name for m in mlflow_client.search_registered_models())
        raise UnknownModel(
            f"no registered model {name!r}",
            f"pick one of: {', '.join(known)}"
            if known
            else "promote a run first: nbmlops promote --experiment NAME --metric M",
        )
    return model


def resolve_model(ref: str, tracking_uri: str | None = None) -> ModelRef:
    """The model version ``ref`` names: ``name`` (alias champion), ``name@alias``, ``name/version``."""
    mlflow_client = client(tracking_uri)
    name, alias, version = parse_ref(ref)
    if alias is not None:
        name = production_model(mlflow_client, name) or name
    model = registered_model(mlflow_client, name)
    if alias is not None:
        aliases = dict(getattr(model, "aliases", {}) or {})
        if alias not in aliases:
            have = ", ".join(f"@{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
            raise UnknownVersion(
                f"model {name!r} has no alias @{alias} (aliases: {have})",
                f"use {name}/<version>, or promote a run to it: "
                f"nbmlops promote --experiment NAME --metric M --model-name {name} --alias {alias}",
            )
        version = str(aliases[alias])
    assert version is not None
    return version_ref(mlflow_client, name, version, alias)


def alias_holder(mlflow_client: Any, name: str, alias: str) -> ModelRef | None:
    """The version of ``name`` holding ``alias``; None if there is no such model or alias."""
    model = find_registered_model(mlflow_client, name)
    aliases = dict(getattr(model, "aliases", {}) or {})
    if alias not in aliases:
        return None
    return version_ref(mlflow_client, name, str(aliases[alias]), alias)


def version_ref(mlflow_client: Any, name: str, version: str, alias: str | None) -> ModelRef:
    """Version ``version`` of ``name`` (reached through ``alias``, if one), or
    :class:`UnknownVersion` listing the versions there are."""
    try:
        mv = mlflow_client.get_model_version(name, version)
    except Exception as exc:
        if not missing(exc):
            raise
        versions = sorted(
            (int(v.version) for v in mlflow_client.search_model_versions(f"name='{name}'")),
        )
        raise UnknownVersion(
            f"model {name!r} has no version {version}",
            f"pick one of: {', '.join(map(str, versions)) or 'none'}",
        ) from None
    return ModelRef(
        name=name,
        version=str(mv.version),
        alias=alias,
        run_id=mv.run_id,
        source=str(mv.source),
        tags=dict(mv.tags or {}),
    )


def load_reference(model: ModelRef, tracking_uri: str | None = None) -> dict[str, Any]:
    """The reference profile of the training data stored with ``model`` at promotion."""

    from nbmlops import project

    uri = model.tags.get(s.REFERENCE)
    if not uri:
        raise PromoteError(
            f"model {model} has no reference profile of its training data",
            "drift checks need it: promote a run whose steps hand the training DataFrame "
            "(the model's input columns) to a later step, e.g. X_train",
        )
    store = project.tracking_uri(tracking_uri)
    try:
        profile = download_json(uri, store)
    except Exception as exc:
        raise PromoteError(
            f"model {model}: cannot read its reference profile {uri} ({exc})",
            "check that the run's artifacts are still in the artifact store",
        ) from exc
    from nbmlops.capture.profile import check_profile

    return check_profile(profile, f"reference profile of {model} ({uri})")


def events(mlflow_client: Any, name: str) -> list[s.AliasEvent]:
    """Every alias move recorded on registered model ``name``, oldest first."""
    return s.alias_events(registered_model(mlflow_client, name).tags or {})


def record_event(mlflow_client: Any, name: str, event: s.AliasEvent) -> s.AliasEvent:
    """Append ``event`` to the model's history (its sequence number is assigned here)."""
    event.seq = max((e.seq for e in events(mlflow_client, name)), default=0) + 1
    mlflow_client.set_registered_model_tag(name, *event.tag())
    return event


# ---------------------------------------------------------------- the production model


def production_model(mlflow_client: Any, name: str) -> str | None:
    """``NAME-production`` when it exists (``nbmlops server protect NAME`` created it):
    aliases of ``name`` then live there, editable by the release role only
    (``capture/access.py``); None otherwise."""
    production = production_name(name)
    if name.endswith(PRODUCTION_SUFFIX) or find_registered_model(mlflow_client, production) is None:
        return None
    return production


def check_can_release(mlflow_client: Any, name: str, alias: str) -> str | None:
    """``name``'s production model (see :func:`production_model`), after checking that
    this user may edit it (:class:`~nbmlops.capture.access.AccessDenied` naming the
    missing permission and who can, before anything is written)."""
    production = production_model(mlflow_client, name)
    if production is not None:
        check_can_edit(mlflow_client.tracking_uri, name, alias)
    return production


def release_version(
    mlflow_client: Any, name: str, version: str, production: str, tracking_uri: str | None
) -> str:
    """The version of ``production`` copied from ``name``'s ``version`` (with its tags:
    lineage, digests, metrics); the copy made before, if there is one."""
    source = f"models:/{name}/{version}"
    for mv in mlflow_client.search_model_versions(f"name='{production}'"):
        if mv.source == source:
            return str(mv.version)
    mv = mlflow_client.get_model_version(name, version)
    with using_store(tracking_uri):
        copy = mlflow_client.create_model_version(
            production,
            source=source,
            run_id=mv.run_id,
            tags=dict(mv.tags or {}),
            description=mv.description,
            model_id=getattr(mv, "model_id", None),
        )
    return str(copy.version)
