"""Read a tagged notebook into a :class:`Pipeline`: setup, parameters, steps and their DAG.

Conventions (also in the README):

* a cell tagged ``parameters`` holds the defaults, as in papermill;
* a cell tagged ``step:<name>`` starts a step; the untagged cells after it belong to it;
* cells before the first step are setup, run before every pipeline;
* ``after:<step>`` tags on a step's cells declare its upstream steps; without them a step
  follows the one before it in the notebook.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import nbformat

from nbmlops.exceptions import NotebookError
from nbmlops.notebook.parameters import Parameter, read_parameters
from nbmlops.notebook.source import code_hash, names

STEP_TAG = "step:"
AFTER_TAG = "after:"
PARAMETERS_TAG = "parameters"
# The tag papermill gives the cell it injects the parameters in (after the parameters cell).
PAPERMILL_INJECTED_TAG = "injected-parameters"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_KERNELSPEC_FIX = (
    "open the notebook in JupyterLab, pick a Python kernel and save it, or add "
    '"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"} '
    "to its metadata"
)


@dataclass(frozen=True)
class Cell:
    index: int  # position in the source notebook, as Jupyter counts cells (from 0)
    cell_type: str
    source: str

    @property
    def is_code(self) -> bool:
        return self.cell_type == "code"


@dataclass
class Step:
    name: str
    cells: list[Cell]
    upstream: list[str] = field(default_factory=list)

    @property
    def code(self) -> list[str]:
        return [c.source for c in self.cells if c.is_code]

    @cached_property
    def code_hash(self) -> str:
        return code_hash(self.code)

    @cached_property
    def reads(self) -> set[str]:
        return set().union(*(names(s)[0] for s in self.code)) if self.code else set()

    @cached_property
    def writes(self) -> set[str]:
        return set().union(*(names(s)[1] for s in self.code)) if self.code else set()


@dataclass
class Pipeline:
    path: Path
    notebook: nbformat.NotebookNode
    kernel_name: str
    language: str
    setup: list[Cell]
    parameters_cell: Cell | None
    parameters: dict[str, Parameter]
    steps: list[Step]  # in execution order (a topological order of the DAG)

    @property
    def stem(self) -> str:
        from nbmlops.project import experiment_name

        return experiment_name(self.path)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @cached_property
    def setup_hash(self) -> str:
        return code_hash([c.source for c in self.setup if c.is_code])

    def downstream_reads(self, step: str) -> set[str]:
        """Names read by the steps that run after ``step``."""
        later = self.steps[[s.name for s in self.steps].index(step) + 1 :]
        return set().union(*(s.reads for s in later)) if later else set()

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description (used by ``nbmlops steps --json`` and the UI)."""
        return {
            "notebook": str(self.path),
            "kernel": self.kernel_name,
            "parameters": {n: p.describe() for n, p in self.parameters.items()},
            "setup_cells": [c.index for c in self.setup if c.is_code],
            "steps": [
                {
                    "name": s.name,
                    "cells": [c.index for c in s.cells],
                    "upstream": s.upstream,
                    "code_hash": s.code_hash,
                }
                for s in self.steps
            ],
        }


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    path = Path(path)
    if not path.is_file():
        raise NotebookError(str(path), "no such notebook", "check the path")
    try:
        nb: nbformat.NotebookNode = nbformat.read(str(path), as_version=4)  # type: ignore[no-untyped-call]
        return nb
    except Exception as exc:  # nbformat raises NotJSONError, ValueError, ... on bad files
        raise NotebookError(
            str(path),
            f"not a valid notebook ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
            "check the file is notebook JSON (a merge conflict or a truncated save breaks it); "
            "re-save it from JupyterLab",
        ) from exc


