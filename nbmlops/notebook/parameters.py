"""The notebook's parameters: papermill's reading of the ``parameters`` cell, and ``-p`` values.

Values from the command line are Python literals (``-p alpha=0.5`` is a float,
``-p layers=[64,32]`` a list); text that is not a literal is a string. They are checked
against the defaults: an unknown name lists the known ones, a value of another type than
its default is refused (an int is accepted where the default is a float; a default of
``None`` accepts anything). papermill injects them as literals, never as code.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

import nbformat

from nbmlops.exceptions import NotebookError, ParameterError

_UNSET = object()
_SECRET = re.compile(
    r"(password|passwd|secret|token|api_?key|access_?key|private_?key|credentials?)$", re.I
)


@dataclass(frozen=True)
class Parameter:
    name: str
    default_source: str  # the default as written in the cell
    type_name: str  # papermill's inferred type name ("float", "int", "None", ...)
    help: str
    default: Any = _UNSET  # the default's value, when it is a literal

    @property
    def has_literal_default(self) -> bool:
        return self.default is not _UNSET

    def describe(self) -> dict[str, Any]:
        return {
            "default": self.default_source,
            "type": self.type_name,
            "help": self.help,
        }


def read_parameters(
    nb: nbformat.NotebookNode, where: str, source: str | None, cell: int | None
) -> dict[str, Parameter]:
    """The names and defaults of the parameters cell (``source``, cell number ``cell``), as
    papermill infers them."""
    if source is None:
        return {}
    from papermill.inspection import _infer_parameters

    only = nbformat.v4.new_notebook(metadata=nb.metadata)  # type: ignore[no-untyped-call]
    cell_tags = {"tags": ["parameters"]}
    only.cells = [nbformat.v4.new_code_cell(source, metadata=cell_tags)]  # type: ignore[no-untyped-call]
    try:
        inferred = _infer_parameters(only)
    except Exception as exc:
        raise NotebookError(
            where,
            f"papermill cannot read the parameters cell ({exc})",
            "simplify the cell to `name = value` lines",
            cell,
        ) from exc
    params: dict[str, Parameter] = {}
    for p in inferred:
        try:
            value = ast.literal_eval(p.default)
        except (ValueError, SyntaxError, TypeError):
            value = _UNSET
        type_name = (
            p.inferred_type_name
            if p.inferred_type_name != "None"
            else (type(value).__name__ if value is not _UNSET else "expression")
        )
        params[p.name] = Parameter(p.name, p.default, type_name, p.help, value)
    return params


def parse_value(text: str) -> Any:
    """``-p`` value text to a Python value: a literal when it is one, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_assignments(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["alpha=0.5", ...]`` to ``{"alpha": "0.5"}``; the value is parsed later."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ParameterError(pair, "is not of the form name=value", "write -p alpha=0.5")
        out[name] = text
    return out


def resolve(parameters: dict[str, Parameter], given: dict[str, str]) -> dict[str, Any]:
    """Check ``given`` against ``parameters``; return the values to inject, typed."""
    resolved: dict[str, Any] = {}
    for name, text in given.items():
        if name not in parameters:
            known = ", ".join(parameters) or "(the notebook has no parameters cell)"
            raise ParameterError(
                name,
                "is not a parameter of this notebook",
                f"known parameters: {known}; add it to the cell tagged 'parameters' to make it one",
            )
        if _SECRET.search(name):
            raise ParameterError(
                name,
                "looks like a secret; -p values are written into the output notebook and recorded in MLflow",
                f"read it in the notebook from the environment instead: os.environ[{name.upper()!r}]",
            )
        param = parameters[name]
        value = parse_value(text)
        if not param.has_literal_default or param.default is None:
            resolved[name] = value
            continue
        default = param.default
        if isinstance(default, str) and not isinstance(value, str):
            value = text  # a string parameter takes the text as written: -p name=1 is "1"
        elif isinstance(default, float) and type(value) is int:
            value = float(value)
        if type(value) is not type(default):
            raise ParameterError(
                name,
                f"got {value!r} ({type(value).__name__}), but its default {param.default_source} "
                f"is a {type(default).__name__}",
                f"pass a {type(default).__name__}, e.g. -p {name}={param.default_source}",
            )
        resolved[name] = value
    return resolved


def effective(parameters: dict[str, Parameter], injected: dict[str, Any]) -> dict[str, Any]:
    """Every parameter's value for this run: injected ones, else the literal defaults."""
    values: dict[str, Any] = {}
    for name, p in parameters.items():
        if name in injected:
            values[name] = injected[name]
        elif p.has_literal_default:
            values[name] = p.default
        else:
            values[name] = p.default_source  # an expression: recorded as written
    return values
