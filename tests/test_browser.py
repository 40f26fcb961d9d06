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


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    """pytest-jupyter's autouse event loop and server clean-up (its plugin is loaded by other
    test modules) are not for these tests: they start their own ``jupyter lab``, and
    Playwright's sync API runs its own loop, which that fixture would close."""
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    yield None


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
    # Step `wait` waits for the file `go`: it is stopped from the panel while it waits.
    slow = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import os, time"),
            nbformat.v4.new_code_cell("x = 2\nseed = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("y = x * 3", metadata={"tags": ["step:load"]}),
            nbformat.v4.new_code_cell(
                "while not os.path.exists('go'):\n    time.sleep(0.1)",
                metadata={"tags": ["step:wait"]},
            ),
        ],
        metadata=widget_nb.metadata,
    )
    nbformat.write(slow, str(root / "slow.ipynb"))
    # A loss logged by step: the comparison view draws it as curves.
    curves = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import nbmlops"),
            nbformat.v4.new_code_cell("rate = 0.5", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(
                "for i in range(8):\n    nbmlops.log_metric('loss', 1 / (1 + rate * i), step=i)\n"
                "nbmlops.log_metric('final_loss', 1 / (1 + rate * 7))",
                metadata={"tags": ["step:fit"]},
            ),
        ],
        metadata=widget_nb.metadata,
    )
    nbformat.write(curves, str(root / "curves.ipynb"))

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
            "--LabApp.expose_app_in_browser=True",  # the tests switch themes by command
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


# Every visible text of `root` against the background it is drawn on (the backgrounds of
# its ancestors composed, an SVG node's text against its group's box): the texts below WCAG AA's
# 4.5:1. Disabled controls are exempt, as in WCAG.
_CONTRAST_JS = """
(root) => {
  const parse = c => {
    let m = c.match(/^rgba?\\(([^)]+)\\)/);
    if (m) {
      const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
      return [p[0] / 255, p[1] / 255, p[2] / 255, p.length > 3 ? p[3] : 1];
    }
    m = c.match(/^color\\(srgb ([^)]+)\\)/);
    if (m) {
      const p = m[1].split(/[\\s\\/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    return null;
  };
  const over = (top, below) => [0, 1, 2].map(i => top[i] * top[3] + below[i] * (1 - top[3])).concat([1]);
  const lum = c => {
    const f = v => (v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4));
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const background = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      if (e instanceof SVGElement) continue;
      const bg = parse(getComputedStyle(e).backgroundColor);
      if (bg && bg[3] > 0) {
        layers.push(bg);
        if (bg[3] >= 1) break;
      }
    }
    return layers.reverse().reduce((below, top) => over(top, below), [1, 1, 1, 1]);
  };
  const hex = c => '#' + c.slice(0, 3).map(v => Math.round(v * 255).toString(16).padStart(2, '0')).join('');
  const failures = [];
  let checked = 0;
  for (const el of root.querySelectorAll('*')) {
    if (['title', 'style', 'script', 'option'].includes(el.tagName.toLowerCase())) continue;
    const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    if (!text || !el.getClientRects().length || el.closest(':disabled')) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden') continue;
    let fg, bg;
    if (el instanceof SVGElement) {
      fg = parse(cs.fill);
      bg = background(el.closest('svg').parentElement);
      const g = el.parentElement && el.parentElement.tagName.toLowerCase() === 'g';
      const box = g ? el.parentElement.querySelector(':scope > rect') : null;
      const fill = box ? parse(getComputedStyle(box).fill) : null;
      if (fill) bg = over(fill, bg);
    } else {
      fg = parse(cs.color);
      bg = background(el);
    }
    if (!fg || !bg) continue;
    fg = over(fg, bg);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    checked += 1;
    if (ratio < 4.5) {
      failures.push(`${ratio.toFixed(2)}:1 ${hex(fg)} on ${hex(bg)}: <${el.tagName.toLowerCase()} class="${el.getAttribute('class') || ''}"> ${text.slice(0, 40)}`);
    }
  }
  return { checked, failures };
}
"""


def _assert_readable(target: Any, what: str) -> None:
    """Every text of ``target`` (a locator) contrasts 4.5:1 with its background."""
    found = target.evaluate(_CONTRAST_JS)
    assert found["checked"] > 3, f"{what}: no text found to check"
    assert not found["failures"], f"{what}: text below 4.5:1\n" + "\n".join(found["failures"])


