"""The project's own modules a step imports: found by path search, never imported.

The kernel runs in the notebook's folder, so ``import features`` finds ``features.py``
beside the notebook first, as it would in the kernel. :class:`ModuleFinder` looks a module
up the way Python's path finder does (a package folder with ``__init__.py``, then an
extension module or ``features.py``, then a namespace package) in, in order: the notebook's
folder, the folders the notebook adds to ``sys.path`` (the string literals of
``sys.path.append(...)``, ``sys.path.insert(...)``, ``site.addsitedir(...)``), the folders
of ``$PYTHONPATH``, and the folders of this interpreter's ``sys.path`` inside the project
(an editable install of the project's own package). A module found under the interpreter's
prefix or a ``site-packages`` folder, or in a folder of ``$PYTHONPATH`` outside the project,
is not the project's: the environment hash covers installed packages.

A project module's source is read with :mod:`ast` for its own imports (absolute and
relative), recursively: the digests of every file a step's imports execute are part of
its key. A module that imports a name known only at run time (``importlib.import_module(
name)``) cannot be followed: then every Python file of those folders counts.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from nbmlops.capture.hashing import FileHashCache
from nbmlops.notebook.source import Analysis, Import, analyse_module

_SUFFIXES = [*importlib.machinery.EXTENSION_SUFFIXES, ".py"]
_SKIP_DIRS = frozenset(("__pycache__", "node_modules", "site-packages", "dist-packages"))
MAX_SCANNED = 5000  # files read when every project module counts


@dataclass
class Modules:
    """The project files a step's imports execute, and whether that set is complete."""

    files: set[Path] = field(default_factory=set)
    dynamic: str | None = None  # a module imported by a name known only at run time


@dataclass
class ModuleFinder:
    base_dir: Path  # the notebook's folder: the kernel's working directory
    root: Path  # the project folder
    files: FileHashCache
    paths: list[str] = field(default_factory=list)  # texts of the notebook's sys.path changes

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir.resolve()
        self.root = self.root.resolve()
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        self._excluded = [Path(p).resolve() for p in prefixes]
        self.search = self._search_path()

    # ---------------------------------------------------------------- where to look

    def _search_path(self) -> list[Path]:
        found: list[Path] = [self.base_dir]
        texts = [t for t in self.paths if t and len(t) < 500]
        added = [*texts, *(os.path.join(*texts[i : i + 2]) for i in range(len(texts) - 1))]
        for text in added:  # the notebook's own: wherever they are
            path = self._folder(self.base_dir, text)
            if path is not None:
                found.append(path)
        # The environment's: only the folders inside the project.
        for text in [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path]:
            path = self._folder(Path.cwd(), text) if text else None
            if path is not None and (path.is_relative_to(self.root) or path == self.base_dir):
                found.append(path)
        return list(dict.fromkeys(found))

    def _folder(self, base: Path, text: str) -> Path | None:
        try:
            path = (base / os.path.expanduser(text)).resolve()
        except (OSError, ValueError):
            return None
        return path if path.is_dir() and not self._foreign(path) else None

    def _foreign(self, path: Path) -> bool:
        """Installed, not the project's: under the interpreter's prefix or site-packages."""
        if any(part in ("site-packages", "dist-packages") for part in path.parts):
            return True
        return any(path.is_relative_to(p) for p in self._excluded)

    # ---------------------------------------------------------------- lookup

    def find(self, imports: Iterable[Import], runs: Iterable[str] = ()) -> Modules:
        """Every project file ``imports`` (and the files ``%run`` runs) execute, recursively."""
        result = Modules()
        todo: list[Path] = []
        for imp in imports:
            todo += self._resolve(imp, None)
        for text in runs:
            path = (self.base_dir / text).resolve()
            if path.is_file():
                todo.append(path)
        while todo:
            path = todo.pop()
            if path in result.files:
                continue
            result.files.add(path)
            if path.suffix != ".py":
                continue
            found = _module_analysis(str(path), *_stamp(path))
            result.dynamic = result.dynamic or (
                f"{found.dynamic} of {self.label(path)}" if found.dynamic else None
            )
            for imp in found.imports:
                todo += self._resolve(imp, path)
        return result

    def everything(self) -> set[Path]:
        """Every Python file in the folders searched (when an import cannot be followed)."""
        found: set[Path] = set()
        for top in self.search:
            for folder, dirs, names in os.walk(top):
                dirs[:] = sorted(
                    d
                    for d in dirs
                    if not d.startswith(".")
                    and d not in _SKIP_DIRS
                    and not (Path(folder) / d / "pyvenv.cfg").exists()
                )
                found.update(Path(folder) / n for n in names if n.endswith(".py"))
                if len(found) >= MAX_SCANNED:
                    return found
        return found

    def digests(self, paths: Iterable[Path]) -> dict[str, str]:
        """``label -> content digest`` of each file, as a key part."""
        out: dict[str, str] = {}
        for path in paths:
            try:
                out[self.label(path)] = self.files.digest(path)
            except OSError:
                out[self.label(path)] = "missing"
        return dict(sorted(out.items()))

    def label(self, path: Path) -> str:
        """The file as shown: relative to the notebook's folder inside the project."""
        if path.is_relative_to(self.root) or path.is_relative_to(self.base_dir):
            return os.path.relpath(path, self.base_dir)
        return str(path)

    def _resolve(self, imp: Import, importer: Path | None) -> list[Path]:
        """The project files importing ``imp`` executes (from the file ``importer``)."""
        if imp.level:
            if importer is None:
                return []  # a relative import in a notebook fails in the kernel anyway
            folder = importer.parent
            for _ in range(imp.level - 1):
                folder = folder.parent
            places = [folder]
            parts = imp.module.split(".") if imp.module else []
        else:
            places = self.search
            parts = imp.module.split(".")
        files: list[Path] = []
        for i, part in enumerate(parts):
            found = _lookup(part, places)
            if found is None:
                return files if i else []
            file, package = found
            if i == 0 and not imp.level and self._foreign(file or package or Path("/")):
                return []
            if file is not None:
                files.append(file)
            if package is None:
                return files  # a plain module: its attributes are not modules
            places = [package]
        for name in imp.names:  # ``from package import module``
            found = _lookup(name, places)
            if found is not None and found[0] is not None:
                files.append(found[0])
        return files


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return 0, 0
    return st.st_mtime_ns, st.st_size


@lru_cache(maxsize=2048)
def _module_analysis(path: str, mtime: int, size: int) -> Analysis:
    try:
        source = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return Analysis()
    return analyse_module(source)


def _lookup(name: str, places: list[Path]) -> tuple[Path | None, Path | None] | None:
    """``(file, package folder)`` of module ``name`` in ``places``, as the path finder
    finds it: a regular package, else a module file, else a namespace package."""
    namespace = None
    for place in places:
        package = place / name
        init = package / "__init__.py"
        if init.is_file():
            return init, package
        for suffix in _SUFFIXES:
            file = place / f"{name}{suffix}"
            if file.is_file():
                return file, None
        if namespace is None and package.is_dir():
            namespace = package
    return (None, namespace) if namespace is not None else None
