"""Where a run came from: the installed package set and the git checkout."""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from nbmlops.capture.hashing import hash_bytes


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


@lru_cache(maxsize=1)
def environment() -> Environment:
    packages = {
        f"{(d.metadata['Name'] or '').lower().replace('_', '-')}=={d.version}"
        for d in metadata.distributions()
        if d.metadata["Name"]
    }
    return Environment(
        python=platform.python_version(),
        platform=f"{sys.platform}-{platform.machine()}",
        packages=tuple(sorted(packages)),
    )


@dataclass(frozen=True)
class GitInfo:
    root: Path
    commit: str
    dirty: bool


def git_info(path: Path) -> GitInfo | None:
    """The commit checked out where ``path`` lives, and whether the tree has changes."""
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
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return GitInfo(Path(root), commit, bool(status.stdout.strip()))
