"""A step's cache key: everything its result can depend on, and nothing else.

The key of a step hashes, conservatively:

* the normalised code of its cells and of the setup cells (comments and layout do not count);
* the values of the parameters the step or the setup code reads (names anywhere in their
  code, function bodies and the bodies of ``%%time``-like magics included): a step that
  never mentions ``alpha`` keeps its key when ``alpha`` changes;
* the content digests of the variables it reads that earlier steps produced;
* where the code does not show what it reads (``exec``, ``globals()``, an unknown magic,
  ``%run``, a star import: :attr:`~nbmlops.notebook.pipeline.Step.opaque`): every
  parameter, and every variable earlier steps produced;
* the source digests of the project's own modules it imports (``cache/modules.py``), and
  of those they import; a module imported by the setup cells or an earlier step counts
  when the setup cells use it, or when the step reads a name that import binds or anything
  that may hold the module's code (a value computed in the setup cells, a function or
  object an earlier step made; plain data, whose digest is its content, does not);
* the hashes of data files it names as string literals (``pd.read_csv("data/x.csv")``) or
  through string parameters; files read through ``nbmlops.read_csv`` are checked when the
  entry is found (they are known only once the step has run);
* the run's seed and the digest of the random generators' state as the step starts (so a
  step that draws random numbers sees exactly what it would have seen in a full run);
* the hash of the kernel's environment (installed packages, Python version);
* the tracking store: a hit is recorded with the runs and logged models it points at, which
  exist only in the store that recorded them (a run against a team server never reuses a
  step computed against a local ``mlflow.db``).

:meth:`KeyContext.key` returns the parts beside the key: the cache entry keeps them, so
``cache/status.py`` can say which part changed when a step runs again (the store's
password, if its URI has one, is left out of them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.cache.modules import ModuleFinder
from nbmlops.capture.hashing import FileHashCache, hash_bytes
from nbmlops.notebook.pipeline import Pipeline, Step
from nbmlops.notebook.source import Analysis, Import
from nbmlops.project import redact

SETUP_RNG = "setup"  # the generators' state before the first step: a function of seed + setup
KEY_VERSION = 3  # bumped when the parts change meaning: older entries never match
# Types whose content digest is all there is to them: reading one cannot run project code.
INERT_TYPES = frozenset(
    (
        "int",
        "float",
        "complex",
        "bool",
        "str",
        "bytes",
        "NoneType",
        "dataframe",
        "series",
        "ndarray",
    )
)


def inert(output: dict[str, Any]) -> bool:
    """Whether a step output (as ``end_step`` reports it) is plain data."""
    return bool(output.get("kind")) or output.get("type") in INERT_TYPES


@dataclass
class KeyContext:
    pipeline: Pipeline
    values: dict[str, Any]  # effective parameter values
    seed: int
    env_hash: str
    store: str  # the tracking URI
    base_dir: Path  # where the notebook runs (relative paths resolve here)
    files: FileHashCache
    root: Path | None = None  # the project folder (default: base_dir)

    def __post_init__(self) -> None:
        setup = self.pipeline.setup_analysis
        self._setup_files = self._literal_files(setup.texts)
        paths = list(setup.paths)
        for step in self.pipeline.steps:
            paths += step.analysis.paths
        self.modules = ModuleFinder(self.base_dir, self.root or self.base_dir, self.files, paths)
        # What the setup cells and the steps before each step bound: a later step that
        # reads one of those names may run the code of a module imported there.
        self._before: dict[str, list[Analysis]] = {}
        seen = [setup]
        for step in self.pipeline.steps:
            self._before[step.name] = list(seen)
            seen.append(step.analysis)

    def key(
        self,
        step: Step,
        produced: dict[str, str],
        rng: str,
        inert_names: frozenset[str] | set[str] = frozenset(),
    ) -> tuple[str, dict[str, Any]]:
        """The key of ``step`` given the digests of what earlier steps produced (and which
        of those are plain data, ``inert_names``), and its parts."""
        setup = self.pipeline.setup_analysis
        reads = step.reads | setup.reads
        if step.opaque or setup.opaque:
            params = dict(sorted(self.values.items()))
        else:
            params = {n: self.values[n] for n in sorted(reads) if n in self.values}
        if step.opaque:
            inputs = dict(sorted(produced.items()))
        else:
            inputs = {n: produced[n] for n in sorted(step.reads) if n in produced}
        files = {**self._setup_files, **self._literal_files(step.analysis.texts)}
        for value in params.values():
            if isinstance(value, str):
                files.update(self._existing(value))
        parts = {
            "version": KEY_VERSION,
            "code": step.code_hash,
            "setup": self.pipeline.setup_hash,
            "parameters": {n: repr(v) for n, v in params.items()},
            "inputs": inputs,
            "files": dict(sorted(files.items())),
            "modules": self._module_digests(step, set(inert_names)),
            "seed": self.seed,
            "rng": rng,
            "environment": self.env_hash,
            "store": self.store,
        }
        key = hash_bytes(json.dumps(parts, sort_keys=True).encode())
        return key, {**parts, "store": redact(self.store)}  # the parts are kept in the cache

    def _module_digests(self, step: Step, inert_names: set[str]) -> dict[str, str]:
        """The project modules whose code the step may run, with their digests."""
        own, setup = step.analysis, self.pipeline.setup_analysis
        imports: list[Import] = list(own.imports)
        runs = [*own.runs, *setup.runs]
        for name in setup.reads:  # the setup cells run before every step that executes
            imports += setup.imported.get(name, [])
        before = self._before[step.name]
        earlier = [i for a in before for i in a.imports]
        earlier_runs = [r for a in before for r in a.runs]
        computed = set().union(*(a.computed for a in before)) - inert_names
        if step.opaque or (computed & step.reads) or earlier_runs:
            imports += earlier  # it reads what may hold their code: they all count
            runs += earlier_runs
        else:
            for name in step.reads:
                for analysis in before:
                    imports += analysis.imported.get(name, [])
        found = self.modules.find(imports, runs)
        if found.dynamic or own.dynamic or setup.dynamic:
            found.files |= self.modules.everything()
        return self.modules.digests(found.files)

    def _literal_files(self, texts: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for text in texts:
            found.update(self._existing(text))
        return found

    def _existing(self, text: str) -> dict[str, str]:
        if not text or len(text) > 500 or "\n" in text or "://" in text:
            return {}
        try:
            path = (self.base_dir / text).resolve()
            if path.is_file():
                return {str(path): self.files.digest(path)}
        except (OSError, ValueError):
            pass
        return {}
