"""The BentoML service nbmlops builds for a registered model (copied into each Bento).

Self-contained on purpose: the Bento needs bentoml, mlflow, numpy, pandas and the
model's own requirements, not nbmlops. Its settings come from ``nbmlops_service.json``
beside it (written by ``nbmlops build``): the BentoML model tag, the registry name and
version, the lineage, the labels (their names are nbmlops', so they are read from here,
never spelled), the request schema (from the MLflow signature) and the sha256 of every
model file.

Two services: ``Api`` (the HTTP front: validation, monitoring, ``GET /model``) calls the
batchable ``Model.predict_batch`` of its dependency, whose process groups concurrent
requests into batches (BentoML's adaptive batching) before one ``predict`` call.

Environment: ``NBMLOPS_MONITOR=0`` turns monitoring off; ``NBMLOPS_MONITOR_DIR`` is where
the monitor logs go (default ``./monitoring``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CONFIG: dict[str, Any] = json.loads(
    Path(__file__).with_name("nbmlops_service.json").read_text(encoding="utf-8")
)
SCHEMA: list[dict[str, Any]] = CONFIG["schema"]
COLUMNS = [c["name"] for c in SCHEMA]
TYPES = {c["name"]: c["type"] for c in SCHEMA}
REQUIRED = {c["name"] for c in SCHEMA if c.get("required", True)}
MONITOR = os.environ.get("NBMLOPS_MONITOR", "1").lower() not in ("0", "false", "off", "no")
MONITOR_DIR = os.environ.get("NBMLOPS_MONITOR_DIR", "monitoring")
MONITOR_NAME = CONFIG["monitor_name"]
ACCESS_LOG = os.environ.get("NBMLOPS_ACCESS_LOG", "1").lower() not in ("0", "false", "off", "no")
MAX_RECORDS = int(CONFIG.get("max_records", 10000))
_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
    "datetime": "datetime64[ns]",
}
_TYPE_WORDS = {
    "double": "a number",
    "float": "a number",
    "long": "an integer",
    "integer": "an integer",
    "boolean": "true or false",
    "string": "a string",
    "datetime": "an ISO 8601 date-time string",
}
_NUMERIC = ("double", "float", "long", "integer")
_INT_LIMITS = {"long": 2**63, "integer": 2**31}


_JSON_TYPES: dict[str, Any] = {
    "double": {"type": "number"},
    "float": {"type": "number"},
    "long": {"type": "integer"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "datetime": {"type": "string", "format": "date-time"},
}
# The OpenAPI schema (/docs) of `records`, from the signature; validate() enforces it.
_RECORDS_SCHEMA: dict[str, Any] = {
    "minItems": 1,
    "items": {
        "type": "object",
        "properties": {c: _JSON_TYPES.get(TYPES[c], {}) for c in COLUMNS},
        "required": [c for c in COLUMNS if c in REQUIRED],
        "additionalProperties": False,
    },
}
RECORDS_FIELD = Field(
    description="The rows to predict: [{column: value, ...}, ...]",
    json_schema_extra=_RECORDS_SCHEMA,
)


# Written by MLflow into a download through the registry: not a file of the model.
NOT_MODEL_FILES = frozenset({"registered_model_meta"})


class IntegrityError(RuntimeError):
    """A model file differs from the sha256 recorded at promotion: the in-Bento twin of
    ``nbmlops.promote.errors.IntegrityError`` (this file cannot import nbmlops)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_model_files(folder: Path, expected: dict[str, str], label: str) -> None:
    """Refuse a model whose files differ from the sha256 recorded at promotion."""
    actual = {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in NOT_MODEL_FILES
    }
    for rel, digest in expected.items():
        if rel in NOT_MODEL_FILES:
            continue
        if rel not in actual:
            raise IntegrityError(f"model {label}: {rel} is missing since promotion: refusing it")
        if _sha256(actual[rel]) != digest:
            raise IntegrityError(
                f"model {label}: {rel} has changed since promotion (sha256 differs): refusing it"
            )
    for rel in actual:
        if rel not in expected:
            raise IntegrityError(f"model {label}: {rel} was added since promotion: refusing it")


