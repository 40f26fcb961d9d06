"""The MLflow layout of a pipeline run, and the thread that writes it.

Layout (the names are in ``capture/schema.py``): one parent run per pipeline run (kind
``pipeline``, run name = notebook stem) holding every parameter, the seed, git commit,
environment hash, data hashes, the metrics of all steps and the executed notebook; one
nested run per step (kind ``step``) holding its code hash, data hashes, metrics, per-cell
durations, the names and digests of the variables it produced, and its own output notebook.

``import mlflow`` and opening a store cost seconds; :class:`Tracker` does all of it on one
background thread, in submission order, while the kernel starts and runs. A locked SQLite
store ("database is locked", several writers) is retried with backoff; so is a write to a
tracking server that does not answer (restarted, briefly unreachable), for
``NBMLOPS_SERVER_PATIENCE`` seconds (default 300) on top of MLflow's own retries of each
request. A run is marked
FINISHED only when everything queued for it before was written (:func:`terminate`).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import random
import re
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from nbmlops.capture import schema
from nbmlops.capture.access import access_error
from nbmlops.exceptions import TrackingError
from nbmlops.project import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")
log = logging.getLogger(__name__)


def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text


_UNREACHABLE = re.compile(
    r"max retries exceeded|connection refused|connectionerror|remotedisconnected"
    r"|connection aborted|connection reset|error code 50[234]",
    re.IGNORECASE,
)


def _is_unreachable(exc: BaseException) -> bool:
    """The tracking server did not answer (MLflow's client already retried the request)."""
    return bool(_UNREACHABLE.search(str(exc)))


def _reason(exc: BaseException) -> str:
    """The root cause in MLflow's long request error: ``[Errno 111] Connection refused``."""
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] [^\"')]+", r"error code \d+", r"Remote\w+", r"Max retries"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip()
    return text[:200]


_READS = ("get_", "search_", "list_", "download_")  # MlflowClient calls that write nothing


class ServerGone(TrackingError):
    """The tracking server stayed unreachable longer than nbmlops waits for it."""


class Tracker:
    """Ordered, asynchronous access to one MLflow store from the driver process."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbmlops-tracker")
        self._client: Future[MlflowClient] = self._pool.submit(self._open)
        self._pending: list[Future[Any]] = []

    def _open(self) -> MlflowClient:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return open_client(self.uri)  # type: ignore[return-value]

    @property
    def client(self) -> MlflowClient:
        return self._client.result()

    def raise_open_error(self) -> None:
        """Raise the error that opening the store ended with, if it already did."""
        if self._client.done():
            error = self._client.exception()
            if error is not None:
                raise error

    def submit(self, fn: Callable[[MlflowClient], T]) -> Future[T]:
        """Queue ``fn(client)``; operations run one at a time, in order.

        Each MLflow call inside ``fn`` is retried on its own when the store is locked;
        ``fn`` itself is not re-run (a re-run could create a run twice).
        """
        future = self._pool.submit(self._run, fn)
        self._pending.append(future)
        return future

    def _run(self, fn: Callable[[MlflowClient], T]) -> T:
        client = self.client
        try:
            return fn(client)
        except BaseException as exc:
            if getattr(client, "failure", None) is None:
                client.failure = exc  # type: ignore[attr-defined]  # later runs end FAILED
            raise

    def flush(self) -> list[BaseException]:
        """Wait for every queued operation; return the errors they raised."""
        errors = []
        for future in self._pending:
            exc = future.exception()
            if exc is not None:
                errors.append(exc)
        self._pending.clear()
        return errors

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before a kernel starts, when a tracking server does not answer.

    MLflow's own client retries an unreachable server for minutes; one request to the
    server's ``/health`` tells at once.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    from nbmlops.project import without_credentials

    health = without_credentials(uri).rstrip("/") + "/health"  # /health asks for none
    try:
        urllib.request.urlopen(health, timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered: a server (maybe behind a proxy without /health)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(uri, f"no answer from the tracking server ({reason})") from exc


class RetryingClient:
    """An ``MlflowClient`` whose every call is retried while SQLite says "database is locked"
    or a tracking server does not answer.

    A locked write is rolled back, so retrying one call never records anything twice. Once
    the server was given up on (:class:`ServerGone`), later calls fail at once instead of
    waiting again. ``failure`` is the first error of a queued operation (see ``Tracker``).
    """

    def __init__(self, client: MlflowClient, uri: str) -> None:
        self._client = client
        self._uri = uri
        self.failure: BaseException | None = None
        self._gone: ServerGone | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        write = not name.startswith(_READS)
        return lambda *args, **kwargs: self._call(lambda: attr(*args, **kwargs), write, name)

    def _call(self, fn: Callable[[], T], write: bool, name: str = "") -> T:
        if self._gone is not None:
            raise self._gone
        try:
            return retry(fn, self._uri, patient=write)
        except ServerGone as exc:
            self._gone = exc
            raise
        except TrackingError:
            raise
        except Exception as exc:  # a 401 or 403 of an authenticating server, by name
            refused = access_error(exc, self._uri, name)
            if refused is None and _is_unreachable(exc):
                refused = TrackingError(
                    self._uri,
                    f"no answer from the tracking server ({_reason(exc)})",
                    "start it (nbmlops server start) or correct --tracking-uri",
                )
            if refused is None:
                raise
            raise refused from None


def open_client(uri: str) -> RetryingClient:
    """A retrying ``MlflowClient`` on ``uri`` (tracking and registry), opened under the
    creation lock: every process that touches a store (a run, a Jupyter server listing runs,
    a widget) may be the one creating it. Fails fast on an unreachable store."""
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..."
        logging.getLogger(name).setLevel(logging.WARNING)
    with creation_lock(uri):
        client = RetryingClient(retry(lambda: MlflowClient(uri, registry_uri=uri), uri), uri)
        client.search_experiments(max_results=1)
    return client


@contextlib.contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """One process at a time opens an SQLite store for the first time: MLflow creates and
    migrates the schema on first open, and two processes doing it at once fail with
    "table ... already exists". A store that exists is opened under the lock too (a flock,
    microseconds), since it may be one another process is still creating."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def retry(fn: Callable[[], T], uri: str, attempts: int = 30, patient: bool = True) -> T:
    """Run ``fn``, retrying "database is locked" (``attempts`` times) and, when ``patient``
    (writes), an unanswering tracking server (for ``NBMLOPS_SERVER_PATIENCE`` seconds), with
    jittered backoff. A read gets MLflow's own retries only: a user waiting for a listing
    is better told at once that the server is away."""
    delay = 0.05
    started = time.monotonic()
    server = patient and uri.startswith(("http://", "https://"))
    locked = 0
    warned = False
    while True:
        try:
            return fn()
        except Exception as exc:
            if _is_locked(exc):
                locked += 1
                if locked == attempts:
                    raise TrackingError(uri, f"still locked after {attempts} tries: {exc}") from exc
            elif server and _is_unreachable(exc):
                waited = time.monotonic() - started
                if waited >= server_patience():
                    raise ServerGone(
                        uri,
                        f"the tracking server did not answer for {waited:.0f} s "
                        f"({_reason(exc)}); is it running? (nbmlops server start)",
                    ) from exc
                if not warned:
                    warned = True
                    log.warning(
                        "tracking server %s not answering (%s); retrying for up to %.0f s",
                        redact(uri),
                        _reason(exc),
                        server_patience(),
                    )
            else:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0 if not server else 15.0)


