"""The run record is defined once: capture/schema.py, documented in docs/schema.md.

These tests keep the two in step, keep every other module from spelling a tag name, and
check that each record reads back what it wrote.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from nbmlops.capture import schema as s

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
ARTIFACTS = {
    s.PIPELINE_JSON,
    s.REQUIREMENTS,
    s.NOTEBOOK_DIR + "/",
    s.OUTPUTS_JSON,
    s.SWEEP_JSON,
    s.DRIFT_DIR + "/",
    s.PERFORMANCE_DIR + "/",
    s.REFERENCE_DIR + "/<model>-v<version>.json",
}


def _names() -> dict[str, str]:
    """The schema's tag, metric and label names: constant -> value (prefixes end in '.')."""
    return {
        k: v
        for k, v in vars(s).items()
        if k.isupper()
        and isinstance(v, str)
        and v.startswith(("nbmlops.", "mlflow."))
        and v != s.PREFIX
    }


def _documented() -> set[str]:
    """The backticked names in the first column of the doc's tables (`x.<name>` -> `x.`)."""
    found = set()
    for line in DOC.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            for name in re.findall(r"`([^`]+)`", first):
                found.add(re.sub(r"<[^>]+>$", "", name))
    return found


def test_every_name_in_the_schema_is_documented_and_every_documented_name_exists() -> None:
    names = set(_names().values())
    documented = _documented()
    assert sorted(names - documented) == []
    tags = {d for d in documented if d.startswith(("nbmlops.", "mlflow."))}
    assert sorted(tags - names) == []
    assert sorted(ARTIFACTS - documented) == []


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants of a module, without docstrings and without the names of packages
    and loggers (``files("nbmlops.ci")``, ``getLogger("nbmlops.run")``)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            skip.add(id(first.value))
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("files", "getLogger", "import_module", "find_spec"):
                skip.update(id(a) for a in node.args)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def test_no_module_but_the_schema_spells_a_tag_name() -> None:
    names = _names()
    exact = {v for v in names.values() if not v.endswith(".")}
    prefixes = tuple(v for v in names.values() if v.endswith("."))
    spelled = []
    for path in sorted((ROOT / "nbmlops").rglob("*.py")):
        if path.name == "schema.py" and path.parent.name == "capture":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, text in _strings(tree):
            if text in exact or text.startswith(prefixes):
                spelled.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert spelled == []


def test_pipeline_record_reads_back_what_it_wrote() -> None:
    record = s.PipelineRecord(
        notebook="notebooks/x.ipynb",
        seed=7,
        seed_source="option",
        setup_hash="abc",
        env_hash="def",
        output_dir="/tmp/out",
        steps=("load", "train"),
        injected={"alpha": "0.5"},
        git_commit="ff7d107",
        git_dirty=True,
        resumed_from="r0",
    )
    tags = record.tags()
    assert tags[s.KIND] == s.PIPELINE
    assert tags[s.MLFLOW_GIT_COMMIT] == "ff7d107"
    tags.update(s.failure_tags("train", 3, "NameError: x"))
    tags.update(s.cache_hits_tag(1, 2))
    tags[s.data_tag("X:train")] = "d1"
    read = s.PipelineRecord.from_tags(tags)
    assert read.seed == 7 and read.steps == ("load", "train") and read.git_dirty is True
    assert read.injected == {"alpha": "0.5"} and read.resumed_from == "r0"
    assert (read.failed_step, read.failed_cell, read.error) == ("train", 3, "NameError: x")
    assert read.cache_hits == "1/2" and read.data == {"X_train": "d1"}


def test_a_run_with_no_nbmlops_tags_reads_as_empty_not_as_an_error() -> None:
    read = s.PipelineRecord.from_tags({})
    assert read.notebook == "" and not read.has_seed and read.steps == () and read.data == {}
    step = s.StepRecord.from_tags({})
    assert step.step == "?" and step.cells == () and step.cache_source_run is None


def test_step_sweep_lineage_and_event_records_round_trip() -> None:
    step = s.StepRecord("train", "c1", "s1", ("load",), (4, 5), "nb.ipynb", s.HIT, "k", "r9")
    tags = step.tags("parent")
    assert tags[s.MLFLOW_PARENT] == "parent" and tags[s.KIND] == s.STEP_KIND
    assert s.StepRecord.from_tags(tags) == step

    sweep = s.SweepRecord("nb", {"a": ["1", "2"]}, 2, "f1", "max", 0, "best")
    assert s.SweepRecord.from_tags({**sweep.tags(), **sweep.outcome_tags()}) == sweep

    lineage = s.Lineage("r", "exp", "models:/m-1", "nb.ipynb", "c", "false", "7", "e")
    lineage = s.Lineage(**{**lineage.__dict__, "code_hashes": {"train": "h"}, "data": {"X": "d"}})
    assert s.Lineage.from_tags(lineage.tags()) == lineage

    event = s.AliasEvent(3, "promote", s.DEFAULT_ALIAS, "1", "2", "alice", "2026-12-01T00:00:00")
    key, value = event.tag()
    assert key == s.EVENT_PREFIX + "000003"
    assert s.alias_events({key: value, "other": "x"}) == [event]
