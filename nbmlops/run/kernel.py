"""The part of a pipeline run that lives inside the notebook's kernel.

The engine (``nbmlops.run.engine``) calls these functions between cells through Jupyter's
``user_expressions``, so nothing is added to the user's namespace or to the output notebook:

* :func:`start` seeds ``random``, ``numpy`` and ``torch`` before any user code;
* :func:`begin_step` remembers what the namespace holds when a step starts;
* :func:`end_step` works out which variables the step produced (new, rebound, or changed in
  place), hashes each over its full content and saves it, once, to the content-addressed
  object store (``cache/objects.py``: Arrow, ``.npy``, or a sealed pickle), with the state
  of the random generators and the files the step wrote in the project. With the files it
  read (observed by ``run/observe.py``), that manifest is the step boundary the cache
  restores from;
* :func:`restore` puts the outputs (and generator state) of steps the cache skipped into the
  namespace, exactly as if they had run, after checking every object's MAC.

The notebook API (``nbmlops.api``) reports metrics, data and models through :func:`emit`,
which appends JSON lines to the run's events file; the driver logs them to MLflow. The
kernel never waits for the tracking store.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import io
import json
import os
import random
import sys
import time
import types
from pathlib import Path
from typing import Any

from nbmlops.cache import objects as store
from nbmlops.capture.hashing import data_kind, hash_bytes, hash_data
from nbmlops.run.observe import NATIVE, NATIVE_CLASSES, OBSERVED_EVENTS, Observer, wrap_native


class _State:
    def __init__(self) -> None:
        self.active = False
        self.events: Path | None = None
        self.objects: Path | None = None
        self.run_dir: Path | None = None
        self.step: str | None = None
        self.step_started = 0.0
        self.before: dict[str, int] = {}
        self.hashes: dict[str, str] = {}  # name -> digest of its value as last seen
        self.observer: Observer | None = None
        self.setup_io: dict[str, Any] | None = None  # what the setup cells read
        self.saver: store.Saver | None = None  # saves outputs while the next step runs


_state = _State()


def active() -> bool:
    return _state.active


def current_step() -> str | None:
    """The step running now (None in setup cells, or outside a run)."""
    return _state.step


def emit(event: dict[str, Any]) -> None:
    """Append one event for the driver to record (metric, param, data, model)."""
    assert _state.events is not None
    event = {**event, "step": _state.step, "time": time.time()}
    with open(_state.events, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(event, default=str) + "\n")
        fh.flush()


def step_run_id(timeout: float = 120.0) -> str:
    """The MLflow run id of the current step, once the driver has created it."""
    assert _state.run_dir is not None and _state.step is not None
    path = _state.run_dir / "steps" / f"{_state.step}.run_id"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the driver did not create the MLflow run of step {_state.step!r}")
        time.sleep(0.02)
    return path.read_text().strip()


# ---------------------------------------------------------------- start: seeds


def start(run_dir: str, objects: str, seed: int) -> str:
    """Called before the first cell: the run's context and its seeds.

    In a kernel kept warm for the next run (sweep points), it first resets what the previous
    run left: the user's namespace and nbmlops' own state. Imported modules stay loaded.
    """
    if _state.active:
        _reset_for_next_run()
    else:
        _BEFORE_FIRST_RUN.update(sys.modules)
    _state.active = True
    _state.run_dir = Path(run_dir)
    _state.events = _state.run_dir / "events.jsonl"
    _state.objects = Path(objects)
    random.seed(seed)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _SeedOnImport)]
    sys.meta_path.insert(0, _SeedOnImport(seed))
    for module in ("numpy", "torch"):
        if module in sys.modules:
            _seed_module(module, seed)
    _observe(Path(os.environ.get("NBMLOPS_PROJECT") or os.getcwd()))
    return json.dumps({"pid": os.getpid(), "executable": sys.executable})


_hook_installed = False


def _observe(project: Path) -> None:
    """Watch file reads and writes from now on (the setup cells, then each step)."""
    global _hook_installed
    assert _state.run_dir is not None and _state.objects is not None
    observer = Observer(
        project,
        own=[_state.run_dir, _state.objects.parent],
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
    )
    _state.observer = observer
    if not _hook_installed:  # audit hooks cannot be removed: one, reading _state
        sys.addaudithook(_audit)
        _hook_installed = True
    observer.install()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    observer = _state.observer
    if observer is not None and observer.active and event in OBSERVED_EVENTS:
        observer.hook(event, args, sys._getframe(1))  # (sys._getframe is audited itself)


def _reset_for_next_run() -> None:
    from IPython import get_ipython

    _end_mlflow_run(failed=False)
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")
    get_ipython().reset(new_session=True)  # the namespace, history and execution count
    if _state.saver is not None:
        _state.saver.close()
    _forget_project_modules()  # their module-level state (caches of files read) goes too
    _state.__init__()  # type: ignore[misc]


def _forget_project_modules() -> None:
    """Unload the modules the notebook imported from the project (not nbmlops' own, nor
    anything loaded before the first run: nbmlops may live in the project it runs)."""
    project = os.path.join(os.environ.get("NBMLOPS_PROJECT") or os.getcwd(), "")
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if (
            name not in _BEFORE_FIRST_RUN
            and name.split(".")[0] != "nbmlops"
            and path.startswith(project)
            and f"{os.sep}site-packages{os.sep}" not in path
        ):
            del sys.modules[name]


_BEFORE_FIRST_RUN: set[str] = set()  # the modules loaded when the kernel's first run began


def _seed_module(name: str, seed: int) -> None:
    module = sys.modules[name]
    if name == "numpy":
        module.random.seed(seed)
        _make_default_rng_reproducible(module, seed)
    elif name == "torch":
        module.manual_seed(seed)


def _make_default_rng_reproducible(np: Any, seed: int) -> None:
    """``np.random.default_rng()`` without a seed draws from the run's seed sequence."""
    original = np.random.default_rng
    if getattr(original, "_nbmlops", False):  # a kernel reused for another run
        original._nbmlops_seed[0] = seed
        original._nbmlops_spawned[0] = 0
        return
    spawned = [0]  # children drawn so far: part of the generators' state a cache hit restores
    run_seed = [seed]

    def default_rng(seed: Any = None) -> Any:
        if seed is None:  # the n-th child of SeedSequence(run seed), as .spawn() would give
            seed = np.random.SeedSequence(run_seed[0], spawn_key=(spawned[0],))
            spawned[0] += 1
        return original(seed)

    default_rng._nbmlops = True  # type: ignore[attr-defined]
    default_rng._nbmlops_seed = run_seed  # type: ignore[attr-defined]
    default_rng._nbmlops_spawned = spawned  # type: ignore[attr-defined]
    default_rng.__doc__ = original.__doc__
    np.random.default_rng = default_rng


