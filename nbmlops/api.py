"""The notebook API: ``import nbmlops`` in a notebook, then log metrics, data and models.

Under ``nbmlops run`` these calls are recorded on the current step's MLflow run (and the
pipeline's parent run); the kernel only appends events to a file, the driver logs them.
Interactively (JupyterLab, plain papermill) the same calls log to an MLflow run of the
notebook, started on first use, so exploratory work is tracked too.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from nbmlops.capture.hashing import FileHashCache
from nbmlops.exceptions import NbmlopsError
from nbmlops.run import kernel as _kernel

_METRIC_NAME = re.compile(r"^[\w.\-/ :]{1,250}$")
_FLAVORS = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "torch": "pytorch",
    "statsmodels": "statsmodels",
    "keras": "keras",
    "tensorflow": "tensorflow",
}


class ApiError(NbmlopsError, ValueError):
    """A notebook API call with a bad argument.

    Raised in the notebook, it shows as one line (``problem; fix``): it is the error value
    of the cell, in the notebook and in the message of the step that failed.
    """

    def __str__(self) -> str:
        return self.problem + (f"; {self.fix}" if self.fix else "")


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _METRIC_NAME.match(name):
        raise ApiError(
            f"{kind} name {name!r} is not valid",
            "use letters, digits and _ - . / : or spaces, at most 250 characters",
        )
    return name


def log_metric(name: str, value: float, step: int | None = None) -> None:
    """Record a metric on the current step (and the pipeline run)."""
    _check_name("metric", name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ApiError(
            f"metric {name!r}: value {value!r} is not a number", "pass an int or a float"
        ) from None
    if _kernel.active():
        _kernel.emit({"kind": "metric", "name": name, "value": number, "index": step})
    else:
        _interactive().log_metric(name, number, step=step)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    for name, value in metrics.items():
        log_metric(name, value, step)


def log_param(name: str, value: Any) -> None:
    """Record a parameter computed in the notebook (the parameters cell is recorded already)."""
    _check_name("param", name)
    if _kernel.active():
        _kernel.emit(
            {
                "kind": "param",
                "name": name,
                "value": value if isinstance(value, str) else repr(value),
            }
        )
    else:
        _interactive().log_param(name, value)


def log_params(params: dict[str, Any]) -> None:
    for name, value in params.items():
        log_param(name, value)


def track_data(data: Any, name: str | None = None) -> str:
    """Hash a data file or a DataFrame/Series/array over its full content and record it.

    Returns the digest. Files are hashed once per (path, size, mtime).
    """
    from nbmlops.capture.hashing import data_kind, hash_data

    if isinstance(data, str | os.PathLike):
        path = Path(data).resolve()
        if not path.is_file():
            raise ApiError(
                f"track_data: no such file {str(data)!r} (working directory {os.getcwd()})",
                "check the path; a relative one is relative to the notebook's folder",
            )
        digest = _file_hashes().digest(path)
        event = {"kind": "data", "name": name or path.name, "digest": digest, "path": str(path)}
    elif data_kind(data):
        if not name:
            raise ApiError(
                f"track_data: a {type(data).__name__} needs a name",
                "e.g. track_data(df, name='train')",
            )
        digest = hash_data(data)
        event = {"kind": "data", "name": name, "digest": digest}
    else:
        raise ApiError(
            f"track_data: cannot hash a {type(data).__name__}",
            "pass a file path, a DataFrame, a Series or an array",
        )
    _check_name("data", event["name"])
    if _kernel.active():
        _kernel.emit(event)
    else:
        _interactive().log_data(event)
    return digest


def read_csv(path: Any, name: str | None = None, **kwargs: Any) -> Any:
    """``pandas.read_csv`` that records the file's full-content hash first.

    A URL or an open buffer is hashed as the DataFrame that was read.
    """
    import pandas as pd

    return _read(pd.read_csv, path, name, kwargs)


def read_parquet(path: Any, name: str | None = None, **kwargs: Any) -> Any:
    """``pandas.read_parquet`` that records the file's full-content hash first."""
    import pandas as pd

    return _read(pd.read_parquet, path, name, kwargs)


def _read(reader: Any, path: Any, name: str | None, kwargs: dict[str, Any]) -> Any:
    if isinstance(path, str | os.PathLike) and "://" not in str(path):
        track_data(path, name)
        return reader(path, **kwargs)
    frame = reader(path, **kwargs)
    source = str(path) if isinstance(path, str) else getattr(path, "name", None)
    track_data(frame, name or (Path(str(source)).name if source else None) or "data")
    return frame


