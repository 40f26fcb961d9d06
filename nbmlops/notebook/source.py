"""What a step's code is: its normalised text, its hash, the names it reads and writes.

Normalisation runs IPython's own input transformer (so ``%magic`` and ``!shell`` lines are
understood) and then round-trips the code through :mod:`ast`: comments, blank lines and
formatting do not change a step's code hash; a changed statement does.

:func:`analyse` reads a cell the way the kernel will run it. IPython turns a magic into a
call whose code is a string (``%%time`` becomes ``get_ipython().run_cell_magic('time', '',
'<the cell>')``); the analysis opens the magics whose body or line is Python run in the
user's namespace (``%%time``, ``%%timeit``, ``%%capture``, ``%%prun``, ``%%debug`` and
their line forms), reads the ``$name`` and ``{expression}`` IPython expands in the other
magics' lines and in ``!shell`` commands, and knows the magics that touch no variable
(``%matplotlib``, ``%%html``, ``%%writefile``...). Wherever the names cannot be known (an
unknown magic, ``exec``/``eval``/``compile``, ``globals()``/``locals()``/``vars()``,
``%run``, other uses of ``get_ipython()``, a star import, an import of a name computed at
run time) the analysis says why in :attr:`Analysis.opaque`: the cache then keys the step
on every parameter and every earlier output.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from functools import lru_cache

import blake3

_BUILTINS = frozenset(dir(builtins))

# Cell magics whose body is Python run in the user's namespace, and the getopt-style
# options their line may start with (a letter followed by ':' takes a value).
_PYTHON_MAGICS = {
    "time": "",
    "timeit": "n:r:tcp:qov:",
    "prun": "D:l:rs:T:q",
    "debug": "b:",
    "capture": "",
}
_LONG_OPTIONS = {
    "time": ("--no-raise-error",),
    "debug": ("--breakpoint",),
    "capture": ("--no-stderr", "--no-stdout", "--no-display"),
}
# Magics that read or write no variable beyond the $name / {expression} IPython expands in
# their line: display, files, subprocesses, the working folder, packages, help, history,
# settings. (A subprocess may read files nobody sees: that is the file observation's part.)
_SCRIPT_MAGICS = frozenset(("bash", "sh", "script", "perl", "ruby", "python", "python2", "python3", "pypy"))  # fmt: skip
_INERT_CELL_MAGICS = _SCRIPT_MAGICS | frozenset((
    "html", "HTML", "javascript", "js", "latex", "markdown", "svg", "SVG", "writefile", "file",
))  # fmt: skip
_INERT_LINE_MAGICS = frozenset((
    "alias", "alias_magic", "unalias", "rehashx", "autoawait", "autocall", "automagic",
    "autoreload", "aimport", "config", "colors", "xmode", "precision", "pprint", "pdb", "tb",
    "doctest_mode", "gui", "matplotlib", "notebook", "env", "set_env",
    "cd", "pushd", "popd", "dhist", "dirs", "bookmark", "pwd",
    "sx", "system", "sc", "killbgscripts", "ls", "cat", "cp", "mkdir", "mv", "rm", "rmdir",
    "ldir", "lf", "lk", "ll", "lx", "rep", "pycat", "less", "more", "man", "clear",
    "pip", "conda", "mamba", "micromamba", "uv",
    "pinfo", "pinfo2", "pdef", "pdoc", "pfile", "psource", "psearch", "page", "who", "whos",
    "lsmagic", "magic", "quickref", "hist", "history", "recall", "load", "loadpy", "save",
    "pastebin", "logstart", "logstop", "logon", "logoff", "logstate", "autosave",
    "connect_info",
))  # fmt: skip
# Line magics whose line (after its options) is a Python statement.
_PYTHON_LINE_MAGICS = frozenset(("time", "timeit", "prun", "debug"))
_EXTENSION_MAGICS = frozenset(("load_ext", "reload_ext"))
# Calls whose result depends on the whole namespace, or that run code given as data.
_NAMESPACE_CALLS = frozenset(("globals", "locals", "vars", "dir", "_getframe", "currentframe"))
# IPython's input and output history in the user's namespace: what they hold depends on
# which cells ran before (a cached step's cells did not).
_HISTORY = re.compile(r"_{1,3}|_\d+|_i{1,3}|_i\d+|_oh|_ih|_dh|In|Out")
# DataFrame.query/.eval("a > @limit") read the caller's variables named after "@".
_QUERY_METHODS = frozenset(("query", "eval"))
_CODE_CALLS = frozenset(("exec", "eval", "compile", "execfile", "breakpoint"))
_IMPORT_CALLS = frozenset(("import_module", "__import__"))
_SHELL_CALLS = frozenset(("system", "getoutput"))


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
    """The code as the kernel will see it, without comments, blank lines or layout.

    The body of a cell magic whose body is Python (``%%time``) is normalised too, so a
    comment inside it does not change the code hash either.
    """
    tree = _parse(source)
    if tree is not None:
        return ast.unparse(_NormaliseMagicBodies().visit(tree))
    # Not valid Python (it will fail when run): still ignore comments and blank lines.
    lines = (line.rstrip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.lstrip().startswith("#"))


class _NormaliseMagicBodies(ast.NodeTransformer):
    def visit_Call(self, node: ast.Call) -> ast.AST:
        magic = _ipython_call(node)
        if magic and magic[0] == "run_cell_magic" and len(node.args) == 3:
            name, _, body = (a.value if isinstance(a, ast.Constant) else None for a in node.args)
            if name in _PYTHON_MAGICS and isinstance(body, str):
                node.args[2] = ast.Constant(normalise(body))
        return self.generic_visit(node)


def code_hash(sources: list[str]) -> str:
    """128-bit BLAKE3 hex digest of the normalised sources, in order."""
    h = blake3.blake3()
    for source in sources:
        h.update(normalise(source).encode())
        h.update(b"\0")
    return h.hexdigest(length=16)


@dataclass(frozen=True)
class Import:
    """A module the code imports: ``module`` as written (``a.b``), ``names`` the names a
    ``from`` import takes from it (each may be a submodule), ``level`` the dots of a
    relative import."""

    module: str
    names: tuple[str, ...] = ()
    level: int = 0
    line: int = 0


@dataclass
class Analysis:
    """What a cell's code reads and binds, as far as the code shows it."""

    reads: set[str] = field(default_factory=set)  # module-level names it reads
    writes: set[str] = field(default_factory=set)  # names it binds or may change in place
    # Names bound by an import, with the imports that bind them.
    imported: dict[str, list[Import]] = field(default_factory=dict)
    computed: set[str] = field(default_factory=set)  # bound other than by an import or a literal
    imports: list[Import] = field(default_factory=list)  # every module imported by a known name
    paths: list[str] = field(default_factory=list)  # texts in sys.path additions
    runs: list[str] = field(default_factory=list)  # files run with %run
    texts: list[str] = field(default_factory=list)  # its string literals (magic bodies too)
    opaque: str | None = None  # why the names it reads cannot be known ("exec() at line 3")
    dynamic: str | None = None  # where it imports a module named only at run time

    def merge(self, other: Analysis) -> None:
        self.reads |= other.reads
        self.writes |= other.writes
        for name, found in other.imported.items():
            self.imported.setdefault(name, []).extend(found)
        self.computed |= other.computed
        self.imports += other.imports
        self.paths += other.paths
        self.runs += other.runs
        self.texts += other.texts
        self.opaque = self.opaque or other.opaque
        self.dynamic = self.dynamic or other.dynamic


