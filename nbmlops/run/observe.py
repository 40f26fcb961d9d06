"""What a step reads and writes on disk, observed in the kernel while it runs.

Code analysis cannot see ``pd.read_csv(os.path.join(DATA_DIR, name))``; Python's audit
hooks (``sys.addaudithook``) can: every ``open`` raises an ``open`` event with the path and
mode, whoever builds the path. Native readers that bypass Python's ``open`` (pyarrow's
``parquet.read_table``, ``feather``, ``csv``, ``dataset``) are wrapped when imported. So
for each step the kernel knows:

* the files it read, with their content digest at the time (a cache hit is allowed only
  while every one is unchanged);
* the files it wrote inside the project (saved to the object store, restored on a hit, so
  the next step finds them); a file written outside the project cannot be restored, so
  the step is not cached and a warning names the file;
* the folders it listed (``glob``, ``os.listdir``, ``os.scandir``, ``pathlib``'s ``glob``):
  a file added to or removed from one is a change too;
* the calls whose reads cannot be seen: a subprocess (``!cmd``, ``%%bash``,
  ``subprocess.run``) started by the step's own code makes it uncacheable, with a warning
  naming the command.

Ignored: the interpreter and site-packages, ``/proc``, ``/dev`` and the like, temporary
and dot-folders of the home directory, ``__pycache__``, ``.git``, nbmlops' own state
(run folder, object store) and MLflow's store and artifacts.
"""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmlops.capture.hashing import ABSENT, hash_file, listing_digest

if TYPE_CHECKING:  # the kernel imports this module: nothing heavy at run time
    from nbmlops.notebook.pipeline import Pipeline, Step

SKIPPED_PARTS = frozenset(("__pycache__", ".git", ".ipynb_checkpoints", "mlruns", "mlartifacts"))
SYSTEM = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/", "/lib/", "/lib64/", "/bin/", "/run/")
SUBPROCESS_EVENTS = frozenset(
    ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.forkpty")
)
LISTING_EVENTS = frozenset(("os.listdir", "os.scandir", "glob.glob/2"))
OBSERVED_EVENTS = (
    frozenset(("open", "os.rename", "os.replace", "os.remove", "os.mkdir", "sqlite3.connect"))
    | SUBPROCESS_EVENTS
    | LISTING_EVENTS
)
# Native readers and writers: module -> {function: (argument index, keyword, direction)};
# the direction is "r", "w", or "mode" (read from the next argument, "mode", default "r").
NATIVE: dict[str, dict[str, tuple[int, str, str]]] = {
    "pyarrow": {
        "memory_map": (0, "path", "mode"),
        "create_memory_map": (0, "path", "w"),
        "input_stream": (0, "source", "r"),
        "output_stream": (0, "source", "w"),
    },
    "pyarrow.parquet": {
        "read_table": (0, "source", "r"),
        "read_pandas": (0, "source", "r"),
        "read_metadata": (0, "where", "r"),
        "read_schema": (0, "where", "r"),
        "write_table": (1, "where", "w"),
        "write_to_dataset": (1, "root_path", "w"),
    },
    "pyarrow.feather": {
        "read_table": (0, "source", "r"),
        "read_feather": (0, "source", "r"),
        "write_feather": (1, "dest", "w"),
    },
    "pyarrow.csv": {"read_csv": (0, "input_file", "r"), "write_csv": (1, "output_file", "w")},
    "pyarrow.ipc": {
        "open_file": (0, "source", "r"),
        "open_stream": (0, "source", "r"),
        "new_file": (0, "sink", "w"),
        "new_stream": (0, "sink", "w"),
    },
    "pyarrow.json": {"read_json": (0, "input_file", "r")},
    "pyarrow.dataset": {"dataset": (0, "source", "r"), "write_dataset": (1, "base_dir", "w")},
    "pyarrow.orc": {"read_table": (0, "source", "r"), "write_table": (1, "where", "w")},
}
# Classes: replaced in their module by a subclass that records its path argument.
NATIVE_CLASSES = {
    "pyarrow": {"OSFile": (0, "path", "mode")},  # what pandas' to_parquet writes through
    "pyarrow.parquet": {"ParquetFile": (0, "source", "r"), "ParquetWriter": (0, "where", "w")},
}


