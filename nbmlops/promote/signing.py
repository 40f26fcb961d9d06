"""Ed25519 signatures of model versions and Bentos, with a key the tracking store never holds.

A promotion signs the version's *signed manifest*: the canonical JSON (sorted keys, no
spaces) of its name, version, run id and the sha256 of every file. The manifest, the
signature (base64) and the key id (the first 16 hex digits of the sha256 of the raw
public key) are tags of the version (``capture/schema.py``). Anything that would unpickle
the model checks the signature with a trusted public key first, then every file against
the signed manifest (:func:`verified_files`, :func:`nbmlops.promote.integrity.verify`):
rewriting the manifest tag gains nothing, and a new signature needs the private key.

The private key is ``$NBMLOPS_SIGNING_KEY``, else ``~/.nbmlops/keys/signing.key``. The
trusted public keys are ``[tool.nbmlops.signing] trusted_keys`` of the project's
``pyproject.toml`` (or ``[signing]`` of ``nbmlops.toml``), paths relative to that file;
without it, the public key next to the private key (``signing.pub``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops import project
from nbmlops.capture import schema as s
from nbmlops.promote.errors import SignatureError, SigningKeyError

KEY_ENV = "NBMLOPS_SIGNING_KEY"
PRIVATE_NAME = "signing.key"
PUBLIC_NAME = "signing.pub"
SIGNING_KEYS = ("trusted_keys",)  # the keys of [tool.nbmlops.signing]
FIX_UNTRUSTED = (
    "promote it again with a trusted key (nbmlops promote), or, if you trust the key that "
    "signed it, add its public key to [tool.nbmlops.signing] trusted_keys"
)


def default_dir() -> Path:
    return Path.home() / ".nbmlops" / "keys"


def private_key_path() -> Path:
    """``$NBMLOPS_SIGNING_KEY``, else the default key folder's ``signing.key``."""
    env = os.environ.get(KEY_ENV)
    return Path(env).expanduser() if env else default_dir() / PRIVATE_NAME


def key_id(public: Any) -> str:
    """The first 16 hex digits of the sha256 of the raw public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------- keys


def init_keys(folder: Path, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new key pair into ``folder``: ``signing.key`` (0600) and ``signing.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private, public = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    if private.exists() and not force:
        raise SigningKeyError(
            f"a signing key exists already at {private}",
            "keep it (versions signed by it stay trusted), or pass --force to replace it",
        )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private.unlink(missing_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public, key_id(key.public_key())


def load_private_key() -> Any:
    """The private key that signs (:func:`private_key_path`); a clear error if absent."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = private_key_path()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningKeyError(
            f"no signing key at {path}: promotion signs the version it registers",
            f"create one with: nbmlops keys init (or set ${KEY_ENV} to a key's path)",
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(
            f"cannot read the signing key {path} ({exc})",
            f"give an ed25519 key made by nbmlops keys init (${KEY_ENV})",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"the signing key {path} is not an ed25519 key", "make one with: nbmlops keys init"
        )
    return key


def _load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise SigningKeyError(
            f"the trusted public key {path} does not exist",
            "fix [tool.nbmlops.signing] trusted_keys, or create a key: nbmlops keys init",
        ) from None
    except (OSError, ValueError) as exc:
        raise SigningKeyError(
            f"cannot read the trusted public key {path} ({exc})",
            "give the signing.pub that nbmlops keys init wrote",
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"the trusted key {path} is not an ed25519 public key")
    return key


