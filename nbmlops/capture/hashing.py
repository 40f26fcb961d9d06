"""Full-content hashes of files, DataFrames, arrays and other objects.

BLAKE3 (a cryptographic hash, faster than sha256 or md5 here and multi-threaded on large
inputs), truncated to 128 bits so a digest fits MLflow's dataset digest column (36 chars).
Every byte counts: unlike ``mlflow.data.from_pandas(...).digest``, which samples the first
10,000 rows, a change in any row, column, dtype or index changes the digest.

This module runs inside the notebook kernel too: it imports nothing heavy at import time.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import blake3

DIGEST_BYTES = 16  # 128 bits, 32 hex characters
ABSENT = "absent"  # the recorded digest of a file a step tried to read that did not exist


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def _new() -> blake3.blake3:
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def hash_bytes(data: bytes | memoryview) -> str:
    h = _new()
    h.update(data)
    return h.hexdigest(length=DIGEST_BYTES)


def hash_file(path: str | Path) -> str:
    h = _new()
    if os.path.getsize(path):
        h.update_mmap(str(path))
    return h.hexdigest(length=DIGEST_BYTES)


def listing_digest(target: str) -> str:
    """Digest of the names in a folder, or of the paths ``glob:<pattern>`` matches ("" if
    the folder is gone): a file added or removed changes it."""
    import glob

    try:
        if target.startswith("glob:"):
            names = sorted(glob.glob(target.removeprefix("glob:"), recursive=True))
        else:
            names = sorted(os.listdir(target))
    except OSError:
        return ""
    return hash_bytes("\0".join(names).encode())


class FileHashCache:
    """File digests remembered by (path, size, mtime): an unchanged file is not re-read."""

    def __init__(self, store: Path) -> None:
        self.store = store
        try:
            self._entries: dict[str, list[Any]] = json.loads(store.read_text())
        except (OSError, ValueError):
            self._entries = {}

    def digest(self, path: str | Path) -> str:
        path = os.path.abspath(path)
        st = os.stat(path)
        entry = self._entries.get(path)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return str(entry[2])
        value = hash_file(path)
        self._entries[path] = [st.st_size, st.st_mtime_ns, value]
        self._save()
        return value

    def _save(self) -> None:
        """Remember the digests; where they cannot be written, files are hashed again."""
        with contextlib.suppress(OSError):
            write_atomic(self.store, json.dumps(self._entries).encode())


def write_atomic(path: Path, data: bytes | memoryview | Any) -> None:
    """Write to a temporary name beside ``path`` and rename: readers never see half a file.

    The file gets the mode a plain ``open(path, "w")`` would give it (``mkstemp``'s 0600
    would hide it from the group of a shared cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def data_kind(obj: Any) -> str | None:
    """'dataframe', 'series' or 'ndarray' for the data objects nbmlops tracks, else None."""
    module = type(obj).__module__
    if module.startswith("pandas"):
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            return "dataframe"
        if isinstance(obj, pd.Series):
            return "series"
    if module == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray):
            return "ndarray"
    return None


def hash_data(obj: Any) -> str:
    """Content digest of a DataFrame, Series or ndarray: values, dtypes, names and index."""
    import numpy as np
    import pandas as pd

    h = _new()
    if isinstance(obj, np.ndarray):
        _update_array(h, obj)
    elif isinstance(obj, pd.Series):
        h.update(repr((obj.name, repr(obj.dtype))).encode())
        _update_column(h, obj)
        _update_index(h, obj.index)
    elif isinstance(obj, pd.DataFrame):
        h.update(repr([(str(c), repr(t)) for c, t in obj.dtypes.items()]).encode())
        h.update(repr(list(obj.columns.names)).encode())
        for i in range(obj.shape[1]):
            _update_column(h, obj.iloc[:, i])
        _update_index(h, obj.index)
    else:
        raise TypeError(f"not a DataFrame, Series or ndarray: {type(obj).__name__}")
    return h.hexdigest(length=DIGEST_BYTES)


def _update_array(h: blake3.blake3, a: Any) -> None:
    h.update(f"{a.dtype.str}{a.shape}".encode())
    if a.dtype.kind == "O":
        _update_objects(h, a.ravel().tolist())
    else:
        h.update(_bytes_view(a))


def _update_index(h: blake3.blake3, index: Any) -> None:
    """An index's values, and what else it carries: names, dtype (categories, time
    zone), frequency."""
    h.update(
        repr((list(index.names), repr(index.dtype), str(getattr(index, "freq", None)))).encode()
    )
    _update_column(h, index.to_series())


def _update_column(h: blake3.blake3, s: Any) -> None:
    import numpy as np
    import pandas as pd

    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "biufcmM":
        h.update(_bytes_view(s.to_numpy()))
    elif isinstance(s.dtype, np.dtype):  # object: mixed types, lists, dicts ...
        _update_objects(h, s.tolist())
    else:  # strings, categoricals, nullable and other extension types
        h.update(_bytes_view(pd.util.hash_pandas_object(s, index=False).to_numpy()))


def _update_objects(h: blake3.blake3, values: list[Any]) -> None:
    """Python objects by their pickled form: 1 and "1" differ, unhashable values work."""
    import pickle

    h.update(pickle.dumps(values, protocol=5))


def _bytes_view(a: Any) -> Any:
    """The array's memory as uint8, without a copy when it is contiguous already."""
    import numpy as np

    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)