# Libraries that read files in native code nbmlops does not wrap: a step that uses one is
# not cached (its reads cannot be seen), with a warning naming it.
UNOBSERVED_READERS = frozenset(
    ("polars", "duckdb", "h5py", "tables", "netCDF4", "xarray", "zarr", "cv2", "pyspark")
)


def unobserved_readers(step: Step, pipeline: Pipeline) -> list[str]:
    """The libraries of :data:`UNOBSERVED_READERS` that ``step`` uses: imported by its own
    code, or bound by an import of the setup cells or an earlier step to a name it reads."""
    found: set[str] = {i.module.split(".")[0] for i in step.analysis.imports}
    earlier = [pipeline.setup_analysis] + [
        s.analysis for s in pipeline.steps[: pipeline.steps.index(step)]
    ]
    for analysis in earlier:
        for name in step.reads:
            found.update(i.module.split(".")[0] for i in analysis.imported.get(name, []))
    return sorted(found & UNOBSERVED_READERS)


class Observer:
    """Records, while :attr:`active`, the file reads, writes and listings of the kernel."""

    def __init__(self, project: Path, own: list[Path], tracking_uri: str = "") -> None:
        self.project = str(project.resolve()) + os.sep
        self.own = tuple(str(p.resolve()) + os.sep for p in own)
        self.own_files = frozenset(_store_files(tracking_uri))
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sysconfig.get_paths()["stdlib"]}
        prefixes.update(site.getsitepackages() + [site.getusersitepackages()])
        home = os.path.expanduser("~")
        self.system = tuple(
            {os.path.realpath(p) + os.sep for p in prefixes}
            | {*SYSTEM, os.path.realpath(tempfile.gettempdir()) + os.sep}
        )
        self.home_dot = os.path.join(home, ".")
        self.active = False
        self.reads: dict[str, str] = {}  # path -> content digest when first read
        self.writes: set[str] = set()
        self.folders: set[str] = set()  # folders it created
        self.listings: dict[str, str] = {}  # folder or glob pattern -> digest of the names
        self.unseen: list[str] = []  # calls whose reads cannot be seen
        self._local = threading.local()  # per thread: busy (inside the hook), caller
        self._digests: dict[tuple[str, int, int], str] = {}

    # ---------------------------------------------------------------- the step's record

    def begin(self) -> None:
        self.reads, self.writes, self.listings, self.unseen = {}, set(), {}, []
        self.folders = set()
        self.active = True

    def end(self) -> dict[str, Any]:
        """What the step touched: reads (digests), written paths that still exist, listings."""
        self.active = False
        written = sorted(p for p in self.writes if os.path.isfile(p))
        inside = [p for p in written if p.startswith(self.project)]
        return {
            "reads": dict(sorted(self.reads.items())),  # read before written: an input too
            "written": inside,
            "folders": sorted(
                p for p in self.folders if p.startswith(self.project) and os.path.isdir(p)
            ),
            "outside": [p for p in written if not p.startswith(self.project)],
            "listings": dict(sorted(self.listings.items())),
            "unseen": self.unseen,
        }

    # ---------------------------------------------------------------- the audit hook

    def hook(self, event: str, args: tuple[Any, ...], caller: Any) -> None:
        """One audit event; ``caller``: the frame that made the audited call."""
        local = self._local
        if not self.active or getattr(local, "busy", False):
            return
        if event == "open":
            handler: Callable[..., None] = self._open
        elif event in ("os.rename", "os.replace"):
            handler = self._rename
        elif event == "os.remove":
            handler = self._remove
        elif event == "os.mkdir":
            handler = self._mkdir
        elif event in LISTING_EVENTS:
            handler = self._listing
        elif event == "sqlite3.connect":
            handler = self._sqlite
        elif event in SUBPROCESS_EVENTS:
            handler = self._subprocess
        else:
            return
        local.busy, local.caller = True, caller
        try:
            handler(event, *args)
        except Exception:  # never break the user's code
            pass
        finally:
            local.busy = False

    def _open(self, event: str, path: Any, mode: Any, flags: Any = 0, *_: Any) -> None:
        target = self._watched(path)
        if target is None or self._local.caller.f_code.co_filename.startswith("<frozen importlib"):
            return  # imports: the project's modules are part of the key (cache/modules.py)
        if mode is None:  # os.open: flags only
            access = flags & os.O_ACCMODE
            reading, writing = access != os.O_WRONLY, access != os.O_RDONLY
        else:
            reading = any(c in mode for c in "ra+")  # appending keeps what was there
            writing = any(c in mode for c in "wax+")
        if reading:
            self.read(target)
        if writing:
            self.writes.add(target)

    def read(self, target: str) -> None:
        """Record ``target`` as read, with its digest now (:data:`ABSENT` if there is no such
        file: creating it later is a change too)."""
        if target in self.reads or target in self.writes:
            return
        try:
            st = os.stat(target)
        except FileNotFoundError:
            self.reads[target] = ABSENT
            return
        except OSError:
            return
        if not os.path.isfile(target):
            return
        memo = (target, st.st_size, st.st_mtime_ns)
        digest = self._digests.get(memo)
        if digest is None:
            digest = self._digests[memo] = hash_file(target)
        self.reads[target] = digest

    def _rename(self, event: str, src: Any, dst: Any, *_: Any) -> None:
        source, target = self._watched(src), self._watched(dst)
        if source is not None:
            self.writes.discard(source)
        if target is not None:
            self.writes.add(target)

    def _mkdir(self, event: str, path: Any, *_: Any) -> None:
        target = self._watched(path)
        if target is not None:
            self.folders.add(target)

    def _remove(self, event: str, path: Any, *_: Any) -> None:
        target = self._watched(path)
        if target is not None:
            self.writes.discard(target)

    def _listing(self, event: str, path: Any = None, *rest: Any) -> None:
        if _from_import_system(self._local.caller):
            return  # the import system filling its caches
        if event == "glob.glob/2":
            pattern, root_dir = path, rest[1] if len(rest) > 1 else None
            if isinstance(pattern, bytes):
                pattern = os.fsdecode(pattern)
            if not isinstance(pattern, str):
                return
            full = os.path.join(os.fsdecode(root_dir) if root_dir else os.getcwd(), pattern)
            if self._watched(os.path.dirname(full) or ".") is not None:
                self.listings["glob:" + os.path.abspath(full)] = listing_digest(
                    "glob:" + os.path.abspath(full)
                )
            return
        target = self._watched("." if path is None else path)
        if target is not None and os.path.isdir(target):
            self.listings[target] = listing_digest(target)

    def _sqlite(self, event: str, database: Any, *_: Any) -> None:
        target = self._watched(database)
        if target is not None:
            self.read(target)
            self.writes.add(target)

    def _subprocess(self, event: str, *args: Any) -> None:
        if not _from_user_code(self._local.caller):
            return  # a library's own helper process (MLflow's requirement inference, ...)
        command = args[1] if event == "subprocess.Popen" else args[0]
        if isinstance(command, list | tuple):
            command = " ".join(os.fsdecode(c) if isinstance(c, bytes) else str(c) for c in command)
        text = str(command)
        self.unseen.append(f"{event}({text[:120]}{'...' if len(text) > 120 else ''})")

    # ---------------------------------------------------------------- which paths count

    def _watched(self, path: Any) -> str | None:
        """The absolute path, if reading or writing it matters to the step's result."""
        if isinstance(path, int) or path is None:
            return None
        try:
            text: str = os.fsdecode(os.fspath(path))
        except TypeError:
            return None
        if not text or text == ":memory:" or text.startswith("file:"):
            return None
        target = os.path.abspath(text)
        if target in self.own_files or not SKIPPED_PARTS.isdisjoint(Path(target).parts):
            return None
        if target.endswith((".pyc", ".lock")) or (target + os.sep).startswith(self.own):
            return None
        if target.startswith(self.project):
            return target
        if target.startswith(self.system) or target.startswith(self.home_dot):
            return None
        return target

    def install(self) -> None:
        """Make this the observer the audit hook and the native wrappers report to."""
        _current[0] = self
        for name in (*NATIVE, *NATIVE_CLASSES):
            wrap_native(name)
        self.begin()

    def native(self, target: str, way: str) -> None:
        """A native reader (``way="r"``) or writer was called with ``target``."""
        if not self.active or getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            if way == "r":
                self.read_tree(target)
            else:
                self.write_tree(target)
        finally:
            self._local.busy = False

    def read_tree(self, target: str) -> None:
        """A file, or every file of a folder (a dataset), as read; the folder as listed."""
        if os.path.isdir(target):
            self.listings[target] = listing_digest(target)
            for folder, dirs, files in os.walk(target):
                dirs[:] = sorted(d for d in dirs if d not in SKIPPED_PARTS)
                for f in sorted(files):
                    self.read(os.path.join(folder, f))
        else:
            self.read(target)

    def write_tree(self, target: str) -> None:
        if os.path.isdir(target):
            for folder, _dirs, files in os.walk(target):
                self.writes.update(os.path.join(folder, f) for f in files)
        else:
            self.writes.add(target)


