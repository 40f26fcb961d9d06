"""Signed models end to end: real runs, a real registry, real artifacts tampered with.

An attacker who can write the tracking store (artifacts and tags) swaps the model for a
crafted cloudpickle whose unpickling writes a marker file, or edits a built Bento's
``service.py``; a version is signed by a key nobody trusts, or not signed at all; a model
is changed between training and promotion. Each is refused with a message naming the file
or tag and the fix, and the marker never appears.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from mlflow import MlflowClient
from test_promote import Trained, make_cli, train

import nbmlops
from nbmlops.capture import schema as s
from nbmlops.config import ConfigError
from nbmlops.config import load as load_config
from nbmlops.promote import integrity, promote, resolve_model, signing
from nbmlops.promote.errors import IntegrityError, SignatureError, SigningKeyError
from nbmlops.serve.build import bento_tags


@dataclass
class Project:
    trained: Trained
    home: Path  # BENTOML_HOME
    env: dict[str, str]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("signing-project")
    home = root / "bentoml-home"
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "BENTOML_HOME": str(home)}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key, value in env.items():
            mp.setenv(key, value)
        trained = train(root, tracking_uri, {"a": ["depth=3"], "b": ["depth=2"]})
        trained.cli = make_cli(root, env)
        yield Project(trained, home, env)


def promoted(project: Project, run: str = "a", **env: str) -> str:
    """A new registered model holding ``run``'s model as v1 (@champion), promoted by the
    command line (with ``env`` on top of the project's)."""
    name = f"signed-{uuid.uuid4().hex[:8]}"
    args = ["--experiment", project.trained.experiment, "--metric", "accuracy"]
    cli = make_cli(project.trained.root, {**project.env, **env})
    done = cli("promote", *args, "--model-name", name, "--run", project.trained.runs[run])
    assert done.returncode == 0, done.stdout + done.stderr
    return name


def artifact_dir(project: Project, run: str) -> Path:
    """The artifact store's folder of the model ``run`` logged."""
    client = MlflowClient(project.trained.tracking_uri)
    uri = client.get_run(project.trained.runs[run]).data.tags[s.MODEL_URI]
    logged = client.get_logged_model(uri.removeprefix("models:/"))
    return Path(logged.artifact_location.removeprefix("file://"))


@contextlib.contextmanager
def restored(folder: Path) -> Iterator[Path]:
    """``folder`` as it is now, put back after the block (whatever the test did to it)."""
    backup = folder.with_name(folder.name + ".backup")
    shutil.copytree(folder, backup)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)
        backup.rename(folder)


class Payload:
    """Unpickling this writes the marker file: the attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def swap_in_payload(folder: Path, marker: Path) -> dict[str, str]:
    """Replace the model in ``folder`` by a pyfunc whose cloudpickle runs ``Payload``;
    returns the new files' sha256 manifest (what the attacker writes into the tags)."""
    (folder / "model.skops").unlink()
    (folder / "python_model.pkl").write_bytes(pickle.dumps(Payload(marker)))
    (folder / "MLmodel").write_text(
        "flavors:\n"
        "  python_function:\n"
        "    loader_module: mlflow.pyfunc.model\n"
        "    python_model: python_model.pkl\n"
        "    python_version: 3.12.0\n"
        "    env:\n"
        "      virtualenv: python_env.yaml\n"
        "mlflow_version: 3.0.0\n",
        encoding="utf-8",
    )
    return integrity.manifest(folder)


def test_a_swapped_model_with_rewritten_tags_is_refused_and_its_payload_never_runs(
    project: Project, tmp_path: Path
) -> None:
    name = promoted(project)
    client = MlflowClient(project.trained.tracking_uri)
    marker = tmp_path / "marker"
    logged = client.get_run(project.trained.runs["a"]).data.tags[s.MODEL_FILES]
    with restored(artifact_dir(project, "a")) as folder:
        try:
            attack(project, name, folder, marker, tmp_path)
        finally:
            client.set_tag(project.trained.runs["a"], s.MODEL_FILES, logged)
    assert not marker.exists()