_NATIVE_MODULES = frozenset((*NATIVE, *NATIVE_CLASSES))


class _SeedOnImport(importlib.abc.MetaPathFinder):
    """Seeds numpy and torch when the notebook first imports them (no import cost
    otherwise), and lets the observer wrap pyarrow's native readers as they are imported."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in ("numpy", "torch") and fullname not in _NATIVE_MODULES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module
        seed = self.seed

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: types.ModuleType) -> None:
                exec_module(module)
                if fullname in _NATIVE_MODULES:
                    wrap_native(fullname)
                else:
                    _seed_module(fullname, seed)

        spec.loader = _Loader()
        return spec


# ---------------------------------------------------------------- step boundaries


def _user_ns() -> dict[str, Any]:
    from IPython import get_ipython

    return get_ipython().user_ns  # type: ignore[no-any-return]


def _visible(ns: dict[str, Any]) -> dict[str, Any]:
    from IPython import get_ipython

    hidden = get_ipython().user_ns_hidden
    return {
        k: v
        for k, v in ns.items()
        if not k.startswith("_")
        and k not in hidden
        and not isinstance(v, types.ModuleType)
        and not (isinstance(v, io.IOBase) and v.closed)  # `with open(...) as fh:` leaves fh
    }


def _every(names: list[str], ns: dict[str, Any]) -> list[str]:
    """``names``, where ``*`` (a step whose code does not show its names) means all."""
    return sorted(ns) if "*" in names else names


def begin_step(name: str, names: list[str]) -> str:
    """Remember the namespace as the step starts; hash the values it may change in place."""
    _state.step = name
    _state.step_started = time.monotonic()
    if _state.observer is not None:
        if _state.setup_io is None:
            _state.setup_io = _state.observer.end()
        _state.observer.begin()
    ns = _visible(_user_ns())
    names = _every(names, ns)
    _state.before = {k: id(v) for k, v in ns.items()}
    for n in names:
        if n in ns and n not in _state.hashes:
            digest, _, _ = _digest(ns[n])
            if digest:
                _state.hashes[n] = digest
    return "{}"


def end_step(names: list[str], writes: list[str], failed: bool = False) -> str:
    """The step's outputs: every variable that is new, rebound, or changed in content.

    Each output is saved under ``objects/<digest>.<format>`` (``cache/objects.py``). A
    value the step bound or may have changed that cannot be pickled is reported by name
    and makes the step uncacheable; one it only read is not its output. Nothing is saved
    for a failed step. Also reported: the files the step read and wrote (those written in
    the project saved, to be restored on a hit), the folders it listed, and the calls whose
    reads could not be seen.
    """
    _end_mlflow_run(failed)
    io = _state.observer.end() if _state.observer is not None else {}
    ns = _visible(_user_ns())
    names = _every(names, ns)
    rebound = {k for k, v in ns.items() if _state.before.get(k) != id(v)}
    produced = rebound | set(writes)
    outputs: list[dict[str, Any]] = []
    unsaved: list[dict[str, str]] = []
    # What the step's code names, and every earlier output that is an object (not plain
    # data): one may have changed through another name (``clf = pipe[-1]`` in one step,
    # ``pipe.fit()`` in the next). Frames are copy-on-write: another name cannot change them.
    watched = {n for n in names if n in ns} | {
        n for n in _state.hashes if n in ns and not data_kind(ns[n])
    }
    for n in sorted(rebound | watched):
        value = ns[n]
        digest, payload, problem = _digest(value)
        if problem or digest is None:
            _state.hashes.pop(n, None)
            if n in produced:
                unsaved.append(
                    {"name": n, "type": _type_name(value), "problem": problem or "no digest"}
                )
            continue
        if n not in rebound and _state.hashes.get(n) == digest:
            continue  # read, not changed
        _state.hashes[n] = digest
        kind = data_kind(value)
        entry: dict[str, Any] = {
            "name": n,
            "type": _type_name(value),
            "digest": digest,
            "kind": kind,
        }
        if kind:
            entry["shape"] = list(getattr(value, "shape", ()))
        if kind == "dataframe":
            entry["columns"] = {str(c): str(t) for c, t in value.dtypes.items()}
        if not failed:
            try:
                entry["format"] = _saver().submit(digest, value, payload)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
                unsaved.append({"name": n, "type": _type_name(value), "problem": problem})
                continue
        outputs.append(entry)
    for n in set(_state.before) - set(ns):  # deleted by the step
        _state.hashes.pop(n, None)
    _state.step = None
    rng = _save_rng() if not failed else {}
    files = _files(io, failed)
    if _state.observer is not None:
        _state.observer.begin()  # what runs between steps belongs to no step: not recorded
        _state.observer.active = False
    saved = _saver().report()
    return json.dumps({"outputs": outputs, "unsaved": unsaved, "rng": rng, "saved": saved, **files})


def seal_when_saved(step: str, body: str, cache_root: str) -> str:
    """Once the step's objects are saved (the saving thread takes its tasks in order),
    fill in their MACs and write the step's cache entry, sealed: a run killed later still
    finds it."""
    from nbmlops.cache.store import Entry, StepCache

    saver = _saver()

    def seal() -> str:
        entry = Entry(**json.loads(Path(body).read_text()))
        outputs = []
        for out in entry.outputs:
            result = saver.result_of(out["digest"])
            if result is None or "problem" in result:
                why = result["problem"] if result else "not saved"
                return f"cannot save variable {out['name']!r} ({why})"
            outputs.append({**out, **result})
        entry.outputs = outputs
        StepCache(Path(cache_root)).put(entry)
        return ""

    saver.then(step, seal)
    return "{}"


def flush() -> str:
    """Wait for the saving thread; what ``end_step`` reports as ``saved``."""
    return json.dumps({"saved": _saver().report(wait=True)})


def _saver() -> store.Saver:
    if _state.saver is None:
        _state.saver = store.Saver(_objects())
    return _state.saver


def _files(io: dict[str, Any], failed: bool) -> dict[str, Any]:
    """The step's file reads (with the setup cells'), listings, unseen calls, and the files
    it wrote in the project, saved to the object store (paths relative to the project)."""
    setup = _state.setup_io or {}
    written = []
    project = os.environ.get("NBMLOPS_PROJECT") or os.getcwd()
    for path in io.get("written", []) if not failed else []:
        try:
            saved = store.save_file(_objects(), path)
        except OSError as exc:
            io.setdefault("outside", []).append(f"{path} ({exc})")
            continue
        written.append({"path": os.path.relpath(path, project), **saved})
    return {
        "reads": {**setup.get("reads", {}), **io.get("reads", {})},
        "listings": {**setup.get("listings", {}), **io.get("listings", {})},
        "written": written,
        "folders": [os.path.relpath(p, project) for p in io.get("folders", [])],
        "outside": io.get("outside", []),
        "unseen": [*setup.get("unseen", []), *io.get("unseen", [])],
    }


def _end_mlflow_run(failed: bool) -> None:
    """Let go of the step run ``log_model`` resumed here; a failed step's is FAILED.

    Left open, MLflow's exit hook in this kernel could mark it FINISHED at shutdown, after
    the driver had recorded FAILED (cells run on the main thread under ipykernel 6). A step
    that succeeded stays RUNNING: only the driver marks it FINISHED, once the step's whole
    record (metrics, outputs, notebook) is written.
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED" if failed else "RUNNING")