def _set_theme(page: Page, theme: str) -> None:
    page.evaluate(
        "t => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", theme
    )
    expect(page.locator(f"body[data-jp-theme-name='{theme}']")).to_have_count(1)
    layout = {
        "JupyterLab Light": ("white", "#fff", "#ffffff"),
        "JupyterLab Dark": ("#212121", "var(--md-grey-900,#212121)"),
        "JupyterLab Dark High Contrast": ("#111", "#111111"),
    }[theme]
    _wait_for(
        lambda: (
            page.evaluate(
                "() => getComputedStyle(document.body).getPropertyValue('--jp-layout-color1').trim()"
            ).lower()
            in layout
        ),
        f"the {theme} theme's colours",
    )


def _readable_in_every_theme(
    page: Page, target: Any, what: str, shot: str | None = None, tmp: Path | None = None
) -> None:
    """Check ``target`` in Light, then in Dark (a screenshot) and JupyterLab 4.6's Dark High
    Contrast, back to Light."""
    _assert_readable(target, f"{what} (Light)")
    try:
        for theme in ("JupyterLab Dark", "JupyterLab Dark High Contrast"):
            _set_theme(page, theme)
            _assert_readable(target, f"{what} ({theme})")
            if shot and tmp and theme == "JupyterLab Dark":
                _screenshot(page, target, shot, tmp)
    finally:
        _set_theme(page, "JupyterLab Light")


