"""The BentoML service nbmlops builds for a registered model (copied into each Bento).

Self-contained on purpose: the Bento needs bentoml, mlflow, numpy, pandas and the
model's own requirements, not nbmlops. Its settings come from ``nbmlops_service.json``
beside it (written by ``nbmlops build``): the BentoML model tag, the registry name and
version, the lineage, the labels (their names are nbmlops', so they are read from here,
never spelled), the request schema (from the MLflow signature) and the sha256 of every
model file.

One service, ``Api``, with the model loaded in its own process: ``POST /predict`` checks
the request (``PredictGuard``: limits before parsing, strict JSON, then every field),
hands the records to a micro-batcher (``Batcher``: a request that finds the model idle is
predicted at once; requests arriving while it is busy are predicted together next, at
most ``max_batch_size`` records per ``predict`` call, a large request split into such
batches), and answers; the monitor log is written after the answer, on a thread of its
own. ``GET /model`` shows the lineage.

Environment (``nbmlops serve`` sets it from its options and ``[tool.nbmlops.serve]``):
``NBMLOPS_WORKERS`` (processes, default 1); ``NBMLOPS_MAX_BODY_BYTES`` (default 16 MiB),
``NBMLOPS_MAX_RECORDS`` (default 10,000), ``NBMLOPS_MAX_DEPTH`` (default 8) bound a
request; ``NBMLOPS_TOKEN_ENV`` names the variable holding the bearer token every route
but ``/livez``, ``/readyz`` and ``/healthz`` then requires; ``NBMLOPS_MONITOR=0`` turns
monitoring off; ``NBMLOPS_MONITOR_DIR`` is where the monitor logs go (default
``./monitoring``); ``NBMLOPS_MONITOR_MAX_BYTES``, ``NBMLOPS_MONITOR_FILES`` and
``NBMLOPS_MONITOR_MAX_DAYS`` bound them and the feedback logs (each worker keeps at most
that many files of that size, none older than that many days).

The monitor log: JSON lines, one per predicted record, under
``<monitor dir>/<monitor name>/data/data.<worker>.log`` (rotated to ``.log.1``, ``.log.2``...):
``timestamp`` (ISO 8601 UTC), ``request_id`` (the caller's, else generated), ``latency_ms``
(the request's), the features, ``prediction`` and, for a classifier with
``predict_proba``, ``proba`` (``{"<class>": p}``). ``nbmlops.serve.monitoring`` reads it.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import hmac
import json
import logging
import math
import os
import queue
import re
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
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
WORKERS = int(os.environ.get("NBMLOPS_WORKERS", "1"))
MAX_BODY_BYTES = int(os.environ.get("NBMLOPS_MAX_BODY_BYTES", 16 * 1024 * 1024))
MAX_RECORDS = int(os.environ.get("NBMLOPS_MAX_RECORDS", CONFIG.get("max_records", 10000)))
MAX_DEPTH = int(os.environ.get("NBMLOPS_MAX_DEPTH", 8))
MAX_BATCH_SIZE = int(CONFIG.get("max_batch_size", 64))
MAX_ID_LENGTH = 128
LOG_MAX_BYTES = int(os.environ.get("NBMLOPS_MONITOR_MAX_BYTES", 10_000_000))
LOG_FILES = int(os.environ.get("NBMLOPS_MONITOR_FILES", 10))
LOG_MAX_DAYS = float(os.environ.get("NBMLOPS_MONITOR_MAX_DAYS", 7))
# Routes an orchestrator probes: open even when a token is required.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz"})
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT64_MAX = float(np.finfo(np.float64).max)
LIMITS = "[tool.nbmlops.serve]"  # where a user raises a limit

logger = logging.getLogger("nbmlops.service")


def _token() -> bytes | None:
    """The bearer token, from the variable ``NBMLOPS_TOKEN_ENV`` names (never logged)."""
    name = os.environ.get("NBMLOPS_TOKEN_ENV")
    if not name:
        return None
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(
            f"NBMLOPS_TOKEN_ENV names {name}, which is not set or empty: set {name} to the "
            "service's bearer token, or unset NBMLOPS_TOKEN_ENV"
        )
    return value.encode()


TOKEN = _token()

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


# The largest magnitude a number column takes: float32's for `float` columns; for `double`
# columns the model's own (``probe_number_limit``: tree models compute in float32).
NUMBER_LIMITS = {"float": FLOAT32_MAX, "double": FLOAT64_MAX}


def _check_value(column: str, value: Any, where: str) -> str | None:
    kind = TYPES[column]
    if value is None:
        return (
            None
            if column not in REQUIRED
            else f"{where}: {column!r} is null; expected {_TYPE_WORDS[kind]}"
        )
    if isinstance(value, NonJsonNumber):
        return (
            f"{where}: {column!r} is {value.text}, which is not a JSON number; send a finite number"
        )
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**64:
        digits = len(str(abs(value)))
        return f"{where}: {column!r} is an integer of {digits} digits; beyond any model's range"
    wrong = f"{where}: {column!r} is {json.dumps(value)[:40]}; expected {_TYPE_WORDS[kind]}"
    if kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return wrong
        if not math.isfinite(value):
            return f"{where}: {column!r} is {value}; expected a finite number"
        if abs(value) > NUMBER_LIMITS[kind]:
            return (
                f"{where}: {column!r} is {value:g}, beyond the model's range "
                f"(at most {NUMBER_LIMITS[kind]:.7g} in magnitude)"
            )
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
        except (ValueError, TypeError, OverflowError):
            return wrong
        return None
    return None


def validate(records: Any) -> list[str]:
    """Every problem of the request's records, each naming the record and the field."""
    if not isinstance(records, list):
        return ['records: expected a list of objects, {"records": [{column: value, ...}]}']
    if not records:
        return ["records: empty batch; send at least one record"]
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
            f"{where}: unknown column {ascii(c)} (the model has no such input)"
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