def names(source: str) -> tuple[set[str], set[str]]:
    """Module-level names the code reads and names it binds or mutates.

    A name whose attribute or item is assigned (``df["x"] = ...``) or whose method is called
    (``model.fit(X)``) counts as written too: it may have changed in place. Builtins are
    left out. This is deliberately conservative.
    """
    found = analyse(source)
    return found.reads, found.writes


@lru_cache(maxsize=512)
def _analyse(source: str) -> Analysis:
    tree = _parse(source)
    found = Analysis()
    if tree is not None:
        _Reader(found, _line_offset(source)).visit(tree)
        found.reads -= _BUILTINS
    return found


def analyse(source: str) -> Analysis:
    """What the cell ``source`` reads, binds and imports, or why that cannot be known."""
    copy = Analysis()
    copy.merge(_analyse(source))
    return copy


def analyse_module(source: str) -> Analysis:
    """The same for a module's source file (plain Python, no IPython syntax)."""
    found = Analysis()
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return found
    _Reader(found, 0).visit(tree)
    found.reads -= _BUILTINS
    return found


def _line_offset(source: str) -> int:
    """Leading blank lines IPython's transformer drops (so line numbers stay the cell's)."""
    offset = 0
    for line in source.splitlines():
        if line.strip():
            break
        offset += 1
    return offset


def _ipython_call(node: ast.Call) -> tuple[str, ast.Call] | None:
    """``("run_cell_magic", node)`` for ``get_ipython().run_cell_magic(...)`` and the like."""
    func = node.func
    if (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "get_ipython"
        and not func.value.args
    ):
        return func.attr, node
    return None