def load_pipeline(path: str | Path) -> Pipeline:
    """Parse ``path`` into a :class:`Pipeline`, or raise :class:`NotebookError`."""
    path = Path(path)
    nb = read_notebook(path)
    where = str(path)
    kernel_name, language = _kernel(nb, where)
    layout = _layout(nb, where)
    _link(where, layout)
    cell = layout.parameters_cell
    parameters = read_parameters(nb, where, cell.index if cell else None)
    return Pipeline(
        path=path,
        notebook=nb,
        kernel_name=kernel_name,
        language=language,
        setup=layout.setup,
        parameters_cell=cell,
        parameters=parameters,
        steps=_topological(where, layout.steps, layout.first_cell_of),
    )


def _kernel(nb: nbformat.NotebookNode, where: str) -> tuple[str, str]:
    """The notebook's kernel name and language, which must be Python."""
    kernel_name = (nb.metadata.get("kernelspec") or {}).get("name")
    language = (nb.metadata.get("kernelspec") or {}).get("language") or (
        nb.metadata.get("language_info") or {}
    ).get("name")
    if not kernel_name or not language:
        missing = "kernelspec" if not kernel_name else "language"
        raise NotebookError(where, f"no {missing} in the notebook metadata", _KERNELSPEC_FIX)
    if language.lower() != "python":
        raise NotebookError(
            where, f"kernel language is {language!r}", "nbmlops runs Python notebooks"
        )
    return str(kernel_name), str(language)


@dataclass
class _Layout:
    """The notebook's cells as its tags group them, before the steps are linked."""

    setup: list[Cell] = field(default_factory=list)
    parameters_cell: Cell | None = None
    steps: list[Step] = field(default_factory=list)
    declared: dict[str, list[str]] = field(default_factory=dict)  # step -> its after: tags
    first_cell_of: dict[str, int] = field(default_factory=dict)  # step -> its first cell


def _layout(nb: nbformat.NotebookNode, where: str) -> _Layout:
    """Split the cells into setup, the parameters cell and steps, by their tags."""
    layout = _Layout()
    for index, raw in enumerate(nb.cells):
        cell = Cell(index, raw.cell_type, raw.source)
        tags = [str(t) for t in raw.get("metadata", {}).get("tags", [])]
        step_tags = _tagged(tags, STEP_TAG)
        if PARAMETERS_TAG in tags:
            _check_parameters_cell(where, layout, index, step_tags)
            layout.parameters_cell = cell
        name = _step_name(where, layout, index, step_tags)
        if name is not None:
            layout.first_cell_of[name] = index
            layout.steps.append(Step(name, [cell]))
            layout.declared[name] = []
        elif layout.steps:
            layout.steps[-1].cells.append(cell)
        elif cell is not layout.parameters_cell:
            layout.setup.append(cell)
        after_tags = _tagged(tags, AFTER_TAG)
        if after_tags:
            if not layout.steps:
                raise NotebookError(
                    where,
                    f"'after:' tag on a setup cell (before any step:): {', '.join(after_tags)}",
                    "put after:<step> tags on a cell of the step that depends on the other",
                    cell=index,
                )
            layout.declared[layout.steps[-1].name].extend(after_tags)
    if not layout.steps:
        # An untagged notebook is a one-step pipeline: everything after the setup.
        first = layout.parameters_cell.index if layout.parameters_cell else -1
        body = [c for c in layout.setup if c.index > first]
        layout.setup = [c for c in layout.setup if c not in body]
        layout.steps = [Step("main", body)] if body else []
        layout.declared = {"main": []}
    return layout


def _tagged(tags: list[str], prefix: str) -> list[str]:
    """The names in the tags that start with ``prefix`` (``step:``, ``after:``)."""
    return [t[len(prefix) :].strip() for t in tags if t.startswith(prefix)]


def _check_parameters_cell(where: str, layout: _Layout, index: int, step_tags: list[str]) -> None:
    if layout.parameters_cell is not None:
        raise NotebookError(
            where,
            f"two cells are tagged 'parameters' (cells {layout.parameters_cell.index} and {index})",
            "keep the tag on one cell; merge the defaults into it",
            cell=index,
        )
    if layout.steps:
        raise NotebookError(
            where,
            f"the parameters cell comes after step {layout.steps[0].name!r} starts",
            "move the parameters cell above the first step: cell",
            cell=index,
        )
    if step_tags:
        raise NotebookError(
            where,
            "a cell is tagged both 'parameters' and 'step:'",
            "keep the parameters in their own cell",
            cell=index,
        )