def parse_signing_table(table: Any, where: Path, key: str) -> list[Path]:
    """The trusted key paths of a ``[signing]`` table (relative to ``where``'s folder).

    A problem raises ``ValueError(key, problem, fix)``, which the configuration loader
    turns into its own error naming the key."""
    if not isinstance(table, dict):
        raise ValueError(key, "is not a table", f"write it as [{key}]")
    unknown = sorted(set(table) - set(SIGNING_KEYS))
    if unknown:
        raise ValueError(
            f"{key}.{unknown[0]}", "unknown key", f"the keys of {key} are: trusted_keys"
        )
    paths = table.get("trusted_keys", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ValueError(
            f"{key}.trusted_keys",
            "is not a list of paths",
            'e.g. trusted_keys = ["keys/release.pub"]',
        )
    return [(where.parent / p).expanduser() for p in paths]


def trusted_key_paths(root: Path | None = None) -> list[Path]:
    """The configured trusted public keys, else the one next to the private key."""
    env = os.environ.get("NBMLOPS_PROJECT")  # a notebook's kernel under nbmlops run
    folder = root or (Path(env) if env else project.project_root())
    for name, prefix in (("pyproject.toml", ("tool", "nbmlops")), ("nbmlops.toml", ())):
        file = folder / name
        if not file.is_file():
            continue
        try:
            doc: Any = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue  # the configuration loader reports it
        for part in prefix:
            doc = doc.get(part, {}) if isinstance(doc, dict) else {}
        table = doc.get("signing") if isinstance(doc, dict) else None
        if table is not None:
            key = ".".join([*prefix, "signing"])
            try:
                return parse_signing_table(table, file, key)
            except ValueError as exc:
                at, problem, fix = exc.args
                raise SigningKeyError(f"{file.name}: {at}: {problem}", fix) from None
    return [private_key_path().with_name(PUBLIC_NAME)]


def trusted_keys(root: Path | None = None) -> dict[str, Any]:
    """``{key id: public key}`` of every trusted key (an absent default key: none)."""
    paths = trusted_key_paths(root)
    default = [private_key_path().with_name(PUBLIC_NAME)]
    keys = {}
    for path in paths:
        if paths == default and not path.exists():
            return {}
        key = _load_public_key(path)
        keys[key_id(key)] = key
    return keys


# ---------------------------------------------------------------- sign, verify


@dataclass(frozen=True)
class Signed:
    """A signed document: its canonical JSON, the signature and the signing key's id."""

    document: str
    signature: str
    key: str

    def to_json(self) -> dict[str, str]:
        return {"document": self.document, "signature": self.signature, "key": self.key}


def sign(document: dict[str, Any], private: Any | None = None) -> Signed:
    key = private if private is not None else load_private_key()
    data = canonical(document)
    signature = base64.b64encode(key.sign(data)).decode()
    return Signed(data.decode(), signature, key_id(key.public_key()))


def verify_signed(signed: Signed, what: str, tag: str) -> dict[str, Any]:
    """The document of ``signed`` once its signature checks with a trusted key."""
    from cryptography.exceptions import InvalidSignature

    keys = trusted_keys()
    if not keys:
        raise SigningKeyError(
            f"no trusted public key to check {what} (none configured, and no "
            f"{private_key_path().with_name(PUBLIC_NAME)})",
            "add the release key's public key to [tool.nbmlops.signing] trusted_keys",
        )
    public = keys.get(signed.key)
    if public is None:
        raise SignatureError(
            what, tag, f"is signed by key {signed.key}, which is not a trusted key", FIX_UNTRUSTED
        )
    try:
        public.verify(base64.b64decode(signed.signature, validate=True), signed.document.encode())
        document: dict[str, Any] = json.loads(signed.document)
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError(
            what,
            tag,
            "does not match its signature: it was changed after signing",
            "promote the model again (nbmlops promote); never edit nbmlops' tags",
        ) from None
    return document


def version_document(
    name: str, version: str, run_id: str | None, files: dict[str, str]
) -> dict[str, Any]:
    """What a promotion signs of a version."""
    return {"name": name, "version": str(version), "run_id": run_id or "", "files": files}


def version_tags(signed: Signed) -> dict[str, str]:
    return {
        s.SIGNED_MANIFEST: signed.document,
        s.SIGNATURE: signed.signature,
        s.SIGNATURE_KEY: signed.key,
    }


def verified_files(model: Any) -> dict[str, str]:
    """The sha256 manifest ``model`` (a ``ModelRef``) was signed with at promotion.

    Refuses (:class:`SignatureError`) an unsigned version, one signed by an untrusted key,
    a signature that does not match, and a signed manifest of another version."""
    what = f"model {model}"
    tags = model.tags
    if not tags.get(s.SIGNATURE) or not tags.get(s.SIGNED_MANIFEST):
        raise SignatureError(
            what,
            s.SIGNATURE,
            "is missing: the version is not signed",
            f"promote its run with a signing key (nbmlops keys init, then nbmlops promote "
            f"--experiment NAME --metric M --model-name {model.name})",
        )
    signed = Signed(tags[s.SIGNED_MANIFEST], tags[s.SIGNATURE], tags.get(s.SIGNATURE_KEY, ""))
    document = verify_signed(signed, what, s.SIGNED_MANIFEST)
    expected = version_document(model.name, model.version, model.run_id, {})
    for field in ("name", "version", "run_id"):
        if document.get(field) != expected[field]:
            raise SignatureError(
                what,
                s.SIGNED_MANIFEST,
                f"was signed for {field} {document.get(field)!r}, not {expected[field]!r}",
                "promote the model again; a signature cannot be copied to another version",
            )
    files = document.get("files")
    if not isinstance(files, dict):
        raise SignatureError(what, s.SIGNED_MANIFEST, "has no files", "promote the model again")
    return {str(k): str(v) for k, v in files.items()}
