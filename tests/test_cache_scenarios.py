"""The step cache is never stale, on notebooks as data scientists write them.

Each scenario runs a small pipeline, changes one thing a step depends on in a way code
analysis alone cannot see (a cell magic, a computed path, a file written by one step and
read by the next, a project module, ``globals()``, ``open`` + ``json.load``, ``np.load``,
pyarrow), runs it again with the cache, and compares with the oracle: a ``--no-cache``
run of the changed project. They must agree, and the step the change does not touch must
still be a hit.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import code, pipeline_runs, step_runs, write_notebook

SETUP = code(
    "import json\nimport os\nimport numpy as np\nimport pandas as pd\nimport nbmlops\n"
    "DATA_DIR = 'data'"
)
# A step no change below touches: it must stay a cache hit.
STEADY = code("steady = np.arange(10).sum()", "step:steady")


@dataclass
class Scenario:
    name: str
    cells: list[Any]
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # written first
    change: Callable[[Path], None] = lambda root: None
    parameters: tuple[str, ...] = ()  # -p of the run after the change
    untouched: tuple[str, ...] = ("steady",)


def _write(relative: str, text: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)

    return write


def _npy(relative: str, values: list[float]) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        import numpy as np

        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / relative, np.array(values))

    return write


def _parquet(relative: str, values: list[float]) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        import pandas as pd

        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"x": values}).to_parquet(root / relative)

    return write


def _delete(relative: str) -> Callable[[Path], None]:
    def delete(root: Path) -> None:
        target = root / relative
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()

    return delete


def _both(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        for c in changes:
            c(root)

    return change


def _ipc(relative: str, values: list[float]) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        import pyarrow as pa

        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({"x": values})
        with (
            pa.OSFile(str(root / relative), "wb") as sink,
            pa.ipc.new_file(sink, table.schema) as w,
        ):
            w.write_table(table)

    return write


def _metric(source: str) -> str:
    return f"nbmlops.log_metric('result', float({source}))"


SCENARIOS = [
    Scenario(
        "a parameter read only inside %%time",
        [
            SETUP,
            code("C = 1.0", "parameters"),
            STEADY,
            code("%%time\nresult = C * 2\n" + _metric("result"), "step:train"),
        ],
        parameters=("C=0.001",),
    ),
    Scenario(
        "a parameter read only inside %%capture",
        [
            SETUP,
            code("C = 1.0", "parameters"),
            STEADY,
            code(
                "%%capture out\nresult = C + 1\nprint(result)\n" + _metric("result"), "step:train"
            ),
        ],
        parameters=("C=5.0",),
    ),
    Scenario(
        "a parameter read through globals()",
        [
            SETUP,
            code("C = 1.0", "parameters"),
            STEADY,
            code("result = globals()['C'] * 3\n" + _metric("result"), "step:train"),
        ],
        parameters=("C=2.0",),
    ),
    Scenario(
        "a CSV read through a path built with os.path.join",
        [
            SETUP,
            code("name = 'sales.csv'", "parameters"),
            STEADY,
            code(
                "df = pd.read_csv(os.path.join(DATA_DIR, name))\n" + _metric("df['x'].sum()"),
                "step:load",
            ),
        ],
        files={"data/sales.csv": _write("data/sales.csv", "x\n1\n2\n3\n")},
        change=_write("data/sales.csv", "x\n10\n20\n30\n"),
    ),
    Scenario(
        "a config read with open() and json.load",
        [
            SETUP,
            STEADY,
            code(
                "with open(os.path.join('conf', 'settings.json')) as fh:\n"
                "    settings = json.load(fh)\n" + _metric("settings['alpha']"),
                "step:configure",
            ),
        ],
        files={"conf/settings.json": _write("conf/settings.json", '{"alpha": 0.5}')},
        change=_write("conf/settings.json", '{"alpha": 0.9}'),
    ),
    Scenario(
        "an array read with np.load from a computed path",
        [
            SETUP,
            STEADY,
            code(
                "arr = np.load(os.path.join(DATA_DIR, 'w' + '.npy'))\n" + _metric("arr.sum()"),
                "step:load",
            ),
        ],
        files={"data/w.npy": _npy("data/w.npy", [1.0, 2.0])},
        change=_npy("data/w.npy", [5.0, 7.0]),
    ),
    Scenario(
        "a Parquet file read through pyarrow",
        [
            SETUP,
            code("import pyarrow.parquet as pq"),
            STEADY,
            code(
                "table = pq.read_table(os.path.join(DATA_DIR, 'part.parquet'))\n"
                + _metric("table.column('x').to_pandas().sum()"),
                "step:load",
            ),
        ],
        files={"data/part.parquet": _parquet("data/part.parquet", [1.0, 2.0])},
        change=_parquet("data/part.parquet", [3.0, 4.0]),
    ),
    Scenario(
        "a function imported from a project module",
        [
            SETUP,
            code("from features import build"),
            STEADY,
            code("result = build(3)\n" + _metric("result"), "step:features"),
        ],
        files={"features.py": _write("features.py", "def build(n):\n    return n * 2\n")},
        change=_write("features.py", "def build(n):\n    return n * 100\n"),
    ),
    Scenario(
        "a project module imported inside the step",
        [
            SETUP,
            STEADY,
            code("import helpers\nresult = helpers.factor()\n" + _metric("result"), "step:use"),
        ],
        files={"helpers.py": _write("helpers.py", "def factor():\n    return 2\n")},
        change=_write("helpers.py", "def factor():\n    return 9\n"),
    ),
    Scenario(
        "a file written by one step and read by the next, gone before the re-run",
        [
            SETUP,
            STEADY,
            code(
                "os.makedirs('tmp_out', exist_ok=True)\n"
                "pd.DataFrame({'x': [1.0, 2.0, 4.0]}).to_parquet(os.path.join('tmp_out', "
                "'clean.parquet'))",
                "step:clean",
            ),
            code(
                "clean = pd.read_parquet(os.path.join('tmp_out', 'clean.parquet'))\n"
                + _metric("clean['x'].sum()"),
                "step:report",
            ),
        ],
        change=_delete("tmp_out"),
        untouched=("steady", "clean", "report"),
    ),
    Scenario(
        "a CSV written by one step and read by the next, gone before the re-run",
        [
            SETUP,
            STEADY,
            code(
                "with open('interim.csv', 'w') as fh:\n    fh.write('x\\n3\\n4\\n')",
                "step:write",
            ),
            code("back = pd.read_csv('interim.csv')\n" + _metric("back['x'].sum()"), "step:read"),
        ],
        change=_delete("interim.csv"),
        untouched=("steady", "write", "read"),
    ),
]


SCENARIOS += [
    Scenario(
        "a file appended to through a computed path",
        [
            SETUP,
            STEADY,
            code(
                "log = os.path.join(DATA_DIR, 'log.csv')\n"
                "pd.DataFrame({'x': [1]}).to_csv(log, mode='a', header=False, index=False)",
                "step:append",
            ),
            code("rows = len(pd.read_csv(log))\n" + _metric("rows"), "step:count"),
        ],
        files={"data/log.csv": _write("data/log.csv", "x\n5\n")},
        change=_write("data/log.csv", "x\n5\n6\n7\n8\n"),
    ),
    Scenario(
        "a file the step looked for and did not find, created before the re-run",
        [
            SETUP,
            STEADY,
            code(
                "try:\n    with open(os.path.join(DATA_DIR, 'overrides.json')) as fh:\n"
                "        extra = json.load(fh)['extra']\nexcept FileNotFoundError:\n    extra = 0\n"
                + _metric("extra"),
                "step:configure",
            ),
        ],
        files={"data/keep.txt": _write("data/keep.txt", "")},
        change=_write("data/overrides.json", '{"extra": 3}'),
    ),
    Scenario(
        "an empty folder made by one step, gone before the next step runs again",
        [
            SETUP,
            STEADY,
            code("os.makedirs('figures', exist_ok=True)", "step:prepare"),
            code(
                "with open(os.path.join(DATA_DIR, 'v.txt')) as fh:\n    v = fh.read()\n"
                "with open(os.path.join('figures', 'v.txt'), 'w') as fh:\n    fh.write(v)\n"
                + _metric("v"),
                "step:plot",
            ),
        ],
        files={"data/v.txt": _write("data/v.txt", "1")},
        change=_both(_delete("figures"), _write("data/v.txt", "2")),
        untouched=("steady", "prepare"),
    ),
    Scenario(
        "categories changed by a parameter",
        [
            SETUP,
            code("cats = 'S,M,L'", "parameters"),
            STEADY,
            code(
                "df = pd.DataFrame({'size': pd.Categorical(['S', 'M'], categories=cats.split(','))})",
                "step:prep",
            ),
            code(_metric("pd.get_dummies(df['size']).shape[1]"), "step:features"),
        ],
        parameters=("cats=S,M,L,XL",),
    ),
    Scenario(
        "an Arrow IPC file read through pyarrow.ipc",
        [
            SETUP,
            code("import pyarrow as pa"),
            STEADY,
            code(
                "table = pa.ipc.open_file(os.path.join(DATA_DIR, 'part.arrow')).read_all()\n"
                + _metric("table.num_rows"),
                "step:load",
            ),
        ],
        files={"data/part.arrow": _ipc("data/part.arrow", [1.0, 2.0])},
        change=_ipc("data/part.arrow", [1.0, 2.0, 3.0]),
    ),
]


def _run(nbmlops: Any, experiment: str, *args: str) -> Any:
    # The notebooks have no `seed` parameter: without --seed every run draws a new seed,
    # which is part of every key, and nothing would hit.
    return nbmlops(
        "run", "pipe.ipynb", "--experiment", experiment, "--seed", "7", "-q", *args, check=True
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_a_change_the_code_does_not_show_is_seen_and_what_it_does_not_touch_still_hits(
    scenario: Scenario, project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    for write in scenario.files.values():
        write(project)
    write_notebook(project / "pipe.ipynb", scenario.cells)
    params = [x for p in scenario.parameters for x in ("-p", p)]
    _run(nbmlops, experiment)  # fills the cache
    scenario.change(project)
    cached = _run(nbmlops, experiment, *params)
    cached_run = pipeline_runs(client, experiment)[0]
    hits = {n: r.data.tags["nbmlops.cache"] for n, r in step_runs(client, cached_run).items()}
    scenario.change(project)  # the oracle sees the same project (files restored by the hit)
    _run(nbmlops, experiment, *params, "--no-cache")
    oracle = pipeline_runs(client, experiment)[0]
    assert cached_run.data.metrics == oracle.data.metrics, cached.stdout
    assert oracle.data.metrics, "the scenario logs nothing to compare"
    for step in scenario.untouched:
        assert hits[step] == "hit", (step, hits)
    changed = set(hits) - set(scenario.untouched)
    for step in changed:
        assert hits[step] == "miss", (step, hits)