# Every column a float of one dtype (a null is NaN): the frame is built as one array.
_FLOAT_DTYPES = {_DTYPES[TYPES[c]] for c in COLUMNS}
_ONE_FLOAT = _FLOAT_DTYPES.pop() if _FLOAT_DTYPES in ({"float64"}, {"float32"}) else None


def to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Checked records as the frame the signature describes (its columns and dtypes)."""
    if _ONE_FLOAT is not None:
        rows = [[record.get(c) for c in COLUMNS] for record in records]
        return pd.DataFrame(np.array(rows, dtype=_ONE_FLOAT), columns=COLUMNS)
    columns: dict[str, Any] = {}
    for column in COLUMNS:
        values = [record.get(column) for record in records]
        dtype = _DTYPES[TYPES[column]]
        if dtype == "datetime64[ns]":
            columns[column] = pd.to_datetime(pd.Series(values, dtype=object))
        elif None in values and dtype.startswith(("int", "bool")):
            columns[column] = pd.Series(values)  # as pandas infers it: NaN for a null
        else:
            columns[column] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(columns, columns=COLUMNS)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class BadRequest(Exception):
    """A request refused with ``status`` and a message naming the field and the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class NonJsonNumber:
    """``NaN``, ``Infinity`` or ``-Infinity`` in a body (Python's json accepts them; JSON
    does not): kept as this marker so that the check names the field it is in."""

    text: str


# A JSON string (possessive: linear time on any input), and the bytes that are not brackets.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENS = np.frombuffer(b"[{", dtype=np.uint8)


def scan_brackets(body: bytes) -> tuple[int, int]:
    """``(deepest nesting, objects at the depth of a record)`` of a JSON body, counted on the
    raw bytes (brackets inside strings left out) before anything is parsed."""
    brackets = np.frombuffer(_STRING.sub(b'""', body).translate(None, _NOT_BRACKETS), np.uint8)
    if not brackets.size:
        return 0, 0
    opens = np.isin(brackets, _OPENS)
    depth = np.cumsum(np.where(opens, 1, -1), dtype=np.int64)
    # {"records": [{...}]}: a record opens at depth 3.
    records = int(np.count_nonzero((depth == 3) & (brackets == ord("{"))))
    return int(depth.max()), records


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(
                    400, f"duplicate key {ascii(key)} in an object of the body; give each key once"
                )
            seen.add(key)
    return obj


