"""What the code analysis sees in a cell (magics, opaque code, imports) and which project
modules a step's key takes, found by path search: no kernel, nothing imported."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import code, markdown, write_notebook

from nbmlops.cache.keys import KeyContext
from nbmlops.cache.modules import ModuleFinder
from nbmlops.capture.hashing import FileHashCache
from nbmlops.notebook.pipeline import load_pipeline
from nbmlops.notebook.source import analyse, code_hash


@pytest.mark.parametrize(
    ("source", "reads", "writes"),
    [
        ("%%time\nresult = C * 2", {"C"}, {"result"}),
        ("%%timeit -n1 -r1 setup = D\nz = setup + C", {"C", "D", "setup"}, {"z", "setup"}),
        ("%%capture out\nresult = C + 1\nprint(result)", {"C", "result"}, {"out", "result"}),
        ("%%prun -q -l 5\nresult = f(C)", {"C", "f"}, {"result"}),
        ("%%debug\nresult = C", {"C"}, {"result"}),
        ("%time x = C", {"C"}, {"x"}),
        ("%timeit -o -v best y = C", {"C"}, {"y", "best"}),
        ("%prun -q run(C)", {"C", "run"}, set()),
        ("x = !echo {C + D} $E", {"C", "D", "E"}, {"x"}),
        ("%%bash --out log\necho hi", set(), {"log"}),
        ("%%html\n<b>{C}</b>", set(), set()),  # the body is not expanded, only the line
        ("%matplotlib inline\nx = 1", set(), {"x"}),
        ("top = df.query('score > @limit and n < @cap')", {"df", "limit", "cap"}, {"top"}),
        ("model.eval()\nfor _ in range(3):\n    pass", {"model"}, {"model"}),
    ],
)
def test_magics_whose_code_is_python_are_read_through(
    source: str, reads: set[str], writes: set[str]
) -> None:
    found = analyse(source)
    assert found.opaque is None, found.opaque
    assert reads <= found.reads and "get_ipython" not in found.reads
    assert writes <= found.writes


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("result = globals()['C'] * 3", "globals() at line 1"),
        ("x = 1\ny = eval('x + C')", "eval() at line 2"),
        ("\n\nexec(code)", "exec() at line 3"),  # IPython drops leading blank lines: not we
        ("v = vars()", "vars() at line 1"),
        ("print(locals())", "locals() at line 1"),
        ("%%time\nx = 1\ny = eval('C')", "eval() in %%time at line 3"),
        ("%%sql\nselect * from t", "%%sql (a cell magic nbmlops cannot see into) at line 1"),
        ("%run helpers.py", "%run at line 1"),
        ("from helpers import *", "from helpers import * at line 1"),
        ("mod = importlib.import_module(name)", "import_module() of a name known only when"),
        ("get_ipython().run_cell(src)", "get_ipython().run_cell() of code known only when it"),
        ("get_ipython().user_ns['C']", "get_ipython() at line 1"),
        ("names = %who_ls", "%who_ls (a magic nbmlops cannot see into) at line 1"),
        ("import __main__\nprint(__main__.C)", "import __main__ at line 1"),
        ("x = 1\nlast = _", "_ (IPython's history of earlier cells) at line 2"),
        ("y = Out[3] * 2", "Out (IPython's history of earlier cells) at line 1"),
        ("df.query(condition)", ".query() of an expression known only when it runs at line 1"),
    ],
)
def test_code_that_hides_what_it_reads_is_opaque_and_says_where(source: str, reason: str) -> None:
    found = analyse(source)
    assert found.opaque is not None and found.opaque.startswith(reason), found.opaque


def test_comments_inside_a_python_magic_do_not_change_the_code_hash() -> None:
    assert code_hash(["%%time\nx = C  # note\n"]) == code_hash(["%%time\n# why\nx = C"])
    assert code_hash(["%%time\nx = C"]) != code_hash(["%%time\nx = C + 1"])


def test_a_steps_opaque_reason_names_its_cell(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "p.ipynb",
        [
            code("C = 1.0", "parameters"),
            code("a = 1", "step:clean"),
            markdown("notes"),
            code("b = 2", "step:odd"),
            code("x = 1\nexec('y = C')"),
        ],
    )
    pipeline = load_pipeline(nb)
    assert pipeline.step("clean").opaque is None
    assert pipeline.step("odd").opaque == "exec() in cell 5, line 2"
    assert pipeline.describe()["steps"][1]["opaque"] == "exec() in cell 5, line 2"


def _keys(tmp_path: Path, cells: list[object]) -> KeyContext:
    nb = write_notebook(tmp_path / "p.ipynb", cells)
    pipeline = load_pipeline(nb)
    return KeyContext(
        pipeline=pipeline,
        values={"C": 1.0, "D": 2},
        seed=1,
        env_hash="env",
        store="sqlite:///x",
        base_dir=tmp_path,
        files=FileHashCache(tmp_path / "hashes.json"),
        root=tmp_path,
    )


def test_an_opaque_step_is_keyed_on_every_parameter_and_earlier_output(tmp_path: Path) -> None:
    keys = _keys(
        tmp_path,
        [
            code("C = 1.0\nD = 2", "parameters"),
            code("a = 1", "step:one"),
            code("r = globals()['C']", "step:two"),
            code("s = a + C", "step:three"),
        ],
    )
    produced = {"a": "d1", "other": "d2"}
    _, opaque = keys.key(keys.pipeline.step("two"), produced, "rng")
    assert opaque["parameters"].keys() == {"C", "D"} and opaque["inputs"] == produced
    _, plain = keys.key(keys.pipeline.step("three"), produced, "rng")
    assert plain["parameters"].keys() == {"C"} and plain["inputs"] == {"a": "d1"}


def _project(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_project_modules_are_found_by_path_and_followed_through_their_imports(
    tmp_path: Path,
) -> None:
    _project(
        tmp_path,
        {
            "features.py": "from pkg import scale\nimport json\n",
            "pkg/__init__.py": "from .helpers import twice\n",
            "pkg/helpers.py": "def twice(x):\n    return 2 * x\n",
            "pkg/scale.py": "import numpy\n",
            "src/lib/tools.py": "X = 1\n",
            "unused.py": "",
        },
    )
    finder = ModuleFinder(tmp_path, tmp_path, FileHashCache(tmp_path / "h.json"), ["src/lib"])
    found = finder.find(analyse("import features\nimport tools\nimport numpy, os").imports)
    labels = {finder.label(p) for p in found.files}
    assert labels == {
        "features.py",
        os.path.join("pkg", "__init__.py"),
        os.path.join("pkg", "helpers.py"),
        os.path.join("pkg", "scale.py"),
        os.path.join("src", "lib", "tools.py"),
    }
    assert found.dynamic is None


def test_installed_packages_are_not_project_modules(tmp_path: Path) -> None:
    finder = ModuleFinder(tmp_path, tmp_path, FileHashCache(tmp_path / "h.json"))
    site = next(p for p in sys.path if p.endswith("site-packages"))
    assert finder.find(analyse("import pytest\nimport json").imports).files == set()
    assert all(not Path(p).is_relative_to(site) for p in finder.search)


def test_a_module_imported_in_setup_counts_for_the_steps_that_use_it(tmp_path: Path) -> None:
    _project(tmp_path, {"features.py": "def build(n):\n    return n\n", "other.py": ""})
    keys = _keys(
        tmp_path,
        [
            code("import numpy as np\nfrom features import build\nimport other\nLIMIT = 3"),
            code("steady = np.arange(LIMIT).sum()", "step:steady"),
            code("result = build(3)", "step:uses"),
            code("import other\nr = other", "step:own"),
            code("f = lambda: build(1)", "step:makes"),
            code("g = f()", "step:calls"),
        ],
    )

    def modules(step: str) -> set[str]:
        return set(keys.key(keys.pipeline.step(step), {"f": "d"}, "rng")[1]["modules"])

    assert modules("steady") == set()  # numpy and a literal: nothing of the project's
    assert modules("uses") == {"features.py"}
    assert modules("own") == {"other.py"}
    # f, a function an earlier step made, may call build: every module imported so far.
    assert modules("calls") == {"features.py", "other.py"}


def test_a_dynamic_import_makes_every_project_module_count(tmp_path: Path) -> None:
    _project(
        tmp_path,
        {"plugins/a.py": "", "loader.py": "import importlib\nm = importlib.import_module(NAME)\n"},
    )
    keys = _keys(tmp_path, [code("import loader", "step:load")])
    modules = keys.key(keys.pipeline.step("load"), {}, "rng")[1]["modules"]
    assert {"loader.py", os.path.join("plugins", "a.py")} <= set(modules)