def server_patience() -> float:
    """Seconds nbmlops keeps retrying a write to a tracking server that does not answer."""
    try:
        return float(os.environ.get("NBMLOPS_SERVER_PATIENCE", "300"))
    except ValueError:
        return 300.0


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except Exception:
        exp = client.get_experiment_by_name(name)  # created by a concurrent run
        if exp is None:
            raise
        return str(exp.experiment_id)


def create_run(
    client: MlflowClient,
    experiment: str,
    name: str,
    tags: dict[str, str],
    params: dict[str, Any] | None = None,
) -> str:
    from mlflow.entities import Param

    driver = schema.driver_tags(os.getpid(), socket.gethostname(), pid_namespace())
    run = client.create_run(
        experiment, run_name=name, tags={schema.MLFLOW_USER: _user(), **driver, **tags}
    )
    if params:
        client.log_batch(
            run.info.run_id,
            params=[Param(k, _param_text(v)) for k, v in sorted(params.items())],
        )
    return str(run.info.run_id)


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 6000 else text[:5990] + "...(cut)"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def log_metrics(client: MlflowClient, run_ids: Iterable[str], events: list[dict[str, Any]]) -> None:
    from mlflow.entities import Metric

    metrics = [
        Metric(e["name"], float(e["value"]), int(e["time"] * 1000), int(e.get("index") or 0))
        for e in events
    ]
    for run_id in run_ids:
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])


def log_params(client: MlflowClient, run_ids: Iterable[str], params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    for run_id in run_ids:
        client.log_batch(run_id, params=[Param(k, _param_text(v)) for k, v in params.items()])


def log_tags(client: MlflowClient, run_ids: Iterable[str], tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    for run_id in run_ids:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_datasets(
    client: MlflowClient, run_ids: Iterable[str], datasets: list[dict[str, Any]]
) -> None:
    """Log each dataset as an MLflow dataset input whose digest is nbmlops' full hash."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    inputs = []
    for d in datasets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if d.get("path"):
                source = resolve_dataset_source(d["path"])
            else:
                source = CodeDatasetSource(
                    tags={schema.DATASET_STEP: d.get("step") or "", "variable": d["name"]}
                )
        dataset = MetaDataset(source=source, name=d["name"], digest=d["digest"])  # type: ignore[abstract]
        context = "file" if d.get("path") else "step-output"
        inputs.append(
            DatasetInput(
                dataset._to_mlflow_entity(), tags=[InputTag(schema.MLFLOW_DATA_CONTEXT, context)]
            )
        )
    for run_id in run_ids:
        client.log_inputs(run_id, datasets=inputs)


def log_json(client: MlflowClient, run_id: str, data: Any, artifact_file: str) -> None:
    client.log_text(run_id, json.dumps(data, indent=2, default=str), artifact_file)


def log_file(
    client: MlflowClient, run_id: str, path: Path, artifact_path: str | None = None
) -> None:
    client.log_artifact(run_id, str(path), artifact_path)


def terminate(client: MlflowClient, run_id: str, status: str) -> None:
    """End a run with ``status``, but never FINISHED when part of its record is missing.

    Called in a ``finally`` after the run's writes: when one of them raised (the exception
    is still propagating), or an earlier queued write of this pipeline run failed
    (``client.failure``), the run is FAILED, with the reason in its error tag.
    """
    failure = sys.exc_info()[1] or getattr(client, "failure", None)
    if status == "FINISHED" and failure is not None:
        status = "FAILED"
        with contextlib.suppress(Exception):
            client.set_tag(run_id, schema.ERROR, f"not every record was written: {failure}"[:4000])
    client.set_terminated(run_id, status=status)
