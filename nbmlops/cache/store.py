"""The step cache on disk: one JSON entry per step key, beside the object store.

Layout under the cache folder (default: the project's ``.nbmlops/``)::

    cache/<key[:2]>/<key>.json   what a step produced: output digests, events, cells
    cache/locks/<key>.lock       held while one process computes that key
    objects/<d[:2]>/<d>.pkl      the outputs themselves, content-addressed (shared with runs)

An entry is written to a temporary name and renamed, so a reader sees a whole entry or
none; it carries a digest of its own body, and every object it names carries the digest
of its file, so a torn or corrupted entry or object is detected and recomputed, never
loaded. ``fcntl`` locks (released by the kernel when a process dies) let concurrent runs
and sweep points compute a shared step once: the second waits, then finds the entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.capture.hashing import hash_bytes, hash_file, write_atomic


@dataclass
class Entry:
    key: str
    step: str
    source_run: str  # the step run that computed it
    created: float
    outputs: list[dict[str, Any]]  # {name, digest, kind, blob, ...} as end_step reported
    events: list[dict[str, Any]]  # metrics, params, data, models the step reported
    files: dict[str, str]  # data files the step read through the API: path -> digest
    rng: dict[str, str]  # {"digest": state digest, "blob": file digest} after the step
    cells: list[dict[str, Any]]  # the step's executed cells (outputs shown on a hit)
    setup_cells: list[dict[str, Any]]  # the setup cells as executed with it
    notebook: str = ""
    parts: dict[str, Any] = field(default_factory=dict)  # what the key hashed (keys.py)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EntryInfo:
    key: str
    step: str
    notebook: str
    source_run: str
    created: float
    used: float
    size: int  # entry + objects only it references (bytes)


class StepCache:
    @classmethod
    def at(cls, cache_dir: str | Path | None = None, project_dir: Path | None = None) -> StepCache:
        """The cache in ``cache_dir`` (``--cache-dir``), else in the project's ``.nbmlops/``."""
        from nbmlops import project

        return cls(Path(cache_dir).resolve() if cache_dir else project.state_dir(project_dir))

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries = root / "cache"
        self.objects = root / "objects"

    def _entry_path(self, key: str) -> Path:
        return self.entries / key[:2] / f"{key}.json"

    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / f"{digest}.pkl"

    # ------------------------------------------------------------ read

    def get(self, key: str) -> Entry | None:
        """The entry for ``key`` if it and every object it names are intact, else None.

        A damaged entry is removed so the step is recomputed and the entry rewritten.
        """
        path = self._entry_path(key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        problem = self._check(raw, key)
        if problem:
            self._discard(path, problem)
            return None
        body = json.loads(raw)["entry"]
        entry = Entry(**body)
        for name, blob in _objects(body):
            obj = self.object_path(name)
            try:
                intact = hash_file(obj) == blob
            except OSError:
                intact = False
            if not intact:
                self._discard(path, f"object {obj.name} is missing or damaged")
                with contextlib.suppress(OSError):
                    obj.unlink()
                return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for `cache prune --older-than`
        return entry

    def _check(self, raw: bytes, key: str) -> str | None:
        try:
            doc = json.loads(raw)
            body = json.dumps(doc["entry"], sort_keys=True).encode()
        except (ValueError, KeyError, TypeError):
            return "unreadable (truncated?)"
        if doc.get("digest") != hash_bytes(body) or doc["entry"].get("key") != key:
            return "its content does not match its digest"
        return None

    def _discard(self, path: Path, problem: str) -> None:
        import logging

        logging.getLogger("nbmlops.cache").warning(
            "cache entry %s %s: recomputing", path.stem, problem
        )
        with contextlib.suppress(OSError):
            path.unlink()

    # ------------------------------------------------------------ write

    def put(self, entry: Entry) -> None:
        body = entry.to_json()
        digest = hash_bytes(json.dumps(body, sort_keys=True).encode())
        data = json.dumps({"digest": digest, "entry": body}, default=str).encode()
        write_atomic(self._entry_path(entry.key), data)

    @contextlib.contextmanager
    def computing(self, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the lock of ``key`` while computing it; waits while another process does
        (calling ``on_wait`` first)."""
        locks = self.entries / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "a+b") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait()
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------ manage

    def ls(self) -> list[EntryInfo]:
        """Every entry, newest use first, with the bytes it alone would free."""
        docs: list[tuple[Path, dict[str, Any], float]] = []
        for path in self.entries.glob("??/*.json"):
            try:
                body = json.loads(path.read_bytes())["entry"]
                docs.append((path, body, path.stat().st_mtime))
            except (OSError, ValueError, KeyError):
                continue
        users: dict[str, int] = {}
        for _, body, _ in docs:
            for name, _blob in _objects(body):
                users[name] = users.get(name, 0) + 1
        infos = []
        for path, body, used in docs:
            size = path.stat().st_size
            for name, _blob in _objects(body):
                if users[name] == 1:
                    with contextlib.suppress(OSError):
                        size += self.object_path(name).stat().st_size
            infos.append(
                EntryInfo(
                    key=body["key"],
                    step=body["step"],
                    notebook=str(body.get("notebook", "")),
                    source_run=body["source_run"],
                    created=body["created"],
                    used=used,
                    size=size,
                )
            )
        return sorted(infos, key=lambda i: -i.used)

    def prune(
        self, older_than: float | None = None, max_size: int | None = None
    ) -> list[EntryInfo]:
        """Remove entries unused for ``older_than`` seconds, then the least recently used
        until the cache fits ``max_size`` bytes; remove objects no entry names any more."""
        infos = self.ls()
        now = time.time()
        removed = []
        kept = []
        for info in infos:
            if older_than is not None and now - info.used > older_than:
                removed.append(info)
            else:
                kept.append(info)
        if max_size is not None:
            total = sum(i.size for i in kept)
            while kept and total > max_size:
                info = kept.pop()  # least recently used
                total -= info.size
                removed.append(info)
        for info in removed:
            with contextlib.suppress(OSError):
                self._entry_path(info.key).unlink()
        if removed:
            self._collect_objects()
        return removed

    def _collect_objects(self) -> None:
        """Delete objects no cache entry names (run outputs are only kept for the cache)."""
        named: set[str] = set()
        for path in self.entries.glob("??/*.json"):
            try:
                named.update(n for n, _ in _objects(json.loads(path.read_bytes())["entry"]))
            except (OSError, ValueError, KeyError):
                continue
        grace = time.time() - 3600  # objects of runs in progress have no entry yet
        for obj in self.objects.glob("??/*.pkl"):
            with contextlib.suppress(OSError):
                if obj.stem not in named and obj.stat().st_mtime < grace:
                    obj.unlink()


def changed_files(entry: Entry, digest: Callable[[str], str]) -> list[str]:
    """The files ``entry`` recorded as read whose content differs now (or that are gone):
    a lookup that finds the entry must not use it then. ``digest(path)`` hashes a file."""
    changed = []
    for path, recorded in entry.files.items():
        try:
            if digest(path) != recorded:
                changed.append(path)
        except OSError:
            changed.append(path)
    return changed


def _objects(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(file name digest, file content digest) of every object an entry names."""
    refs = [*body.get("outputs", []), body.get("rng") or {}]
    return [(r["digest"], r["blob"]) for r in refs if r.get("digest") and r.get("blob")]


SIZE_EXAMPLES = "500MB or 5GB"
AGE_EXAMPLES = "30d, 12h or 45m"


def parse_size(text: str) -> int:
    """``5GB``, ``500MB``, ``1.5G``, ``1024`` (bytes) -> bytes; ValueError if it is none."""
    units = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    number = t.rstrip("KMGT")
    unit = t[len(number) :]
    try:
        return int(float(number) * units[unit])
    except (ValueError, KeyError):
        raise ValueError(f"{text!r} is not a size") from None


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``45m``, ``90s`` -> seconds; ValueError if it is none."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]]
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"{text!r} is not an age") from None