def attack(project: Project, name: str, folder: Path, marker: Path, tmp_path: Path) -> None:
    """Swap the payload into ``folder``, rewrite the tags; every reader refuses."""
    import mlflow

    client = MlflowClient(project.trained.tracking_uri)
    files = swap_in_payload(folder, marker)
    # The payload is live: loading the swapped folder without nbmlops runs it.
    live = tmp_path / "live"
    shutil.copytree(folder, live)
    with contextlib.suppress(Exception):
        mlflow.pyfunc.load_model(str(live))
    assert marker.read_text() == "pwned"
    marker.unlink()
    # The attacker rewrites every manifest tag to match the swapped files.
    manifest = json.dumps(files, sort_keys=True, separators=(",", ":"))
    client.set_model_version_tag(name, "1", s.FILES, manifest)
    client.set_model_version_tag(name, "1", s.DIGEST, integrity.total_digest(files))
    client.set_tag(project.trained.runs["a"], s.MODEL_FILES, manifest)

    build = project.trained.cli("build", name)
    assert build.returncode == 1, build.stdout + build.stderr
    assert (
        f"error: model {name} v1 (@champion): MLmodel has changed since promotion: "
        "refusing to use it\n"
    ) in build.stderr
    assert "Traceback" not in build.stderr
    check = project.trained.cli("serve", name, "--check", "--no-monitoring")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "MLmodel has changed since promotion" in check.stderr
    with pytest.raises(IntegrityError) as loaded:
        nbmlops.load_model(name, project.trained.tracking_uri)
    assert loaded.value.path == "MLmodel"

    # It also rewrites the signed manifest: the signature no longer matches.
    signed = json.loads(resolve_model(name, project.trained.tracking_uri).tags[s.SIGNED_MANIFEST])
    forged = signing.canonical({**signed, "files": files}).decode()
    client.set_model_version_tag(name, "1", s.SIGNED_MANIFEST, forged)
    build = project.trained.cli("build", name)
    assert build.returncode == 1, build.stdout + build.stderr
    assert (
        f"error: model {name} v1 (@champion): {s.SIGNED_MANIFEST} does not match its "
        "signature: it was changed after signing: refusing to use it\n"
    ) in build.stderr
    assert "  fix: promote the model again (nbmlops promote)" in build.stderr
    with pytest.raises(SignatureError):
        nbmlops.load_model(name, project.trained.tracking_uri)


def test_a_changed_bento_service_is_refused_before_any_of_its_code_runs(
    project: Project, tmp_path: Path
) -> None:
    name = promoted(project)
    built = project.trained.cli("build", name)
    assert built.returncode == 0, built.stdout + built.stderr
    tag = bento_tags(resolve_model(name, project.trained.tracking_uri))[0]
    bento = project.home / "bentos" / tag.split(":")[0] / tag.split(":")[1]
    signature = json.loads((bento / "nbmlops-signature.json").read_text())
    assert signature["key"] == signing.key_id(signing.load_private_key().public_key())
    assert "src/service.py" in json.loads(signature["document"])["files"]

    marker = tmp_path / "marker"
    service = bento / "src" / "service.py"
    original = service.read_text()
    service.write_text(f"open({str(marker)!r}, 'w').write('pwned')\n" + original)
    try:
        check = project.trained.cli("serve", name, "--check", "--no-monitoring")
    finally:
        service.write_text(original)
    assert check.returncode == 1, check.stdout + check.stderr
    assert (
        f"error: Bento {tag}: src/service.py has changed since it was built: refusing to use it\n"
        f"  fix: build it again: nbmlops build {name}/1\n"
    ) in check.stderr
    assert not marker.exists()

    # Restored, it is served again (and serving leaves the signed folder as it was).
    again = project.trained.cli("serve", name, "--check", "--no-monitoring")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "/predict -> 200" in again.stdout
    assert not (bento / "src" / "__pycache__").exists()

    # An unsigned Bento is refused too.
    (bento / "nbmlops-signature.json").unlink()
    unsigned = project.trained.cli("serve", name, "--check", "--no-monitoring")
    assert unsigned.returncode == 1
    assert f"error: Bento {tag}: nbmlops-signature.json is missing" in unsigned.stderr


def test_a_version_signed_by_an_untrusted_key_is_refused_until_its_key_is_trusted(
    project: Project, tmp_path: Path
) -> None:
    other, other_pub, other_id = signing.init_keys(tmp_path / "other")
    name = promoted(project, **{signing.KEY_ENV: str(other)})
    version = resolve_model(name, project.trained.tracking_uri)
    assert version.tags[s.SIGNATURE_KEY] == other_id

    build = project.trained.cli("build", name)
    assert build.returncode == 1, build.stdout + build.stderr
    assert (
        f"error: model {name} v1 (@champion): {s.SIGNED_MANIFEST} is signed by key "
        f"{other_id}, which is not a trusted key: refusing to use it\n"
    ) in build.stderr
    assert "trusted_keys" in build.stderr
    with pytest.raises(SignatureError):
        nbmlops.load_model(name, project.trained.tracking_uri)

    # The project trusts both keys: the same version is accepted.
    mine = signing.private_key_path().with_name(signing.PUBLIC_NAME)
    config = project.trained.root / "pyproject.toml"
    config.write_text(
        f"[tool.nbmlops.signing]\ntrusted_keys = [{str(mine)!r}, {str(other_pub)!r}]\n"
    )
    try:
        build = project.trained.cli("build", name)
        assert build.returncode == 0, build.stdout + build.stderr
        model = nbmlops.load_model(name, project.trained.tracking_uri)
        assert f"models:/{model.metadata.model_id}" == version.source
    finally:
        config.unlink()


