"""A served model against a bad-request corpus and without its token: a real `bentoml serve`
of a promoted model, with a bearer token and small limits; every answer a 4xx with the
right status and a message naming the field (the time each took is printed, not asserted);
the probes open, everything else closed without the token; `nbmlops serve --check` with a
token from the command line and from `[tool.nbmlops.serve]`."""

from __future__ import annotations

import json
import secrets
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from test_promote import Trained, make_cli, train
from test_serve import ROW

from nbmlops.promote import promote, resolve_model
from nbmlops.serve import server
from nbmlops.serve.build import bento_tags

TOKEN_ENV = "NBMLOPS_TEST_SERVICE_TOKEN"
LIMITS = {"max_body_bytes": 1_000_000, "max_records": 10_000, "max_depth": 8}


@dataclass
class Guarded:
    trained: Trained
    name: str
    url: str
    token: str
    log: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> Iterator[Guarded]:
    root = tmp_path_factory.mktemp("guarded-project")
    token = secrets.token_urlsafe(32)
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "BENTOML_HOME": str(root / "bentoml-home"),
        TOKEN_ENV: token,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key, value in env.items():
            mp.setenv(key, value)
        trained = train(root, tracking_uri, {"v1": ["depth=3"]})
        trained.cli = make_cli(root, env)
        name = f"guarded-{trained.experiment}"
        promote(trained.experiment, "accuracy", model_name=name, tracking_uri=tracking_uri)
        built = trained.cli("build", name)
        assert built.returncode == 0, built.stderr
        tag = bento_tags(resolve_model(name, tracking_uri))[0]
        log = root / "server.log"
        port = server.free_port()
        senv = server.server_env(root / "monitoring", True, TOKEN_ENV, LIMITS)
        proc = server.start(server.serve_command(tag, port), senv, log)
        url = f"http://127.0.0.1:{port}"
        try:
            server.wait_ready(url, proc, log)
            yield Guarded(trained, name, url, token, log)
        finally:
            server.stop(proc)


def body(*rows: dict[str, Any]) -> bytes:
    return json.dumps({"records": list(rows)}).encode()


def raw(**values: str) -> bytes:
    """One record as JSON text, a field's value written as given (``NaN``, 401 digits)."""
    fields = {k: json.dumps(v) for k, v in ROW.items()} | values
    return ('{"records": [{' + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}]}").encode()


HUGE = "9" * 401
# (case, body, status, what the error names)
CORPUS: list[tuple[str, bytes, int, str]] = [
    ("beyond float32 (the tree's dtype)", raw(a="1e308"), 400, "'a'"),
    ("beyond float32, negative", raw(c="-3.5e38"), 400, "'c'"),
    ("an integer of 401 digits for a number", raw(a=HUGE), 400, "'a'"),
    ("an integer of 401 digits for an integer", raw(b=HUGE), 400, "'b'"),
    ("an integer of 5000 digits", raw(a="9" * 5000), 400, "JSON"),
    ("100,000 [", b"[" * 100_000, 400, "nests"),
    ("100,000 { in a value", b'{"records": [{"a": ' + b"{" * 100_000, 400, "nests"),
    ("a deeply nested value", raw(a="[" * 20 + "1" + "]" * 20), 400, "nests"),
    ("brackets inside a string are text", raw(a=json.dumps("[" * 50)), 400, "'a'"),
    ("duplicate key in a record", raw(a='0.1, "a": 0.2'), 400, "'a'"),
    ("duplicate top-level key", b'{"records": [], "records": []}', 400, "'records'"),
    ("NaN", raw(a="NaN"), 400, "'a'"),
    ("Infinity", raw(b="Infinity"), 400, "'b'"),
    ("-Infinity", raw(c="-Infinity"), 400, "'c'"),
    ("a unicode field name", body({**ROW, "\u0430": 1.0}), 400, "'\\u0430'"),
    ("an emoji field name", body({**ROW, "\U0001f600": 1.0}), 400, "'\\U0001f600'"),
    ("a unicode top-level field", b'{"records": [], "r\xc3\xa9cords": []}', 400, "'r\\xe9cords'"),
    ("a top-level array", json.dumps([ROW]).encode(), 400, "object"),
    ("a top-level string", b'"records"', 400, "object"),
    ("a top-level null", b"null", 400, "object"),
    ("an empty body", b"", 400, "records"),
    ("a body of spaces", b"   \n", 400, "records"),
    ("no records field", b"{}", 400, "'records'"),
    ("records not a list", b'{"records": 3}', 400, "records"),
    ("not UTF-8", b'{"records": [{"a": "\xff"}]}', 400, "UTF-8"),
    ("truncated JSON", b'{"records": [{"a": 0.7', 400, "JSON"),
    ("records over max_records", body(*[{}] * 10_001), 413, "max_records"),
    (
        "body over max_body_bytes",
        b'{"records": [' + b" " * 1_000_001 + b"]}",
        413,
        "max_body_bytes",
    ),
]