def read_production(
    model: str,
    since: str | None = "30d",
    *,
    labelled_only: bool = True,
    monitor_dir: str | Path | None = None,
    tracking_uri: str | None = None,
) -> Any:
    """The served ``model``'s logged features and predictions joined with their labels
    (``label``), from ``since`` ago on (``30d``, ``12h``; ``None``: all), as a DataFrame.

    Recorded like :func:`track_data`: hashed over its full content, and an MLflow dataset
    input (``production:<name>/v<version>``) of the run that reads it.
    """
    from nbmlops.monitor.export import read_production as read

    frame, found = read(
        model,
        since,
        labelled_only=labelled_only,
        monitor_dir=monitor_dir,
        tracking_uri=tracking_uri,
    )
    track_data(frame, f"production:{found.ref.name}/v{found.ref.version}")
    return frame


def log_model(
    model: Any,
    name: str = "model",
    input_example: Any = None,
    flavor: str | None = None,
    reference: tuple[Any, Any] | None = None,
    **kwargs: Any,
) -> str:
    """Log ``model`` as an MLflow model with its signature; returns its ``models:/`` URI.

    The flavor is found from the model's package (scikit-learn, XGBoost, LightGBM, ...) or
    given as ``flavor="sklearn"``. The signature is inferred from ``input_example``.
    ``reference=(X_test, y_test)``, a labelled held-out set the model did not train on,
    stores its labels and the classifier's probabilities on it (JSON, at most 50,000 rows)
    with the run: promotion carries it with the version, and performance estimates
    before labels arrive (``nbmlops monitor performance``) are calibrated on it.
    """
    import mlflow

    held_out = _calibration_set(model, reference) if reference is not None else None
    module = _flavor_module(model, flavor)
    example = _head(input_example)
    if module.__name__ == "mlflow.sklearn":
        kwargs.setdefault("skops_trusted_types", _skops_types(model))
    if "pip_requirements" not in kwargs and "conda_env" not in kwargs:
        # MLflow otherwise infers them in a subprocess that reloads the model (~7 s here).
        kwargs["pip_requirements"] = _requirements(module)
    if _kernel.active():
        if _kernel.current_step() is None:
            raise ApiError(
                "log_model: called in a setup cell, before any step",
                "move it into a step (a cell tagged step:<name>, or a cell after one)",
            )
        run_id = _kernel.step_run_id()
        active = mlflow.active_run()
        if active is None or active.info.run_id != run_id:
            if active is not None:
                mlflow.end_run()
            mlflow.start_run(run_id=run_id)
    else:
        _interactive()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column", category=UserWarning)
        info = module.log_model(model, name=name, input_example=example, **kwargs)
    files = _logged_files(str(info.model_uri))
    event = {
        "kind": "model",
        "name": name,
        "uri": info.model_uri,
        "model_id": getattr(info, "model_id", None),
        "flavor": module.__name__,
        "files": files,
    }
    from nbmlops.capture import schema

    if held_out is not None:
        artifact = schema.calibration_artifact(name)
        run = mlflow.active_run()
        assert run is not None  # log_model ran in it
        mlflow.log_dict(held_out, artifact)
        event["calibration"] = f"runs:/{run.info.run_id}/{artifact}"
    if _kernel.active():
        _kernel.emit(event)
    else:
        tags = {schema.MODEL_URI: info.model_uri, schema.MODEL_FILES: files}
        if held_out is not None:
            tags[schema.CALIBRATION] = event["calibration"]
        mlflow.set_tags(tags)
    return str(info.model_uri)


def _calibration_set(model: Any, reference: Any) -> dict[str, Any]:
    """The calibration document of ``reference`` (``(X, y)``): the labels and the model's
    class probabilities on X, checked before anything is logged."""
    from nbmlops.monitor.estimate import MAX_CALIBRATION, calibration_document

    usage = "pass reference=(X_test, y_test): held-out features and their true labels"
    if not isinstance(reference, tuple | list) or len(reference) != 2:
        raise ApiError(f"log_model: reference is a {type(reference).__name__}", usage)
    features, labels = reference
    classes = getattr(model, "classes_", None)
    if not callable(getattr(model, "predict_proba", None)) or classes is None:
        raise ApiError(
            f"log_model: reference= needs a classifier with predict_proba and classes_; "
            f"a {type(model).__name__} has not both",
            "leave reference out (performance estimates need class probabilities)",
        )
    try:
        rows, given = len(features), len(labels)
    except TypeError:
        raise ApiError("log_model: reference's features or labels have no length", usage) from None
    if rows != given or rows == 0:
        raise ApiError(
            f"log_model: reference has {rows} rows of features and {given} labels",
            "give as many labels as rows, at least one (e.g. X_test, y_test of one split)",
        )
    head = (
        features.iloc[:MAX_CALIBRATION] if hasattr(features, "iloc") else features[:MAX_CALIBRATION]
    )
    proba = model.predict_proba(head)
    truth = labels.iloc[:MAX_CALIBRATION] if hasattr(labels, "iloc") else labels[:MAX_CALIBRATION]
    return calibration_document(
        [_class_name(c) for c in classes], [_class_name(y) for y in truth], proba
    )


def _class_name(value: Any) -> str:
    """A class as the service logs it (``proba_<class>``): numpy scalars as Python's."""
    return str(value.item() if hasattr(value, "item") else value)


