"""``nbmlops ci`` end to end: the project configuration, real runs of tiny notebooks in real
kernels, a real MLflow store and registry, the JUnit and Markdown reports, promotion, the
drift loop, a driver killed with SIGKILL, and ``nbmlops init-ci``.

The project folder is shared by the module (so steps computed by one test are cache hits
in the next); each test writes its own configuration file and uses its own experiments
and model names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, classifier, code, pipeline_runs, step_runs, write_notebook
from mlflow import MlflowClient

from nbmlops.cache.store import StepCache
from nbmlops.ci.workflow import render
from nbmlops.config import ConfigError, load

# The shared classifier (conftest.CLASSIFIER: `score` is logged as given, so tests choose
# whether a gate passes), with `fail` making `train` raise and `data` naming a CSV of
# features a, b and label y to train on (else the rows are generated).
TRAIN = classifier(
    'score = 0.9\ndepth = 3\nseed = 7\nfail = False\ndata = ""',
    load="if data:\n    df = pd.read_csv(data)\nelse:\n"
    "    rng = np.random.default_rng(seed)\n"
    "    df = pd.DataFrame({'a': rng.normal(size=300), 'b': rng.normal(size=300)})\n"
    "    df['y'] = (df['a'] + df['b'] > 0).astype(int)",
    train="if fail:\n    raise RuntimeError('boom')\n"
    "model = DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(X_train, y_train)\n"
    "nbmlops.log_model(model, input_example=X_train)",
)

# A step that sleeps while NBMLOPS_TEST_SLEEP is set (the kernel inherits the driver's
# environment), after saying so: the SIGKILL test kills the driver there.
SLOW = [
    code("import os\nimport time\nimport nbmlops"),
    code("n = 5\nseed = 1", "parameters"),  # a fixed seed: the steps are cacheable
    code("values = list(range(n))", "step:load"),
    code(
        "print('sleeping', flush=True)\n"
        "time.sleep(600 if os.environ.get('NBMLOPS_TEST_SLEEP') else 0)\n"
        "total = sum(values)\nnbmlops.log_metric('total', total)",
        "step:slow",
    ),
]

# A test command: checks the run it is given and leaves what it saw for the test.
CHECK_RUN = """\
import json, os, sys
seen = {k: v for k, v in os.environ.items() if k.startswith("NBMLOPS_") or k == "MLFLOW_TRACKING_URI"}
open("seen.json", "w").write(json.dumps(seen))
assert os.path.exists(os.environ["NBMLOPS_OUTPUT_NOTEBOOK"]), "no output notebook"
print("checked run", os.environ["NBMLOPS_RUN_ID"])
"""


@dataclass
class Project:
    root: Path
    tracking_uri: str
    cli: Callable[..., subprocess.CompletedProcess[str]]

    def config(self, name: str, text: str) -> str:
        (self.root / name).write_text(text)
        return name

    def client(self) -> Any:
        return MlflowClient(self.tracking_uri)


def env_for(tracking_uri: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env.pop("GITHUB_STEP_SUMMARY", None)  # only where a test sets it
    env.update(extra)
    return env


def run_cli(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; past ``timeout`` seconds, fail showing what it printed."""
    try:
        return subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        printed = [
            p.decode(errors="replace") if isinstance(p, bytes) else p or ""
            for p in (exc.stdout, exc.stderr)
        ]
        raise AssertionError(
            f"{' '.join(cmd[1:])}: still running after {timeout:.0f} s\n" + "\n".join(printed)
        ) from None


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> Project:
    root = tmp_path_factory.mktemp("ci-project")
    write_notebook(root / "train.ipynb", TRAIN)
    write_notebook(root / "slow.ipynb", SLOW)
    (root / "check_run.py").write_text(CHECK_RUN)
    bentoml_home = str(tmp_path_factory.mktemp("bentoml"))  # built Bentos stay in the test

    def cli(*args: str, timeout: float = 900, **extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            [str(Path(sys.executable).parent / "nbmlops"), *args],
            cwd=root,
            env=env_for(tracking_uri, BENTOML_HOME=bentoml_home, **extra),
            timeout=timeout,
        )

    return Project(root, tracking_uri, cli)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cases(junit: Path) -> dict[str, ET.Element]:
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    return {
        f"{suite.get('name')}/{case.get('name')}": case
        for suite in root.iter("testsuite")
        for case in suite.iter("testcase")
    }


