"""``nbmlops build``: a registered model version as a Bento.

The model version's files are downloaded from the registry and checked against the sha256
manifest recorded at promotion (a changed file is refused, by name), imported into the
BentoML model store with ``bentoml.mlflow.import_model``, and packaged with the service
(``bento_service.py``, copied as ``service.py``) and its settings (``nbmlops_service.json``:
schema from the MLflow signature, lineage, manifest). The Bento's labels carry the lineage.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops import project
from nbmlops.capture import schema as s
from nbmlops.promote import integrity
from nbmlops.promote import registry as r
from nbmlops.promote.errors import IntegrityError
from nbmlops.serve.errors import ServeError

SERVICE_TEMPLATE = Path(__file__).with_name("bento_service.py")
FEEDBACK_TEMPLATE = Path(__file__).with_name("feedback.py")  # POST /feedback, beside it
SUPPORTED_TYPES = {"double", "float", "long", "integer", "boolean", "string", "datetime"}


@dataclass
class Built:
    """A Bento built for one model version."""

    bento_tag: str
    bento_model_tag: str
    model: r.ModelRef
    reused_model: bool

    @property
    def service_name(self) -> str:
        return self.bento_tag.split(":")[0]


def bento_name(name: str) -> str:
    """A BentoML-valid name (lowercase letters, digits, ``-``, ``_``, ``.``) for ``name``."""
    text = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-._")
    return text or "model"


def bento_tags(model: r.ModelRef) -> tuple[str, str]:
    """``(bento tag, bento model tag)`` for a registry version: name, version and digest."""
    digest = model.tags.get(s.DIGEST, "")[:12] or "nodigest"
    version = f"v{model.version}-{digest}"
    return f"{bento_name(model.name)}:{version}", f"{bento_name(model.name)}-model:{version}"


def manifest_of(model: r.ModelRef) -> dict[str, str]:
    raw = model.tags.get(s.FILES)
    if not raw:
        raise ServeError(
            f"model {model} has no sha256 manifest: it was not registered by nbmlops promote",
            f"promote its run with: nbmlops promote --experiment NAME --metric M --model-name {model.name}",
        )
    files: dict[str, str] = json.loads(raw)
    return files


def build(ref: str, tracking_uri: str | None = None) -> Built:
    """Build (or rebuild) the Bento of the model version ``ref`` names."""
    store = project.tracking_uri(tracking_uri)
    model = r.resolve_model(ref, tracking_uri)
    files = manifest_of(model)
    schema = signature_schema(model, store, files)
    bento_tag, model_tag = bento_tags(model)
    reused = _import_model(model, model_tag, store, files)

    # The build context is a temporary folder: BentoML refuses paths under hidden folders
    # (.nbmlops), and the Bento store keeps its own copy.
    with tempfile.TemporaryDirectory(prefix="nbmlops-bento-") as tmp:
        bento = _build_bento(model, bento_tag, model_tag, schema, files, Path(tmp))
    return Built(str(bento.tag), model_tag, model, reused)


def _build_bento(
    model: r.ModelRef,
    bento_tag: str,
    model_tag: str,
    schema: list[dict[str, Any]],
    files: dict[str, str],
    folder: Path,
) -> Any:
    import bentoml

    shutil.copyfile(SERVICE_TEMPLATE, folder / "service.py")
    shutil.copyfile(FEEDBACK_TEMPLATE, folder / "nbmlops_feedback.py")
    config = {
        "name": model.name,
        "version": model.version,
        "alias": model.alias,
        "bento_model": model_tag,
        "service_name": bento_name(model.name),
        "monitor_name": f"{bento_name(model.name)}-v{model.version}",
        "schema": schema,
        "files": files,
        "digest": model.tags.get(s.DIGEST),
        "lineage": lineage(model),
        "labels": bento_model_labels(model),
        "max_batch_size": 64,
        "max_latency_ms": 10000,
    }
    (folder / "nbmlops_service.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "requirements.txt").write_text(_requirements(model_tag), encoding="utf-8")
    try:
        existing = bentoml.bentos.get(bento_tag)
    except bentoml.exceptions.NotFound:
        existing = None
    if existing is not None:
        bentoml.bentos.delete(bento_tag)
    labels = {k: v[:1000] for k, v in _labels(model).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bento = bentoml.bentos.build(
            "service:Api",
            name=bento_tag.split(":")[0],
            version=bento_tag.split(":")[1],
            labels=labels,
            description=f"nbmlops: {model.name} version {model.version} ({model.uri})",
            include=[
                "service.py",
                "nbmlops_feedback.py",
                "nbmlops_service.json",
                "requirements.txt",
            ],
            python={"requirements_txt": "requirements.txt", "lock_packages": False},
            build_ctx=str(folder),
        )
    return bento


def lineage(model: r.ModelRef) -> dict[str, str]:
    """What ``GET /model`` shows: the version's nbmlops tags (not the manifest), and its
    registry URI."""
    return s.lineage_labels(model.tags) | {"registry_uri": model.uri}


def bento_model_labels(model: r.ModelRef) -> dict[str, str]:
    """The labels naming the registry version, on the BentoML model and the services."""
    return {s.BENTO_MODEL: model.name, s.BENTO_VERSION: model.version}


def _labels(model: r.ModelRef) -> dict[str, str]:
    """The Bento's labels: the version, and its lineage without the metrics."""
    return bento_model_labels(model) | {
        k: v for k, v in lineage(model).items() if not k.startswith(s.METRIC_PREFIX)
    }