def _logged_files(model_uri: str) -> str:
    """The sha256 manifest (JSON) of the model just logged: promotion checks against it."""
    import tempfile

    import mlflow

    from nbmlops.promote import integrity

    with tempfile.TemporaryDirectory(prefix="nbmlops-logged-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return json.dumps(integrity.manifest(path), sort_keys=True, separators=(",", ":"))


def load_model(model: str, tracking_uri: str | None = None) -> Any:
    """The registered model ``model`` (``NAME``: its @champion, ``NAME@ALIAS`` or
    ``NAME/VERSION``) as an MLflow pyfunc, loaded only once its signature was checked with
    a trusted key and every file against the signed manifest (docs/security.md)."""
    from nbmlops.promote.registry import resolve_model
    from nbmlops.serve.skew import load_offline

    return load_offline(resolve_model(model, tracking_uri), tracking_uri)


def _flavor_module(model: Any, flavor: str | None) -> Any:
    if flavor is None:
        top = type(model).__module__.split(".")[0]
        flavor = _FLAVORS.get(top)
        if flavor is None and hasattr(model, "fit") and hasattr(model, "get_params"):
            flavor = "sklearn"  # a scikit-learn compatible estimator
    if flavor is None:
        raise ApiError(
            f"log_model: cannot tell which MLflow flavor saves a {type(model).__name__}",
            f"pass flavor=..., one of: {', '.join(sorted(set(_FLAVORS.values())))}",
        )
    try:
        return importlib.import_module(f"mlflow.{flavor}")
    except ImportError as exc:
        raise ApiError(
            f"log_model: MLflow has no flavor {flavor!r} here ({exc})",
            "install the library it saves, or pass another flavor=",
        ) from exc


def _requirements(module: Any) -> list[str]:
    """The flavor's own requirements plus the data libraries, pinned as installed here."""
    from importlib import metadata

    reqs = (
        list(module.get_default_pip_requirements())
        if hasattr(module, "get_default_pip_requirements")
        else []
    )
    names = {r.split("=")[0].split("<")[0].split(">")[0].strip().lower() for r in reqs}
    for dist in ("numpy", "pandas", "cloudpickle", "skops"):
        if dist not in names:
            with contextlib.suppress(metadata.PackageNotFoundError):
                reqs.append(f"{dist}=={metadata.version(dist)}")
    return reqs


def _head(example: Any, rows: int = 5) -> Any:
    if example is None:
        return None
    if hasattr(example, "iloc"):
        return example.iloc[:rows]
    if hasattr(example, "shape") and getattr(example, "ndim", 0) >= 1:
        return example[:rows]
    return example


def _skops_types(model: Any) -> list[str]:
    """The types in ``model`` that skops does not trust by default: our own model, trusted."""
    try:
        import skops.io as sio

        return list(sio.get_untrusted_types(data=sio.dumps(model)))
    except Exception:
        return []


def _file_hashes() -> FileHashCache:
    from nbmlops import project

    return FileHashCache(project.state_dir(_project_root()) / "file-hashes.json")


def _project_root() -> Path:
    root = os.environ.get("NBMLOPS_PROJECT")
    return Path(root) if root else Path.cwd()


class _Interactive:
    """An MLflow run for a notebook used outside ``nbmlops run``: started on first use."""

    def __init__(self) -> None:
        import mlflow

        from nbmlops import project
        from nbmlops.capture import schema
        from nbmlops.capture import tracking as t

        self.mlflow = mlflow
        root = _project_root()
        uri = project.tracking_uri(None, root)
        mlflow.set_tracking_uri(uri)
        from nbmlops.notebook import identity

        # Inside ``nbmlops run`` the run names the notebook; else the live Jupyter session.
        session = os.environ.get("NBMLOPS_NOTEBOOK") or identity.notebook_path() or ""
        stem = project.experiment_name(session) or "interactive"
        client = mlflow.MlflowClient(uri)
        exp = t.experiment_id(
            client, os.environ.get("MLFLOW_EXPERIMENT_NAME") or stem, project.artifact_root(uri)
        )
        if mlflow.active_run() is None:
            mlflow.start_run(
                experiment_id=exp,
                run_name=stem,
                tags=schema.interactive_tags(session or stem),
            )

    def log_metric(self, name: str, value: float, step: int | None) -> None:
        self.mlflow.log_metric(name, value, step=step)

    def log_param(self, name: str, value: Any) -> None:
        self.mlflow.log_param(name, value)

    def log_data(self, event: dict[str, Any]) -> None:
        from nbmlops.capture import schema
        from nbmlops.capture import tracking as t

        run = self.mlflow.active_run()
        assert run is not None
        client = self.mlflow.MlflowClient()
        t.log_datasets(client, [run.info.run_id], [event])
        self.mlflow.set_tag(schema.data_tag(event["name"]), event["digest"])


_session: _Interactive | None = None


def _interactive() -> _Interactive:
    global _session
    if _session is None:
        _session = _Interactive()
    return _session
