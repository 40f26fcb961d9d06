"""Access by role against a real ``mlflow server --app-name basic-auth`` on PostgreSQL.

``nbmlops server start --auth`` runs the server (its users in a second PostgreSQL
database); the admin adds a data scientist and a release user and protects the model.
The scientist's credentials log a run and register a version, but their promotion is
refused with a message naming who, the permission missing and who can; nothing of it is
written. The release user's promotion copies the version into the production model and
moves @champion there. No password appears in any output, log or file of the project.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import classifier, pipeline_runs, write_notebook
from postgres import Postgres, free_port, running_postgres

NBMLOPS = str(Path(sys.executable).parent / "nbmlops")
ADMIN = ("admin", "admin-password-0451")
SCIENTIST = ("alice", "alice-password-7733")
RELEASE = ("rob", "rob-password-9120")
PASSWORDS = [ADMIN[1], SCIENTIST[1], RELEASE[1]]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    out: Path


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def server(pg: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("auth-server")
    port = free_port()
    out = folder / "server.out"
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": pg.create_database("mlflow"),
        "NBMLOPS_AUTH_DATABASE_URI": pg.create_database("mlflow_auth"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
    }
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            [NBMLOPS, "server", "start", "--auth", "--port", str(port), "--workers", "1",
             "--artifacts-destination", str(folder / "artifacts")],
            cwd=folder, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 300
    while "export MLFLOW_TRACKING_URI=" not in out.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(0.2)
    yield Server(f"http://127.0.0.1:{port}", proc, out)
    # SIGTERM, as a service manager stops it (SIGINT is ignored by a process that a
    # non-interactive shell started in the background, as CI runners may do).
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert "stopped" in out.read_text()


def nbmlops(
    project: Path, uri: str, *args: str, user: tuple[str, str] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``nbmlops`` as ``user`` (credentials in MLflow's variables), or with the credentials
    in ``uri`` itself."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    if user is not None:
        base |= {"MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1]}
    return subprocess.run(
        [NBMLOPS, *args],
        cwd=project,
        env={**base, "MLFLOW_TRACKING_URI": uri, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


def as_user(url: str, user: tuple[str, str]) -> Any:
    from mlflow import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user
    return MlflowClient(url, registry_uri=url)


def test_a_scientist_registers_but_only_the_release_user_promotes(
    server: Server, tmp_path: Path
) -> None:
    outputs: list[str] = []

    def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
        outputs.extend([done.stdout, done.stderr])
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    for name, password, role in [(*SCIENTIST, "scientist"), (*RELEASE, "release")]:
        added = ok(nbmlops(tmp_path, server.url, "server", "users", "add", name, "--role", role,
                           "--password-env", "NEW_PASSWORD", user=ADMIN, NEW_PASSWORD=password))  # fmt: skip
        assert added.stdout.strip() == f"user {name}: role {role} (nbmlops-{role})"
    protected = ok(nbmlops(tmp_path, server.url, "server", "protect", "pipe", user=ADMIN))
    assert protected.stdout.startswith("pipe-production: the aliases of pipe now live here")

    # The scientist runs the notebook, the credentials in the URI itself.
    write_notebook(
        tmp_path / "pipe.ipynb",
        classifier(
            "depth = 2\nseed = 3",
            train="model = DecisionTreeClassifier(max_depth=depth, random_state=seed)"
            ".fit(X_train, y_train)\nnbmlops.log_model(model, input_example=X_train)",
            evaluate="nbmlops.log_metric('score', float((model.predict(X_test) == y_test).mean()))",
        ),
    )
    with_password = server.url.replace("//", f"//{SCIENTIST[0]}:{SCIENTIST[1]}@")
    ok(nbmlops(tmp_path, with_password, "run", "pipe.ipynb"))
    listed = ok(nbmlops(tmp_path, with_password, "runs"))
    alice = as_user(server.url, SCIENTIST)
    (run,) = pipeline_runs(alice, "pipe")
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.user"]
    assert run.info.run_id in listed.stdout

    # Their credentials register versions of the model ...
    alice.create_registered_model("pipe")
    model_uri = run.data.tags["nbmlops.model_uri"]
    registered = alice.create_model_version(
        "pipe", model_uri, run_id=run.info.run_id, model_id=model_uri.removeprefix("models:/")
    )
    assert registered.version == "1"

    # ... but cannot promote: refused before anything is written.
    refused = nbmlops(
        tmp_path, server.url, "promote", "--experiment", "pipe", "--metric", "score", user=SCIENTIST
    )
    outputs.extend([refused.stdout, refused.stderr])
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.splitlines()[:2] == [
        f"error: MLflow tracking store {server.url}: user 'alice' may not promote to "
        "pipe@champion: the alias lives on the production model 'pipe-production', and moving "
        "it needs EDIT permission there; 'alice' has READ",
        "  fix: ask a user with the release role (nbmlops-release) to promote it, or the "
        "server's admin to give alice that role: nbmlops server users add alice --role release",
    ]
    rob = as_user(server.url, RELEASE)
    assert [v.version for v in rob.search_model_versions("name='pipe'")] == ["1"]
    assert rob.search_model_versions("name='pipe-production'") == []
    assert not rob.get_registered_model("pipe-production").aliases

    # The release user promotes: the version is copied into production, the alias moved.
    promoted = ok(
        nbmlops(
            tmp_path, server.url, "promote", "--experiment", "pipe", "--metric", "score",
            user=RELEASE,
        )
    )  # fmt: skip
    assert "pipe-production@champion: nothing -> v1" in promoted.stdout
    live = rob.get_model_version_by_alias("pipe-production", "champion")
    assert live.source == "models:/pipe/2" and live.tags["nbmlops.run_id"] == run.info.run_id
    shown = ok(nbmlops(tmp_path, server.url, "history", "pipe", user=SCIENTIST))
    assert "champion" in shown.stdout

    # Wrong credentials are named, not an internal error.
    wrong = nbmlops(tmp_path, server.url, "runs", user=(SCIENTIST[0], "not-her-password-1"))
    outputs.extend([wrong.stdout, wrong.stderr])
    assert wrong.returncode == 2
    assert "the tracking server refused the password of user 'alice'" in wrong.stderr

    # No password anywhere: outputs, the server's output and log, the project's files.
    texts = [*outputs, server.out.read_text()]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    for text in texts:
        for password in PASSWORDS:
            assert password not in text