def _log_predictions(folder: Path) -> None:
    """Today's predictions in the service's log format: the data set's rows with
    ``mean radius`` shifted by three of its sds."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    frame["mean radius"] += 3 * frame["mean radius"].std()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    (folder / "data").mkdir(parents=True)
    with open(folder / "data" / "data.0.log", "w") as out:
        for i, row in enumerate(frame.to_dict(orient="records")):
            line = {"timestamp": stamp, "request_id": f"r{i}", "latency_ms": 4.0, **row}
            out.write(json.dumps({**line, "prediction": 1, "proba": {"0": 0.2, "1": 0.8}}) + "\n")


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

    # The traps: a loop through notebook order is refused before any tag is written,
    # with its path; so is a markdown cell (by the keyboard shortcut).
    load = cells.nth(4)
    load.locator(".jp-InputPrompt").click()
    load.locator("[data-command='nbmlops:mark-step']").click()
    page.locator("[data-nbmlops='step-after-input']").fill("evaluate")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    error = page.locator("[data-nbmlops='step-error']")
    expect(error).to_contain_text("evaluate → train → features → load → evaluate")
    _screenshot(page, page.locator(".jp-Dialog-content"), "mark-step-loop.png", tmp_path)
    page.locator(".jp-Dialog").get_by_role("button", name="Cancel").click()
    assert _cell_tags(lab, "breast_cancer.ipynb")[4] == ["step:load"]
    expect(load).to_have_attribute("data-nbmlops-step", "load")
    cells.nth(3).click()  # "## Load the data"
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Alt+s")
    expect(page.locator(".jp-Dialog-content")).to_contain_text("a step starts with a code cell")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    expect(page.locator(".jp-Dialog")).to_have_count(0)

    # The notebook toolbar has the button too (a cell's toolbar hides over a long line).
    toolbar = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-NotebookPanel-toolbar")
    expect(toolbar.locator("[data-command='nbmlops:mark-step']")).to_be_visible()

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
    expect(panel.locator("[data-nbmlops='runs-table']")).to_contain_text("No pipeline runs yet")
    assert not (lab.root / "mlflow.db").exists()  # looking creates no store

    panel.locator("[data-nbmlops='run-button']").click()
    panel.locator("[data-nbmlops-param='n_estimators']").fill("50")
    panel.locator("[data-nbmlops='run-submit']").click()
    expect(panel.locator("[data-nbmlops='run-button']")).to_be_disabled()  # one at a time
    status = panel.locator("[data-nbmlops='run-status']")
    expect(status).to_have_attribute(
        "data-nbmlops-status", re.compile("succeeded|failed"), timeout=240_000
    )
    expect(panel.locator("[data-nbmlops='run-button']")).to_be_enabled()
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

    # A second run with more trees (load and features come from the cache), then the two
    # side by side: the parameter that differs, metrics as bars, steps' cache and time,
    # and which run holds @champion.
    panel.locator("[data-nbmlops='run-button']").click()
    panel.locator("[data-nbmlops-param='n_estimators']").fill("80")
    panel.locator("[data-nbmlops='run-submit']").click()
    expect(status).to_have_attribute(
        "data-nbmlops-status", re.compile("succeeded|failed"), timeout=240_000
    )
    second = panel.locator("[data-nbmlops='mlflow-run-id']").inner_text().strip()
    history = panel.locator("[data-nbmlops='runs-table']")
    expect(history.locator(f"[data-nbmlops-run='{second}']")).to_be_visible()
    expect(
        history.locator(f"[data-nbmlops-run='{run_id}'] [data-nbmlops-alias='champion']")
    ).to_be_visible()
    history.locator(f"[data-nbmlops-run='{run_id}'] td").nth(2).click()  # the row, not the box
    history.locator(f"[data-nbmlops-select='{second}']").check()
    compare = panel.locator("[data-nbmlops='compare']")
    expect(compare).to_contain_text("Compare 2 runs")
    changed = compare.locator("[data-nbmlops-compare-param='n_estimators']")
    expect(changed).to_have_attribute("data-nbmlops-differs", "true")
    expect(changed).to_contain_text("50")
    expect(changed).to_contain_text("80")
    expect(compare.locator("[data-nbmlops-compare-param='seed']")).to_have_attribute(
        "data-nbmlops-differs", "false"
    )
    expect(compare.locator(f"[data-nbmlops-bar='f1:{second}']")).to_have_count(1)
    expect(compare.locator("[data-nbmlops-compare-step='load'] td").nth(2)).to_have_text("cached")
    heads = compare.locator("[data-nbmlops='compare-params'] tr").first.locator("th")
    expect(heads.nth(1).locator("[data-nbmlops-alias='champion']")).to_have_count(1)
    expect(heads.nth(2).locator("[data-nbmlops-alias]")).to_have_count(0)
    scroll = panel.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll[0] <= scroll[1], f"the panel scrolls sideways: {scroll}"
    _screenshot(page, compare, "panel-compare.png", tmp_path)

    # A gate the new run fails: refused, with the fix in the panel's terms; Promote anyway
    # asks why (a reason is required), then moves the alias: the reason and the override
    # are recorded in the alias history.
    panel.locator("[data-nbmlops='promote-button']").click()
    panel.locator("[data-nbmlops='promote-metric']").select_option("f1")
    panel.locator("[data-nbmlops='promote-gates']").fill("f1>=0.999")
    panel.locator("[data-nbmlops='promote-submit']").click()
    expect(result).to_have_attribute("data-nbmlops-outcome", "refused", timeout=120_000)
    expect(result).to_contain_text('click "Promote anyway"')
    expect(result).not_to_contain_text("--force")
    result.locator("[data-nbmlops='promote-force']").click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_role("button", name="Promote anyway").click()  # no reason yet: asked again
    expect(dialog).to_contain_text("A reason is needed")
    dialog.locator("input").fill("more trees, checked by hand on the hold-out")
    _screenshot(page, page.locator(".jp-Dialog-content"), "promote-anyway.png", tmp_path)
    dialog.get_by_role("button", name="Promote anyway").click()
    expect(result).to_have_attribute("data-nbmlops-outcome", "promoted", timeout=120_000)
    assert _alias_version(lab, "breast_cancer", "champion") == "2"
    from nbmlops.promote import history as alias_history

    move = alias_history("breast_cancer", lab.tracking_uri)[-1]
    assert move.forced and move.reason.startswith(
        "more trees, checked by hand on the hold-out (overrode: "
    )

    # The served model at a glance: the champion, why it was forced; once its service has
    # logged predictions (shifted inputs), the latest drift and performance verdicts and
    # the over-time report in a JupyterLab tab.
    served = panel.locator("[data-nbmlops='served']")
    expect(served.locator("[data-nbmlops='served-version']")).to_have_text("2")
    expect(served.locator("[data-nbmlops='served-forced']")).to_contain_text("more trees")
    expect(served.locator("[data-nbmlops='served-note']")).to_contain_text("no monitor logs")
    _log_predictions(lab.root / ".nbmlops" / "monitoring" / "breast_cancer-v2")
    panel.locator("[data-nbmlops='refresh-button']").click()
    drift = served.locator("[data-nbmlops='served-drift']")
    expect(drift).to_have_attribute("data-nbmlops-verdict", "alert")
    expect(drift).to_contain_text("mean radius")
    expect(served.locator("[data-nbmlops='served-performance']")).to_contain_text("performance ok")
    _screenshot(page, served, "panel-served.png", tmp_path)
    served.locator("[data-nbmlops='served-report']").click()
    report = page.frame_locator(".nbmlops-report iframe")
    expect(report.locator("h1")).to_contain_text("breast_cancer@champion")
    _screenshot(page, page.locator(".nbmlops-report"), "served-report.png", tmp_path)
    page.locator(".lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon").click()
    _readable_in_every_theme(
        page, panel, "the panel after a run and a promotion", "panel-dark.png", tmp_path
    )


def test_stop_ends_the_run_as_killed_and_keeps_finished_steps(
    lab: Lab, page: Page, tmp_path: Path
) -> None:
    _open_notebook(page, lab, "slow.ipynb")
    panel = page.locator("#nbmlops-panel")
    if not panel.is_visible():
        page.locator(".jp-SideBar [data-id='nbmlops-panel']").click()
    expect(panel.locator("[data-nbmlops='notebook-path']")).to_have_text("slow.ipynb")
    expect(panel.locator("[data-nbmlops='loading']")).to_have_count(0)
    run = panel.locator("[data-nbmlops='run-button']")
    run.click()
    panel.locator("[data-nbmlops='run-submit']").click()
    expect(run).to_be_disabled()
    status = panel.locator("[data-nbmlops='run-status']")
    expect(status).to_contain_text("step wait", timeout=120_000)
    panel.locator("[data-nbmlops='stop-button']").click()
    expect(status).to_have_attribute("data-nbmlops-status", "killed", timeout=60_000)
    expect(status).to_contain_text("KILLED; 1 finished step stays cached")
    expect(panel.locator("[data-nbmlops='stop-button']")).to_have_count(0)
    expect(run).to_be_enabled()
    _readable_in_every_theme(page, panel, "the panel after Stop")

    from mlflow import MlflowClient

    client = MlflowClient(lab.tracking_uri)
    exp = client.get_experiment_by_name("slow")
    assert exp is not None
    (killed,) = client.search_runs([exp.experiment_id], "tags.`nbmlops.kind` = 'pipeline'")
    assert killed.info.status == "KILLED"

    # The next run takes `load` from the cache.
    (lab.root / "go").touch()
    run.click()
    panel.locator("[data-nbmlops='run-submit']").click()
    expect(status).to_have_attribute("data-nbmlops-status", "succeeded", timeout=120_000)
    expect(panel.locator("[data-nbmlops-step-status='CACHED']")).to_contain_text("load")
    expect(panel.locator("[data-nbmlops='run-status-text']")).to_contain_text(
        re.compile(r"succeeded: 2 steps, 1 cached in \d")
    )

    # "Mark as parameters" (cell menu): refused on a step's cell; elsewhere the tag moves.
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    for index, refused in ((2, 'This cell starts step "load"'), (0, None)):
        cells.nth(index).locator(".jp-InputPrompt").click(button="right")
        page.locator(".lm-Menu-item", has_text="Mark as parameters").click()
        if refused:
            expect(page.locator(".jp-Dialog-content")).to_contain_text(refused)
            page.locator(".jp-Dialog .jp-mod-accept").click()
    page.keyboard.press("Control+s")
    _wait_for(lambda: _cell_tags(lab, "slow.ipynb")[0] == ["parameters"], "the save")
    assert _cell_tags(lab, "slow.ipynb")[1] == []

    # The graph follows the notebook as it is edited, before any save.
    graph = panel.locator("[data-nbmlops='steps-graph']")
    expect(graph.locator("[data-nbmlops-step]")).to_have_count(2)
    cells.nth(1).locator(".jp-InputPrompt").click()
    cells.nth(1).locator("[data-command='nbmlops:mark-step']").click()
    page.locator("[data-nbmlops='step-name-input']").fill("prepare")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    expect(graph.locator("[data-nbmlops-step='prepare']")).to_have_count(1)
    expect(graph.locator("[data-nbmlops-edge='prepare->load']")).to_have_count(1)
    source = panel.locator("[data-nbmlops='graph-source']")
    expect(source).to_contain_text("not saved yet")
    assert "step:prepare" not in _cell_tags(lab, "slow.ipynb")[1]
    page.keyboard.press("Control+s")
    _wait_for(lambda: "step:prepare" in _cell_tags(lab, "slow.ipynb")[1], "the save")
    expect(source).to_contain_text("it follows your edits")

    # The run's output notebook opens in JupyterLab and is not offered as a pipeline.
    panel.locator("[data-nbmlops='output-link']").click()
    expect(panel.locator("[data-nbmlops='output-notebook']")).to_contain_text(
        "output notebook of a run"
    )
    expect(panel.locator("[data-nbmlops='run-button']")).to_be_hidden()
    # The next test opens its notebook alone (not beside the restored tabs of this one).
    page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
    expect(page.locator(".jp-NotebookPanel")).to_have_count(0)


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
    expect(rows.first).to_have_class(re.compile("selected"))
    expect(rows.first.locator("[data-nbmlops='widget-promoted']")).to_have_text("@staging")
    for button in ("widget-promote-best", "widget-promote-selected", "widget-refresh"):
        expect(widget.locator(f"[data-nbmlops='{button}']")).to_have_class(
            re.compile("jp-mod-styled")
        )
    # A second run, then the two ticked: side by side, as in the panel.
    again = subprocess.run(
        [*cli, "run", "widget_demo.ipynb", "-p", "n_estimators=30", "-q"],
        cwd=lab.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    widget.locator("[data-nbmlops='widget-refresh']").click()
    expect(rows).to_have_count(2)
    for i in range(2):
        rows.nth(i).locator("[data-nbmlops-compare]").check()
    compared = widget.locator("[data-nbmlops='widget-compare']")
    expect(compared).to_contain_text("Compare 2 runs")
    trees = compared.locator("[data-nbmlops-param='n_estimators']")
    expect(trees).to_have_attribute("data-differs", "true")
    expect(trees).to_contain_text("20")
    expect(trees).to_contain_text("30")
    expect(compared.locator(f"[data-nbmlops-bar='f1:{run_id}']")).to_have_count(1)
    expect(compared.locator("[data-nbmlops='widget-compare-steps'] [data-step]")).to_have_count(4)
    _screenshot(page, compared, "widget-compare.png", tmp_path)
    _readable_in_every_theme(
        page, widget, "the widget with a selected row", "widget-dark.png", tmp_path
    )
    _screenshot(
        page,
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first,
        "widget.png",
        tmp_path,
    )


def test_metrics_logged_by_step_are_compared_as_curves(
    lab: Lab, page: Page, tmp_path: Path
) -> None:
    env = dict(os.environ, MLFLOW_TRACKING_URI=lab.tracking_uri)
    cli = [sys.executable, "-c", "from nbmlops.cli import main; main()"]
    for rate in ("0.5", "2.0"):
        made = subprocess.run(
            [*cli, "run", "curves.ipynb", "-p", f"rate={rate}", "-q"],
            cwd=lab.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert made.returncode == 0, made.stderr
    _open_notebook(page, lab, "curves.ipynb")
    panel = page.locator("#nbmlops-panel")
    if not panel.is_visible():
        page.locator(".jp-SideBar [data-id='nbmlops-panel']").click()
    expect(panel.locator("[data-nbmlops='notebook-path']")).to_have_text("curves.ipynb")
    boxes = panel.locator("[data-nbmlops='runs-table'] [data-nbmlops-select]")
    expect(boxes).to_have_count(2)
    for i in range(2):
        boxes.nth(i).check()
    curve = panel.locator("[data-nbmlops='compare-curve'][data-nbmlops-metric='loss']")
    expect(curve.locator("polyline")).to_have_count(2)
    expect(curve).to_contain_text("step 0–7")
    points = curve.locator("polyline").first.get_attribute("points") or ""
    assert len(points.split()) == 8, points
    # final_loss is one value per run: bars, not a curve.
    expect(panel.locator("[data-nbmlops-metric='final_loss']")).to_have_count(0)
    _screenshot(page, panel.locator("[data-nbmlops='compare']"), "panel-curves.png", tmp_path)
    _readable_in_every_theme(page, panel.locator("[data-nbmlops='compare']"), "the curves")


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