LABEL = f"{CONFIG['name']} v{CONFIG['version']}"
BENTO_MODEL = bentoml.models.BentoModel(CONFIG["bento_model"])
# Checked at import: `bentoml serve` imports this module before starting any worker, so a
# tampered model stops the server at once, with the file's name.
_STORED = BENTO_MODEL.stored
if _STORED is not None:
    verify_model_files(Path(_STORED.path_of("mlflow_model")), CONFIG["files"], LABEL)


def _check_value(column: str, value: Any, where: str) -> str | None:
    kind = TYPES[column]
    if value is None:
        return (
            None
            if column not in REQUIRED
            else f"{where}: {column!r} is null; expected {_TYPE_WORDS[kind]}"
        )
    wrong = f"{where}: {column!r} is {json.dumps(value)[:40]}; expected {_TYPE_WORDS[kind]}"
    if kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return wrong
        if not math.isfinite(value):
            return f"{where}: {column!r} is {value}; expected a finite number"
        return None
    if kind in ("long", "integer"):
        if isinstance(value, bool):
            return wrong
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                return wrong
            value = int(value)
        if not isinstance(value, int):
            return wrong
        if not -_INT_LIMITS[kind] <= value < _INT_LIMITS[kind]:
            return f"{where}: {column!r} is out of range for a {kind}"
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else wrong
    if kind == "string":
        return None if isinstance(value, str) else wrong
    if kind == "datetime":
        if not isinstance(value, str):
            return wrong
        try:
            pd.Timestamp(value)
        except (ValueError, TypeError):
            return wrong
        return None
    return None


def validate(records: list[Any]) -> list[str]:
    """Every problem of the request's records, each naming the record and the field."""
    if not records:
        return ["records: empty batch; send at least one record"]
    if len(records) > MAX_RECORDS:
        return [f"records: {len(records)} records; at most {MAX_RECORDS} per request"]
    problems: list[str] = []
    for i, record in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(record, dict):
            problems.append(f"{where}: expected an object of column: value")
            continue
        problems += [
            f"{where}: missing column {c!r}" for c in COLUMNS if c in REQUIRED - record.keys()
        ]
        problems += [
            f"{where}: unknown column {c!r} (the model has no such input)"
            for c in sorted(record.keys() - TYPES.keys())
        ]
        for column in COLUMNS:
            if column in record:
                problem = _check_value(column, record[column], where)
                if problem:
                    problems.append(problem)
        if len(problems) >= 20:
            break
    return problems[:20]


def to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    for column in COLUMNS:
        dtype = _DTYPES.get(TYPES[column])
        if dtype == "datetime64[ns]":
            frame[column] = pd.to_datetime(frame[column])
        elif dtype and not (frame[column].isna().any() and dtype.startswith(("int", "bool"))):
            frame[column] = frame[column].astype(dtype)
    return frame


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@bentoml.service(
    name=f"{CONFIG['service_name']}-model",
    workers=int(os.environ.get("NBMLOPS_MODEL_WORKERS", "1")),
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},  # an internal hop: the Api logs each request
)
class Model:
    """The MLflow model in its own process; concurrent requests are batched here."""

    bento_model = BENTO_MODEL

    def __init__(self) -> None:
        verify_model_files(Path(self.bento_model.path_of("mlflow_model")), CONFIG["files"], LABEL)
        self.model = bentoml.mlflow.load_model(self.bento_model)

    # _bentoml_sdk, where bentoml.api lives, ships no type information (no py.typed).
    @bentoml.api(  # type: ignore[untyped-decorator]
        batchable=True,
        max_batch_size=int(CONFIG.get("max_batch_size", 64)),
        max_latency_ms=int(CONFIG.get("max_latency_ms", 10000)),
    )
    def predict_batch(self, records: list[dict[str, Any]]) -> list[Any]:
        result = self.model.predict(to_frame(records))
        if isinstance(result, pd.DataFrame):
            result = result.to_numpy() if result.shape[1] > 1 else result.iloc[:, 0].to_numpy()
        return [_jsonable(p) for p in np.asarray(result)]


