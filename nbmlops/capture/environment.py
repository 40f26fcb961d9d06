"""Where a run came from: the installed package set and the git checkout."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from nbmlops.capture.hashing import hash_bytes, write_atomic


@dataclass(frozen=True)
class Environment:
    python: str
    platform: str
    packages: tuple[str, ...]  # "name==version", sorted

    @property
    def requirements(self) -> str:
        header = f"# python {self.python} on {self.platform}\n"
        return header + "\n".join(self.packages) + "\n"

    @property
    def hash(self) -> str:
        return hash_bytes(self.requirements.encode())


_LIST_PACKAGES = """
import json, os, platform, sys
from importlib import metadata
names = sorted({f"{(d.metadata['Name'] or '').lower().replace('_', '-')}=={d.version}"
                for d in metadata.distributions() if d.metadata['Name']})
paths = [p for p in sys.path if p and os.path.isdir(p)]
print(json.dumps([platform.python_version(), f"{sys.platform}-{platform.machine()}", names, paths]))
"""


def _scan(python: str) -> tuple[Environment, list[str]]:
    if not python or os.path.realpath(python) == os.path.realpath(sys.executable):
        namespace: dict[str, Any] = {}
        with contextlib.redirect_stdout(io.StringIO()) as out:
            exec(_LIST_PACKAGES, namespace)
        version, plat, names, paths = json.loads(out.getvalue())
    else:
        result = subprocess.run(
            [python, "-c", _LIST_PACKAGES], capture_output=True, text=True, timeout=120
        )
        version, plat, names, paths = json.loads(result.stdout)
    return Environment(python=version, platform=plat, packages=tuple(names)), paths


def _stamp(paths: list[str]) -> list[int]:
    """Modification times of the import folders: installing or removing a package changes
    its folder's (a new or removed ``*.dist-info``)."""
    stamps = []
    for p in paths:
        try:
            stamps.append(os.stat(p).st_mtime_ns)
        except OSError:
            stamps.append(-1)
    return stamps


@lru_cache(maxsize=4)
def environment(python: str = "", remember: Path | None = None) -> Environment:
    """The package set of ``python`` (default: this interpreter), e.g. the kernel's.

    Scanning every installed distribution takes a fraction of a second to seconds; with
    ``remember`` (a JSON file) the result is reused while the interpreter's import folders
    are unchanged.
    """
    key = os.path.realpath(python or sys.executable)
    if remember is not None:
        try:
            saved = json.loads(remember.read_text()).get(key)
            if saved and _stamp(saved["paths"]) == saved["stamp"]:
                return Environment(saved["python"], saved["platform"], tuple(saved["packages"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    env, paths = _scan(python)
    if remember is not None:
        try:
            doc = json.loads(remember.read_text()) if remember.exists() else {}
        except (OSError, ValueError):
            doc = {}
        doc[key] = {
            "python": env.python,
            "platform": env.platform,
            "packages": list(env.packages),
            "paths": paths,
            "stamp": _stamp(paths),
        }
        with contextlib.suppress(OSError):
            write_atomic(remember, json.dumps(doc).encode())
    return env


@dataclass(frozen=True)
class GitInfo:
    root: Path
    commit: str
    dirty: bool


def git_info(path: Path) -> GitInfo | None:
    """The commit checked out where ``path`` lives, and whether the tree has changes.

    A notebook git does not track counts as a change: the commit does not hold it.
    """
    folder = path if path.is_dir() else path.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode != 0:
            return None
        root, commit = out.stdout.split()
        status = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        tracked = subprocess.run(
            ["git", "-C", root, "ls-files", "--error-unmatch", str(path)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    untracked = path.is_file() and tracked.returncode != 0
    return GitInfo(Path(root), commit, bool(status.stdout.strip()) or untracked)


def kernel_spec_name(kernel_name: str) -> str:
    """The kernel spec jupyter_client starts for ``kernel_name``: its ``KernelManager``
    reads ``python`` as the native kernel (``python3``), and its ``KernelSpecManager``
    matches spec folders case-insensitively (so papermill runs a notebook that names
    either)."""
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    return NATIVE_KERNEL_NAME if kernel_name == "python" else kernel_name.lower()


def kernel_python(kernel_name: str) -> str:
    """The interpreter a Jupyter kernel runs, as jupyter_client will launch it."""
    import shutil

    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec(kernel_spec_name(kernel_name)).argv
    if not argv or argv[0] in {"python", f"python{sys.version_info[0]}"}:
        return sys.executable  # what jupyter_client substitutes
    return shutil.which(argv[0]) or argv[0]
