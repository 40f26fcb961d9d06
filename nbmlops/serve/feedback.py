"""``POST /feedback``: ground truth for logged predictions (copied into each Bento beside
the service as ``nbmlops_feedback.py``; like the service it cannot import nbmlops).

Body: ``{"request_id": "...", "label": ...}`` or a list of them (at most 10,000). Each
label is appended as one JSON line ``{"timestamp", "request_id", "label"}`` to
``<monitor dir>/<monitor name>/feedback/feedback.<worker>.log``, the prediction logs'
sibling folder, rotated as they are (the service hands :func:`route` its ``MonitorLog``).
The body's size, Content-Type and nesting are checked before it reaches here (the
service's ``PredictGuard``). The answer counts what was accepted. Whether an id was predicted is not
checked here: another worker (or an earlier, rotated log) may hold it, so unknown ids are
reported when labels are joined with the logs (``nbmlops monitor feedback`` and
``monitor performance``). A malformed body answers 400 naming the item and the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_ITEMS = 10000
MAX_ID_LENGTH = 128
FIELDS = frozenset({"request_id", "label"})


def problems(body: Any) -> list[str]:
    """Every problem of a feedback body (at most 20), each naming the item and field."""
    items = body if isinstance(body, list) else [body]
    if not items:
        return ['empty list: send at least one {"request_id": ..., "label": ...}']
    if len(items) > MAX_ITEMS:
        return [f"{len(items)} items; at most {MAX_ITEMS} per request"]
    found: list[str] = []
    for i, item in enumerate(items):
        where = f"[{i}]" if isinstance(body, list) else "body"
        if not isinstance(item, dict):
            found.append(f'{where}: expected an object {{"request_id": ..., "label": ...}}')
            continue
        found += [f"{where}: missing field {f!r}" for f in sorted(FIELDS - item.keys())]
        found += [
            f"{where}: unknown field {f!r} (a label has 'request_id' and 'label')"
            for f in sorted(item.keys() - FIELDS)
        ]
        rid = item.get("request_id")
        if "request_id" in item and (not isinstance(rid, str) or not rid):
            found.append(f"{where}: 'request_id' must be a non-empty string (the id /predict gave)")
        elif isinstance(rid, str) and len(rid) > MAX_ID_LENGTH:
            found.append(f"{where}: 'request_id' has {len(rid)} characters; at most 128")
        label = item.get("label")
        if "label" in item and (label is None or isinstance(label, dict | list)):
            found.append(f"{where}: 'label' must be a number, a string or true/false")
        if len(found) >= 20:
            break
    return found[:20]


def lines(body: Any) -> list[bytes]:
    """The log lines of a valid body, stamped now."""
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    items = body if isinstance(body, list) else [body]
    return [
        (
            json.dumps({"timestamp": stamp, "request_id": i["request_id"], "label": i["label"]})
            + "\n"
        ).encode()
        for i in items
    ]


class Log(Protocol):
    """An append-only log file (the service's ``MonitorLog``: rotated by size and age)."""

    def write(self, lines: list[bytes]) -> None: ...


def route(
    monitor_dir: str, monitor_name: str, enabled: bool, open_log: Callable[[Path], Log]
) -> Route:
    """The ``POST /feedback`` route writing under ``monitor_dir/monitor_name/feedback``
    through the log ``open_log`` opens (one per worker, on first use)."""
    folder = Path(monitor_dir) / monitor_name / "feedback"
    logs: dict[int, Log] = {}

    def append(data: list[bytes]) -> None:
        import bentoml

        worker = bentoml.server_context.worker_index or 0
        if worker not in logs:
            logs[worker] = open_log(folder / f"feedback.{worker}.log")
        logs[worker].write(data)

    async def feedback(request: Request) -> JSONResponse:
        if not enabled:
            return _error(503, "monitoring is off (NBMLOPS_MONITOR=0): labels are not kept")
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _error(
                400, 'the body is not JSON: send {"request_id": "...", "label": ...} or a list'
            )
        found = problems(body)
        if found:
            return JSONResponse({"error": "; ".join(found[:5]), "problems": found}, 400)
        written = lines(body)
        append(written)
        return JSONResponse({"accepted": len(written)})

    return Route("/feedback", feedback, methods=["POST"])


def _error(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error, "problems": [error]}, status)
