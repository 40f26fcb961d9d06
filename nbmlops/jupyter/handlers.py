"""REST endpoints under ``<base_url>nbmlops/api/``: thin calls into the nbmlops core.

Each handler parses the request, confines the notebook path to the server's root
directory, runs the core function on an executor thread (MLflow queries and promotion
block) and answers JSON. A user's mistake is a 4xx ``{"error": {"problem", "fix", ...}}``:

- ``GET pipeline?path=``: the notebook's steps, parameters and tag warnings (422 when it
  cannot be parsed);
- ``GET runs?path=&limit=``: its pipeline runs, newest first (``records.run_table``);
- ``POST runs``: start ``nbmlops run`` as a job (``run/jobs.py``); 400 for a bad parameter;
- ``GET jobs/<id>``: the job's progress and outcome; ``POST jobs/<id>/stop`` ends it as
  KILLED; ``POST runs`` answers 409 while a run of the notebook goes, unless
  ``"concurrent": true``;
- ``GET compare?path=&run_id=...``: runs side by side, and which run holds which alias;
- ``GET glance?path=``: the champion and the latest drift and performance verdicts;
  ``format=html``: the model's over-time report, for a JupyterLab tab;
- ``POST promote``: ``serve.release.release`` (promote, and build the Bento with
  ``"build": true``); 409 when refused.

Limits are checked before anything else (400, or 413 for the body): the path's length, a
parameter's size, the body's size and its nesting depth (counted before it is parsed).
Symlinks are followed before the root and hidden-folder rules.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler

from nbmlops.capture.schema import DEFAULT_ALIAS, MODES
from nbmlops.exceptions import NbmlopsError
from nbmlops.project import experiment_name, state_dir

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def authorized_to(action: str) -> Callable[[F], F]:
    """jupyter_server's ``@authorized(action)``, typed (its overloads confuse mypy)."""
    return cast(Callable[[F], F], authorized(action))


MAX_PATH = 1024  # characters of a notebook path (the OS refuses a name part over 255)
MAX_PARAMETER = 32_000  # characters of one parameter (a command-line argument's limit is 128 KiB)
MAX_BODY = 1_000_000  # bytes of a request body
MAX_DEPTH = 32  # levels of nesting of a JSON body, counted before it is parsed