_current: list[Observer | None] = [None]  # the kernel's observer (one per run)


def wrap_native(module_name: str) -> None:
    """Make a native reader's or writer's functions (and classes) of an imported module
    report their path arguments to the current observer; once per module."""
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "_nbmlops_observed", False):
        return
    for name, spec in NATIVE.get(module_name, {}).items():
        fn = getattr(module, name, None)
        if callable(fn):
            setattr(module, name, _wrapped(fn, spec))
    for name, spec in NATIVE_CLASSES.get(module_name, {}).items():
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            setattr(module, name, _recording(cls, _wrapped(_nothing, spec)))
    module._nbmlops_observed = True  # type: ignore[attr-defined]


def _wrapped(fn: Callable[..., Any], spec: tuple[int, str, str]) -> Callable[..., Any]:
    index, keyword, direction = spec

    @functools.wraps(fn)
    def observed(*args: Any, **kwargs: Any) -> Any:
        observer = _current[0]
        if observer is None or not observer.active:
            return fn(*args, **kwargs)
        where = args[index] if len(args) > index else kwargs.get(keyword)
        target = observer._watched(where) if isinstance(where, str | os.PathLike) else None
        way = direction
        if way == "mode":
            mode = args[index + 1] if len(args) > index + 1 else kwargs.get("mode", "r")
            way = "w" if any(c in str(mode) for c in "wax+") else "r"
        if target is not None and way == "r":
            observer.native(target, way)
        result = fn(*args, **kwargs)
        if target is not None and way == "w":
            observer.native(target, way)
        return result

    return observed


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _recording(cls: type, record: Callable[..., Any]) -> type:
    """A subclass of ``cls`` whose construction records its path argument first."""

    inits = (vars(k)["__init__"] for k in cls.__mro__ if "__init__" in vars(k))
    base_init = next(inits, None)
    if base_init is object.__init__:  # Cython classes take their arguments in __cinit__
        base_init = None

    def init(obj: Any, *args: Any, **kwargs: Any) -> None:
        record(*args, **kwargs)
        if base_init is not None:
            base_init(obj, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__module__": cls.__module__, "__init__": init})


def _store_files(uri: str) -> list[str]:
    """MLflow's SQLite database (and its journal) when the store is one."""
    if not uri.startswith("sqlite:///"):
        return []
    db = os.path.abspath(uri.removeprefix("sqlite:///"))
    return [db, db + "-journal", db + "-wal", db + "-shm"]


_LIBRARY_HELPERS = ("IPython", "ipykernel", "pexpect", "ptyprocess", "asyncio", "subprocess")


_NOT_LISTINGS = ("importlib", "pkgutil", "zipimport", "site")


@functools.lru_cache(maxsize=1)
def _places() -> tuple[str, tuple[str, ...]]:
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    libraries = tuple(
        os.path.realpath(p) for p in site.getsitepackages() + [site.getusersitepackages()]
    )
    return stdlib, libraries


def _from_import_system(frame: Any) -> bool:
    """Whether the import system (``importlib``, ``pkgutil``, ``zipimport``) is on the
    stack: its directory listings are caches, not the step's inputs."""
    while frame is not None:
        filename = frame.f_code.co_filename
        top = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if filename.startswith(("<frozen importlib", "<frozen zipimport")) or top in _NOT_LISTINGS:
            return True
        frame = frame.f_back
    return False


def _from_user_code(frame: Any) -> bool:
    """Whether a process start comes from the notebook's own code (a cell, a project
    module, ``!``, a shell magic), through the standard library at most, rather than from a
    library it called (MLflow inferring requirements, joblib's workers)."""
    stdlib, libraries = _places()
    while frame is not None:
        filename = frame.f_code.co_filename
        top = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if filename.startswith("<frozen") or top in _LIBRARY_HELPERS:
            frame = frame.f_back
            continue
        real = os.path.realpath(filename)
        if real.startswith(libraries):
            return False
        if real.startswith(stdlib):
            frame = frame.f_back
            continue
        return True
    return False