def parse_body(body: bytes) -> dict[str, Any]:
    """The checked JSON body of ``POST /predict``: limits first (size, nesting, records, on
    the raw bytes), then a strict parse (duplicate keys refused, ``NaN``/``Infinity``
    marked), then its shape (an object of ``records`` and ``request_ids``)."""
    if not body.strip():
        raise BadRequest(400, 'empty body: send {"records": [{column: value, ...}]}')
    depth, count = scan_brackets(body)
    if depth > MAX_DEPTH:
        raise BadRequest(
            400,
            f"the body nests {depth} levels deep; at most {MAX_DEPTH} "
            '({"records": [{column: value}]} nests 3)',
        )
    if count > MAX_RECORDS:
        raise BadRequest(
            413,
            f"records: {count} records; at most {MAX_RECORDS} per request: split them "
            f"(or raise max_records in {LIMITS})",
        )
    try:
        data = json.loads(body, object_pairs_hook=_unique_keys, parse_constant=NonJsonNumber)
    except RecursionError:
        raise BadRequest(400, "the body nests too deep to parse") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(
            400, f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except ValueError as exc:  # json.JSONDecodeError, and integers of over 4300 digits
        raise BadRequest(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(
            400, f'the body is a JSON {_json_kind(data)}; send an object: {{"records": [...]}}'
        )
    extra = data.keys() - BODY_FIELDS
    if extra:
        names = ", ".join(ascii(k) for k in sorted(extra))
        raise BadRequest(400, f"unknown field {names}: the body has 'records' (and 'request_ids')")
    if "records" not in data:
        raise BadRequest(400, "missing field 'records': send {\"records\": [{column: value, ...}]}")
    records = data["records"]
    if isinstance(records, list) and len(records) > MAX_RECORDS:
        raise BadRequest(
            413,
            f"records: {len(records)} records; at most {MAX_RECORDS} per request: split them "
            f"(or raise max_records in {LIMITS})",
        )
    return data


def _json_kind(value: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


BODY_FIELDS = frozenset({"records", "request_ids"})
GUARDED_PATHS = frozenset({"/predict", "/feedback"})  # bodies PredictGuard checks


class PredictGuard:
    """ASGI middleware: the bearer token (when one is set) on every route but the probes,
    and every check of ``POST /predict`` before BentoML sees the request (of ``POST
    /feedback`` the same Content-Type, size and nesting limits).

    In order, each refusal a 4xx naming the problem: the token (401); the Content-Type
    (415); the Content-Length, then the streamed size (413, before the body is read
    whole); then :func:`parse_body` (nesting and records counted on the raw bytes, a
    strict parse, the body's fields) and every record's and id's fields (400, 413).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if TOKEN is not None and scope["path"] not in OPEN_PATHS and not _authorized(headers):
            await _reply(
                send,
                401,
                "missing or wrong bearer token: send the header Authorization: Bearer <token> "
                "(the service's token variable)",
                [(b"www-authenticate", b'Bearer realm="nbmlops"')],
            )
            return
        if scope["path"] not in GUARDED_PATHS or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        check = check_body if scope["path"] == "/predict" else check_feedback_body
        try:
            body = await _read_body(headers, receive)
            if body is None:
                return  # the client went away
            # A large body is checked on a thread: the requests behind it keep being served.
            if len(body) > 65536:
                problems = await asyncio.to_thread(check, body)
            else:
                problems = check(body)
        except BadRequest as exc:
            await _reply(send, exc.status, exc.message)
            return
        if problems:
            await _reply(send, 400, "; ".join(problems[:5]), problems=problems)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def check_feedback_body(body: bytes) -> list[str]:
    """The limits of a ``POST /feedback`` body, on the raw bytes before it is parsed (its
    fields are checked by the route: ``nbmlops_feedback.problems``)."""
    depth, _ = scan_brackets(body)
    if depth > MAX_DEPTH:
        raise BadRequest(
            400,
            f"the body nests {depth} levels deep; at most {MAX_DEPTH} "
            '([{"request_id": ..., "label": ...}] nests 2)',
        )
    return []


def check_body(body: bytes) -> list[str]:
    """The problems of a body :func:`parse_body` accepts: its records' and ids' fields."""
    data = parse_body(body)
    records = data["records"]
    problems = validate(records)
    return problems or validate_ids(data.get("request_ids"), len(records))


def _authorized(headers: dict[bytes, bytes]) -> bool:
    scheme, _, credential = headers.get(b"authorization", b"").partition(b" ")
    # Compared in constant time whatever the scheme, so timing tells nothing of the token.
    same = hmac.compare_digest(credential.strip(), TOKEN or b"")
    return same and scheme.lower() == b"bearer"


async def _read_body(headers: dict[bytes, bytes], receive: Any) -> bytes | None:
    """The request body, refused (413) as soon as it is known to exceed the limit."""
    media = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
    if media not in (b"application/json", b""):
        raise BadRequest(
            415,
            f"Content-Type {media.decode(errors='replace')!r}: send JSON "
            '(Content-Type: application/json) like {"records": [{...}]}',
        )
    too_big = (
        f"body over {MAX_BODY_BYTES} bytes: send fewer records per request "
        f"(or raise max_body_bytes in {LIMITS})"
    )
    declared = headers.get(b"content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest(400, "Content-Length is not a number of bytes")
        if int(declared) > MAX_BODY_BYTES:
            raise BadRequest(413, too_big)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(413, too_big)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _reply(
    send: Any,
    status: int,
    error: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    problems: list[str] | None = None,
) -> None:
    payload = json.dumps({"error": error, "problems": problems or [error]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class PredictFailed(Exception):
    """The model raised on a request's records (its message is the model's)."""


@dataclass
class _Pending:
    """A request waiting for predictions: its records, the next to send, the answers."""

    records: list[dict[str, Any]]
    future: asyncio.Future[list[Any]]
    sent: int = 0
    answers: list[Any] = field(default_factory=list)


class Batcher:
    """Groups concurrent requests into ``predict`` calls of at most ``max_batch_size``
    records, run one at a time on a thread of their own.

    A request that finds the model idle is predicted at once (a lone caller waits for no
    batch window); the requests that arrive while a ``predict`` runs are predicted together
    next. A large request is split: each batch takes at most ``max_batch_size`` of its
    records, and it goes back to the end of the queue, so the requests that arrived after
    it are not held up until it is done. When a batch fails, its requests are predicted
    again one by one, so that only the request the model refused gets the error.
    """

    def __init__(
        self,
        predict: Callable[[list[dict[str, Any]]], list[Any]],
        max_batch_size: int,
        observe: Callable[[int], None] = lambda size: None,
    ):
        self.predict, self.max_batch_size, self.observe = predict, max(1, max_batch_size), observe
        self.queue: deque[_Pending] = deque()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="nbmlops-predict")
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, records: list[dict[str, Any]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        pending = _Pending(records, loop.create_future())
        self.queue.append(pending)
        if self.task is None:
            self.task = loop.create_task(self._drain())
        return await pending.future

    def _take(self) -> list[tuple[_Pending, list[dict[str, Any]]]]:
        """The next batch: ``(request, its records in this batch)``, in queue order."""
        parts: list[tuple[_Pending, list[dict[str, Any]]]] = []
        room, again = self.max_batch_size, []
        while self.queue and room:
            pending = self.queue.popleft()
            if pending.future.done():  # cancelled: the caller went away
                continue
            part = pending.records[pending.sent : pending.sent + room]
            pending.sent += len(part)
            room -= len(part)
            parts.append((pending, part))
            if pending.sent < len(pending.records):
                again.append(pending)
        self.queue.extend(again)
        return parts

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.queue:
                parts = self._take()
                if not parts:
                    continue
                batch = [record for _, part in parts for record in part]
                self.observe(len(batch))
                try:
                    answers = await loop.run_in_executor(self.executor, self.predict, batch)
                except Exception:
                    await self._one_by_one(parts)
                    continue
                start = 0
                for pending, part in parts:
                    pending.answers += answers[start : start + len(part)]
                    start += len(part)
                    if len(pending.answers) == len(pending.records) and not pending.future.done():
                        pending.future.set_result(pending.answers)
        finally:
            self.task = None

    async def _one_by_one(self, parts: list[tuple[_Pending, list[dict[str, Any]]]]) -> None:
        loop = asyncio.get_running_loop()
        for pending, part in parts:
            if pending.future.done():
                continue
            try:
                pending.answers += await loop.run_in_executor(self.executor, self.predict, part)
            except Exception as exc:
                pending.future.set_exception(PredictFailed(f"{type(exc).__name__}: {exc}"[:300]))
                continue
            if len(pending.answers) == len(pending.records):
                pending.future.set_result(pending.answers)


class Monitor:
    """Writes the monitor log on a thread of its own, after the answers are sent: each
    turn takes every request queued (up to 10,000 records), computes their class
    probabilities in one call, and appends their lines. The queue is bounded: when it is
    full, requests wait for room (monitoring slows the service rather than drop records
    or fill memory)."""

    def __init__(self, classifier: Any | None) -> None:
        self.classifier = classifier
        self.queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=1000)
        self.thread = threading.Thread(target=self._run, name="nbmlops-monitor", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    async def log(
        self, records: list[dict[str, Any]], answers: list[Any], ids: list[str], ms: float
    ) -> None:
        """Queue a request's lines: its records, ``(prediction, proba or None)`` of each,
        its ids and latency."""
        item = (records, answers, ids, ms)
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            await asyncio.get_running_loop().run_in_executor(None, self.queue.put, item)

    def close(self) -> None:
        """Write what is queued, then stop (at shutdown or exit; once)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            items, size = [first], len(first[0])
            while size < 10_000:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._write(items)
                    return
                items.append(item)
                size += len(item[0])
            self._write(items)

    def _write(self, items: list[tuple[Any, ...]]) -> None:
        try:
            records = [record for item in items for record in item[0]]
            probas = [proba for item in items for _, proba in item[1]]
            if self.classifier is not None:
                probas = list(_probabilities(self.classifier, to_frame(records)))
            start = 0
            for recs, answers, ids, ms in items:
                predictions = [prediction for prediction, _ in answers]
                log_records(recs, predictions, probas[start : start + len(recs)], ids, ms)
                start += len(recs)
        except Exception:  # a monitoring failure must not stop the service
            logger.exception("nbmlops: could not write the monitor log")


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
    return _probability_rows(classifier, np.asarray(classifier.predict_proba(frame), dtype=float))


def _probability_rows(classifier: Any, proba: np.ndarray[Any, Any]) -> list[dict[str, float]]:
    labels = [str(_jsonable(c)) for c in classifier.classes_]
    return [dict(zip(labels, row, strict=True)) for row in proba.tolist()]


def _predicts_argmax(classifier: Any) -> bool:
    """Whether the classifier's ``predict`` is the class of highest ``predict_proba``
    (scikit-learn's forests and trees of one output): then one ``predict_proba`` call
    gives both."""
    try:
        from sklearn.ensemble._forest import ForestClassifier
        from sklearn.tree import BaseDecisionTree, DecisionTreeClassifier
    except ImportError:
        return False
    kind = type(classifier)
    exact = (issubclass(kind, ForestClassifier) and kind.predict is ForestClassifier.predict) or (
        issubclass(kind, DecisionTreeClassifier) and kind.predict is BaseDecisionTree.predict
    )
    return exact and getattr(classifier, "n_outputs_", 0) == 1


def _sklearn_model(model: Any) -> Any | None:
    """The scikit-learn estimator of an MLflow sklearn model (its ``predict`` is what the
    pyfunc calls, without the signature enforcement the service has done), else None."""
    if "sklearn" not in getattr(model.metadata, "flavors", {}):
        return None
    try:
        raw = model.get_raw_model()
    except (NotImplementedError, AttributeError):
        return None
    return raw if callable(getattr(raw, "predict", None)) else None


def probe_number_limit(predict: Callable[[list[dict[str, Any]]], list[Any]]) -> float:
    """The largest magnitude the model takes in a ``double`` column: float64's if it
    predicts a record of zeros with 1e308 in those columns, else float32's (tree models
    compute in float32 and raise on larger values). Without a numeric schema, float32's."""
    zeros = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False}
    if any(TYPES[c] not in zeros for c in COLUMNS) or "double" not in TYPES.values():
        return FLOAT32_MAX
    record = {c: zeros[TYPES[c]] for c in COLUMNS}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's overflow in the cast to float32
            predict([record])
            predict([{c: 1e308 if TYPES[c] == "double" else v for c, v in record.items()}])
    except Exception:
        return FLOAT32_MAX
    return FLOAT64_MAX


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


def _docs(request: Request) -> RedirectResponse:
    """BentoML serves the OpenAPI page at ``/`` (its spec at ``/docs.json``)."""
    return RedirectResponse("/", status_code=307)


_info_app = Starlette(
    routes=[
        Route("/model", _model_info, methods=["GET"]),
        Route("/docs", _docs, methods=["GET"]),
        feedback.route(
            MONITOR_DIR,
            MONITOR_NAME,
            MONITOR,
            lambda path: MonitorLog(path, LOG_MAX_BYTES, LOG_FILES, LOG_MAX_DAYS),
        ),
    ]
)


@bentoml.asgi_app(_info_app, path="/")
@bentoml.service(
    name=CONFIG["service_name"],
    workers=WORKERS,
    traffic={"timeout": 60},
    logging={"access": {"enabled": ACCESS_LOG}},
    labels=CONFIG["labels"],
)
class Api:
    """``POST /predict``: checked records in, predictions out; ``GET /model``: lineage."""

    bento_model = BENTO_MODEL

    def __init__(self) -> None:
        verify_model_files(Path(self.bento_model.path_of("mlflow_model")), CONFIG["files"], LABEL)
        self.model = bentoml.mlflow.load_model(self.bento_model)
        self.estimator = _sklearn_model(self.model) or self.model
        classifier = _classifier(self.model)
        # A forest's predict_proba gives its predictions too: the model runs once.
        self.argmax = (
            classifier if classifier is not None and _predicts_argmax(classifier) else None
        )
        NUMBER_LIMITS["double"] = probe_number_limit(self.predict_records)
        # Created in the worker: prometheus_client must see BentoML's multiprocess folder.
        from prometheus_client import Histogram

        sizes = Histogram(
            "nbmlops_batch_size",
            "Records per predict call of the service's micro-batcher",
            buckets=[2**i for i in range(max(1, MAX_BATCH_SIZE).bit_length() + 1)],
        )
        self.batcher = Batcher(self.predict_records, MAX_BATCH_SIZE, sizes.observe)
        later = classifier if self.argmax is None else None  # probabilities still to compute
        self.monitor = Monitor(later) if MONITOR else None

    @bentoml.on_shutdown  # type: ignore[untyped-decorator]
    def close(self) -> None:
        """The monitor log's last lines are written before the worker stops."""
        if self.monitor is not None:
            self.monitor.close()

    def predict_records(self, records: list[dict[str, Any]]) -> list[Any]:
        """``(prediction, class probabilities or None)`` of each record (checked already)."""
        frame = to_frame(records)
        if self.argmax is not None:
            proba = np.asarray(self.argmax.predict_proba(frame), dtype=float)
            labels = self.argmax.classes_.take(proba.argmax(axis=1))
            probas: list[Any] = _probability_rows(self.argmax, proba)
        else:
            result = self.estimator.predict(frame)
            if isinstance(result, pd.DataFrame):
                result = result.to_numpy() if result.shape[1] > 1 else result.iloc[:, 0].to_numpy()
            labels, probas = np.asarray(result), [None] * len(frame)
        return [(_jsonable(p), q) for p, q in zip(labels, probas, strict=True)]

    # _bentoml_sdk, where bentoml.api lives, ships no type information (no py.typed).
    @bentoml.api(route="/predict")  # type: ignore[untyped-decorator]
    async def predict(
        self, records: list[Any] = RECORDS_FIELD, request_ids: Any = IDS_FIELD
    ) -> dict[str, Any]:
        # PredictGuard checked the body and every field before BentoML parsed it.
        started = time.perf_counter()
        ids = request_ids or [uuid.uuid4().hex for _ in records]
        try:
            answers = await self.batcher(records)
        except PredictFailed as exc:
            message = f"records: the model could not predict them ({exc})"
            return JSONResponse(  # type: ignore[return-value]
                {"error": message, "problems": [message]}, status_code=400
            )
        predictions = [prediction for prediction, _ in answers]
        if self.monitor is not None:
            ms = (time.perf_counter() - started) * 1000
            await self.monitor.log(records, answers, ids, ms)
        return {
            "predictions": predictions,
            "request_ids": ids,
            "model": CONFIG["name"],
            "version": str(CONFIG["version"]),
        }


Api.add_asgi_middleware(PredictGuard)  # type: ignore[attr-defined]


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
    records: list[dict[str, Any]],
    predictions: list[Any],
    probas: list[dict[str, float] | None],
    ids: list[str],
    latency_ms: float,
) -> None:
    """One JSON line per predicted record to the monitor log (the one place records are
    written: the format is in this module's docstring)."""
    global _monitor_log
    if _monitor_log is None:
        worker = bentoml.server_context.worker_index or 0
        path = Path(MONITOR_DIR) / MONITOR_NAME / "data" / f"data.{worker}.log"
        _monitor_log = MonitorLog(path, LOG_MAX_BYTES, LOG_FILES, LOG_MAX_DAYS)
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    latency = round(latency_ms, 3)
    lines = []
    for record, prediction, proba, rid in zip(records, predictions, probas, ids, strict=True):
        line = {"timestamp": stamp, "request_id": rid, "latency_ms": latency, **record}
        line["prediction"] = prediction
        if proba is not None:
            line["proba"] = proba
        lines.append((json.dumps(line) + "\n").encode())
    _monitor_log.write(lines)
