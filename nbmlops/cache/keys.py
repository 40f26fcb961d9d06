"""A step's cache key: everything its result can depend on, and nothing else.

The key of a step hashes, conservatively:

* the normalised code of its cells and of the setup cells (comments and layout do not count);
* the values of the parameters the step or the setup code reads (names anywhere in their
  code, function bodies included): a step that never mentions ``alpha`` keeps its key when
  ``alpha`` changes;
* the content digests of the variables it reads that earlier steps produced;
* the hashes of data files it names as string literals (``pd.read_csv("data/x.csv")``) or
  through string parameters; files read through ``nbmlops.read_csv`` are checked when the
  entry is found (they are known only once the step has run);
* the run's seed and the digest of the random generators' state as the step starts (so a
  step that draws random numbers sees exactly what it would have seen in a full run);
* the hash of the kernel's environment (installed packages, Python version);
* the tracking store: a hit is recorded with the runs and logged models it points at, which
  exist only in the store that recorded them (a run against a team server never reuses a
  step computed against a local ``mlflow.db``).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.capture.hashing import FileHashCache, hash_bytes
from nbmlops.notebook.pipeline import Pipeline, Step
from nbmlops.notebook.source import _parse, names

SETUP_RNG = "setup"  # the generators' state before the first step: a function of seed + setup


@dataclass
class KeyContext:
    pipeline: Pipeline
    values: dict[str, Any]  # effective parameter values
    seed: int
    env_hash: str
    store: str  # the tracking URI
    base_dir: Path  # where the notebook runs (relative paths resolve here)
    files: FileHashCache

    def __post_init__(self) -> None:
        setup = [c.source for c in self.pipeline.setup if c.is_code]
        self._setup_reads = set().union(*(names(s)[0] for s in setup)) if setup else set()
        self._setup_files = self._literal_files(setup)

    def key(self, step: Step, produced: dict[str, str], rng: str) -> tuple[str, dict[str, Any]]:
        """The key of ``step`` given the digests of what earlier steps produced."""
        reads = step.reads | self._setup_reads
        params = {n: self.values[n] for n in sorted(reads) if n in self.values}
        files = {**self._setup_files, **self._literal_files(step.code)}
        for value in params.values():
            if isinstance(value, str):
                files.update(self._existing(value))
        parts = {
            "code": step.code_hash,
            "setup": self.pipeline.setup_hash,
            "parameters": {n: repr(v) for n, v in params.items()},
            "inputs": {n: produced[n] for n in sorted(step.reads) if n in produced},
            "files": dict(sorted(files.items())),
            "seed": self.seed,
            "rng": rng,
            "environment": self.env_hash,
            "store": self.store,
        }
        return hash_bytes(json.dumps(parts, sort_keys=True).encode()), parts

    def _literal_files(self, sources: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for source in sources:
            tree = _parse(source)
            if tree is None:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.update(self._existing(node.value))
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
