"""The MLflow Model Registry as nbmlops uses it: tag names, model references, reference
profiles, and the promotion history kept on the registered model.

A model reference is ``name`` (the ``champion`` alias), ``name@alias`` or ``name/version``.
Aliases, not the deprecated stages, say which version is live. Every alias move is an
event: a JSON tag ``nbmlops.event.<seq>`` on the registered model, so the history lives
in the registry itself and survives with it.
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

from nbmlops.promote.errors import PromoteError, UnknownModel, UnknownVersion

_GLOBAL_URIS = threading.RLock()

DEFAULT_ALIAS = "champion"

# Model version tags (lineage, integrity, reference profile).
RUN_ID = "nbmlops.run_id"
EXPERIMENT = "nbmlops.experiment"
MODEL_URI = "nbmlops.model_uri"
NOTEBOOK = "nbmlops.notebook"
GIT_COMMIT = "nbmlops.git_commit"
GIT_DIRTY = "nbmlops.git_dirty"
SEED = "nbmlops.seed"
ENV_HASH = "nbmlops.env_hash"
CODE_HASH_PREFIX = "nbmlops.code_hash."
DATA_PREFIX = "nbmlops.data."
METRIC_PREFIX = "nbmlops.metric."
FILES = "nbmlops.integrity.files"
DIGEST = "nbmlops.integrity.sha256"
REFERENCE = "nbmlops.reference"
REFERENCE_DATA = "nbmlops.reference.data"  # "<variable> <digest>"
FORCED = "nbmlops.forced"
# Registered model tags.
EVENT_PREFIX = "nbmlops.event."

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


def registered_model(mlflow_client: Any, name: str) -> Any:
    """The registered model ``name``, or :class:`UnknownModel` listing the known ones."""
    try:
        return mlflow_client.get_registered_model(name)
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
            raise
        known = sorted(m.name for m in mlflow_client.search_registered_models())
        raise UnknownModel(
            f"no registered model {name!r}",
            f"pick one of: {', '.join(known)}"
            if known
            else "promote a run first: nbmlops promote --experiment NAME --metric M",
        ) from None


def resolve_model(ref: str, tracking_uri: str | None = None) -> ModelRef:
    """The model version ``ref`` names: ``name`` (alias champion), ``name@alias``, ``name/version``."""
    mlflow_client = client(tracking_uri)
    name, alias, version = parse_ref(ref)
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
    return _version_ref(mlflow_client, name, version, alias)


def _version_ref(mlflow_client: Any, name: str, version: str, alias: str | None) -> ModelRef:
    try:
        mv = mlflow_client.get_model_version(name, version)
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
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

    uri = model.tags.get(REFERENCE)
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


@dataclass
class Event:
    """One alias move: a promotion or a rollback."""

    seq: int
    action: str  # promote | rollback
    alias: str
    from_version: str | None
    to_version: str
    user: str
    time: str
    run_id: str | None = None
    metric: str | None = None
    value: float | None = None
    previous_value: float | None = None
    forced: bool = False
    reason: str = ""

    def to_json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "seq"}
        return json.dumps(data, sort_keys=True)


def events(mlflow_client: Any, name: str) -> list[Event]:
    """Every alias move recorded on registered model ``name``, oldest first."""
    model = registered_model(mlflow_client, name)
    found = []
    for key, value in (model.tags or {}).items():
        if key.startswith(EVENT_PREFIX):
            seq = int(key.removeprefix(EVENT_PREFIX))
            found.append(Event(seq=seq, **json.loads(value)))
    return sorted(found, key=lambda e: e.seq)


def record_event(mlflow_client: Any, name: str, event: Event) -> Event:
    """Append ``event`` to the model's history (its sequence number is assigned here)."""
    event.seq = max((e.seq for e in events(mlflow_client, name)), default=0) + 1
    mlflow_client.set_registered_model_tag(name, f"{EVENT_PREFIX}{event.seq:06d}", event.to_json())
    return event