def timed_post(url: str, content: Any, headers: dict[str, str]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = httpx.post(url + "/predict", content=content, headers=headers, timeout=60)
    return answer, time.perf_counter() - started


@pytest.mark.parametrize(("case", "content", "status", "named"), CORPUS, ids=[c[0] for c in CORPUS])
def test_every_bad_request_gets_its_4xx_naming_the_field(
    guarded: Guarded, case: str, content: bytes, status: int, named: str
) -> None:
    headers = {"Content-Type": "application/json", **guarded.auth}
    answer, took = timed_post(guarded.url, content, headers)
    print(f"{case}: {answer.status_code} in {took * 1000:.1f} ms")
    assert answer.status_code == status, (case, answer.text)
    assert named in answer.json()["error"], (case, answer.text)


@pytest.mark.parametrize(
    "media", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_is_not_json_gets_415(guarded: Guarded, media: str) -> None:
    answer, took = timed_post(guarded.url, b"[" * 100_000, {"Content-Type": media, **guarded.auth})
    print(f"{media}: {answer.status_code} in {took * 1000:.1f} ms")
    assert answer.status_code == 415, answer.text
    assert media in answer.json()["error"] and "application/json" in answer.json()["error"]


def test_a_streamed_body_over_the_limit_gets_413_before_it_is_read_whole(guarded: Guarded) -> None:
    # Chunked (no Content-Length), over a raw socket: stop sending once the answer came.
    port = int(guarded.url.rsplit(":", 1)[1])
    head = (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {guarded.token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
    sent, started, answer = 0, time.perf_counter(), b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode() + b'd\r\n{"records": [\r\n')
        for _ in range(200):  # 13 MB at most
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 65536
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    took = time.perf_counter() - started
    print(f"streamed body: refused in {took * 1000:.1f} ms after {sent} bytes sent")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"max_body_bytes" in answer


def test_a_large_valid_request_is_predicted_whole(guarded: Guarded) -> None:
    import mlflow

    rows = [{"a": i / 1000 - 5, "b": i % 10, "c": (i % 7) / 3 - 1} for i in range(10_000)]
    headers = {"Content-Type": "application/json", **guarded.auth}
    answer, took = timed_post(guarded.url, body(*rows), headers)
    print(f"10,000 records: {answer.status_code} in {took * 1000:.1f} ms")
    assert answer.status_code == 200, answer.text
    model = mlflow.pyfunc.load_model(f"models:/{guarded.name}/1")
    assert answer.json()["predictions"] == [int(p) for p in model.predict(pd.DataFrame(rows))]


def test_without_the_token_only_the_probes_answer(guarded: Guarded) -> None:
    for path in ("/livez", "/readyz"):
        assert httpx.get(guarded.url + path, timeout=30).status_code == 200, path
    wrong = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {guarded.token}"},
        {"Authorization": f"Bearer {guarded.token}x"},
    ]
    for headers in wrong:
        for method, path in (("GET", "/metrics"), ("GET", "/model"), ("GET", "/docs.json")):
            answer = httpx.request(method, guarded.url + path, headers=headers, timeout=30)
            assert answer.status_code == 401, (path, headers, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert "Authorization: Bearer" in answer.json()["error"]
            assert guarded.token not in answer.text
        answer = httpx.post(guarded.url + "/predict", json={"records": [ROW]}, headers=headers)
        assert answer.status_code == 401, answer.text
    # A bad request without the token is refused for the token, not read.
    assert httpx.post(guarded.url + "/predict", content=b"[" * 1000).status_code == 401


def test_with_the_token_every_route_answers(guarded: Guarded) -> None:
    auth = guarded.auth
    answer = httpx.post(guarded.url + "/predict", json={"records": [ROW]}, headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == "1"
    assert httpx.get(guarded.url + "/model", headers=auth).json()["model"] == guarded.name
    assert "bentoml_service_request_total" in httpx.get(guarded.url + "/metrics", headers=auth).text
    # The documented OpenAPI page: /docs leads to BentoML's page at /, its spec /docs.json.
    docs = httpx.get(guarded.url + "/docs", headers=auth, follow_redirects=True)
    assert docs.status_code == 200 and "<html" in docs.text.lower()
    spec = httpx.get(guarded.url + "/docs.json", headers=auth).json()
    assert "/predict" in spec["paths"]


def test_the_server_never_answered_5xx_nor_logged_the_token(guarded: Guarded) -> None:
    headers = {"Content-Type": "application/json", **guarded.auth}
    for _case, content, _status, _named in CORPUS:
        httpx.post(guarded.url + "/predict", content=content, headers=headers, timeout=60)
    text = guarded.log.read_text()
    assert "status=5" not in text and "Traceback" not in text
    assert guarded.token not in text


def test_serve_check_with_a_token_from_the_option_and_from_the_config(guarded: Guarded) -> None:
    cli, root = guarded.trained.cli, guarded.trained.root
    checked = cli("serve", guarded.name, "--check", "--no-monitoring", "--token-env", TOKEN_ENV)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "/predict -> 200" in checked.stdout
    unset = cli("serve", guarded.name, "--check", "--token-env", "NBMLOPS_NO_SUCH_TOKEN")
    assert unset.returncode != 0
    assert "the token variable NBMLOPS_NO_SUCH_TOKEN is not set or empty" in unset.stderr
    assert "Traceback" not in unset.stderr

    config = root / "nbmlops.toml"
    config.write_text(f'[serve]\ntoken_env = "{TOKEN_ENV}"\nmax_records = 5\n')
    try:
        from_config = cli("serve", guarded.name, "--check", "--no-monitoring")
        assert from_config.returncode == 0, from_config.stdout + from_config.stderr
        config.write_text("[serve]\nmax_depth = 0\n")
        bad = cli("serve", guarded.name, "--check")
        assert bad.returncode != 0
        assert "nbmlops.toml: serve.max_depth: 0 is out of range" in bad.stderr
    finally:
        config.unlink()
    assert guarded.token not in checked.stdout + checked.stderr + from_config.stdout