# --- the configuration ------------------------------------------------------------------

GOOD = """
[tool.nbmlops.pipelines.clf]
notebook = "train.ipynb"
gates = ["score>=0.5"]
"""


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (
            GOOD.replace("gates", "gatez"),
            "tool.nbmlops.pipelines.clf.gatez",
            "did you mean 'gates'",
        ),
        (
            GOOD.replace('"score>=0.5"', '"score>=0.5", "f1 => 0.9"'),
            "tool.nbmlops.pipelines.clf.gates[1]",
            "METRIC OP NUMBER",
        ),
        (
            GOOD.replace("train.ipynb", "nope.ipynb"),
            "tool.nbmlops.pipelines.clf.notebook",
            "does not exist",
        ),
        (
            GOOD + 'promote = { metric = "f1", mode = "up" }',
            "tool.nbmlops.pipelines.clf.promote.mode",
            "max or min",
        ),
        (
            GOOD + 'promote = { mode = "max" }',
            "tool.nbmlops.pipelines.clf.promote.metric",
            "missing",
        ),
        (
            GOOD + "drift = { wasserstein = -1 }",
            "tool.nbmlops.pipelines.clf.drift.wasserstein",
            "out of range",
        ),
        (
            GOOD + "drift = { wasserstein = nan }",
            "tool.nbmlops.pipelines.clf.drift.wasserstein",
            "not a finite number",
        ),
        (
            GOOD + "drift = { psi = 0.2 }",
            "tool.nbmlops.pipelines.clf.drift.psi",
            "no longer a drift setting: the rule uses 'wasserstein' now",
        ),
        (
            "[tool.nbmlops.drift]\npsi = 0.2\n" + GOOD,
            "tool.nbmlops.drift.psi",
            "replace psi with wasserstein",
        ),
        (GOOD + "[tool.nbmlops.drift]\npvalue = 2", "tool.nbmlops.drift.pvalue", "out of range"),
        (GOOD + 'tests = "pytest"', "tool.nbmlops.pipelines.clf.tests", "not a list of strings"),
        (
            GOOD + "[tool.nbmlops.pipeline.x]\nnotebook = 'a'",
            "tool.nbmlops.pipeline",
            "did you mean 'pipelines'",
        ),
        ("[tool.nbmlops]\n", "tool.nbmlops.pipelines", "missing"),
        (GOOD.replace("[tool", "[[tool"), "", "not valid TOML"),
    ],
)
def test_configuration_errors_name_the_key_and_the_fix(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    write_notebook(tmp_path / "train.ipynb", TRAIN)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n" + text)
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    message = str(err.value)
    assert message.startswith(f"pyproject.toml: {key}" if key else str(tmp_path / "pyproject.toml"))
    assert words in message
    assert "fix:" in message


def test_configuration_files_and_names(tmp_path: Path) -> None:
    write_notebook(tmp_path / "train.ipynb", TRAIN)
    with pytest.raises(ConfigError, match="no nbmlops configuration"):
        load(tmp_path)
    (tmp_path / "nbmlops.toml").write_text(GOOD.replace("tool.nbmlops.", ""))
    config = load(tmp_path)
    [pipeline] = config.select()
    assert (pipeline.name, pipeline.experiment, str(pipeline.gates[0])) == (
        "clf",
        "train",
        "score>=0.5",
    )
    with pytest.raises(Exception, match="(?s)no pipeline .nope.*name one of: clf"):
        config.select(["nope"])
    (tmp_path / "nbmlops.toml").write_text("[pipelines.clf]\nnotebok = 'train.ipynb'\n")
    with pytest.raises(ConfigError, match=r"^nbmlops.toml: pipelines.clf.notebok: unknown key"):
        load(tmp_path)
    (tmp_path / "pyproject.toml").write_text(GOOD)
    with pytest.raises(ConfigError, match="both pyproject.toml"):
        load(tmp_path)


def test_the_repositorys_own_configuration_loads() -> None:
    config = load(ROOT)
    assert set(config.pipelines) == {"breast_cancer", "diabetes"}
    bc = config.pipelines["breast_cancer"]
    assert [str(g) for g in bc.gates] == ["f1>=0.9"]
    assert bc.promote is not None and (bc.promote.metric, bc.promote.alias) == ("f1", "champion")


def test_an_unknown_parameter_is_refused_before_anything_runs(proj: Project) -> None:
    exp = unique("ci")
    name = proj.config(
        "badparam.toml",
        f'[pipelines.clf]\nnotebook = "train.ipynb"\nexperiment = "{exp}"\n'
        "parameters = { scor = 0.5 }\n",
    )
    result = proj.cli("ci", "--config", name)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "badparam.toml: pipelines.clf.parameters: parameter 'scor': is not a parameter"
        in result.stderr
    )
    assert "known parameters: score, depth, seed, fail, data" in result.stderr
    assert proj.client().get_experiment_by_name(exp) is None

    unknown = proj.cli("ci", "--config", name, "nope")
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "no pipeline 'nope' is configured in badparam.toml" in unknown.stderr
    assert "name one of: clf" in unknown.stderr and "Traceback" not in unknown.stderr
    usage = proj.cli("ci", "--config", name, "--on-drift", "m")
    assert (
        usage.returncode == 2 and "--on-drift MODEL and --current DATA go together" in usage.stderr
    )


