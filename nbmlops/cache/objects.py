"""Step outputs on disk: sealed with a key the cache does not hold, in formats that load
without running code wherever the value allows it.

* **The key.** Every cache entry and every object it names carries a keyed BLAKE3 digest
  (a MAC). The key is the user's own, created at first use in
  ``$XDG_CONFIG_HOME/nbmlops/cache.key`` (default ``~/.config``, mode 0600), or a team's,
  from ``NBMLOPS_CACHE_KEY`` for a cache several people share. Someone who can write to the
  cache but does not hold the key cannot make an entry or an object that verifies: a
  forged entry, a re-sealed one or a planted object is refused and the step recomputed.
* **The formats.** DataFrames and Series of numbers, booleans and dates are Arrow IPC
  files, numpy arrays without Python objects ``.npy`` (``allow_pickle=False``); loading
  either runs no code. Anything else is a cloudpickle, unpickled only after its MAC
  verifies. The random generators' state is JSON.

This module runs inside the notebook kernel too: it imports nothing heavy at import time.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3

from nbmlops.capture.hashing import DIGEST_BYTES, UMASK, data_kind

KEY_ENV = "NBMLOPS_CACHE_KEY"
EXTENSIONS = {"arrow": "arrow", "npy": "npy", "pickle": "pkl", "json": "json", "file": "file"}
_SERIES = b"nbmlops.series"  # schema metadata of a Series saved as a one-column table
_ARROW_KINDS = "biufmM"  # numpy dtype kinds Arrow round-trips exactly


class Unverified(ValueError):
    """An object's bytes do not carry the MAC its entry names: never loaded."""


def key_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "nbmlops" / "cache.key"


def cache_key() -> bytes:
    """The 32-byte key: ``NBMLOPS_CACHE_KEY`` (a team's, any text), else the user's own."""
    return _key(os.environ.get(KEY_ENV) or None, str(key_file()))


@functools.lru_cache(maxsize=4)
def _key(team: str | None, path: str) -> bytes:
    if team:
        return blake3.blake3(team.encode(), derive_key_context="nbmlops cache key v1").digest()
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # Written whole under another name, then linked into place: a process starting at the
    # same moment (the kernel beside its driver) sees no key or the whole key, never half.
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_bytes(32).hex() + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:  # another process made it first: theirs counts
        pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: str) -> bytes:
    key = bytes.fromhex(Path(path).read_text().strip())
    if len(key) != 32:
        raise ValueError(f"{path} does not hold a 32-byte key (hex); remove it to make a new one")
    return key


def seal(data: bytes | memoryview | Any, key: bytes | None = None) -> str:
    """The keyed digest of ``data`` (anything with the buffer protocol)."""
    h = blake3.blake3(key=key or cache_key(), max_threads=blake3.blake3.AUTO)
    h.update(data)
    return h.hexdigest(length=DIGEST_BYTES)


def seal_file(path: str | Path, key: bytes | None = None) -> str:
    h = blake3.blake3(key=key or cache_key(), max_threads=blake3.blake3.AUTO)
    if os.path.getsize(path):
        h.update_mmap(str(path))
    return h.hexdigest(length=DIGEST_BYTES)


def object_path(objects: Path, digest: str, fmt: str) -> Path:
    return objects / digest[:2] / f"{digest}.{EXTENSIONS[fmt]}"


# ---------------------------------------------------------------- encode / decode


def format_of(value: Any) -> str:
    """How ``value`` is saved: "npy", "arrow", or "pickle"."""
    kind = data_kind(value)
    if kind == "ndarray" and not value.dtype.hasobject:
        return "npy"
    if kind in ("dataframe", "series") and _arrow_safe(value):
        return "arrow"
    return "pickle"