def signature_schema(model: r.ModelRef, store: str, files: dict[str, str]) -> list[dict[str, Any]]:
    """The request schema: the MLflow signature's input columns, names and types."""
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="nbmlops-mlmodel-") as tmp:
        path = r.download(f"{model.uri}/MLmodel", tmp, store)
        if integrity.sha256_file(Path(path)) != files.get("MLmodel"):
            raise IntegrityError(str(model), "MLmodel", "has changed")
        signature = Model.load(path).signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        raise ServeError(
            f"model {model} has no column signature: cannot derive the request schema",
            "log the model with an input example: nbmlops.log_model(model, input_example=X_train)",
        )
    schema = []
    for spec in signature.inputs.inputs:
        kind = getattr(getattr(spec, "type", None), "name", None)
        if kind not in SUPPORTED_TYPES:
            raise ServeError(
                f"model {model}: input {spec.name!r} has type {spec.type}, which /predict cannot take",
                f"give the model inputs of these types: {', '.join(sorted(SUPPORTED_TYPES))}",
            )
        schema.append({"name": spec.name, "type": kind, "required": bool(spec.required)})
    return schema


def _import_model(model: r.ModelRef, tag: str, store: str, files: dict[str, str]) -> bool:
    """Check the registry's files, then import them (unless imported already, and intact)."""
    import bentoml

    with tempfile.TemporaryDirectory(prefix="nbmlops-model-") as tmp:
        local = r.download(model.uri, tmp, store)
        integrity.verify(local, files, str(model))
        try:
            existing = bentoml.models.get(tag)
        except bentoml.exceptions.NotFound:
            existing = None
        if existing is not None:
            try:
                integrity.verify(
                    existing.path_of("mlflow_model"), files, f"{model} (BentoML copy {tag})"
                )
                return True
            except IntegrityError:
                bentoml.models.delete(tag)  # re-import from the verified registry files
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imported = bentoml.mlflow.import_model(
                tag,
                local,
                labels=bento_model_labels(model),
                metadata={"registry_uri": model.uri, "sha256": model.tags.get(s.DIGEST, "")},
            )
        integrity.verify(imported.path_of("mlflow_model"), files, f"{model} (BentoML copy {tag})")
    return False


def _requirements(model_tag: str) -> str:
    """The model's pinned requirements, plus BentoML as installed here."""
    import bentoml

    path = Path(bentoml.models.get(model_tag).path_of("mlflow_model")) / "requirements.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    lines = [line for line in lines if line.strip() and not line.startswith("#")]
    if not any(line.lower().startswith("bentoml") for line in lines):
        lines.append(f"bentoml=={bentoml.__version__}")
    return "\n".join(lines) + "\n"


def find_bento(model: r.ModelRef) -> Any | None:
    """The Bento already built for this model version, if any."""
    import bentoml

    try:
        return bentoml.bentos.get(bento_tags(model)[0])
    except bentoml.exceptions.NotFound:
        return None


@dataclass
class Servable:
    """A model version whose Bento exists and whose files were checked."""

    model: r.ModelRef
    bento_tag: str
    built: bool  # built just now (else found in the Bento store and verified)

    @property
    def outcome(self) -> str:
        """``Bento TAG built`` or ``Bento TAG found and verified``."""
        return f"Bento {self.bento_tag} {'built' if self.built else 'found and verified'}"


def ensure_bento(ref: str, tracking_uri: str | None = None, rebuild: bool = False) -> Servable:
    """The Bento of the version ``ref`` names: found and verified, else (or with
    ``rebuild``) built, which verifies the registry's files."""
    model = r.resolve_model(ref, tracking_uri)
    bento = None if rebuild else find_bento(model)
    if bento is None:
        return Servable(model, build(ref, tracking_uri).bento_tag, built=True)
    verify_bento_model(model)
    return Servable(model, str(bento.tag), built=False)


def verify_bento_model(model: r.ModelRef) -> None:
    """Check the BentoML model store's copy of ``model`` against its manifest."""
    import bentoml

    tag = bento_tags(model)[1]
    try:
        stored = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise ServeError(
            f"BentoML model {tag} of {model} is not in the model store",
            f"build it again: nbmlops build {model.name}/{model.version}",
        ) from None
    integrity.verify(
        stored.path_of("mlflow_model"), manifest_of(model), f"{model} (BentoML copy {tag})"
    )
