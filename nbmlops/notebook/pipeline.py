"""Read a tagged notebook into a :class:`Pipeline`: setup, parameters, steps and their DAG.

Conventions (also in the README):

* a cell tagged ``parameters`` holds the defaults, as in papermill;
* a cell tagged ``step:<name>`` starts a step; the untagged cells after it belong to it;
* cells before the first step are setup, run before every pipeline;
* ``after:<step>`` tags on a step's cells declare its upstream steps; without them a step
  follows the one before it in the notebook.

Cells are numbered as JupyterLab counts them: from 1, in the notebook's order, leaving out
the error-marker cells papermill adds to a notebook it executed (papermill removes them
before it runs the notebook again, so they are not the user's cells). Every message, MLflow
tag and progress event names a cell by that number.

A code cell that only shows nbmlops widgets (``nbmlops.widgets.runs()``, with its imports)
belongs to no step and is not setup: it is left out of every step, of the setup and of
every cache key, and ``nbmlops run`` does not execute it (:attr:`Pipeline.widget_cells`).

A tag that looks like a misspelt ``step:``, ``after:`` or ``parameters`` tag (``Step:x``,
``steps:x``, ``after :x``, ``Parameters``) is not obeyed; :attr:`Pipeline.warnings` names
the cell and the tag meant, for every front door to show.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import nbformat

from nbmlops.exceptions import NotebookError
from nbmlops.notebook.parameters import Parameter, read_parameters
from nbmlops.notebook.source import Analysis, analyse, code_hash

STEP_TAG = "step:"
AFTER_TAG = "after:"
PARAMETERS_TAG = "parameters"
# The tag papermill gives the cell it injects the parameters in (after the parameters cell).
PAPERMILL_INJECTED_TAG = "injected-parameters"
# The tag of the error-marker cells papermill adds to a notebook whose cell failed.
PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_KERNELSPEC_FIX = (
    "open the notebook in JupyterLab, pick a Python kernel and save it, or add "
    '"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"} '
    "to its metadata"
)


@dataclass(frozen=True)
class Cell:
    # The cell's number as JupyterLab counts cells: from 1, papermill's error-marker cells
    # left out. Its position in the notebook papermill executes is ``index - 1``.
    index: int
    cell_type: str
    source: str

    @property
    def is_code(self) -> bool:
        return self.cell_type == "code"


@dataclass(frozen=True)
class TagWarning:
    """A tag nbmlops does not obey but that looks like one of its own, misspelt."""

    cell: int  # the cell's number (from 1)
    tag: str  # as written
    meant: str  # the tag it probably meant

    @property
    def message(self) -> str:
        return f"cell {self.cell}: tag {self.tag!r} is ignored; did you mean {self.meant!r}?"

    def describe(self) -> dict[str, Any]:
        return {"cell": self.cell, "tag": self.tag, "meant": self.meant, "message": self.message}


def analysis_of(cells: list[Cell]) -> Analysis:
    """What the code cells read, bind and import together; an opaque reason names its cell."""
    found = Analysis()
    for cell in cells:
        if cell.is_code:
            part = analyse(cell.source)
            if part.opaque:
                part.opaque = part.opaque.replace(" at line ", f" in cell {cell.index}, line ", 1)
            found.merge(part)
    return found


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
    def analysis(self) -> Analysis:
        return analysis_of(self.cells)

    @property
    def reads(self) -> set[str]:
        return self.analysis.reads

    @property
    def writes(self) -> set[str]:
        return self.analysis.writes

    @property
    def opaque(self) -> str | None:
        """Why the names this step reads cannot be known from its code (``exec() in cell 5,
        line 3``), or None. The cache then keys it on every parameter and earlier output."""
        return self.analysis.opaque


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
    cells: list[Cell] = field(default_factory=list)  # every cell of the user's, in order
    warnings: list[TagWarning] = field(default_factory=list)  # tags that look misspelt
    widget_cells: list[int] = field(default_factory=list)  # cells that only show widgets

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

    @cached_property
    def setup_analysis(self) -> Analysis:
        """What the setup cells read, bind and import; ``.opaque`` why that is not known."""
        return analysis_of(self.setup)

    def downstream_reads(self, step: str) -> set[str] | None:
        """Names read by the steps that run after ``step`` (None: any name, since one of
        them is opaque)."""
        later = self.steps[[s.name for s in self.steps].index(step) + 1 :]
        if any(s.opaque for s in later):
            return None
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
                    "opaque": s.opaque,
                }
                for s in self.steps
            ],
            "warnings": [w.describe() for w in self.warnings],
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
    parameters = read_parameters(
        nb, where, cell.source if cell else None, cell.index if cell else None
    )
    return Pipeline(
        path=path,
        notebook=nb,
        kernel_name=kernel_name,
        language=language,
        setup=layout.setup,
        parameters_cell=cell,
        parameters=parameters,
        steps=_topological(where, layout.steps, layout.first_cell_of),
        cells=layout.cells,
        warnings=layout.warnings,
        widget_cells=layout.widget_cells,
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
    cells: list[Cell] = field(default_factory=list)
    warnings: list[TagWarning] = field(default_factory=list)
    widget_cells: list[int] = field(default_factory=list)


_WIDGETS = "nbmlops.widgets"


def shows_widgets(source: str) -> bool:
    """Whether a code cell does nothing but show nbmlops widgets: imports of nbmlops and
    calls of ``nbmlops.widgets.*`` (shown, or bound to a name that is then shown)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a magic, or broken code: not a widget cell
        return False
    names: dict[str, str] = {}  # local name -> the nbmlops object it stands for
    widgets: set[str] = set()  # names bound to a widget
    shown = False

    def dotted(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def is_widget(node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in widgets
        target = dotted(node.func) if isinstance(node, ast.Call) else None
        return bool(target and target.startswith(_WIDGETS + "."))

    for stmt in tree.body:
        if isinstance(stmt, ast.Import) and all(
            a.name.split(".")[0] == "nbmlops" for a in stmt.names
        ):
            for a in stmt.names:  # import nbmlops.widgets binds nbmlops; "as w" the module
                names[a.asname or "nbmlops"] = a.name if a.asname else "nbmlops"
        elif isinstance(stmt, ast.ImportFrom) and (stmt.module or "").split(".")[0] == "nbmlops":
            names.update({a.asname or a.name: f"{stmt.module}.{a.name}" for a in stmt.names})
        elif isinstance(stmt, ast.Expr) and is_widget(stmt.value):
            shown = True
        elif (
            isinstance(stmt, ast.Assign)
            and all(isinstance(t, ast.Name) for t in stmt.targets)
            and is_widget(stmt.value)
        ):
            widgets.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
        else:
            return False
    return shown


def user_cells(nb: nbformat.NotebookNode) -> list[Any]:
    """The notebook's cells without the error-marker cells papermill added."""
    return [c for c in nb.cells if PAPERMILL_ERROR_TAG not in c.get("metadata", {}).get("tags", [])]


def _layout(nb: nbformat.NotebookNode, where: str) -> _Layout:
    """Split the cells into setup, the parameters cell and steps, by their tags."""
    layout = _Layout()
    for index, raw in enumerate(user_cells(nb), 1):
        cell = Cell(index, raw.cell_type, raw.source)
        layout.cells.append(cell)
        tags = [str(t) for t in raw.get("metadata", {}).get("tags", [])]
        if cell.is_code and shows_widgets(cell.source):
            _check_widget_cell(where, index, tags)
            layout.widget_cells.append(index)
            continue
        layout.warnings += [TagWarning(index, t, m) for t in tags if (m := _meant(t))]
        step_tags = _tagged(tags, STEP_TAG)
        if PARAMETERS_TAG in tags:
            _check_parameters_cell(where, layout, index, step_tags)
            layout.parameters_cell = cell
        name = _step_name(where, layout, index, step_tags)
        if name is not None and not cell.is_code:
            raise NotebookError(
                where,
                f"a {cell.cell_type} cell is tagged step:{name}; a step starts with a code cell",
                f"move the step:{name} tag to the step's first code cell",
                cell=index,
            )
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


_LOOKALIKE = re.compile(r"^\s*(steps?|after|afters)\s*[:=]\s*(.*?)\s*$", re.IGNORECASE)


def _meant(tag: str) -> str | None:
    """The tag ``tag`` looks like a misspelling of, or None (a tag of nbmlops, or another's)."""
    if tag == PARAMETERS_TAG or tag.startswith((STEP_TAG, AFTER_TAG)):
        return None
    if re.sub(r"[\s_-]", "", tag.lower()) in ("parameters", "parameter", "params"):
        return PARAMETERS_TAG
    match = _LOOKALIKE.match(tag)
    if match and match.group(2):
        prefix = STEP_TAG if match.group(1).lower().startswith("step") else AFTER_TAG
        return prefix + match.group(2)
    return None


def _tagged(tags: list[str], prefix: str) -> list[str]:
    """The names in the tags that start with ``prefix`` (``step:``, ``after:``)."""
    return [t[len(prefix) :].strip() for t in tags if t.startswith(prefix)]


def _check_widget_cell(where: str, index: int, tags: list[str]) -> None:
    """A cell that only shows widgets takes no part in the pipeline: it carries no tag."""
    ours = [t for t in tags if t == PARAMETERS_TAG or t.startswith((STEP_TAG, AFTER_TAG))]
    if ours:
        raise NotebookError(
            where,
            f"cell {index} only shows nbmlops widgets but is tagged {', '.join(ours)}; "
            "a widget cell is never part of a step",
            "move the tag to the step's first code cell (widget cells run only interactively)",
            cell=index,
        )


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
    """Set each step's upstream steps: its after: tags, else the step before it.

    A step without after: tags follows the one before it in the notebook, unless that one
    is itself tagged after it (a step written above the step it runs after: the two swap
    places, and the later one follows the step before both). Any other notebook-order
    link that would close a loop with after: tags is an error naming the steps and cells:
    dropping it would run the step before the steps it follows in the notebook.
    """
    known = [s.name for s in layout.steps]
    for step in layout.steps:
        step.upstream = _declared_upstream(where, layout, step, known)
    by_name = {s.name: s for s in layout.steps}
    for i, step in enumerate(layout.steps):
        if layout.declared.get(step.name):
            continue
        for earlier in reversed(layout.steps[:i]):
            if step.name in layout.declared.get(earlier.name, []):
                continue  # tagged after this step: it runs after it, not before
            loop = _path(earlier.name, step.name, by_name)
            if loop:
                _implicit_cycle(where, layout, step, earlier, loop)
            step.upstream = [earlier.name]
            break


def _path(start: str, goal: str, by_name: dict[str, Step]) -> list[str]:
    """Upstream links from ``start`` to ``goal`` (``[start, ..., goal]``), or []."""
    todo = [[start]]
    seen = {start}
    while todo:
        path = todo.pop(0)
        for up in by_name[path[-1]].upstream:
            if up == goal:
                return [*path, up]
            if up not in seen:
                seen.add(up)
                todo.append([*path, up])
    return []


def _implicit_cycle(
    where: str, layout: _Layout, step: Step, earlier: Step, loop: list[str]
) -> None:
    """Raise the error for ``step`` following ``earlier`` in the notebook while ``earlier``
    already runs after ``step`` through ``loop``."""
    cell = layout.first_cell_of
    tagged = next(
        (a, b) for a, b in zip(loop, loop[1:], strict=False) if b in layout.declared.get(a, [])
    )
    chain = " -> ".join(f"{n} (cell {cell[n]})" for n in [step.name, *loop])
    raise NotebookError(
        where,
        f"step {step.name!r} has no after: tag, so it follows {earlier.name!r}, the step "
        f"before it in the notebook; but {tagged[0]!r} is tagged after:{tagged[1]}, which "
        f"makes a loop: {chain}",
        f"tag step {step.name!r} (cell {cell[step.name]}) with after:<the step it needs>, "
        f"or remove the after:{tagged[1]} tag from step {tagged[0]!r} (cell {cell[tagged[0]]})",
        cell=cell[step.name],
    )


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