def _type_name(value: Any) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


def _digest(value: Any) -> tuple[str | None, bytes | None, str | None]:
    """(digest, pickled bytes if they were needed for the digest, problem)."""
    try:
        if data_kind(value):
            return hash_data(value), None, None
        import cloudpickle

        payload = cloudpickle.dumps(value, protocol=5)
    except Exception as exc:  # unpicklable values: connections, generators, locks ...
        return None, None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return hash_bytes(payload), payload, None


def _objects() -> Path:
    assert _state.objects is not None
    return _state.objects


# ---------------------------------------------------------------- random generators


def _rng_state() -> dict[str, Any]:
    """The generators' state as JSON values (loading it back runs no code)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"random": [version, list(internal), gauss]}
    np = sys.modules.get("numpy")
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
        spawned = getattr(np.random.default_rng, "_nbmlops_spawned", None)
        if spawned is not None:
            state["spawned"] = spawned[0]
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_rng_state"):
        state["torch"] = torch.get_rng_state().numpy().tobytes().hex()
    return state


def _save_rng() -> dict[str, Any]:
    """Save the generators' state after a step (as JSON); a cache hit restores it."""
    payload = json.dumps(_rng_state(), sort_keys=True).encode()
    digest = hash_bytes(payload)
    return {"digest": digest, **store.save(_objects(), digest, None, payload, "json")}


def _set_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        spawned = getattr(np.random.default_rng, "_nbmlops_spawned", None)
        if spawned is not None and "spawned" in state:
            spawned[0] = state["spawned"]
    if "torch" in state:
        import torch

        raw = bytearray(bytes.fromhex(state["torch"]))
        torch.set_rng_state(torch.frombuffer(raw, dtype=torch.uint8))


def restore(entries: list[dict[str, Any]]) -> str:
    """Bind the outputs of skipped steps, in order, and set the generators' state after
    them; every object is read once and its MAC checked before it is decoded."""
    ns = _user_ns()
    key = store.cache_key()
    for entry in entries:
        for out in entry["outputs"]:
            path = store.object_path(_objects(), out["digest"], out["format"])
            ns[out["name"]] = store.load(path, out["format"], out["blob"], key)
            _state.hashes[out["name"]] = out["digest"]
    rng = entries[-1].get("rng") if entries else None
    if rng:
        path = store.object_path(_objects(), rng["digest"], rng["format"])
        _set_rng(store.load(path, rng["format"], rng["blob"], key))
    return "{}"