# --- nbmlops ci ------------------------------------------------------------------------


def test_passing_pipeline_reports_every_step_gate_and_test(proj: Project) -> None:
    exp = unique("ci")
    name = proj.config(
        "pass.toml",
        f'[pipelines.clf]\nnotebook = "train.ipynb"\nexperiment = "{exp}"\n'
        'gates = ["score>=0.5", "accuracy>0.6"]\ntests = ["python check_run.py"]\n',
    )
    result = proj.cli(
        "ci", "--config", name, "--junit", "reports/junit.xml", "--summary", "reports/summary.md"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step 3/4 train: started" in result.stdout  # the run's log is streamed
    assert "  test | checked run" in result.stdout
    assert "nbmlops ci: 7 checks passed" in result.stdout

    [run] = pipeline_runs(proj.client(), exp)
    assert run.info.status == "FINISHED" and run.data.tags["nbmlops.ci"] == "clf"
    found = cases(proj.root / "reports/junit.xml")
    assert sorted(found) == sorted(
        [f"clf/step {s}" for s in ("load", "split", "train", "evaluate")]
        + ["clf/gate score>=0.5", "clf/gate accuracy>0.6", "clf/test python check_run.py"]
    )
    assert all(case.find("failure") is None for case in found.values())
    report = ET.parse(proj.root / "reports/junit.xml").getroot()
    suite = report.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("7", "0")
    assert (report.get("tests"), report.get("failures"), report.get("skipped")) == ("7", "0", "0")
    assert float(suite.get("time") or 0) > 0 and suite.get("timestamp")
    seen = __import__("json").loads((proj.root / "seen.json").read_text())
    assert seen["NBMLOPS_RUN_ID"] == run.info.run_id
    assert seen["NBMLOPS_EXPERIMENT"] == exp and seen["MLFLOW_TRACKING_URI"] == proj.tracking_uri
    assert Path(seen["NBMLOPS_OUTPUT_NOTEBOOK"]).name == "train.ipynb"

    summary = (proj.root / "reports/summary.md").read_text()
    assert "## nbmlops ci: ✅ 7 checks passed" in summary
    assert "| pipeline | result | run | accuracy | score |" in summary
    row = next(li for li in summary.splitlines() if li.startswith("| clf |"))
    assert run.info.run_id in row and "| 0.9 |" in row
    assert "- ✅ gate `score>=0.5`: score=0.9" in summary

    # Without --summary, on GitHub Actions: appended to $GITHUB_STEP_SUMMARY. Every step
    # is a cache hit now: no kernel starts.
    step_summary = proj.root / "step-summary.md"
    step_summary.write_text("earlier step\n")
    again = proj.cli("ci", "--config", name, GITHUB_STEP_SUMMARY=str(step_summary))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cached (not executed)" in again.stdout
    text = step_summary.read_text()
    assert text.startswith("earlier step\n") and "| pipeline | result | run |" in text


def test_a_missed_gate_fails_and_nothing_is_promoted(proj: Project) -> None:
    good, bad, model = unique("ci"), unique("ci"), unique("m")
    name = proj.config(
        "gate.toml",
        f'[pipelines.good]\nnotebook = "train.ipynb"\nexperiment = "{good}"\ngates = ["score>=0.5"]\n'
        f'promote = {{ metric = "score", model_name = "{model}", build = false }}\n'
        f'[pipelines.bad]\nnotebook = "train.ipynb"\nexperiment = "{bad}"\ngates = ["score>=0.95"]\n'
        f'promote = {{ metric = "score", model_name = "{model}-bad", build = false }}\n',
    )
    result = proj.cli("ci", "--config", name, "--promote", "--junit", "junit-gate.xml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gate score>=0.95 missed: score=0.9, needs >= 0.95" in result.stdout
    assert "nothing promoted: a check failed" in result.stdout
    failure = cases(proj.root / "junit-gate.xml")["bad/gate score>=0.95"].find("failure")
    assert failure is not None and failure.get("message") == (
        "gate score>=0.95 missed: score=0.9, needs >= 0.95"
    )
    client = proj.client()
    assert not client.search_registered_models(f"name = '{model}'")  # not even the good one
    assert [r.info.status for r in pipeline_runs(client, bad)] == ["FINISHED"]


def test_a_failing_step_fails_naming_the_step(proj: Project) -> None:
    exp = unique("ci")
    name = proj.config(
        "fail.toml",
        f'[pipelines.clf]\nnotebook = "train.ipynb"\nexperiment = "{exp}"\n'
        'parameters = { fail = true }\ngates = ["score>=0.5"]\ntests = ["python check_run.py"]\n',
    )
    result = proj.cli("ci", "--config", name, "--junit", "junit-fail.xml", "--summary", "fail.md")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "step train failed in cell 5: RuntimeError: boom" in result.stdout
    found = cases(proj.root / "junit-fail.xml")
    failure = found["clf/step train"].find("failure")
    assert failure is not None and "step 'train' failed in cell 5" in (failure.text or "")
    assert "partial output notebook" in (failure.text or "")
    assert found["clf/step load"].find("failure") is None
    for skipped in ("clf/step evaluate", "clf/gate score>=0.5", "clf/test python check_run.py"):
        assert found[skipped].find("skipped") is not None, skipped
    assert "- ❌ step `train`: step train failed in cell 5" in (proj.root / "fail.md").read_text()
    [run] = pipeline_runs(proj.client(), exp)
    assert run.info.status == "FAILED"


def test_promote_then_an_identical_run_keeps_the_champion(proj: Project) -> None:
    exp, model = unique("ci"), unique("m")
    name = proj.config(
        "promote.toml",
        f'[pipelines.clf]\nnotebook = "train.ipynb"\nexperiment = "{exp}"\ngates = ["score>=0.5"]\n'
        f'promote = {{ metric = "accuracy", model_name = "{model}" }}\n',
    )
    first = proj.cli("ci", "--config", name, "--promote", "--summary", "promote.md")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"promoted {model} v1 to @champion" in first.stdout
    assert "built" in first.stdout  # its Bento
    client = proj.client()
    [run] = pipeline_runs(client, exp)
    champion = client.get_model_version_by_alias(model, "champion")
    assert (str(champion.version), champion.run_id) == ("1", run.info.run_id)
    assert f"promoted {model} v1" in (proj.root / "promote.md").read_text()

    second = proj.cli("ci", "--config", name, "--promote", "--junit", "promote.xml")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "kept champion v1" in second.stdout
    assert str(client.get_model_version_by_alias(model, "champion").version) == "1"
    case = cases(proj.root / "promote.xml")[f"clf/promote {model}@champion"]
    assert case.find("failure") is None and "kept champion v1" in (
        case.findtext("system-out") or ""
    )


# --- the drift loop ----------------------------------------------------------------------


def labelled(rows: int, seed: int, shift: float) -> pd.DataFrame:
    """Features a, b and the label y = a > shift: after a shift, the old boundary is wrong."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(shift, 1, rows), "b": rng.normal(0, 1, rows)})
    df["y"] = (df["a"] > shift).astype(int)
    return df


def test_drift_loop_retrains_gates_and_promotes_only_on_drift(proj: Project) -> None:
    exp, model = unique("ci"), unique("m")
    labelled(2000, 0, 0.0).to_csv(proj.root / "train.csv", index=False)
    labelled(800, 1, 0.0).to_csv(proj.root / "same.csv", index=False)
    labelled(2000, 2, 2.0).to_csv(proj.root / "shifted.csv", index=False)
    name = proj.config(
        "drift.toml",
        f'[pipelines.clf]\nnotebook = "train.ipynb"\nexperiment = "{exp}"\n'
        'parameters = { data = "train.csv" }\ngates = ["accuracy>=0.8"]\n'
        f'promote = {{ metric = "accuracy", model_name = "{model}", build = false }}\n'
        'drift = { data_parameter = "data", target = "y" }\n',
    )
    trained = proj.cli("ci", "--config", name, "--promote")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    client = proj.client()
    assert str(client.get_model_version_by_alias(model, "champion").version) == "1"

    calm = proj.cli(
        "ci", "--config", name, "--on-drift", model, "--current", "same.csv", "--promote"
    )
    assert calm.returncode == 0, calm.stdout + calm.stderr
    assert f"no drift in {model}@champion: nothing retrained" in calm.stdout
    assert len(pipeline_runs(client, exp)) == 1

    drifted = proj.cli(
        "ci", "--config", name, "--on-drift", model, "--current", "shifted.csv", "--promote",
        "--junit", "drift.xml", "--summary", "drift.md",
    )  # fmt: skip
    assert drifted.returncode == 0, drifted.stdout + drifted.stderr
    assert "drift in 1 of 2 features: a" in drifted.stdout
    new, old = pipeline_runs(client, exp)
    assert new.data.tags["nbmlops.retrain.trigger"] == "drift"
    assert new.data.tags["nbmlops.retrain.model"] == f"{model}@champion"
    assert new.data.params["data"] == str(proj.root / "shifted.csv")
    assert f"promoted {model} v2 to @champion" in drifted.stdout
    line = next(li for li in drifted.stdout.splitlines() if "(new run) vs" in li)
    assert "on shifted.csv: accuracy" in line
    champion = client.get_model_version_by_alias(model, "champion")
    assert (str(champion.version), champion.run_id) == ("2", new.info.run_id)
    found = cases(proj.root / "drift.xml")
    assert f"drift/drift {model}@champion" in found and "clf/gate accuracy>=0.8" in found
    summary = (proj.root / "drift.md").read_text()
    assert "retrained on drift: drift in 1 of 2 features: a" in summary


# --- a driver killed with SIGKILL -----------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the kernel runs in a session of its own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def statuses(client: Any, experiment: str) -> dict[str, str]:
    """The step runs of the experiment's newest pipeline run, by step: their status."""
    exp = client.get_experiment_by_name(experiment)
    runs = pipeline_runs(client, experiment) if exp is not None else []
    return {s: r.info.status for s, r in step_runs(client, runs[0]).items()} if runs else {}


def wait_for(done: Callable[[], bool], what: str, out: Path, timeout: float = 300) -> None:
    """Poll ``done``; fail with the command's output ``out`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s\n{out.read_text()}"
        time.sleep(0.2)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it at once (the kernel has its own session)."""
    for each in descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


def test_a_killed_run_is_ended_and_the_next_ci_runs_cleanly(proj: Project) -> None:
    exp, client = unique("ci"), proj.client()
    name = proj.config(
        "slow.toml", f'[pipelines.slow]\nnotebook = "slow.ipynb"\nexperiment = "{exp}"\n'
    )
    out = proj.root / f"{exp}.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "nbmlops"), "ci", "--config", name],
            cwd=proj.root,
            env=env_for(proj.tracking_uri, NBMLOPS_TEST_SLEEP="1"),
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "slow | sleeping" in out.read_text() or proc.poll() is not None,
            "the slow step to start",
            out,
        )
        assert proc.poll() is None, out.read_text()
        # The store is written on a background thread: wait until it shows the step running.
        wait_for(
            lambda: statuses(client, exp) == {"load": "FINISHED", "slow": "RUNNING"},
            "the store to show the slow step running",
            out,
        )
        kill_tree(proc.pid)  # the driver and its kernel, at once
        proc.wait(60)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(60)
    [dead] = pipeline_runs(client, exp)
    assert dead.info.status == "RUNNING"  # nobody could mark it

    again = proj.cli("ci", "--config", name)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"marked run {dead.info.run_id} FAILED" in again.stdout

    new, old = pipeline_runs(client, exp)
    assert old.info.run_id == dead.info.run_id and old.info.status == "FAILED"
    assert "driver pid" in old.data.tags["nbmlops.killed"]
    assert {s: r.info.status for s, r in step_runs(client, old).items()} == {  # none RUNNING
        "load": "FINISHED",
        "slow": "FAILED",
    }
    assert new.info.status == "FINISHED" and new.data.metrics["total"] == 10
    steps = step_runs(client, new)
    assert steps["load"].data.tags["nbmlops.cache"] == "hit"  # the dead run's finished step
    for run in pipeline_runs(client, exp):
        if run.info.status == "FINISHED":
            assert set(step_runs(client, run)) == set(run.data.tags["nbmlops.steps"].split(","))
    cache = StepCache(proj.root / ".nbmlops")
    entries = cache.ls()
    assert entries and all(cache.get(e.key) is not None for e in entries)


# --- the workflow ------------------------------------------------------------------------


def test_init_ci_writes_the_workflow_the_repository_uses(tmp_path: Path) -> None:
    nbmlops = str(Path(sys.executable).parent / "nbmlops")
    first = run_cli([nbmlops, "init-ci"], tmp_path)
    assert first.returncode == 0, first.stderr
    path = tmp_path / ".github/workflows/nbmlops.yml"
    workflow = yaml.safe_load(path.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    ours = yaml.safe_load((ROOT / ".github/workflows/nbmlops.yml").read_text())

    def commands(flow: dict[str, Any], job: str) -> list[str]:
        return [s["run"] for s in flow["jobs"][job]["steps"] if "run" in s]

    for job in ("pipelines", "drift"):
        assert commands(workflow, job)[1:] == commands(ours, job)[1:]  # all but the set-up
    assert "nbmlops ci --promote --junit reports/junit.xml --summary reports/summary.md" in (
        commands(workflow, "pipelines")
    )
    uses = [s.get("uses", "") for s in workflow["jobs"]["pipelines"]["steps"]]
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    # One source: the repository's file is the template with the README's set-up.
    assert (ROOT / ".github/workflows/nbmlops.yml").read_text() == render("make .venv/.installed")

    again = run_cli([nbmlops, "init-ci"], tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    path.write_text("old")
    forced = run_cli([nbmlops, "init-ci", "--force"], tmp_path)
    assert forced.returncode == 0 and path.read_text() == render()
    shutil.rmtree(tmp_path / ".github")