def test_a_signature_copied_from_another_version_is_refused(project: Project) -> None:
    first, second = promoted(project, "a"), promoted(project, "b")
    client = MlflowClient(project.trained.tracking_uri)
    tags = resolve_model(first, project.trained.tracking_uri).tags
    for tag in (s.SIGNED_MANIFEST, s.SIGNATURE, s.SIGNATURE_KEY, s.FILES, s.DIGEST):
        client.set_model_version_tag(second, "1", tag, tags[tag])
    with pytest.raises(SignatureError) as copied:
        nbmlops.load_model(second, project.trained.tracking_uri)
    assert copied.value.problem == (
        f"model {second} v1 (@champion): {s.SIGNED_MANIFEST} was signed for name "
        f"{first!r}, not {second!r}: refusing to use it"
    )


def test_an_unsigned_version_is_refused_by_every_reader(project: Project) -> None:
    name = promoted(project)
    client = MlflowClient(project.trained.tracking_uri)
    client.delete_model_version_tag(name, "1", s.SIGNATURE)
    build = project.trained.cli("build", name)
    assert build.returncode == 1, build.stdout + build.stderr
    assert (
        f"error: model {name} v1 (@champion): {s.SIGNATURE} is missing: the version is not "
        "signed: refusing to use it\n"
    ) in build.stderr
    assert "nbmlops keys init" in build.stderr
    drift = project.trained.cli("monitor", "drift", name, "--current", "nowhere.csv")
    assert drift.returncode == 1
    assert f"{s.SIGNATURE} is missing" in drift.stderr
    with pytest.raises(SignatureError) as loaded:
        nbmlops.load_model(name, project.trained.tracking_uri)
    assert loaded.value.path == s.SIGNATURE


def test_a_model_changed_between_training_and_promotion_is_not_promoted(
    project: Project,
) -> None:
    name = f"changed-{uuid.uuid4().hex[:8]}"
    args = ["--experiment", project.trained.experiment, "--metric", "accuracy"]
    args += ["--model-name", name, "--run", project.trained.runs["b"]]
    client = MlflowClient(project.trained.tracking_uri)
    uri = client.get_run(project.trained.runs["b"]).data.tags[s.MODEL_URI]
    with restored(artifact_dir(project, "b")) as folder:
        with (folder / "model.skops").open("ab") as fh:
            fh.write(b"\0")
        refused = project.trained.cli("promote", *args)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (
        f"error: model {uri} of run {project.trained.runs['b']}: model.skops has changed "
        "since training: refusing to use it\n"
    ) in refused.stderr
    assert client.search_model_versions(f"name='{name}'") == []


def test_promotion_without_a_signing_key_says_how_to_make_one(
    project: Project, tmp_path: Path
) -> None:
    missing = tmp_path / "nokey" / "signing.key"
    with pytest.raises(SigningKeyError) as refused, pytest.MonkeyPatch.context() as mp:
        mp.setenv(signing.KEY_ENV, str(missing))
        promote(
            project.trained.experiment,
            "accuracy",
            model_name=f"nokey-{uuid.uuid4().hex[:8]}",
            run_id=project.trained.runs["a"],
            tracking_uri=project.trained.tracking_uri,
        )
    assert refused.value.problem == (
        f"no signing key at {missing}: promotion signs the version it registers"
    )
    assert "nbmlops keys init" in refused.value.fix


def test_keys_init_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    cli = make_cli(tmp_path, {})
    folder = tmp_path / "keys"
    made = cli("keys", "init", "--dir", str(folder))
    assert made.returncode == 0, made.stdout + made.stderr
    private, public = folder / "signing.key", folder / "signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    key_id = signing.key_id(serialization.load_pem_public_key(public.read_bytes()))
    assert f"signing key {key_id} created" in made.stdout
    assert f"export {signing.KEY_ENV}={private}" in made.stdout
    again = cli("keys", "init", "--dir", str(folder))
    assert again.returncode == 2
    assert f"error: a signing key exists already at {private}" in again.stderr


def test_a_bad_signing_table_is_named(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.nbmlops.signing]\ntrusted_key = ["k.pub"]\n')
    with pytest.raises(SigningKeyError) as bad:
        signing.trusted_key_paths(tmp_path)
    assert bad.value.problem == "pyproject.toml: tool.nbmlops.signing.trusted_key: unknown key"
    (tmp_path / "pyproject.toml").write_text('[tool.nbmlops.signing]\ntrusted_keys = ["k.pub"]\n')
    assert signing.trusted_key_paths(tmp_path) == [tmp_path / "k.pub"]
    with pytest.raises(SigningKeyError) as absent, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        signing.trusted_keys()
    assert absent.value.problem == f"the trusted public key {tmp_path / 'k.pub'} does not exist"
    assert os.environ[signing.KEY_ENV]  # the session's key is untouched
    # `nbmlops ci` reads the same table with the rest of the configuration.
    (tmp_path / "nb.ipynb").write_text("{}")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.nbmlops.pipelines.p]\nnotebook = "nb.ipynb"\n'
        '[tool.nbmlops.signing]\ntrusted_keys = "k.pub"\n'
    )
    with pytest.raises(ConfigError) as config:
        load_config(tmp_path)
    assert config.value.key == "tool.nbmlops.signing.trusted_keys"
    assert config.value.problem.endswith("is not a list of paths")