def _write(fmt: str, value: Any, fh: Any) -> None:
    """Write ``value`` in format ``fmt`` to the binary file ``fh``."""
    if fmt == "npy":
        import numpy as np

        np.save(fh, value, allow_pickle=False)
    elif fmt == "arrow":
        import pyarrow as pa

        table = _to_arrow(value)
        with pa.ipc.new_file(fh, table.schema) as writer:  # streamed: no copy in memory
            writer.write_table(table)
    else:
        import cloudpickle

        cloudpickle.dump(value, fh, protocol=5)


def decode(fmt: str, payload: bytes) -> Any:
    """The value of a payload whose MAC was verified (``load`` does both)."""
    if fmt == "npy":
        import numpy as np

        return np.load(io.BytesIO(payload), allow_pickle=False)
    if fmt == "arrow":
        import pyarrow as pa

        table = pa.ipc.open_file(pa.py_buffer(payload)).read_all()
        frame = table.to_pandas()
        meta = table.schema.metadata or {}
        if _SERIES in meta:
            series = frame.iloc[:, 0]
            series.name = json.loads(meta[_SERIES])["name"]
            return series
        return frame
    if fmt == "json":
        return json.loads(payload)
    if fmt == "pickle":
        import cloudpickle

        return cloudpickle.loads(payload)
    raise ValueError(f"unknown object format {fmt!r}")


def load(path: Path, fmt: str, mac: str, key: bytes | None = None) -> Any:
    """Read ``path`` once, check its MAC, then decode it; :class:`Unverified` otherwise."""
    payload = path.read_bytes()
    if seal(payload, key) != mac:
        raise Unverified(f"{path} is not sealed by this cache's key (changed, or planted)")
    return decode(fmt, payload)


