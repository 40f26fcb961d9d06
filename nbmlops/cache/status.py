"""Why a step runs: the part of its key that changed since it last ran, in words.

A cache entry keeps the parts its key hashed (``Entry.parts``); beside the entries a small
history (``cache/history/<notebook and step>/<key>.json``) keeps, per step of a notebook,
the parts of its last runs, what it produced, and why a run could not be cached. When a
step misses, :func:`explain` compares its parts now with the closest earlier run's and
names what differs, as ``dvc status`` does: ``code changed``, ``parameter C``, ``input
X_train (from step features, which runs)``, ``file data/x.csv``, ``module features.py``,
``seed``, ``environment``, ``setup cells``, ``never ran``; an opaque step adds ``its result
depends on what the code does not show (exec() in cell 5, line 3)``.

:func:`predict` walks a pipeline without running anything (no kernel, no MLflow run): a
step whose key finds an intact entry (and whose recorded files did not change) is a hit;
one that runs makes what it produces unknown, so the steps that read it are listed as
running too, the reason naming that step. ``nbmlops status`` prints it; ``nbmlops run``
prints the reason of every step it executes and records it on the step run
(``nbmlops.cache_reason``).

The history is a guide, never trusted for a hit: a damaged or forged record only changes
the words shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.cache.keys import SETUP_RNG, KeyContext, inert
from nbmlops.cache.store import Entry, StepCache, changed_files
from nbmlops.capture.hashing import hash_bytes, write_atomic
from nbmlops.notebook.pipeline import Step

HISTORY = "history"
KEEP = 50  # runs remembered per step of a notebook
UNKNOWN = "?"  # a digest not known before the step that makes it runs
SHOWN = 3  # names shown per part of a key (parameters, inputs, files, modules)

NEVER_RAN = "never ran"
NO_CACHE = "--no-cache"
REFRESH = "--refresh"


@dataclass
class Record:
    """One earlier run of a step, as the history keeps it."""

    key: str
    created: float
    parts: dict[str, Any]
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> digest, type
    rng: str = ""  # the generators' state after it
    uncacheable: str = ""  # why its outputs could not be cached


def _folder(cache: StepCache, notebook: str, step: str) -> Path:
    return cache.entries / HISTORY / hash_bytes(f"{notebook}\0{step}".encode())


def remember(
    cache: StepCache,
    notebook: str,
    step: str,
    key: str,
    parts: dict[str, Any],
    outputs: list[dict[str, Any]],
    rng: str = "",
    uncacheable: str = "",
) -> None:
    """Add a run of ``step`` to the history (best effort: a cache that cannot be written
    loses only the explanation)."""
    record = {
        "key": key,
        "created": time.time(),
        "parts": parts,
        "outputs": {
            o["name"]: {
                "digest": o.get("digest", ""),
                "type": o.get("type", ""),
                "kind": o.get("kind") or "",
            }
            for o in outputs
            if o.get("name")
        },
        "rng": rng,
        "uncacheable": uncacheable,
    }
    folder = _folder(cache, notebook, step)
    with contextlib.suppress(OSError, TypeError, ValueError):
        write_atomic(folder / f"{key}.json", json.dumps(record, default=str).encode())
        _trim(folder)


def _trim(folder: Path) -> None:
    records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in records[KEEP:]:
        with contextlib.suppress(OSError):
            old.unlink()


def history(cache: StepCache, notebook: str, step: str) -> list[Record]:
    """The remembered runs of ``step`` of ``notebook``, newest first."""
    records = []
    for path in _folder(cache, notebook, step).glob("*.json"):
        try:
            doc = json.loads(path.read_bytes())
            records.append(
                Record(
                    key=str(doc["key"]),
                    created=float(doc["created"]),
                    parts=dict(doc["parts"]),
                    outputs={str(k): dict(v) for k, v in dict(doc.get("outputs", {})).items()},
                    rng=str(doc.get("rng", "")),
                    uncacheable=str(doc.get("uncacheable", "")),
                )
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return sorted(records, key=lambda r: -r.created)


def _differences(now: Mapping[str, Any], before: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(part, name)`` of every leaf that differs; name is "" for a part with one value."""
    out = []
    for part in sorted(set(now) | set(before)):
        a, b = now.get(part), before.get(part)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [(part, n) for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
        elif a != b:
            out.append((part, ""))
    return out


def closest(parts: Mapping[str, Any], records: list[Record]) -> Record | None:
    """The earlier run whose parts differ least from ``parts`` (the newest of equals)."""
    best: Record | None = None
    score = 0
    for record in records:  # newest first: a tie keeps the newer
        n = len(_differences(parts, record.parts))
        if best is None or n < score:
            best, score = record, n
    return best


def explain(
    step: Step,
    parts: Mapping[str, Any],
    before: Record | None,
    *,
    producers: Mapping[str, str],
    running: Collection[str],
    base_dir: Path,
    setup_opaque: str | None = None,
) -> list[str]:
    """Why ``step``, whose key parts are ``parts``, has no entry to reuse, compared with its
    earlier run ``before``. ``producers``: the step that made each input; ``running``: the
    steps of this run that execute; ``setup_opaque``: why the setup cells' reads are not
    known, if they are not."""
    if before is None:
        found = [NEVER_RAN]
    else:
        found = []
        counts: dict[str, int] = {}
        for part, name in _differences(parts, before.parts):
            counts[part] = counts.get(part, 0) + 1
            if counts[part] > SHOWN:
                continue
            text = _words(part, name, parts, producers, running, base_dir)
            if text and text not in found:
                found.append(text)
        found += [f"{n - SHOWN} more {part}" for part, n in counts.items() if n > SHOWN]
        if not found:
            found = [
                f"not cached when it last ran: {before.uncacheable}"
                if before.uncacheable
                else "its cache entry is gone (pruned, or damaged and removed)"
            ]
    if step.opaque:
        found.append(f"its result depends on what the code does not show ({step.opaque})")
    if setup_opaque:
        found.append(f"the setup cells read what their code does not show ({setup_opaque})")
    return found


def _words(
    part: str,
    name: str,
    parts: Mapping[str, Any],
    producers: Mapping[str, str],
    running: Collection[str],
    base_dir: Path,
) -> str:
    if part == "code":
        return "code changed"
    if part == "setup":
        return "setup cells"
    if part == "parameters":
        return f"parameter {name}"
    if part == "inputs":
        source = producers.get(name)
        if source is None:
            return f"input {name}"
        runs = ", which runs" if source in running else ""
        return f"input {name} (from step {source}{runs})"
    if part == "files":
        return f"file {_relative(name, base_dir)}"
    if part == "modules":
        return f"module {name}"
    if part == "seed":
        return "seed"
    if part == "rng":
        if parts.get("rng") == UNKNOWN:
            return "random state (left by a step that runs)"
        return "random state left by the steps before it"
    if part == "environment":
        return "environment"
    if part == "store":
        return "tracking store"
    if part == "version":
        return "cache format of an older nbmlops"
    return part


def _relative(path: str, base_dir: Path) -> str:
    try:
        return os.path.relpath(path, base_dir) if Path(path).is_absolute() else path
    except ValueError:
        return path


def miss_reasons(
    step: Step,
    parts: Mapping[str, Any],
    entry: Entry | None,
    changed: list[str],
    cache: StepCache,
    notebook: str,
    *,
    producers: Mapping[str, str],
    running: Collection[str],
    base_dir: Path,
    setup_opaque: str | None = None,
) -> list[str]:
    """Why a step found no entry (``entry`` None) or could not use the one it found (its
    recorded files ``changed``)."""
    if entry is not None and changed:
        return [f"file {_relative(p, base_dir)}" for p in changed]
    before = closest(parts, history(cache, notebook, step.name))
    return explain(
        step,
        parts,
        before,
        producers=producers,
        running=running,
        base_dir=base_dir,
        setup_opaque=setup_opaque,
    )


# ---------------------------------------------------------------- predict (nbmlops status)


@dataclass
class StepStatus:
    """What ``nbmlops run`` would do with a step, predicted without running anything."""

    step: str
    runs: bool
    reasons: list[str]
    key: str  # "" when it cannot be known before an earlier step runs
    cached_from: str | None = None  # a hit: the step run that computed it

    def describe(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "runs": self.runs,
            "reasons": self.reasons,
            "key": self.key,
            "cached_from": self.cached_from,
        }


def predict(
    keys: KeyContext,
    cache: StepCache,
    notebook: str,
    digest: Callable[[str], str],
    *,
    use_cache: bool = True,
    refresh: Collection[str] = (),
) -> list[StepStatus]:
    """Which steps of ``keys.pipeline`` a run would execute, and why; nothing is run.

    ``digest(path)`` hashes a file (to check the files an entry recorded as read).
    """
    produced: dict[str, str] = {}
    producers: dict[str, str] = {}
    inert_names: set[str] = set()
    running: set[str] = set()
    rng = SETUP_RNG
    out: list[StepStatus] = []
    modules = _module_names(keys)
    for step in keys.pipeline.steps:
        key, parts = keys.key(step, produced, rng, inert_names)
        known = UNKNOWN not in parts["inputs"].values() and rng != UNKNOWN
        entry = cache.get(key) if known and use_cache and step.name not in refresh else None
        changed = changed_files(entry, digest) if entry is not None else []
        if entry is not None and not changed:
            out.append(StepStatus(step.name, False, [], key, entry.source_run))
            _produced(entry.outputs, step.name, produced, producers, inert_names)
            rng = entry.rng.get("digest", rng)
            continue
        if not use_cache:
            reasons = [NO_CACHE]
        elif step.name in refresh:
            reasons = [REFRESH]
        else:
            reasons = miss_reasons(
                step,
                parts,
                entry,
                changed,
                cache,
                notebook,
                producers=producers,
                running=running,
                base_dir=keys.base_dir,
                setup_opaque=keys.pipeline.setup_analysis.opaque,
            )
        running.add(step.name)
        out.append(StepStatus(step.name, True, reasons, key if known else ""))
        # What it will produce is unknown until it runs: what it made last time, by name.
        before = closest(parts, history(cache, notebook, step.name))
        names = (set(step.writes) - modules) | set(before.outputs if before else {})
        for name in names:
            produced[name] = UNKNOWN
            producers[name] = step.name
            inert_names.discard(name)
        rng = before.rng if before is not None and before.rng and rng != UNKNOWN else UNKNOWN
    return out


def _module_names(keys: KeyContext) -> set[str]:
    """Names only ``import x`` statements bind: modules, never a step's outputs."""
    analyses = [keys.pipeline.setup_analysis, *(s.analysis for s in keys.pipeline.steps)]
    bound: dict[str, bool] = {}
    for analysis in analyses:
        for name, imports in analysis.imported.items():
            plain = all(not i.names for i in imports) and name not in analysis.computed
            bound[name] = bound.get(name, True) and plain
    return {n for n, plain in bound.items() if plain}


def _produced(
    outputs: list[dict[str, Any]],
    step: str,
    produced: dict[str, str],
    producers: dict[str, str],
    inert_names: set[str],
) -> None:
    for o in outputs:
        produced[o["name"]] = o["digest"]
        producers[o["name"]] = step
        if inert(o):
            inert_names.add(o["name"])
        else:
            inert_names.discard(o["name"])
