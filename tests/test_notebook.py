"""Reading tagged notebooks into pipelines: steps, DAG, parameters, and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import code, markdown, write_notebook

from nbmlops.exceptions import NotebookError, ParameterError
from nbmlops.notebook.parameters import parse_value, resolve
from nbmlops.notebook.pipeline import load_pipeline
from nbmlops.notebook.source import code_hash, names


def test_steps_setup_and_default_order(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "p.ipynb",
        [
            code("import math"),
            code("alpha = 0.5\nname = 'x'", "parameters"),
            markdown("# Load"),
            code("data = [1, 2, 3]", "step:load"),
            code("total = sum(data)"),
            code("result = total * alpha", "step:compute"),
        ],
    )
    p = load_pipeline(nb)
    assert [s.name for s in p.steps] == ["load", "compute"]
    assert [c.index for c in p.setup if c.is_code] == [1]  # cells count from 1, as in JupyterLab
    assert p.parameters_cell is not None and p.parameters_cell.index == 2
    assert [c.index for c in p.step("load").cells] == [4, 5]
    assert p.step("load").upstream == []
    assert p.step("compute").upstream == ["load"]
    assert p.parameters["alpha"].default == 0.5
    assert p.parameters["name"].default == "x"


def test_after_tags_reorder_steps(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "p.ipynb",
        [
            code("a = 1", "step:report", "after:train"),
            code("b = 2", "step:train"),
        ],
    )
    p = load_pipeline(nb)
    assert [s.name for s in p.steps] == ["train", "report"]
    assert p.step("report").upstream == ["train"]
    assert p.step("train").upstream == []


@pytest.mark.parametrize(
    ("cells", "problem", "fix"),
    [
        (
            [code("a = 1", "step:a", "after:b"), code("b = 1", "step:b", "after:a")],
            "cycle: a -> b -> a",
            "remove one of the after: tags",
        ),
        ([code("a = 1", "step:a", "after:nope")], "there is no step 'nope'", "known steps: a"),
        (
            [code("a = 1", "step:a"), code("b = 1", "step:a")],
            "step 'a' is started twice (cells 1 and 2)",
            "rename one",
        ),
        (
            [code("a = 1", "parameters"), code("b = 1", "parameters")],
            "two cells are tagged 'parameters' (cells 1 and 2)",
            "keep the tag on one cell",
        ),
        (
            [code("a = 1", "step:a"), code("x = 1", "parameters")],
            "parameters cell comes after step 'a'",
            "move the parameters cell",
        ),
        ([code("a = 1", "step:bad name!")], "is not a valid name", "use letters"),
    ],
)
def test_bad_tags_name_the_problem_and_the_fix(
    tmp_path: Path, cells: list, problem: str, fix: str
) -> None:
    nb = write_notebook(tmp_path / "bad.ipynb", cells)
    with pytest.raises(NotebookError) as info:
        load_pipeline(nb)
    assert problem in str(info.value)
    assert fix in info.value.fix
    assert str(nb) in str(info.value)


def test_missing_kernelspec_and_invalid_json(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nokernel.ipynb", [code("a = 1", "step:a")], metadata={})
    with pytest.raises(NotebookError, match="no kernelspec in the notebook metadata") as info:
        load_pipeline(nb)
    assert '"kernelspec"' in info.value.fix
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": [')
    with pytest.raises(NotebookError, match="not a valid notebook"):
        load_pipeline(broken)
    with pytest.raises(NotebookError, match="no such notebook"):
        load_pipeline(tmp_path / "missing.ipynb")


def test_notebook_order_that_closes_a_loop_with_after_tags_names_the_steps_and_cells(
    tmp_path: Path,
) -> None:
    nb = write_notebook(
        tmp_path / "loop.ipynb",
        [
            code("import math"),
            code("data = [1, 2]", "step:load", "after:evaluate"),
            code("X = data", "step:features"),
            markdown("## Train"),
            code("model = sum(X)", "step:train"),
            code("print(model)", "step:evaluate"),
        ],
    )
    with pytest.raises(NotebookError) as info:
        load_pipeline(nb)
    error = info.value
    assert error.cell == 6
    assert "step 'evaluate' has no after: tag, so it follows 'train'" in error.problem
    assert "'load' is tagged after:evaluate" in error.problem
    assert (
        "evaluate (cell 6) -> train (cell 5) -> features (cell 3) -> load (cell 2) -> "
        "evaluate (cell 6)" in error.problem
    )
    assert "after:<the step it needs>" in error.fix and "from step 'load' (cell 2)" in error.fix


def test_a_step_written_above_the_step_it_runs_after_follows_the_one_before_both(
    tmp_path: Path,
) -> None:
    nb = write_notebook(
        tmp_path / "swap.ipynb",
        [
            code("a = 1", "step:load"),
            code("r = m", "step:report", "after:train"),
            code("m = a", "step:train"),
        ],
    )
    p = load_pipeline(nb)
    assert [s.name for s in p.steps] == ["load", "train", "report"]
    assert p.step("train").upstream == ["load"]


def test_misspelt_tags_are_warnings_naming_the_cell_and_the_tag_meant(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "typos.ipynb",
        [
            code("alpha = 1", "Parameters"),
            code("x = 1", "step:load"),
            code("y = x", "Step:features"),
            code("z = y", "step :train"),
            code("w = z", "steps:report"),
            code("v = w", "step:final", "after :report", "other-tool-tag"),
        ],
    )
    p = load_pipeline(nb)
    assert [(w.cell, w.tag, w.meant) for w in p.warnings] == [
        (1, "Parameters", "parameters"),
        (3, "Step:features", "step:features"),
        (4, "step :train", "step:train"),
        (5, "steps:report", "step:report"),
        (6, "after :report", "after:report"),
    ]
    assert p.warnings[1].message == (
        "cell 3: tag 'Step:features' is ignored; did you mean 'step:features'?"
    )
    assert [s.name for s in p.steps] == ["load", "final"]  # misspelt tags are not obeyed
    assert p.describe()["warnings"][0]["meant"] == "parameters"


def test_steps_command_shows_misspelt_tags(project: Path, nbmlops: Any) -> None:
    write_notebook(
        project / "typo.ipynb", [code("x = 1", "step:load"), code("y = x", "Step:features")]
    )
    result = nbmlops("steps", "typo.ipynb", check=True)
    assert "warning: cell 2: tag 'Step:features' is ignored; did you mean" in result.stderr


@pytest.mark.parametrize("kind", ["markdown", "raw"])
def test_a_markdown_or_raw_cell_cannot_start_a_step(tmp_path: Path, kind: str) -> None:
    cell = markdown("# Load") if kind == "markdown" else nbformat.v4.new_raw_cell("notes")
    cell.metadata["tags"] = ["step:load"]
    nb = write_notebook(tmp_path / "md.ipynb", [code("import math"), cell, code("x = 1")])
    with pytest.raises(NotebookError) as info:
        load_pipeline(nb)
    assert info.value.cell == 2
    assert f"cell 2: a {kind} cell is tagged step:load" in info.value.problem
    assert "first code cell" in info.value.fix


def test_cells_are_numbered_from_1_without_papermills_error_markers(tmp_path: Path) -> None:
    marker = markdown("An Exception was encountered")
    marker.metadata["tags"] = ["papermill-error-cell-tag"]
    anchor = markdown("Execution using papermill encountered an exception here")
    anchor.metadata["tags"] = ["papermill-error-cell-tag"]
    nb = write_notebook(
        tmp_path / "out.ipynb",
        [
            marker,
            code("x = 1", "parameters"),
            code("y = x", "step:a"),
            anchor,
            code("1/0", "step:b"),
        ],
    )
    p = load_pipeline(nb)
    assert [c.index for c in p.cells] == [1, 2, 3]
    assert [c.index for c in p.step("b").cells] == [3]


def test_kernel_names_resolve_as_jupyter_client_does() -> None:
    from nbmlops.capture.environment import kernel_python, kernel_spec_name

    assert kernel_spec_name("python") == "python3"
    assert kernel_spec_name("Python3") == "python3"
    assert kernel_spec_name("conda-env-x") == "conda-env-x"
    assert kernel_python("python")  # what `nbmlops run` refused before


def test_untagged_notebook_is_one_step(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "plain.ipynb", [code("x = 1", "parameters"), code("y = x + 1"), code("print(y)")]
    )
    p = load_pipeline(nb)
    assert [s.name for s in p.steps] == ["main"]
    assert [c.index for c in p.step("main").cells] == [2, 3]


def test_code_hash_ignores_comments_and_blank_lines_but_not_code() -> None:
    base = code_hash(["x = 1\ny = x + 2"])
    assert code_hash(["# set up\nx = 1\n\n\ny = x + 2  # add"]) == base
    assert code_hash(["x = 1\ny = x + 3"]) != base
    assert code_hash(["%matplotlib inline\nx = 1"]) == code_hash(["%matplotlib inline\n# c\nx = 1"])


def test_names_read_and_written() -> None:
    reads, writes = names("model.fit(X, y)\ndf['a'] = 1\nz = len(X)")
    assert {"model", "X", "y", "df"} <= reads
    assert {"model", "df", "z"} <= writes
    assert "len" not in reads


def test_parameter_values_are_literals_checked_against_defaults(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "p.ipynb",
        [
            code("alpha = 0.5\nlayers = [8]\nname = 'a'\nlimit = None\nn = 3", "parameters"),
            code("pass", "step:s"),
        ],
    )
    params = load_pipeline(nb).parameters
    assert (
        parse_value("0.5") == 0.5
        and parse_value("[64,32]") == [64, 32]
        and parse_value("hello") == "hello"
    )
    assert resolve(
        params, {"alpha": "1", "layers": "[64,32]", "name": "1", "limit": "{'a': 1}"}
    ) == {
        "alpha": 1.0,
        "layers": [64, 32],
        "name": "1",
        "limit": {"a": 1},
    }
    with pytest.raises(ParameterError, match="known parameters: alpha, layers, name, limit, n"):
        resolve(params, {"alhpa": "1"})
    with pytest.raises(ParameterError, match=r"got 'many' \(str\), but its default 3 is a int"):
        resolve(params, {"n": "many"})
    with pytest.raises(ParameterError, match="default 0.5 is a float"):
        resolve(params, {"alpha": "[1]"})


def test_secret_looking_parameters_are_refused(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "p.ipynb",
        [code("db_password = ''\napi_key = None", "parameters"), code("pass", "step:s")],
    )
    params = load_pipeline(nb).parameters
    for name in ("db_password", "api_key"):
        with pytest.raises(ParameterError, match="looks like a secret") as info:
            resolve(params, {name: "hunter2"})
        assert "os.environ" in info.value.fix