def save(
    objects: Path, digest: str, value: Any, payload: bytes | None = None, fmt: str | None = None
) -> dict[str, Any]:
    """Write ``value`` as object ``digest`` (``payload``: its bytes in format ``fmt``, if
    already made), straight to a temporary file, sealed, then renamed into place.

    Returns ``{"format", "blob", "size"}``; ``blob`` is the MAC of the bytes written. An
    existing file is kept only when its bytes are exactly these (a file planted under the
    name is overwritten, never sealed)."""
    fmt = fmt or ("pickle" if payload is not None else format_of(value))
    path = object_path(objects, digest, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        if payload is not None:
            tmp.write_bytes(payload)
        elif fmt == "arrow":
            import pyarrow as pa

            with pa.OSFile(str(tmp), "wb") as fh:  # native writes, without the GIL
                _write(fmt, value, fh)
        else:
            with open(tmp, "wb") as fh:
                _write(fmt, value, fh)
        mac, size = seal_file(tmp), os.path.getsize(tmp)
        if _intact(path, size, mac):
            return {"format": fmt, "blob": mac, "size": size}
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
        return {"format": fmt, "blob": mac, "size": size}
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class Saver:
    """Saves step outputs on a background thread, so the next step runs meanwhile.

    A value is snapshotted first: a DataFrame or Series by a shallow copy, which pandas'
    copy-on-write (always on since pandas 3) keeps intact if the next step changes the
    original in place; an array by a copy; other values are pickled before this returns.
    """

    def __init__(self, objects: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.objects = objects
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nbmlops-save")
        self._pending: dict[str, Any] = {}  # digest -> Future of save()'s result
        self._results: dict[str, dict[str, Any]] = {}  # digest -> what save() returned
        self._tasks: dict[str, Any] = {}  # name -> Future of a task run after the saves
        self._ended: dict[str, str] = {}  # name -> "" once done, else the problem

    def submit(self, digest: str, value: Any, payload: bytes | None = None) -> str:
        """Start saving; the object's format."""
        fmt = "pickle" if payload is not None else format_of(value)
        if fmt == "pickle" and payload is None:
            import cloudpickle

            payload = cloudpickle.dumps(value, protocol=5)
        if digest not in self._pending and digest not in self._results:
            snap = None if payload is not None else _snapshot(value, fmt)
            self._pending[digest] = self._pool.submit(
                save, self.objects, digest, snap, payload, fmt
            )
        return fmt

    def close(self) -> None:
        """Finish the saves under way and stop the thread (a kernel kept for another run)."""
        self._pool.shutdown(wait=True)

    def result_of(self, digest: str) -> dict[str, Any] | None:
        """What saving ``digest`` gave, waiting for it (safe on the saving thread: report()
        records a result before it forgets the future)."""
        future = self._pending.get(digest)
        if future is None:
            return self._results.get(digest)
        try:
            return dict(future.result())
        except Exception as exc:
            return {"problem": f"{type(exc).__name__}: {exc}"}

    def then(self, name: str, task: Callable[[], str]) -> None:
        """Run ``task`` after the saves submitted so far; it returns "" or a problem."""
        self._tasks[name] = self._pool.submit(task)

    def report(self, wait: bool = False) -> dict[str, Any]:
        """What finished so far in this run (everything, with ``wait``): ``saved``, digest ->
        {"format", "blob", "size"} or {"problem"}; ``entries``, task name -> its result."""
        for digest, future in list(self._pending.items()):
            if wait or future.done():
                try:
                    self._results[digest] = future.result()
                except Exception as exc:
                    self._results[digest] = {"problem": f"{type(exc).__name__}: {exc}"}
                del self._pending[digest]
        for name, future in list(self._tasks.items()):
            if wait or future.done():
                try:
                    self._ended[name] = future.result()
                except Exception as exc:
                    self._ended[name] = f"{type(exc).__name__}: {exc}"
                del self._tasks[name]
        return {"saved": dict(self._results), "entries": dict(self._ended)}


def _snapshot(value: Any, fmt: str) -> Any:
    if fmt == "npy":
        return value.copy()
    import pandas as pd

    return value.copy(deep=int(pd.__version__.split(".")[0]) < 3)  # copy-on-write since 3


def save_file(objects: Path, source: str | Path) -> dict[str, Any]:
    """Copy a file a step wrote into the store; ``{"digest", "blob", "format", "size"}``."""
    import shutil

    mac = seal_file(source)
    size = os.path.getsize(source)
    path = object_path(objects, mac, "file")
    if not _intact(path, size, mac):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    return {"digest": mac, "blob": mac, "format": "file", "size": size}


def _intact(path: Path, size: int, mac: str) -> bool:
    try:
        return path.stat().st_size == size and seal_file(path) == mac
    except OSError:
        return False


def _arrow_safe(value: Any) -> bool:
    """Whether Arrow gives back exactly this frame: string column names, dtypes of numbers,
    booleans and dates, a plain index (objects, categories and the like are pickled)."""
    import numpy as np
    import pandas as pd

    frame = value.to_frame() if isinstance(value, pd.Series) else value
    if isinstance(value, pd.Series) and not (value.name is None or isinstance(value.name, str)):
        return False
    columns = frame.columns
    if isinstance(value, pd.DataFrame) and (
        isinstance(columns, pd.MultiIndex)
        or not all(isinstance(c, str) for c in columns)
        or not columns.is_unique
        or any(c.startswith("__index_level_") for c in columns)
    ):
        return False
    index = frame.index
    if isinstance(index, pd.MultiIndex) or not (index.name is None or isinstance(index.name, str)):
        return False
    if getattr(index, "freq", None) is not None or frame.columns.name is not None:
        return False  # what Arrow does not keep
    dtypes = [*frame.dtypes, index.dtype]
    return all(
        (isinstance(t, np.dtype) and t.kind in _ARROW_KINDS) or isinstance(t, pd.DatetimeTZDtype)
        for t in dtypes
    )


def _to_arrow(value: Any) -> Any:
    """The Arrow table of a frame (a Series as one column, its name in the metadata)."""
    import pandas as pd
    import pyarrow as pa

    meta = {}
    if isinstance(value, pd.Series):
        meta[_SERIES] = json.dumps({"name": value.name}).encode()
        value = value.to_frame(name="values")
    table = pa.Table.from_pandas(value)  # a RangeIndex as metadata, others as columns
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    return table
