"""A built Bento signed at build and checked before ``bentoml serve`` runs it.

The signature covers every file of the Bento (``src/service.py``, its settings
``src/nbmlops_service.json``, ``bento.yaml``, the requirements...) and every file of the
BentoML model it serves, with the registry version they were built from. It is kept in
the Bento folder as ``nbmlops-signature.json`` (left out of the manifest it signs).
``bentoml serve`` is started with ``PYTHONDONTWRITEBYTECODE`` so that serving adds no
``__pycache__`` to the signed folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nbmlops.promote import integrity, signing
from nbmlops.promote.errors import SignatureError

SIGNATURE_FILE = "nbmlops-signature.json"


def _bento_files(folder: Path) -> dict[str, str]:
    files = integrity.manifest(folder)
    files.pop(SIGNATURE_FILE, None)
    return files


def sign_bento(bento: Any, model: Any, model_path: str | Path, key: Any | None = None) -> str:
    """Sign ``bento`` (a ``bentoml.Bento``) and the BentoML model folder it serves;
    returns the id of the key that signed."""
    document = {
        "bento": str(bento.tag),
        "name": model.name,
        "version": str(model.version),
        "files": _bento_files(Path(bento.path)),
        "model_files": integrity.manifest(model_path),
    }
    signed = signing.sign(document, key)
    (Path(bento.path) / SIGNATURE_FILE).write_text(json.dumps(signed.to_json()), encoding="utf-8")
    return signed.key


def verify_bento(bento: Any, model: Any, model_path: str | Path) -> None:
    """Refuse a Bento that is unsigned, signed by an untrusted key, built for another
    version, or whose files (or its model's) changed since it was signed."""
    what = f"Bento {bento.tag}"
    fix = f"build it again: nbmlops build {model.name}/{model.version}"
    path = Path(bento.path) / SIGNATURE_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        signed = signing.Signed(str(raw["document"]), str(raw["signature"]), str(raw["key"]))
    except FileNotFoundError:
        raise SignatureError(
            what, SIGNATURE_FILE, "is missing: the Bento is not signed", fix
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise SignatureError(what, SIGNATURE_FILE, "cannot be read", fix) from None
    document = signing.verify_signed(signed, what, SIGNATURE_FILE)
    for field, want in (
        ("bento", str(bento.tag)),
        ("name", model.name),
        ("version", model.version),
    ):
        if document.get(field) != str(want):
            raise SignatureError(
                what, SIGNATURE_FILE, f"was signed for {field} {document.get(field)!r}", fix
            )
    _compare(what, _bento_files(Path(bento.path)), document.get("files"), "", fix)
    _compare(what, integrity.manifest(model_path), document.get("model_files"), "model ", fix)


def _compare(what: str, actual: dict[str, str], signed: Any, prefix: str, fix: str) -> None:
    found = integrity.difference(signed if isinstance(signed, dict) else {}, actual)
    if found is not None:
        path, problem = found
        raise SignatureError(what, f"{prefix}{path}", f"{problem} since it was built", fix)
