"""The Jupyter server extension end to end: a real Jupyter server (pytest-jupyter) with
``nbmlops.jupyter`` enabled, real notebooks in its root, runs executed by a real kernel in
a child process, a real MLflow store and registry. Asserts what the panel would receive
and what MLflow recorded."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLASSIFIER, code, write_notebook
from jupyter_server.auth.authorizer import Authorizer
from mlflow import MlflowClient
from tornado.httpclient import HTTPResponse

pytest_plugins = ("pytest_jupyter.jupyter_server",)


class Permissions(Authorizer):
    """The server's Authorizer; a test may make it allow nbmlops reads only."""

    read_only = False

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return not (type(self).read_only and resource == "nbmlops" and action != "read")


API = ("nbmlops", "api")

TRAIN = CLASSIFIER

FAILS = [
    code("total = 0\nlimit = 2", "parameters"),
    code("values = [1, 2, 3]", "step:prepare"),
    code(
        "total = sum(values)\nif total > limit:\n    raise ValueError(f'total {total} over limit')",
        "step:check",
    ),
]


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, tracking_uri: str
) -> Iterator[dict[str, Any]]:
    """The server's root: notebooks with unique names (their experiments), one run of TRAIN.

    pytest-jupyter gives the server a HOME of its own, where a user's own cache key would
    differ from the one the first run used: the module runs under one team key instead,
    as a server started by the same user shares the user's key."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBMLOPS_CACHE_KEY", "the key of the jupyter tests")
        yield _project(tmp_path_factory, tracking_uri)


def _project(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("jupyter-root")
    tag = uuid.uuid4().hex[:8]
    names = {k: f"{k}_{tag}.ipynb" for k in ("train", "fails", "broken", "waits")}
    write_notebook(root / names["train"], TRAIN)
    write_notebook(root / names["waits"], WAITS)
    write_notebook(root / "sub" / names["fails"], FAILS)
    write_notebook(
        root / names["broken"],
        [code("x = 1", "step:a"), code("y = 2", "step:b"), code("z = 3", "step:a")],
    )
    outside = tmp_path_factory.mktemp("outside")
    write_notebook(outside / "secret.ipynb", [code("x = 1", "step:a")])
    (root / "link.ipynb").symlink_to(outside / "secret.ipynb")
    (root / "notes.txt").write_text("not a notebook")
    result = subprocess.run(
        [sys.executable, "-c", "from nbmlops.cli import main; main()", "run", names["train"], "-q"]
        + ["--tracking-uri", tracking_uri],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(names["train"].removesuffix(".ipynb"))
    [train_run] = client.search_runs([exp.experiment_id], "tags.`nbmlops.kind` = 'pipeline'")
    return {
        "root": root,
        "outside": outside,
        "names": names,
        "train_run": train_run.info.run_id,  # score=0.9 (the default); later tests add runs
    }


@pytest.fixture
def jp_root_dir(project: dict[str, Any]) -> Path:
    return project["root"]


@pytest.fixture
def jp_server_config(tracking_uri: str) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"nbmlops.jupyter": True},
            "allow_unauthenticated_access": False,
            "authorizer_class": Permissions,
        },
        "Nbmlops": {"tracking_uri": tracking_uri},
    }


async def call(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    if "body" in kwargs and not isinstance(kwargs["body"], str):
        kwargs["body"] = json.dumps(kwargs["body"])
    response: HTTPResponse = await jp_fetch(*API, *path, raise_error=False, **kwargs)
    return response.code, json.loads(response.body or b"null")


async def finished_job(jp_fetch: Any, job_id: str) -> dict[str, Any]:
    """Poll ``jobs/<id>`` until the job is no longer running (the run's own time, at most 10 min)."""
    for _ in range(1200):
        code_, job = await call(jp_fetch, "jobs", job_id)
        assert code_ == 200, job
        if job["status"] not in ("running", "queued"):
            return job
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {job_id} still running: {job}")


# A run that waits until the file named by its parameter exists (then finishes).
WAITS = [
    code("go = ''\nn = 0", "parameters"),
    code(
        "import os, time\nwhile not os.path.exists(go):\n    time.sleep(0.1)\nimport nbmlops\n"
        "nbmlops.log_metric('n', n)",
        "step:wait",
    ),
]


async def test_pipeline_describes_the_tagged_notebook(
    jp_fetch: Any, project: dict[str, Any]
) -> None:
    name = project["names"]["train"]
    status, body = await call(jp_fetch, "pipeline", params={"path": name})
    assert status == 200, body
    assert body["path"] == name
    assert body["experiment"] == name.removesuffix(".ipynb")
    assert [(s["name"], s["after"], s["cells"]) for s in body["steps"]] == [
        ("load", [], [3]),  # cells count from 1, as JupyterLab's
        ("split", ["load"], [4]),
        ("train", ["split"], [5]),
        ("evaluate", ["train"], [6]),
    ]
    assert body["parameters"] == [
        {"name": "score", "value": "0.9", "type": "float"},
        {"name": "depth", "value": "3", "type": "int"},
        {"name": "seed", "value": "7", "type": "int"},
    ]


async def test_unparsable_notebook_is_422_with_the_cell(
    jp_fetch: Any, project: dict[str, Any]
) -> None:
    status, body = await call(jp_fetch, "pipeline", params={"path": project["names"]["broken"]})
    assert status == 422
    assert body["error"]["cell"] == 3
    assert "step 'a' is started twice" in body["error"]["problem"]
    assert "rename one of them" in body["error"]["fix"]


async def test_paths_are_confined_to_the_root(jp_fetch: Any, project: dict[str, Any]) -> None:
    outside = project["outside"] / "secret.ipynb"
    for path in ["../outside/secret.ipynb", str(outside), "link.ipynb", "sub/../../x.ipynb"]:
        status, body = await call(jp_fetch, "pipeline", params={"path": path})
        assert status == 403, (path, body)
        assert body["error"]["problem"] and body["error"]["fix"]
    status, body = await call(
        jp_fetch, "runs", method="POST", body={"path": "../outside/secret.ipynb", "parameters": {}}
    )
    assert status == 403, body
    for path, refused in [("bad\x00.ipynb", 400), (".hidden/x.ipynb", 403)]:
        status, body = await call(jp_fetch, "runs", method="POST", body={"path": path})
        assert status == refused and body["error"]["fix"], (path, body)
    status, body = await call(jp_fetch, "pipeline", params={"path": "missing.ipynb"})
    assert status == 404 and "missing.ipynb" in body["error"]["problem"]
    status, body = await call(jp_fetch, "pipeline", params={"path": "notes.txt"})
    assert status == 400 and "not a notebook" in body["error"]["problem"]


async def test_requests_without_the_token_are_refused(
    jp_fetch: Any, http_server_client: Any, jp_base_url: str, project: dict[str, Any]
) -> None:
    name = project["names"]["train"]
    jobs = project["root"] / ".nbmlops" / "jobs"
    before = set(jobs.iterdir()) if jobs.exists() else set()
    url = f"{jp_base_url}nbmlops/api/pipeline?path={name}"
    response = await http_server_client.fetch(url, raise_error=False)
    assert response.code == 403
    response = await jp_fetch(
        *API,
        "pipeline",
        params={"path": name},
        headers={"Authorization": "token wrong"},
        raise_error=False,
    )
    assert response.code == 403
    response = await http_server_client.fetch(
        f"{jp_base_url}nbmlops/api/runs",
        method="POST",
        body=json.dumps({"path": name, "parameters": {}}),
        raise_error=False,
    )
    assert response.code == 403
    assert (set(jobs.iterdir()) if jobs.exists() else set()) == before  # no run started


async def test_bad_parameters_are_400_before_any_run(
    jp_fetch: Any, project: dict[str, Any]
) -> None:
    jobs = project["root"] / ".nbmlops" / "jobs"
    before = set(jobs.iterdir()) if jobs.exists() else set()
    name = project["names"]["train"]
    cases = {
        "depth": ({"depth": "'deep'"}, "'deep'"),
        "nope": ({"nope": "1"}, "not a parameter"),
        "api_token": ({"api_token": "'x'"}, "not a parameter"),
    }
    for param, (parameters, said) in cases.items():
        status, body = await call(
            jp_fetch, "runs", method="POST", body={"path": name, "parameters": parameters}
        )
        assert status == 400, body
        assert body["error"]["parameter"] == param
        assert repr(param) in body["error"]["problem"] and said in body["error"]["problem"]
    after = set(jobs.iterdir()) if jobs.exists() else set()
    assert after == before


async def test_post_runs_executes_and_lists_the_run(
    jp_fetch: Any, project: dict[str, Any], tracking_uri: str
) -> None:
    name = project["names"]["train"]
    status, body = await call(
        jp_fetch,
        "runs",
        method="POST",
        body={"path": name, "parameters": {"depth": "4", "score": "0.95"}},
    )
    assert status == 202, body
    job = await finished_job(jp_fetch, body["job_id"])
    assert job["status"] == "succeeded", job
    assert job["path"] == name and job["error"] is None and job["current_step"] is None
    assert [(s["name"], s["status"]) for s in job["steps"]] == [
        ("load", "CACHED"),
        ("split", "CACHED"),
        ("train", "FINISHED"),
        ("evaluate", "FINISHED"),
    ]
    # Under the root, in a folder Jupyter's file browser shows (not the hidden .nbmlops/).
    assert job["output_path"].startswith("nbmlops-runs/")
    assert (project["root"] / job["output_path"]).is_file()
    opened = await jp_fetch("api", "contents", job["output_path"])  # what the panel opens
    assert json.loads(opened.body)["type"] == "notebook"
    assert job["run_url"] is None  # an SQLite store has no UI to link to

    status, runs = await call(jp_fetch, "runs", params={"path": name, "limit": "5"})
    assert status == 200, runs
    assert runs["experiment"] == name.removesuffix(".ipynb")
    assert {"accuracy", "score"} <= set(runs["metrics"])
    newest = runs["runs"][0]
    assert newest["run_id"] == job["run_id"]
    assert newest["status"] == "FINISHED"
    assert newest["params"]["depth"] == "4"
    assert newest["metrics"]["score"] == pytest.approx(0.95)
    assert newest["cache_hits"] == "2/4"
    assert newest["duration_s"] > 0 and newest["start_time"].endswith("+00:00")
    assert newest["url"] is None
    assert runs["runs"][1]["cache_hits"] == "0/4"
    recorded = MlflowClient(tracking_uri).get_run(job["run_id"])
    assert recorded.data.params["depth"] == "4"


async def test_failing_job_reports_step_cell_and_error_line(
    jp_fetch: Any, project: dict[str, Any]
) -> None:
    path = f"sub/{project['names']['fails']}"
    status, body = await call(
        jp_fetch, "runs", method="POST", body={"path": path, "parameters": {"limit": "5"}}
    )
    assert status == 202, body
    job = await finished_job(jp_fetch, body["job_id"])
    assert job["status"] == "failed"
    assert job["error"]["step"] == "check"
    assert job["error"]["cell"] == 3
    assert job["error"]["line"] == "ValueError: total 6 over limit"
    assert "raise ValueError" in job["error"]["message"]
    assert [(s["name"], s["status"]) for s in job["steps"]] == [
        ("prepare", "FINISHED"),
        ("check", "FAILED"),
    ]
    assert job["run_id"] and job["output_path"].startswith("nbmlops-runs/")
    assert job["output_path"].endswith(".partial.ipynb")
    status, runs = await call(jp_fetch, "runs", params={"path": path})
    assert runs["runs"][0]["run_id"] == job["run_id"]
    assert runs["runs"][0]["status"] == "FAILED"
    status, unknown = await call(jp_fetch, "jobs", "0123456789abcdef")
    assert status == 404 and "no job" in unknown["error"]["problem"]


async def test_promote_moves_the_alias(
    jp_fetch: Any, project: dict[str, Any], tracking_uri: str
) -> None:
    name = project["names"]["train"]
    model = f"srv-{uuid.uuid4().hex[:6]}"
    status, body = await call(
        jp_fetch,
        "promote",
        method="POST",
        body={
            "path": name,
            "metric": "score",
            "mode": "max",
            "gates": ["accuracy>=0.5"],
            "alias": "champion",
            "model_name": model,
            "run_id": None,
            "force": False,
        },
    )
    assert status == 200, body
    assert body["promoted"] is True and body["alias"] == "champion" and body["model_name"] == model
    holder = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version_by_alias(
        model, "champion"
    )
    assert str(holder.version) == body["version"]
    assert holder.tags["nbmlops.run_id"] == body["run_id"]
    assert body["value"] == MlflowClient(tracking_uri).get_run(body["run_id"]).data.metrics["score"]


async def test_refused_promotion_is_409_with_both_values(
    jp_fetch: Any, project: dict[str, Any]
) -> None:
    name = project["names"]["train"]
    status, body = await call(
        jp_fetch,
        "promote",
        method="POST",
        body={
            "path": name,
            "metric": "score",
            "mode": "max",
            "gates": ["score>=1.01"],
            "alias": None,
            "model_name": f"srv-{uuid.uuid4().hex[:6]}",
            "run_id": project["train_run"],
            "force": False,
        },
    )
    assert status == 409, body
    assert re.search(r"gate score>=1\.01 failed: score=0\.9(?![0-9])", body["error"]["problem"])
    assert "--force" in body["error"]["fix"]
    status, body = await call(
        jp_fetch, "promote", method="POST", body={"path": name, "metric": "nothing", "gates": []}
    )
    assert status == 400 and "has metric 'nothing'" in body["error"]["problem"], body


async def test_a_user_allowed_to_read_only_cannot_run_or_promote(
    jp_fetch: Any, project: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authentication is not enough: the server's Authorizer decides, on the resource
    ``nbmlops`` (JupyterHub roles, for instance)."""
    monkeypatch.setattr(Permissions, "read_only", True)
    name = project["names"]["train"]
    status, _ = await call(jp_fetch, "pipeline", params={"path": name})
    assert status == 200
    status, _ = await call(jp_fetch, "runs", method="POST", body={"path": name, "parameters": {}})
    assert status == 403
    status, _ = await call(
        jp_fetch, "promote", method="POST", body={"path": name, "metric": "score"}
    )
    assert status == 403


async def test_mistakes_in_a_request_are_400s_naming_the_field(
    jp_fetch: Any, project: dict[str, Any]
) -> None:
    name = project["names"]["train"]
    for limit in ("0", "-5", "100000000", "many"):
        status, body = await call(jp_fetch, "runs", params={"path": name, "limit": limit})
        assert status == 400 and "limit" in body["error"]["problem"], (limit, body)
    for field_, value in [("force", "false"), ("build", "yes"), ("alias", 3), ("run_id", ["x"])]:
        status, body = await call(
            jp_fetch,
            "promote",
            method="POST",
            body={"path": name, "metric": "score", field_: value},
        )
        assert status == 400 and field_ in body["error"]["problem"], (field_, body)


async def test_pipeline_lists_misspelt_tags_as_warnings(
    jp_fetch: Any, project: dict[str, Any]
) -> None:
    name = f"misspelt_{uuid.uuid4().hex[:6]}.ipynb"
    write_notebook(
        project["root"] / name, [code("x = 1", "step:load"), code("y = x + 1", "Step:train")]
    )
    status, body = await call(jp_fetch, "pipeline", params={"path": name})
    assert status == 200, body
    assert [s["name"] for s in body["steps"]] == ["load"]
    [warning] = body["warnings"]
    assert (warning["cell"], warning["tag"], warning["meant"]) == (2, "Step:train", "step:train")


async def test_oversized_and_deep_requests_are_4xx_and_leave_nothing_behind(
    jp_fetch: Any, project: dict[str, Any]
) -> None:
    root, name = project["root"], project["names"]["train"]
    jobs = root / ".nbmlops" / "jobs"
    before = sorted(jobs.iterdir()) if jobs.exists() else []
    long_path = "a/" * 3499 + "x.ipynb"  # 7,005 characters
    status, body = await call(jp_fetch, "pipeline", params={"path": long_path})
    assert status == 400 and "characters long" in body["error"]["problem"], body
    status, body = await call(
        jp_fetch, "runs", method="POST", body={"path": long_path, "parameters": {}}
    )
    assert status == 400 and body["error"]["fix"], body
    status, body = await call(jp_fetch, "pipeline", params={"path": "n" * 300 + ".ipynb"})
    assert status == 400 and "255" in body["error"]["problem"], body
    big = {"path": name, "parameters": {"depth": "1" + "0" * 200_000}}
    status, body = await call(jp_fetch, "runs", method="POST", body=big)
    assert status == 400 and body["error"]["parameter"] == "depth", body
    assert "as a file" in body["error"]["fix"]
    deep = '{"path": "' + name + '", "parameters": ' + "[" * 100_000 + "]" * 100_000 + "}"
    status, body = await call(jp_fetch, "runs", method="POST", body=deep)
    assert status == 400 and "nests 100001 levels deep" in body["error"]["problem"], body
    assert (sorted(jobs.iterdir()) if jobs.exists() else []) == before  # no job folder left

    # A visible link into a hidden folder is the hidden notebook: refused as such.
    write_notebook(root / ".hidden" / "inner.ipynb", [code("x = 1", "step:a")])
    (root / "visible.ipynb").symlink_to(root / ".hidden" / "inner.ipynb")
    status, body = await call(jp_fetch, "pipeline", params={"path": "visible.ipynb"})
    assert status == 403 and "hidden folder (.hidden)" in body["error"]["problem"], body


async def test_runs_beyond_the_limit_wait_in_a_queue_and_say_their_place(
    jp_fetch: Any, project: dict[str, Any]
) -> None:
    root, name = project["root"], project["names"]["waits"]
    go = root / "go-signal"
    ids = []
    for n in range(4):  # the server runs two at once (Nbmlops.max_concurrent_runs)
        body = {"path": name, "parameters": {"go": repr(str(go)), "n": str(n)}, "concurrent": True}
        status, answer = await call(jp_fetch, "runs", method="POST", body=body)
        assert status == 202, answer
        ids.append(answer["job_id"])
    seen = [(await call(jp_fetch, "jobs", job_id))[1] for job_id in ids]
    assert [s["status"] for s in seen] == ["running", "running", "queued", "queued"], seen
    assert [s.get("queue_position") for s in seen[2:]] == [1, 2]
    status, stopped = await call(jp_fetch, "jobs", ids[2], "stop", method="POST", body={})
    assert status == 200 and stopped["status"] == "killed", stopped  # it leaves the queue
    status, moved = await call(jp_fetch, "jobs", ids[3])
    assert moved["status"] == "queued" and moved["queue_position"] == 1, moved
    go.touch()
    for job_id in ids[:2] + ids[3:]:
        job = await finished_job(jp_fetch, job_id)
        assert job["status"] == "succeeded", job
    status, never = await call(jp_fetch, "jobs", ids[2])
    assert never["status"] == "killed" and never["run_id"] is None, never
