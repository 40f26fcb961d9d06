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
the monitor logs go (default ``./monitoring``); ``NBMLOPS_MONITOR_MAX_BYTES``,
``NBMLOPS_MONITOR_FILES`` and ``NBMLOPS_MONITOR_MAX_DAYS`` bound them (each worker keeps at
most that many files of that size, none older than that many days).

The monitor log: JSON lines, one per predicted record, under
``<monitor dir>/<monitor name>/data/data.<worker>.log`` (rotated to ``.log.1``, ``.log.2``...):
``timestamp`` (ISO 8601 UTC), ``request_id`` (the caller's, else generated), ``latency_ms``
(the request's), the features, ``prediction`` and, for a classifier with
``predict_proba``, ``proba`` (``{"<class>": p}``). ``nbmlops.serve.monitoring`` reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from datetime import UTC, datetime
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

try:  # in a Bento: copied beside this file (service.py) by nbmlops build
    import nbmlops_feedback as feedback  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # nbmlops/serve/, where this file is read by tests and type checks
    from nbmlops.serve import feedback

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
MAX_ID_LENGTH = 128
LOG_MAX_BYTES = int(os.environ.get("NBMLOPS_MONITOR_MAX_BYTES", 10_000_000))
LOG_FILES = int(os.environ.get("NBMLOPS_MONITOR_FILES", 10))
LOG_MAX_DAYS = float(os.environ.get("NBMLOPS_MONITOR_MAX_DAYS", 7))
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
IDS_FIELD = Field(
    None,
    description="Your id of each record (strings of at most 128 characters), returned and "
    "logged with its prediction; generated when absent",
    json_schema_extra={"type": "array", "items": {"type": "string", "maxLength": 128}},
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


def validate_ids(request_ids: Any, count: int) -> list[str]:
    """The problems of the caller's ``request_ids``: one string (at most 128 characters)
    per record."""
    if request_ids is None:
        return []
    if not isinstance(request_ids, list):
        return ["request_ids: expected a list of strings, one per record"]
    if len(request_ids) != count:
        return [f"request_ids: {len(request_ids)} ids for {count} records; give one per record"]
    for i, rid in enumerate(request_ids):
        if not isinstance(rid, str) or not rid:
            return [f"request_ids[{i}]: expected a non-empty string"]
        if len(rid) > MAX_ID_LENGTH:
            return [f"request_ids[{i}]: {len(rid)} characters; at most {MAX_ID_LENGTH}"]
    return []


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
        self.classifier = _classifier(self.model)

    # _bentoml_sdk, where bentoml.api lives, ships no type information (no py.typed).
    @bentoml.api(  # type: ignore[untyped-decorator]
        batchable=True,
        max_batch_size=int(CONFIG.get("max_batch_size", 64)),
        max_latency_ms=int(CONFIG.get("max_latency_ms", 10000)),
    )
    def predict_batch(self, records: list[dict[str, Any]]) -> list[Any]:
        """``[prediction, proba or None]`` per record."""
        frame = to_frame(records)
        result = self.model.predict(frame)
        if isinstance(result, pd.DataFrame):
            result = result.to_numpy() if result.shape[1] > 1 else result.iloc[:, 0].to_numpy()
        predictions = [_jsonable(p) for p in np.asarray(result)]
        probas: list[dict[str, float] | None] = [None] * len(predictions)
        if self.classifier is not None:
            probas = list(_probabilities(self.classifier, frame))
        return [list(pair) for pair in zip(predictions, probas, strict=True)]


def _classifier(model: Any) -> Any | None:
    """The model's underlying estimator if it gives class probabilities (``predict_proba``
    and ``classes_``, as scikit-learn classifiers), else None."""
    try:
        raw = model.get_raw_model()
    except (NotImplementedError, AttributeError):
        return None
    has_proba = callable(getattr(raw, "predict_proba", None))
    return raw if has_proba and getattr(raw, "classes_", None) is not None else None


def _probabilities(classifier: Any, frame: pd.DataFrame) -> list[dict[str, float]]:
    labels = [str(_jsonable(c)) for c in classifier.classes_]
    return [
        dict(zip(labels, row, strict=True))
        for row in np.asarray(classifier.predict_proba(frame), dtype=float).tolist()
    ]


BODY_FIELDS = frozenset({"records", "request_ids"})


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
        if isinstance(data, dict) and data.keys() - BODY_FIELDS:
            extra = ", ".join(repr(k) for k in sorted(data.keys() - BODY_FIELDS))
            await _reply(
                send, 400, f"unknown field {extra}: the body has 'records' (and 'request_ids')"
            )
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


_info_app = Starlette(
    routes=[
        Route("/model", _model_info, methods=["GET"]),
        feedback.route(MONITOR_DIR, MONITOR_NAME, MONITOR),
    ]
)


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
    async def predict(
        self, records: list[Any] = RECORDS_FIELD, request_ids: Any = IDS_FIELD
    ) -> dict[str, Any]:
        started = time.perf_counter()
        problems = validate(records) or validate_ids(request_ids, len(records))
        if problems:
            return JSONResponse(  # type: ignore[return-value]
                {"error": "; ".join(problems[:5]), "problems": problems}, status_code=400
            )
        ids = request_ids or [uuid.uuid4().hex for _ in records]
        answers = await _call_model(self.model, records)
        predictions = [a[0] for a in answers]
        log_records(records, answers, ids, (time.perf_counter() - started) * 1000)
        return {
            "predictions": predictions,
            "request_ids": ids,
            "model": CONFIG["name"],
            "version": str(CONFIG["version"]),
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


class MonitorLog:
    """This worker's monitor log file: JSON lines, rotated when it reaches ``max_bytes``
    or is a day old (``data.N.log`` becomes ``data.N.log.1``, ``.1`` becomes ``.2``...);
    at most ``files`` files are kept, none older than ``max_days``."""

    def __init__(self, path: Path, max_bytes: int, files: int, max_days: float) -> None:
        self.path, self.max_bytes, self.files = path, max(1, max_bytes), max(1, files)
        self.max_age = max_days * 86400
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = open(self.path, "ab")  # noqa: SIM115 (kept open: one file per worker)
        self.size = self.stream.tell()
        self.opened = time.time()
        self._prune()

    def write(self, lines: list[bytes]) -> None:
        """Append ``lines`` (each ending in a newline), rotating where the size says."""
        if time.time() - self.opened > min(86400.0, self.max_age):
            self._rotate()
        chunk: list[bytes] = []
        size = self.size
        for line in lines:
            if size + len(line) > self.max_bytes and (chunk or size):
                self._append(chunk)
                self._rotate()
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        self._append(chunk)

    def _append(self, chunk: list[bytes]) -> None:
        data = b"".join(chunk)
        self.stream.write(data)
        self.stream.flush()
        self.size += len(data)

    def _rotate(self) -> None:
        self.stream.close()
        for i in range(self.files - 1, 0, -1):
            older = self._numbered(i)
            if older.exists():
                if i + 1 < self.files:
                    older.replace(self._numbered(i + 1))
                else:
                    older.unlink()
        if self.files > 1:
            self.path.replace(self._numbered(1))
        else:
            self.path.unlink(missing_ok=True)
        self.stream = open(self.path, "ab")  # noqa: SIM115
        self.size, self.opened = 0, time.time()
        self._prune()

    def _numbered(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _prune(self) -> None:
        """Remove rotated files older than ``max_days`` and beyond ``files``."""
        cutoff = time.time() - self.max_age
        for old in self.path.parent.glob(self.path.name + ".*"):
            suffix = old.name.rsplit(".", 1)[1]
            if not suffix.isdigit() or int(suffix) >= self.files or old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)


_monitor_log: MonitorLog | None = None


def log_records(
    records: list[dict[str, Any]], answers: list[Any], ids: list[str], latency_ms: float
) -> None:
    """One JSON line per predicted record to the monitor log (the one place records are
    written: the format is in this module's docstring)."""
    global _monitor_log
    if not MONITOR:
        return
    if _monitor_log is None:
        worker = bentoml.server_context.worker_index or 0
        path = Path(MONITOR_DIR) / MONITOR_NAME / "data" / f"data.{worker}.log"
        _monitor_log = MonitorLog(path, LOG_MAX_BYTES, LOG_FILES, LOG_MAX_DAYS)
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    latency = round(latency_ms, 3)
    lines = []
    for record, (prediction, proba), rid in zip(records, answers, ids, strict=True):
        line = {"timestamp": stamp, "request_id": rid, "latency_ms": latency, **record}
        line["prediction"] = prediction
        if proba is not None:
            line["proba"] = proba
        lines.append((json.dumps(line) + "\n").encode())
    _monitor_log.write(lines)