def _text(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _Reader(ast.NodeVisitor):
    """Fills an :class:`Analysis` from a module's syntax tree."""

    def __init__(self, found: Analysis, offset: int) -> None:
        self.found = found
        self.offset = offset
        self._literal = False  # visiting the targets of an assignment of a literal

    def _line(self, node: ast.AST) -> int:
        return int(getattr(node, "lineno", 1)) + self.offset

    def _opaque(self, what: str, node: ast.AST) -> None:
        if self.found.opaque is None:
            self.found.opaque = f"{what} at line {self._line(node)}"

    def _bind(self, name: str) -> None:
        self.found.writes.add(name)
        if not self._literal:
            self.found.computed.add(name)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.found.texts.append(node.value)

    # ---------------------------------------------------------------- names

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if node.id == "get_ipython":
                self._opaque("get_ipython()", node)
            elif _HISTORY.fullmatch(node.id):
                self._opaque(f"{node.id} (IPython's history of earlier cells)", node)
            self.found.reads.add(node.id)
        else:
            self._bind(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._literal = _is_literal(node.value)
        try:
            for target in node.targets:
                self.visit(target)
        finally:
            self._literal = False
        self.visit(node.value)

    def _define(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self._bind(node.name)
        self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _define

    def _imported(self, name: str, found: Import) -> None:
        self.found.writes.add(name)
        self.found.imported.setdefault(name, []).append(found)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            found = Import(alias.name, line=self._line(node))
            self.found.imports.append(found)
            self._imported(alias.asname or alias.name.split(".")[0], found)
            if alias.name == "__main__":
                self._opaque("import __main__", node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        taken = tuple(a.name for a in node.names if a.name != "*")
        found = Import(module, taken, node.level, self._line(node))
        self.found.imports.append(found)
        for alias in node.names:
            if alias.name == "*":
                self._opaque(f"from {'.' * node.level}{module} import *", node)
            else:
                self._imported(alias.asname or alias.name, found)
        if module == "__main__":
            self._opaque("from __main__ import", node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not isinstance(node.ctx, ast.Load):
            base = _base_name(node)
            if base:
                self.found.writes.add(base)
        self.generic_visit(node)

    visit_Subscript = visit_Attribute  # type: ignore[assignment]

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        base = _base_name(node.target)
        if base:
            self.found.reads.add(base)
        if _is_sys_path(node.target):
            self.found.paths += _texts(node.value)
        self.generic_visit(node)

    # ---------------------------------------------------------------- calls

    def visit_Call(self, node: ast.Call) -> None:
        magic = _ipython_call(node)
        if magic is not None:
            self._ipython(magic[0], node)
            return
        func = node.func
        base = _base_name(func) if isinstance(func, ast.Attribute) else None
        if base:
            self.found.writes.add(base)  # a method call may change its object in place
        name = func.id if isinstance(func, ast.Name) else None
        attr = func.attr if isinstance(func, ast.Attribute) else None
        builtin = name or (attr if base in ("builtins", "__builtins__") else None)
        if (
            builtin in _CODE_CALLS
            or builtin in _NAMESPACE_CALLS
            and not node.args
            and not node.keywords
        ):
            self._opaque(f"{builtin}()", node)
        importer = name or attr
        if importer in _IMPORT_CALLS:
            module = _text(node.args[0]) if node.args else None
            if module is None:
                self._opaque(f"{importer}() of a name known only when it runs", node)
                self.found.dynamic = (
                    self.found.dynamic or f"{importer}() at line {self._line(node)}"
                )
            elif not module.startswith("."):
                self.found.imports.append(Import(module, line=self._line(node)))
        if attr in _QUERY_METHODS and base not in ("builtins", "__builtins__") and node.args:
            expression = _text(node.args[0])
            if expression is None:
                self._opaque(f".{attr}() of an expression known only when it runs", node)
            else:
                self.found.reads |= set(re.findall(r"@([A-Za-z_]\w*)", expression))
        if isinstance(func, ast.Attribute) and _is_sys_path_change(func):
            for arg in node.args:
                self.found.paths += _texts(arg)
        self.generic_visit(node)

    def _ipython(self, method: str, node: ast.Call) -> None:
        """A call IPython's transformer wrote for a magic (or the user wrote the same)."""
        args = [_text(a) for a in node.args]
        texts = [a for a in args if a is not None]
        if len(texts) != len(args) or node.keywords:
            for arg in node.args:
                self.visit(arg)
            self._opaque(f"get_ipython().{method}() of code known only when it runs", node)
        elif method == "run_cell_magic" and len(texts) == 3:
            self._cell_magic(texts[0], texts[1], texts[2], node)
        elif method == "run_line_magic" and len(texts) == 2:
            self._line_magic(texts[0], texts[1], node)
        elif method in _SHELL_CALLS and len(texts) == 1:
            self._expanded(texts[0])
        else:
            self._opaque(f"get_ipython().{method}()", node)

    def _inner(self, code: str, shift: int, magic: str) -> None:
        """Merge the analysis of Python a magic runs; its lines moved by ``shift``."""
        if not code.strip():
            return
        inner = analyse(code)
        if inner.opaque:
            head, _, number = inner.opaque.rpartition(" at line ")
            line = int(number) + shift if number.isdigit() else shift + 1
            inner.opaque = f"{head} in {magic} at line {line}"
        self.found.merge(inner)

    def _cell_magic(self, name: str, line: str, body: str, node: ast.Call) -> None:
        here = self._line(node)
        if name in _PYTHON_MAGICS:
            self._inner(self._magic_options(name, line), here - 1, f"%%{name}")
            self._inner(body, here, f"%%{name}")
        elif name in _INERT_CELL_MAGICS:
            self._expanded(line)
            if name in _SCRIPT_MAGICS:
                for option in ("--out", "--err", "--proc"):
                    target = _option_value(line, option)
                    if target:
                        self._bind(target)
        else:
            self._opaque(f"%%{name} (a cell magic nbmlops cannot see into)", node)

    def _line_magic(self, name: str, line: str, node: ast.Call) -> None:
        if name in _PYTHON_LINE_MAGICS:
            self._inner(self._magic_options(name, line), self._line(node) - 1, f"%{name}")
        elif name == "run":
            module, path = _run_target(line)
            if module:
                self.found.imports.append(Import(module, line=self._line(node)))
            if path:
                self.found.runs.append(path)
            self._opaque("%run", node)
        elif name in _EXTENSION_MAGICS:
            for module in line.split():
                self.found.imports.append(Import(module, line=self._line(node)))
        elif name == "pylab":
            self._opaque("%pylab (a star import)", node)
        elif name in _INERT_LINE_MAGICS:
            self._expanded(line)
        else:
            self._opaque(f"%{name} (a magic nbmlops cannot see into)", node)

    def _magic_options(self, name: str, line: str) -> str:
        """The Python statement after a magic's options (``%%capture out``'s and
        ``%timeit -v out``'s target is recorded as written)."""
        spec = _PYTHON_MAGICS.get(name, "")
        longs = _LONG_OPTIONS.get(name, ())
        letters = spec.replace(":", "")
        rest = line
        while (token := re.match(r"\s*(\S+)", rest)) is not None:
            word = token.group(1)
            if word in longs:
                rest = rest[token.end() :]
                if word == "--breakpoint":
                    rest = re.sub(r"^\s*\S+", "", rest, count=1)
                continue
            if len(word) < 2 or word[0] != "-" or word[1] not in letters:
                break
            letter = word[1]
            rest = rest[token.end() :]
            value = word[2:]
            if spec[spec.index(letter) + 1 : spec.index(letter) + 2] == ":" and not value:
                arg = re.match(r"\s*(\S+)", rest)
                if arg is not None:
                    value, rest = arg.group(1), rest[arg.end() :]
            if name == "timeit" and letter == "v" and value.isidentifier():
                self._bind(value)
        if name == "capture":
            if rest.strip().isidentifier():
                self._bind(rest.strip())
            return ""
        return rest.strip()

    def _expanded(self, text: str) -> None:
        """The names IPython's ``$name`` / ``{expression}`` expansion reads in ``text``."""
        for match in re.finditer(r"(?<!\$)\$([A-Za-z_]\w*)", text):
            self.found.reads.add(match.group(1))
        for match in re.finditer(r"(?<!\{)\{([^{}]+)\}", text):
            try:
                expr = ast.parse(match.group(1).strip(), mode="eval")
            except SyntaxError:
                continue
            self.found.reads |= {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


def _option_value(line: str, option: str) -> str | None:
    match = re.search(rf"(?:^|\s){re.escape(option)}[=\s]+([A-Za-z_]\w*)", line)
    return match.group(1) if match else None


def _run_target(line: str) -> tuple[str | None, str | None]:
    """What ``%run`` runs: ``(module, None)`` for ``-m module``, else ``(None, file)``."""
    words = line.split()
    for i, word in enumerate(words):
        if word == "-m":
            return (words[i + 1] if i + 1 < len(words) else None), None
        if not word.startswith("-"):
            return None, word.strip("'\"")
    return None, None


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _is_sys_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def _is_sys_path_change(func: ast.Attribute) -> bool:
    """``sys.path.append``/``insert``/``extend`` and ``site.addsitedir``."""
    if func.attr in ("append", "insert", "extend"):
        return _is_sys_path(func.value)
    return (
        func.attr == "addsitedir" and isinstance(func.value, ast.Name) and func.value.id == "site"
    )


def _texts(node: ast.AST) -> list[str]:
    return [t for sub in ast.walk(node) if (t := _text(sub)) is not None]


def _base_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None
