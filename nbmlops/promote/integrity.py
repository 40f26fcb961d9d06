"""sha256 of every file of a model: taken when it is logged, checked at promotion, signed
then (``signing.py``), and checked against the signed manifest before every use.

The manifest maps each file's path (relative to the model folder, ``/``-separated) to its
sha256; the total digest is the sha256 of the manifest's canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from nbmlops.promote.errors import IntegrityError

_CHUNK = 1 << 20
# Written by MLflow into a download through the registry (models:/name/version): not a
# file of the model.
IGNORED = frozenset({"registered_model_meta"})


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest(folder: str | Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``."""
    root = Path(folder)
    files: dict[str, str] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel not in IGNORED:
                files[rel] = sha256_file(path)
    return dict(sorted(files.items()))


def total_digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def difference(expected: dict[str, str], actual: dict[str, str]) -> tuple[str, str] | None:
    """The first file (by name) where two manifests differ, and how: ``is missing``,
    ``has changed`` or ``was added``; None if they agree."""
    for path in sorted(set(expected) | set(actual)):
        if path in IGNORED or expected.get(path) == actual.get(path):
            continue
        if path not in actual:
            return path, "is missing"
        return path, "was added" if path not in expected else "has changed"
    return None


def verify(folder: str | Path, expected: dict[str, str], model: str) -> None:
    """Raise :class:`IntegrityError` naming the first file that differs from ``expected``."""
    found = difference(expected, manifest(folder))
    if found is not None:
        raise IntegrityError(model, *found)