def nesting(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in the JSON text ``raw`` (outside strings),
    counted without recursion: a body nested 100,000 deep is refused, not parsed."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class RequestError(NbmlopsError):
    """A request the endpoint refuses before calling the core: its status and fields."""

    def __init__(self, status: int, problem: str, fix: str = "", **extra: Any) -> None:
        super().__init__(problem, fix)
        self.http_status = status
        self.extra = extra

    def details(self) -> dict[str, Any]:
        return dict(self.extra)


class NbmlopsHandler(APIHandler):
    """Shared by the endpoints: JSON errors, path confinement, executor calls.

    Every endpoint is ``@authenticated`` (a login) and ``@authorized`` by the server's
    Authorizer on the resource ``nbmlops``: reading (GET) is "read", promoting is "write",
    starting a run (which executes the notebook's code) is "execute".
    """

    auth_resource = "nbmlops"

    @property
    def app(self) -> Any:
        return self.settings["nbmlops"]

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def reply(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))

    def body(self) -> dict[str, Any]:
        raw = self.request.body or b"{}"
        if len(raw) > MAX_BODY:
            raise RequestError(
                413, f"the request body is {len(raw)} bytes (at most {MAX_BODY})", "send less"
            )
        depth = nesting(raw)
        if depth > MAX_DEPTH:
            raise RequestError(
                400,
                f"the request body nests {depth} levels deep (at most {MAX_DEPTH})",
                'send {"path": ..., "parameters": {"name": "text"}}',
            )
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(
                400, f"the request body is not JSON ({exc})", "send a JSON object"
            ) from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body is not a JSON object", "send a JSON object")
        return body

    def notebook(self, path: Any) -> Path:
        """``path`` (relative to the server's root) as a file inside the root: 403 outside,
        400 if not a notebook, 404 if missing."""
        if not isinstance(path, str) or not path:
            raise RequestError(400, "no notebook path given", "pass path=<notebook.ipynb>")
        if "\x00" in path:
            raise RequestError(400, "the path holds a NUL character", "give a notebook's path")
        if len(path) > MAX_PATH or any(len(part) > 255 for part in path.split("/")):
            raise RequestError(
                400,
                f"the path is {len(path)} characters long (at most {MAX_PATH}, and 255 "
                "for a folder or file name)",
                "give a notebook's path relative to the Jupyter root",
            )
        root: Path = self.app.root
        if os.path.isabs(path) or path.startswith(("/", "\\")):
            raise RequestError(
                403, f"{path} is an absolute path", "give the path relative to the Jupyter root"
            )
        resolved = Path(os.path.realpath(root / path))  # symlinks followed before the rules
        if not resolved.is_relative_to(root):
            raise RequestError(
                403,
                f"{path} is outside the Jupyter root directory",
                "open a notebook under the root",
            )
        named = [*Path(path).parts, *resolved.relative_to(root).parts]
        hidden = [part for part in named if part.startswith(".") and part != ".."]
        if hidden and not self.app.allow_hidden:
            raise RequestError(
                403,
                f"{path} is in a hidden folder ({hidden[0]})",
                "open a notebook outside hidden folders (or set ContentsManager.allow_hidden)",
            )
        if not path.endswith(".ipynb"):
            raise RequestError(400, f"{path} is not a notebook", "give the path of an .ipynb file")
        if not resolved.is_file():
            raise RequestError(404, f"no notebook {path}", "check the path (was it renamed?)")
        return resolved


