"""What a step's code is: its normalised text, its hash, the names it reads and writes.

Normalisation runs IPython's own input transformer (so ``%magic`` and ``!shell`` lines are
understood) and then round-trips the code through :mod:`ast`: comments, blank lines and
formatting do not change a step's code hash; a changed statement does.
"""

from __future__ import annotations

import ast
import builtins
from functools import lru_cache

import blake3

_BUILTINS = frozenset(dir(builtins))


@lru_cache(maxsize=512)
def _to_python(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)  # type: ignore[no-untyped-call]


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(_to_python(source))
    except SyntaxError:
        return None


def normalise(source: str) -> str:
    """The code as the kernel will see it, without comments, blank lines or layout."""
    tree = _parse(source)
    if tree is not None:
        return ast.unparse(tree)
    # Not valid Python (it will fail when run): still ignore comments and blank lines.
    lines = (line.rstrip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.lstrip().startswith("#"))


def code_hash(sources: list[str]) -> str:
    """128-bit BLAKE3 hex digest of the normalised sources, in order."""
    h = blake3.blake3()
    for source in sources:
        h.update(normalise(source).encode())
        h.update(b"\0")
    return h.hexdigest(length=16)


def names(source: str) -> tuple[set[str], set[str]]:
    """Module-level names the code reads and names it binds or mutates.

    A name whose attribute or item is assigned (``df["x"] = ...``) or whose method is called
    (``model.fit(X)``) counts as written too: it may have changed in place. Builtins are
    left out. This is deliberately conservative.
    """
    tree = _parse(source)
    if tree is None:
        return set(), set()
    reads: set[str] = set()
    writes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (reads if isinstance(node.ctx, ast.Load) else writes).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            writes.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                writes.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.Attribute | ast.Subscript) and not isinstance(node.ctx, ast.Load):
            base = _base_name(node)
            if base:
                writes.add(base)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = _base_name(node.func)
            if base:
                writes.add(base)
        elif isinstance(node, ast.AugAssign):
            base = _base_name(node.target)
            if base:
                reads.add(base)
    return reads - _BUILTINS, writes


def _base_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None
