"""``nbmlops init-ci``: the GitHub Actions workflow, from the one template ``workflow.yml``.

The repository's own ``.github/workflows/nbmlops.yml`` is this template rendered with the
README's set-up (``make .venv/.installed``); a test keeps the two identical.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from nbmlops.exceptions import NbmlopsError

WORKFLOW = Path(".github/workflows/nbmlops.yml")
DEFAULT_SETUP = "python -m venv .venv && .venv/bin/pip install --quiet -e ."
SETUP_MARK = "@SETUP@"


def render(setup: str | None = None) -> str:
    """The workflow text, with ``setup`` as the shell command that installs the project
    into ``.venv`` (default: a venv and ``pip install -e .``)."""
    template = files("nbmlops.ci").joinpath("workflow.yml").read_text(encoding="utf-8")
    return template.replace(SETUP_MARK, (setup or DEFAULT_SETUP).strip())


def write_workflow(root: Path, *, force: bool = False, setup: str | None = None) -> Path:
    """Write the workflow into the project at ``root``; an existing file needs ``force``."""
    path = root / WORKFLOW
    if path.exists() and not force:
        raise NbmlopsError(
            f"{WORKFLOW} already exists",
            "pass --force to overwrite it (or compare it with the template first: "
            "move it away and run nbmlops init-ci again)",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(setup), encoding="utf-8")
    return path
