"""The step cache on disk: one JSON entry per step key, beside the object store.

Layout under the cache folder (default: the project's ``.nbmlops/``)::

    cache/<key[:2]>/<key>.json   what a step produced: outputs, files, events, cells
    cache/locks/<key>.lock       held while one process computes that key
    objects/<d[:2]>/<d>.<ext>    the outputs themselves, content-addressed (shared with runs):
                                 .arrow, .npy, .pkl, .json (generator state), .file (files
                                 the step wrote)

An entry is written to a temporary name and renamed, so a reader sees a whole entry or
none. It is sealed with a MAC under the user's (or team's) key (``cache/objects.py``), and
names the MAC of every object's bytes: a torn, corrupted, forged or re-sealed entry, or an
object changed or planted, is refused and the step recomputed, never loaded. ``fcntl``
locks (released by the kernel when a process dies) let concurrent runs and sweep points
compute a shared step once: the second waits, then finds the entry.

A cache several Unix users share works by group permissions: give the folder to the
team's group with the set-group-ID bit (``chgrp -R team .nbmlops && chmod -R g+rwXs
.nbmlops``), have everyone run with ``umask 002`` and the same ``NBMLOPS_CACHE_KEY``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nbmlops.cache import objects as o
from nbmlops.capture.hashing import ABSENT, listing_digest, write_atomic

log = logging.getLogger("nbmlops.cache")
MAX_SIZE_ENV = "NBMLOPS_CACHE_MAX_SIZE"
DEFAULT_MAX_SIZE = "20GB"


@dataclass
class Entry:
    key: str
    step: str
    source_run: str  # the step run that computed it
    created: float
    outputs: list[dict[str, Any]]  # {name, digest, kind, format, blob, ...} from end_step
    events: list[dict[str, Any]]  # metrics, params, data, models the step reported
    files: dict[str, str]  # files the step (or the setup cells) read: path -> digest
    rng: dict[str, Any]  # {"digest", "format", "blob"} of the generators' state after it
    cells: list[dict[str, Any]]  # the step's executed cells (outputs shown on a hit)
    setup_cells: list[dict[str, Any]]  # the setup cells as executed with it
    notebook: str = ""
    parts: dict[str, Any] = field(default_factory=dict)  # what the key hashed (keys.py)
    written: list[dict[str, Any]] = field(default_factory=list)  # {path, digest, blob, ...}
    listings: dict[str, str] = field(default_factory=dict)  # folder or glob: -> names digest

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
    refs: tuple[str, ...] = ()  # the objects it names


class KeyLock:
    """A held ``fcntl`` lock on one key (:meth:`StepCache.lock`)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh: IO[bytes] | None = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


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
        self._warned: set[str] = set()  # keys refused already (a lookup runs twice per step)

    def _entry_path(self, key: str) -> Path:
        return self.entries / key[:2] / f"{key}.json"

    def object_path(self, digest: str, fmt: str) -> Path:
        return o.object_path(self.objects, digest, fmt)

    # ------------------------------------------------------------ read

    def get(self, key: str) -> Entry | None:
        """The entry for ``key`` if it is sealed by this cache's key and every object it
        names is intact, else None (with a warning saying why: the step is recomputed).

        A torn or damaged entry is removed so it is rewritten; one sealed with another key
        is left for its owner (this run's entry replaces it)."""
        path = self._entry_path(key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        body, problem = self._open(raw, key)
        if body is None:
            if problem != FOREIGN:
                with contextlib.suppress(OSError):
                    path.unlink()
            self._warn(key, f"cache entry {key[:12]} {problem}: recomputing")
            return None
        try:
            entry = Entry(**body)
        except TypeError:
            self._warn(key, f"cache entry {key[:12]} has an unknown layout: recomputing")
            return None
        for ref in _objects(body):
            obj = self.object_path(ref["digest"], ref["format"])
            try:
                intact = o.seal_file(obj) == ref["blob"]
            except OSError:
                intact = False
            if not intact:
                self._warn(
                    key,
                    f"cache entry {key[:12]}: object {obj.name} is missing, damaged or not "
                    "sealed by your key: recomputing",
                )
                with contextlib.suppress(OSError):
                    path.unlink()
                return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for pruning
        return entry

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def _open(self, raw: bytes, key: str) -> tuple[dict[str, Any] | None, str]:
        """(the entry's body, "") if it is whole and sealed by our key, else (None, why)."""
        try:
            doc = json.loads(raw)
            body = doc["entry"]
            canonical = json.dumps(body, sort_keys=True).encode()
        except (ValueError, KeyError, TypeError):
            return None, "is unreadable (truncated?)"
        if doc.get("seal") != o.seal(canonical) or body.get("key") != key:
            return None, FOREIGN
        return body, ""

    def restore_files(self, entry: Entry, root: Path) -> None:
        """Put back the files the step wrote in the project (``root``), as it wrote them:
        each copied from the store, its MAC checked, then renamed into place."""
        for ref in entry.written:
            dest = root / ref["path"]
            if ref.get("format") == "dir":  # a folder it made (and left empty, maybe)
                dest.mkdir(parents=True, exist_ok=True)
                continue
            with contextlib.suppress(OSError):
                if dest.stat().st_size == ref["size"] and o.seal_file(dest) == ref["blob"]:
                    continue  # already there
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.nbmlops-tmp")
            try:
                shutil.copyfile(self.object_path(ref["digest"], "file"), tmp)
                if o.seal_file(tmp) != ref["blob"]:
                    raise o.Unverified(f"the saved copy of {ref['path']} changed")
                os.replace(tmp, dest)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def load_output(self, digest: str, verify: Callable[[Any], bool]) -> Any:
        """A saved step output by its digest, without running anything unverified: Arrow and
        ``.npy`` objects load without running code (``verify`` then checks the content);
        a pickle only through an entry sealed by this cache's key that names its MAC.
        Raises LookupError (not saved here) or ``objects.Unverified``."""
        for fmt in ("arrow", "npy"):
            path = self.object_path(digest, fmt)
            if path.is_file():
                payload = path.read_bytes()
                value = o.decode(fmt, payload)
                if not verify(value):
                    raise o.Unverified(f"{path} does not match its digest (changed since)")
                return value
        if self.object_path(digest, "pickle").is_file():
            for entry_path in self.entries.glob("??/*.json"):
                with contextlib.suppress(OSError):
                    body, _ = self._open(entry_path.read_bytes(), entry_path.stem)
                    for ref in _objects(body or {}):
                        if ref["digest"] == digest and ref["format"] == "pickle":
                            path = self.object_path(digest, "pickle")
                            value = o.load(path, "pickle", ref["blob"])
                            if verify(value):
                                return value
            raise o.Unverified(f"no cache entry sealed by your key names object {digest}")
        raise LookupError(f"object {digest} is not in {self.objects}")

    # ------------------------------------------------------------ write

    def put(self, entry: Entry) -> None:
        body = json.loads(json.dumps(entry.to_json(), default=str))
        mac = o.seal(json.dumps(body, sort_keys=True).encode())
        write_atomic(self._entry_path(entry.key), json.dumps({"seal": mac, "entry": body}).encode())

    def lock(self, key: str, on_wait: Callable[[], None] | None = None) -> KeyLock:
        """Take the lock of ``key`` to compute it, held until its entry is written (or the
        step turns out uncacheable); waits while another process holds it (calling
        ``on_wait`` first). The kernel releases it if this process dies."""
        locks = self.entries / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        path = locks / f"{key}.lock"
        fh: IO[bytes]
        try:
            fh = open(path, "a+b")  # noqa: SIM115  (closed by KeyLock.release)
        except PermissionError:  # another user's lock file in a shared cache
            fh = open(path, "rb")  # noqa: SIM115
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        return KeyLock(fh)

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
            for ref in _objects(body):
                users[ref["digest"]] = users.get(ref["digest"], 0) + 1
        infos = []
        for path, body, used in docs:
            size = path.stat().st_size
            for ref in _objects(body):
                if users[ref["digest"]] == 1:
                    with contextlib.suppress(OSError):
                        size += self.object_path(ref["digest"], ref["format"]).stat().st_size
            infos.append(
                EntryInfo(
                    key=body["key"],
                    step=body["step"],
                    notebook=str(body.get("notebook", "")),
                    source_run=body["source_run"],
                    created=body["created"],
                    used=used,
                    size=size,
                    refs=tuple(r["digest"] for r in _objects(body)),
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
            self._collect_objects({d for info in removed for d in info.refs})
        return removed

    def _collect_objects(self, freed: set[str]) -> None:
        """Delete objects no cache entry names (run outputs are only kept for the cache):
        at once those of the entries just removed (``freed``), others after an hour (the
        objects of a step still running have no entry yet)."""
        named: set[str] = set()
        for path in self.entries.glob("??/*.json"):
            try:
                body = json.loads(path.read_bytes())["entry"]
                named.update(r["digest"] for r in _objects(body))
            except (OSError, ValueError, KeyError):
                continue
        grace = time.time() - 3600  # objects of runs in progress have no entry yet
        for obj in self.objects.glob("??/*.*"):
            with contextlib.suppress(OSError):
                digest = obj.name.split(".")[0]
                if digest not in named and (digest in freed or obj.stat().st_mtime < grace):
                    obj.unlink()

    def enforce_size(self) -> list[EntryInfo]:
        """Prune least-recently-used entries past ``NBMLOPS_CACHE_MAX_SIZE`` (default 20GB;
        ``0`` keeps everything), as ccache does at the end of a run."""
        text = os.environ.get(MAX_SIZE_ENV, DEFAULT_MAX_SIZE)
        try:
            limit = parse_size(text)
        except ValueError:
            log.warning(
                "%s=%r is not a size (say %s): not pruning", MAX_SIZE_ENV, text, SIZE_EXAMPLES
            )
            return []
        if limit <= 0:
            return []
        return self.prune(max_size=limit)


def changed_files(entry: Entry, digest: Callable[[str], str]) -> list[str]:
    """The files ``entry`` recorded as read whose content differs now (or that are gone),
    and the folders whose listing differs: a lookup that finds the entry must not use it
    then. ``digest(path)`` hashes a file."""
    changed = []
    for path, recorded in entry.files.items():
        if recorded == ABSENT:  # it looked for the file: one there now is a change
            if os.path.exists(path):
                changed.append(path)
            continue
        try:
            if digest(path) != recorded:
                changed.append(path)
        except OSError:
            changed.append(path)
    for folder, recorded in entry.listings.items():
        if listing_digest(folder) != recorded:
            changed.append(folder.removeprefix("glob:"))
    return changed


def _objects(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object an entry names: {digest, format, blob}."""
    refs = [*body.get("outputs", []), body.get("rng") or {}, *body.get("written", [])]
    return [r for r in refs if r.get("digest") and r.get("blob") and r.get("format")]


FOREIGN = (
    "is not sealed by your key (forged, re-sealed, or made with another key: see NBMLOPS_CACHE_KEY)"
)


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