def answers(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Answer a :class:`RequestError` or an error of the core as a 4xx JSON error."""

    @functools.wraps(method)
    async def wrapper(self: NbmlopsHandler, *args: Any) -> None:
        try:
            await method(self, *args)
        except NbmlopsError as e:
            self.reply(*_status(e))
        except Exception as e:
            from mlflow.exceptions import MlflowException  # imported late: Jupyter starts faster

            if not isinstance(e, MlflowException):
                raise
            # The store failed, not the request: 503, and the panel shows why.
            from nbmlops.project import redact

            problem = f"the MLflow store {redact(self.app.store)} answered: {e.message}"
            fix = "check c.Nbmlops.tracking_uri or $MLFLOW_TRACKING_URI, then Reload"
            self.reply(503, {"error": {"problem": problem, "fix": fix}})

    return wrapper


def _status(e: NbmlopsError) -> tuple[int, dict[str, Any]]:
    """The HTTP answer to an error of the core: its ``http_status`` and fields (never a 500)."""
    return e.http_status, {"error": e.to_json()}


class PipelineHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    @answers
    async def get(self) -> None:
        from nbmlops.notebook.pipeline import load_pipeline

        path = self.get_query_argument("path", "")
        pipeline = await self.blocking(load_pipeline, self.notebook(path))
        self.reply(
            200,
            {
                "path": path,
                "experiment": pipeline.stem,
                "steps": [
                    {"name": s.name, "after": list(s.upstream), "cells": [c.index for c in s.cells]}
                    for s in pipeline.steps
                ],
                "parameters": [
                    {"name": p.name, "value": p.default_source, "type": p.type_name or None}
                    for p in pipeline.parameters.values()
                ],
                "warnings": [w.describe() for w in pipeline.warnings],
            },
        )


class RunsHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    @answers
    async def get(self) -> None:
        from nbmlops.capture.records import run_table
        from nbmlops.capture.tracking import open_client

        notebook = self.notebook(self.get_query_argument("path", ""))
        try:
            limit = int(self.get_query_argument("limit", "20"))
        except ValueError:
            raise RequestError(400, "limit is not a number", "pass limit=20") from None
        if not 1 <= limit <= 1000:
            raise RequestError(400, f"limit {limit} is not between 1 and 1000", "pass limit=20")
        uri = self.app.store
        if not _store_exists(uri):  # opening the panel creates no mlflow.db
            self.reply(200, {"experiment": experiment_name(notebook), "metrics": [], "runs": []})
            return
        table = await self.blocking(
            lambda: run_table(open_client(uri), experiment_name(notebook), limit, uri)
        )
        self.reply(200, table.to_json())

    @tornado.web.authenticated
    @authorized_to("execute")
    @answers
    async def post(self) -> None:
        body = self.body()
        path = body.get("path")
        notebook = self.notebook(path)
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict) or not all(
            isinstance(v, str) for v in parameters.values()
        ):
            raise RequestError(
                400,
                "parameters must map names to Python literal source text",
                'send {"alpha": "0.5"}, as -p alpha=0.5 on the command line',
            )
        for name, text in parameters.items():
            if len(name) + len(text) > MAX_PARAMETER:
                raise RequestError(
                    400,
                    f"parameter {name[:40]!r} is {len(name) + len(text)} characters "
                    f"(at most {MAX_PARAMETER})",
                    "pass large data as a file the notebook reads, and its path as the parameter",
                    parameter=name[:200],
                )
        concurrent = body.get("concurrent") is True  # another run while one goes: asked first
        job = await self.blocking(self.app.jobs.start, notebook, parameters, path, concurrent)
        self.reply(202, {"job_id": job.job_id})


class JobHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized
    @answers
    async def get(self, job_id: str) -> None:
        self.reply(200, await self.blocking(self.app.jobs.status, job_id))


class StopJobHandler(NbmlopsHandler):
    """``POST jobs/<id>/stop``: end the run as KILLED (``Jobs.stop``); its status."""

    @tornado.web.authenticated
    @authorized_to("execute")
    @answers
    async def post(self, job_id: str) -> None:
        self.reply(200, await self.blocking(self.app.jobs.stop, job_id))


class CompareHandler(NbmlopsHandler):
    """``GET compare?path=&run_id=...``: the runs side by side and who holds which alias
    (``capture.compare``); no ``run_id``: the aliases only."""

    @tornado.web.authenticated
    @authorized
    @answers
    async def get(self) -> None:
        from nbmlops.capture.compare import compare
        from nbmlops.capture.tracking import open_client

        notebook = self.notebook(self.get_query_argument("path", ""))
        ids = self.get_query_arguments("run_id")
        if len(ids) > 20:
            raise RequestError(400, f"{len(ids)} runs to compare", "compare at most 20 runs")
        if not _store_exists(self.app.store):  # looking creates no store
            self.reply(200, {"experiment": experiment_name(notebook), "aliases": {}, "runs": []})
            return
        uri = self.app.store
        self.reply(
            200,
            await self.blocking(lambda: compare(open_client(uri), experiment_name(notebook), ids)),
        )


class GlanceHandler(NbmlopsHandler):
    """``GET glance?path=&model_name=&alias=``: the served model at a glance
    (``monitor.glance``); with ``format=html`` its over-time report page."""

    @property
    def content_security_policy(self) -> str:
        """The API's (nothing may load), but the report's inline style and data: images."""
        return f"{super().content_security_policy}; img-src data:; style-src 'unsafe-inline'"

    @tornado.web.authenticated
    @authorized
    @answers
    async def get(self) -> None:
        from nbmlops.monitor import glance

        notebook = self.notebook(self.get_query_argument("path", ""))
        name = self.get_query_argument("model_name", "") or experiment_name(notebook)
        alias = self.get_query_argument("alias", "") or DEFAULT_ALIAS
        uri = self.app.store
        if not _store_exists(uri):  # looking creates no store
            note = "nothing promoted yet: run the pipeline, then Promote"
            self.reply(200, {"model": name, "alias": alias, "champion": None, "note": note})
            return
        rule = _monitor_rule(self.app.root, name)
        logs = os.environ.get("NBMLOPS_MONITOR_DIR") or str(state_dir(self.app.root) / "monitoring")
        if self.get_query_argument("format", "json") == "html":
            from nbmlops.monitor.timeline import render_html

            line = await self.blocking(lambda: glance.report(name, alias, rule, logs, uri))
            assert line is not None
            self.finish(render_html(line), set_content_type="text/html; charset=utf-8")
            return
        self.reply(
            200,
            await self.blocking(
                lambda: glance.glance(name, alias, rule=rule, monitor_dir=logs, tracking_uri=uri)
            ),
        )


def _monitor_rule(root: Path, model: str) -> Any:
    """The performance rule of the project configuration's pipeline training ``model``
    (``[tool.nbmlops.pipelines.X.monitor]``), else the default rule; a broken
    configuration is the error to answer."""
    from nbmlops import config
    from nbmlops.monitor.performance import Rule

    try:
        config.find(root)
    except config.ConfigError:  # no configuration
        return Rule()
    project = config.load(root)
    try:
        configured = project.for_model(model).monitor
    except NbmlopsError:  # no pipeline trains it
        return Rule()
    return Rule(gate=configured.performance, max_drop=configured.max_drop)


def _store_exists(uri: str) -> bool:
    """False for a SQLite store whose file is not there yet (the first run creates it)."""
    if not uri.startswith("sqlite:///"):
        return True
    return Path(uri.removeprefix("sqlite:///")).exists()


class PromoteHandler(NbmlopsHandler):
    @tornado.web.authenticated
    @authorized_to("write")
    @answers
    async def post(self) -> None:
        from nbmlops.serve.release import release

        body = self.body()
        notebook = self.notebook(body.get("path"))
        metric = body.get("metric")
        if not isinstance(metric, str) or not metric:
            raise RequestError(400, "no metric given", "name the metric to compare runs by")
        gates = body.get("gates") or []
        if not isinstance(gates, list) or not all(isinstance(g, str) for g in gates):
            raise RequestError(400, "gates must be a list of texts", 'send ["f1>=0.9"]')
        flags = {k: body.get(k, False) for k in ("force", "build")}
        for key, flag in flags.items():
            if not isinstance(flag, bool):
                raise RequestError(
                    400, f"{key} must be true or false, not {flag!r}", f'send "{key}": false'
                )
        texts = {k: body.get(k) for k in ("mode", "model_name", "alias", "run_id", "reason")}
        for key, value in texts.items():
            if value is not None and not isinstance(value, str):
                raise RequestError(
                    400, f"{key} must be a text, not {value!r}", f"send {key} as a string or null"
                )
        done = await self.blocking(
            lambda: release(
                experiment_name(notebook),
                metric,
                mode=texts["mode"] or MODES[0],
                gates=gates,
                model_name=texts["model_name"] or None,
                alias=texts["alias"] or DEFAULT_ALIAS,
                run_id=texts["run_id"] or None,
                force=flags["force"],
                tracking_uri=self.app.store,
                build=flags["build"],
                reason=texts["reason"] or "",
            )
        )
        self.reply(200, {"promoted": True, **done.summary()})


def routes() -> list[tuple[str, type, dict[str, Any]]]:
    api = "nbmlops/api"
    return [
        (f"{api}/pipeline", PipelineHandler, {}),
        (f"{api}/runs", RunsHandler, {}),
        (rf"{api}/jobs/([A-Za-z0-9_-]+)", JobHandler, {}),
        (rf"{api}/jobs/([A-Za-z0-9_-]+)/stop", StopJobHandler, {}),
        (f"{api}/promote", PromoteHandler, {}),
        (f"{api}/compare", CompareHandler, {}),
        (f"{api}/glance", GlanceHandler, {}),
    ]
