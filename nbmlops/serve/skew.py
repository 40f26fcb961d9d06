"""Training/serving skew: replay training rows through the running service and compare
its predictions with the registered model's own, offline.

The rows are the reference profile's sample (stored at promotion). A different answer,
a number further apart than the tolerance, or a service serving another version than
the one named is skew.
"""

from __future__ import annotations

import json
import math
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from nbmlops.promote import integrity
from nbmlops.promote import registry as r
from nbmlops.promote.errors import PromoteError
from nbmlops.serve.build import manifest_of
from nbmlops.serve.errors import ServeError

DEFAULT_URL = "http://127.0.0.1:3000"


@dataclass
class Mismatch:
    row: Any  # the row's index in the training data
    offline: Any
    served: Any


@dataclass
class SkewResult:
    model: r.ModelRef
    url: str
    served_version: str
    rows: int
    tolerance: float
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.served_version == self.model.version


def records(frame: Any) -> list[dict[str, Any]]:
    """JSON-ready rows of ``frame``: native Python values, missing values as null."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({str(k): _native(v) for k, v in row.items()})
    return out


def _native(value: Any) -> Any:
    import pandas as pd

    if value is None or (not isinstance(value, str | bytes) and pd.isna(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def post_json(url: str, body: Any, timeout: float = 60) -> tuple[int, Any]:
    """POST ``body`` as JSON; ``(status, parsed answer)``, also for 4xx/5xx answers."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text.decode(errors="replace")


def sample_rows(model: r.ModelRef, n: int, tracking_uri: str | None = None) -> Any:
    """Up to ``n`` training rows of ``model``, from its reference profile's sample."""
    from nbmlops.capture.profile import sample_frame

    frame = sample_frame(r.load_reference(model, tracking_uri))
    return frame.head(n)


def example_rows(model: r.ModelRef, n: int, tracking_uri: str | None = None) -> Any:
    """Up to ``n`` rows to send: the reference sample, else the model's input example."""
    import pandas as pd

    try:
        return sample_rows(model, n, tracking_uri)
    except PromoteError:
        pass
    try:
        example = r.download_json(f"{model.uri}/input_example.json", tracking_uri)
    except Exception:
        raise ServeError(
            f"model {model} has neither a reference profile nor an input example",
            "log the model with nbmlops.log_model(model, input_example=X_train)",
        ) from None
    if isinstance(example, dict) and "columns" in example and "data" in example:
        frame = pd.DataFrame(example["data"], columns=example["columns"])
    else:
        frame = pd.DataFrame(example)
    return frame.head(n)


def load_offline(model: r.ModelRef, tracking_uri: str | None = None) -> Any:
    """The registered model as a pyfunc, after checking its files against the manifest."""
    import mlflow

    files = manifest_of(model)
    with tempfile.TemporaryDirectory(prefix="nbmlops-offline-") as tmp:
        local = r.download(model.uri, tmp, tracking_uri)
        integrity.verify(local, files, str(model))
        return mlflow.pyfunc.load_model(local)


def check_skew(
    ref: str,
    url: str = DEFAULT_URL,
    sample: int = 200,
    tolerance: float = 1e-9,
    tracking_uri: str | None = None,
    batch: int = 100,
) -> SkewResult:
    """Replay ``sample`` training rows through the service at ``url``; compare."""
    import numpy as np

    if sample < 1:
        raise ServeError(f"--sample {sample}: give at least 1 row", "e.g. --sample 200")
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ServeError(
            f"--tolerance {tolerance}: give a finite number >= 0", "e.g. --tolerance 1e-6"
        )
    model = r.resolve_model(ref, tracking_uri)
    frame = sample_rows(model, sample, tracking_uri)
    offline = np.asarray(load_offline(model, tracking_uri).predict(frame))
    rows = records(frame)
    served: list[Any] = []
    served_version = ""
    endpoint = url.rstrip("/") + "/predict"
    for start in range(0, len(rows), batch):
        try:
            status, answer = post_json(endpoint, {"records": rows[start : start + batch]})
        except (urllib.error.URLError, OSError) as exc:
            raise ServeError(
                f"no answer from the service at {url} ({getattr(exc, 'reason', exc)})",
                f"start it with: nbmlops serve {ref} (or give its address with --url)",
            ) from None
        if status != 200 or not isinstance(answer, dict):
            raise ServeError(
                f"the service at {url} answered {status}: {answer}",
                "is it serving this model? check GET /model",
            )
        served.extend(answer["predictions"])
        served_version = str(answer.get("version", ""))
    result = SkewResult(model, url, served_version, len(rows), tolerance)
    for index, off, got in zip(frame.index, offline.tolist(), served, strict=True):
        if not _same(off, got, tolerance):
            result.mismatches.append(Mismatch(index, off, got))
    return result


def _same(offline: Any, served: Any, tolerance: float) -> bool:
    if isinstance(offline, list) or isinstance(served, list):
        if not (isinstance(offline, list) and isinstance(served, list)):
            return False
        return len(offline) == len(served) and all(
            _same(a, b, tolerance) for a, b in zip(offline, served, strict=True)
        )
    if isinstance(offline, int | float) and isinstance(served, int | float):
        if isinstance(offline, float) and math.isnan(offline):
            return isinstance(served, float) and math.isnan(served)
        return abs(float(offline) - float(served)) <= tolerance
    return bool(offline == served)