def _step_name(where: str, layout: _Layout, index: int, step_tags: list[str]) -> str | None:
    """The step cell ``index`` starts, if it starts one."""
    if len(step_tags) > 1:
        raise NotebookError(
            where,
            f"one cell has several step tags: {', '.join(step_tags)}",
            "give each cell at most one step:<name> tag",
            cell=index,
        )
    if not step_tags:
        return None
    name = step_tags[0]
    if not _NAME.match(name):
        raise NotebookError(
            where,
            f"step name {name!r} is not a valid name",
            "use letters, digits, '_', '-' or '.', starting with a letter, e.g. step:train",
            cell=index,
        )
    if name in layout.first_cell_of:
        raise NotebookError(
            where,
            f"step {name!r} is started twice (cells {layout.first_cell_of[name]} and {index})",
            "rename one of them; untagged cells after a step: cell already belong to it",
            cell=index,
        )
    return name


def _link(where: str, layout: _Layout) -> None:
    """Set each step's upstream steps: its after: tags, else an earlier step."""
    known = [s.name for s in layout.steps]
    for step in layout.steps:
        step.upstream = _declared_upstream(where, layout, step, known)
    # A step without after: tags follows the nearest earlier step that does not itself
    # (through after: tags) come after it.
    by_name = {s.name: s for s in layout.steps}
    for i, step in enumerate(layout.steps):
        if layout.declared.get(step.name):
            continue
        for earlier in reversed(layout.steps[:i]):
            if step.name not in _ancestors(earlier.name, by_name):
                step.upstream = [earlier.name]
                break


def _declared_upstream(where: str, layout: _Layout, step: Step, known: list[str]) -> list[str]:
    """The steps ``step``'s after: tags name, once each, checked."""
    ups = list(dict.fromkeys(layout.declared.get(step.name, [])))
    cell = layout.first_cell_of.get(step.name)
    for up in ups:
        if up not in known:
            raise NotebookError(
                where,
                f"step {step.name!r} is tagged after:{up}, but there is no step {up!r}",
                f"use one of the known steps: {', '.join(known)}",
                cell=cell,
            )
        if up == step.name:
            raise NotebookError(
                where,
                f"step {step.name!r} is tagged after itself",
                f"remove the after:{up} tag",
                cell=cell,
            )
    return ups


def _ancestors(name: str, by_name: dict[str, Step]) -> set[str]:
    seen: set[str] = set()
    todo = list(by_name[name].upstream)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(by_name[n].upstream)
    return seen


def _topological(where: str, steps: list[Step], first_cell_of: dict[str, int]) -> list[Step]:
    """Order steps so each runs after its upstream steps; ties keep notebook order."""
    by_name = {s.name: s for s in steps}
    done: list[Step] = []
    placed: set[str] = set()
    while len(done) < len(steps):
        ready = [s for s in steps if s.name not in placed and set(s.upstream) <= placed]
        if not ready:
            cycle = _find_cycle(by_name, placed)
            raise NotebookError(
                where,
                f"steps depend on each other in a cycle: {' -> '.join(cycle)}",
                "remove one of the after: tags on that loop",
                cell=first_cell_of.get(cycle[0]),
            )
        done.append(ready[0])
        placed.add(ready[0].name)
    return done


def _find_cycle(by_name: dict[str, Step], placed: set[str]) -> list[str]:
    start = next(n for n in by_name if n not in placed)
    path: list[str] = []
    node = start
    while node not in path:
        path.append(node)
        node = next(u for u in by_name[node].upstream if u not in placed)
    return [*path[path.index(node) :], node]
