"""End to end in a real browser: Debian's Chromium, driven by Playwright, against a real
``jupyter lab`` on a loopback port with the nbmlops extension installed.

A user opens the example notebook, marks a cell as a step, runs the pipeline from the
panel, promotes the best run, and does the same from the notebook widget; MLflow is then
asked whether the alias really moved. Screenshots of the panel and the widget are saved
(into ``$NBMLOPS_SCREENSHOT_DIR`` when set: ``make screenshots`` writes ``docs/img/``).

Playwright never downloads a browser here: it drives ``/usr/bin/chromium``. Without it the
tests fail, saying how to install it (``make test`` does, as root).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-background-networking",  # the closed network makes these stall
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

TIMEOUT_MS = 120_000
expect.set_options(timeout=30_000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lab:
    def __init__(self, root: Path, port: int, token: str, process: subprocess.Popen[bytes]):
        self.root, self.port, self.token, self.process = root, port, token, process
        self.url = f"http://127.0.0.1:{port}"
        self.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"

    def page_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    root = base / "project"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "breast_cancer.ipynb", root / "breast_cancer.ipynb")
    widget_nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import nbmlops.widgets\nnbmlops.widgets.runs(experiment='widget_demo')"
            )
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(widget_nb, str(root / "runs.ipynb"))
    broken = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["step:load"]}),
            nbformat.v4.new_code_cell("y = x + 1", metadata={"tags": ["step:load"]}),
        ],
        metadata=widget_nb.metadata,
    )
    nbformat.write(broken, str(root / "broken.ipynb"))

    # No "Would you like to get notified about Jupyter news?" toast over the panel.
    notifications = base / "settings" / "@jupyterlab" / "apputils-extension"
    notifications.mkdir(parents=True)
    (notifications / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        BENTOML_HOME=str(base / "bentoml"),  # the widget builds a Bento after promoting
    )
    log = (base / "lab.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "jupyter-lab"),
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lab = Lab(root, port, token, process)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={token}", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "jupyter lab did not start:\n" + (base / "lab.log").read_text()
                ) from None
            time.sleep(0.5)
    try:
        yield lab
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def page(lab: Lab) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: apt-get install chromium (`make test` does so when "
            "run as root); Playwright's own browser download is not used"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 950})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield page
        finally:
            page.screenshot(path=str(lab.root.parent / "last.png"))  # for a failing test
            context.close()
            browser.close()


def _screenshot(page: Page, target: Any, name: str, tmp: Path) -> Path:
    path = tmp / name
    target.screenshot(path=str(path))
    out = os.environ.get("NBMLOPS_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / name)
    return path


def _alias_version(lab: Lab, model: str, alias: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient(lab.tracking_uri).get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def _wait_for(condition: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _cell_tags(lab: Lab, notebook: str) -> list[list[str]]:
    nb = json.loads((lab.root / notebook).read_text())
    return [c["metadata"].get("tags", []) for c in nb["cells"]]


def _open_notebook(page: Page, lab: Lab, path: str) -> None:
    page.goto(lab.page_url(path))
    expect(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first).to_be_visible()
    # The kernel is idle once the notebook is ready to run cells.
    expect(
        page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']"
        )
    ).to_have_count(1)


def test_mark_step_run_and_promote_from_the_panel(lab: Lab, page: Page, tmp_path: Path) -> None:
    _open_notebook(page, lab, "breast_cancer.ipynb")
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    expect(cells).to_have_count(12)

    # Cell 9 (nbmlops.log_model) belongs to the train step; make it a step of its own.
    cell = cells.nth(9)
    cell.locator(".jp-InputPrompt").click()
    cell.locator("[data-command='nbmlops:mark-step']").click()
    page.locator("[data-nbmlops='step-name-input']").fill("register")
    page.locator("[data-nbmlops='step-after-input']").fill("train")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    expect(cell).to_have_attribute("data-nbmlops-step", "register")
    page.keyboard.press("Control+s")
    _wait_for(lambda: "step:register" in _cell_tags(lab, "breast_cancer.ipynb")[9], "the save")
    assert _cell_tags(lab, "breast_cancer.ipynb")[9] == ["step:register", "after:train"]

    # The panel shows the new step in the graph, then runs the pipeline with a parameter.
    page.locator(".jp-SideBar [data-id='nbmlops-panel']").click()
    panel = page.locator("#nbmlops-panel")
    graph = panel.locator("[data-nbmlops='steps-graph']")
    for step in ("load", "features", "train", "register", "evaluate"):
        expect(graph.locator(f"[data-nbmlops-step='{step}']")).to_have_count(1)
    expect(graph.locator("[data-nbmlops-edge='train->register']")).to_have_count(1)

    panel.locator("[data-nbmlops='run-button']").click()
    panel.locator("[data-nbmlops-param='n_estimators']").fill("50")
    panel.locator("[data-nbmlops='run-submit']").click()
    status = panel.locator("[data-nbmlops='run-status']")
    expect(status).to_have_attribute(
        "data-nbmlops-status", re.compile("succeeded|failed"), timeout=240_000
    )
    assert status.get_attribute("data-nbmlops-status") == "succeeded", status.inner_text()
    expect(status).to_contain_text("succeeded")
    run_id = panel.locator("[data-nbmlops='mlflow-run-id']").inner_text().strip()
    expect(
        panel.locator(f"[data-nbmlops='runs-table'] [data-nbmlops-run='{run_id}']")
    ).to_be_visible()
    _screenshot(page, page, "panel-run.png", tmp_path)

    from mlflow import MlflowClient

    client = MlflowClient(lab.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["n_estimators"] == "50"
    steps = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(s.data.tags["mlflow.runName"] for s in steps) == [
        "evaluate",
        "features",
        "load",
        "register",
        "train",
    ]

    # Promote best by f1 with a gate: the alias moves in MLflow.
    assert _alias_version(lab, "breast_cancer", "champion") is None
    panel.locator("[data-nbmlops='promote-button']").click()
    panel.locator("[data-nbmlops='promote-metric']").select_option("f1")
    panel.locator("[data-nbmlops='promote-gates']").fill("f1>=0.9")
    panel.locator("[data-nbmlops='promote-submit']").click()
    result = panel.locator("[data-nbmlops='promote-result']")
    expect(result).to_contain_text("champion", timeout=120_000)
    expect(result).to_contain_text("version 1")
    assert _alias_version(lab, "breast_cancer", "champion") == "1"
    mv = client.get_model_version("breast_cancer", "1")
    assert mv.run_id == run_id
    _screenshot(page, panel, "panel.png", tmp_path)


def test_promote_from_the_notebook_widget(lab: Lab, page: Page, tmp_path: Path) -> None:
    """The widget lists a run made on the command line and promotes it to an alias."""
    shutil.copy(ROOT / "notebooks" / "breast_cancer.ipynb", lab.root / "widget_demo.ipynb")
    env = dict(os.environ, MLFLOW_TRACKING_URI=lab.tracking_uri)
    cli = [sys.executable, "-c", "from nbmlops.cli import main; main()"]
    made = subprocess.run(
        [*cli, "run", "widget_demo.ipynb", "-p", "n_estimators=20", "-q"],
        cwd=lab.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr
    _open_notebook(page, lab, "runs.ipynb")
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first
    # Right after the page loads, the kernel's connection may still be settling and an
    # execute request goes nowhere: run the cell again until the kernel takes it.
    for _ in range(6):
        cell.locator(".jp-InputPrompt").click()
        page.keyboard.press("Control+Enter")
        try:
            expect(cell.locator(".jp-InputPrompt")).to_contain_text(
                re.compile(r"\[[*0-9]"), timeout=10_000
            )
            break
        except AssertionError:
            continue

    widget = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) [data-nbmlops='widget']")
    rows = widget.locator("[data-nbmlops='widget-runs-table'] [data-run-id]")
    expect(rows).to_have_count(1, timeout=90_000)
    run_id = rows.first.get_attribute("data-run-id")
    assert run_id
    rows.first.click()
    details = widget.locator("[data-nbmlops='widget-details']")
    expect(details).to_contain_text("train")
    expect(widget.locator("[data-nbmlops='widget-chart']")).to_be_visible()

    # Type the alias and click straight away: the input's change event fires as it loses
    # focus to the button, and the click must still land.
    widget.locator("[data-nbmlops='widget-alias']").fill("staging")
    widget.locator("[data-nbmlops='widget-promote-best']").click()
    result = widget.locator("[data-nbmlops='widget-result']")
    expect(result).to_have_attribute("data-state", "built", timeout=180_000)
    expect(result).to_contain_text("staging")
    assert _alias_version(lab, "widget_demo", "staging") == "1"
    from mlflow import MlflowClient

    assert MlflowClient(lab.tracking_uri).get_model_version("widget_demo", "1").run_id == run_id
    _screenshot(
        page,
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first,
        "widget.png",
        tmp_path,
    )


def test_a_notebook_nbmlops_cannot_parse_opens_and_the_panel_says_why(lab: Lab, page: Page) -> None:
    _open_notebook(page, lab, "broken.ipynb")
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    expect(cells).to_have_count(2)
    expect(cells.nth(1)).to_contain_text("y = x + 1")
    panel = page.locator("#nbmlops-panel")
    if not panel.is_visible():
        page.locator(".jp-SideBar [data-id='nbmlops-panel']").click()
    error = panel.locator("[data-nbmlops='parse-error']")
    expect(error).to_contain_text("load")
    expect(error).to_contain_text("cell 2")
    expect(panel.locator("[data-nbmlops='run-button']")).to_be_disabled()