class PredictGuard:
    """ASGI middleware for ``POST /predict``: a JSON body whose only field is ``records``.

    BentoML's own parsing answers 500 to some non-JSON bodies (a multipart body without a
    boundary) and ignores unknown top-level fields; both become 4xx naming the problem.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        media = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media not in (b"application/json", b""):
            await _reply(
                send,
                415,
                f"Content-Type {media.decode(errors='replace')!r}: send JSON "
                '(Content-Type: application/json) like {"records": [{...}]}',
            )
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            data = json.loads(body) if body else {}
        except (ValueError, UnicodeDecodeError):
            data = None  # BentoML answers 400 "Invalid JSON" with the position
        if isinstance(data, dict) and data.keys() - {"records"}:
            extra = ", ".join(repr(k) for k in sorted(data.keys() - {"records"}))
            await _reply(send, 400, f"unknown field {extra}: the body has one field, 'records'")
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Any, status: int, error: str) -> None:
    payload = json.dumps({"error": error, "problems": [error]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _model_info(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "model": CONFIG["name"],
            "version": CONFIG["version"],
            "alias": CONFIG.get("alias"),
            "lineage": CONFIG["lineage"],
            "schema": SCHEMA,
            "sha256": CONFIG.get("digest"),
            "monitoring": MONITOR,
        }
    )


_info_app = Starlette(routes=[Route("/model", _model_info, methods=["GET"])])


@bentoml.asgi_app(_info_app, path="/")
@bentoml.service(
    name=CONFIG["service_name"],
    workers=int(os.environ.get("NBMLOPS_API_WORKERS", "1")),
    traffic={"timeout": 60},
    logging={"access": {"enabled": ACCESS_LOG}},
    labels=CONFIG["labels"],
)
class Api:
    """``POST /predict``: validated records in, predictions out; ``GET /model``: lineage."""

    model = bentoml.depends(Model)

    def __init__(self) -> None:
        _keep_session(self.model)

    @bentoml.api(route="/predict")  # type: ignore[untyped-decorator]
    async def predict(self, records: list[Any] = RECORDS_FIELD) -> dict[str, Any]:
        problems = validate(records)
        if problems:
            return JSONResponse(  # type: ignore[return-value]
                {"error": "; ".join(problems[:5]), "problems": problems}, status_code=400
            )
        predictions = await _call_model(self.model, records)
        request_id = _log(records, predictions)
        return {
            "predictions": predictions,
            "model": CONFIG["name"],
            "version": str(CONFIG["version"]),
            "request_id": request_id,
        }


Api.add_asgi_middleware(PredictGuard)  # type: ignore[attr-defined]


def _keep_session(proxy: Any) -> None:
    """Keep the client session to the Model service open.

    BentoML 1.4.31+ replaces it every 100 requests and closes the old one while other
    requests are still in flight on it ("Server disconnected"; BentoML issue #5540).
    """
    manager = getattr(getattr(proxy, "to_async", None), "_session_manager", None)
    if manager is not None and hasattr(manager, "max_requests"):
        manager.max_requests = 2**62
        manager.max_age = math.inf


async def _call_model(proxy: Any, records: list[dict[str, Any]]) -> list[Any]:
    """``Model.predict_batch``; retried once on a dropped connection (predict is idempotent)."""
    import aiohttp

    try:
        result = await proxy.to_async.predict_batch(records)
    except aiohttp.ClientConnectionError:
        result = await proxy.to_async.predict_batch(records)
    return list(result)


def _log(records: list[dict[str, Any]], predictions: list[Any]) -> str | None:
    """Every record's features and prediction to the monitor (one row per record)."""
    from bentoml._internal.context import trace_context

    request_id = trace_context.request_id
    if not MONITOR:
        return None if request_id is None else str(request_id)
    with bentoml.monitor(
        MONITOR_NAME, monitor_class="default", monitor_options={"log_path": MONITOR_DIR}
    ) as mon:
        for column in COLUMNS:
            kind = TYPES[column]
            mon.log_batch(
                [record.get(column) for record in records],
                name=column,
                role="feature",
                data_type="numerical" if kind in _NUMERIC else "categorical",
            )
        mon.log_batch(
            predictions,
            name="prediction",
            role="prediction",
            data_type="numerical" if isinstance(predictions[0], float) else "categorical",
        )
    return None if request_id is None else str(request_id)
