"""The training data of a promoted run, found among its steps' saved outputs.

Each step run lists the variables it produced in ``outputs.json`` (name, kind, digest,
columns); values are saved content-addressed under ``.nbmlops/objects`` (a DataFrame as
Arrow, which loads without running code). The training data
is the DataFrame whose columns are the model signature's input columns: a name containing
"train" first, else the most rows. Its digest is checked before it is used.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmlops.capture import schema as s
from nbmlops.capture.records import step_runs


@dataclass
class TrainingData:
    name: str
    step: str
    digest: str
    frame: Any  # pandas.DataFrame


def find_training_data(
    mlflow_client: Any, run: Any, columns: list[str], roots: list[Path]
) -> tuple[TrainingData | None, str]:
    """The run's training DataFrame, or ``None`` and why it was not found."""
    candidates: list[tuple[str, dict[str, Any]]] = []
    wanted = set(columns)
    for step in step_runs(mlflow_client, run):
        for out in _outputs(mlflow_client, step.info.run_id):
            cols = out.get("columns")
            if out.get("kind") == "dataframe" and isinstance(cols, dict) and set(cols) == wanted:
                candidates.append((step.data.tags.get(s.STEP, "?"), out))
    if not candidates:
        return None, (
            "no step output is a DataFrame with the model's input columns "
            f"({len(columns)} columns: {', '.join(columns[:5])}{', ...' if len(columns) > 5 else ''})"
        )
    candidates.sort(
        key=lambda c: ("train" not in c[1]["name"].lower(), -int((c[1].get("shape") or [0])[0]))
    )
    problems = []
    for step, out in candidates:
        frame, problem = _load(out["digest"], roots)
        if frame is not None:
            return TrainingData(out["name"], step, out["digest"], frame), ""
        problems.append(f"{out['name']}: {problem}")
    return None, "; ".join(problems)


def _outputs(mlflow_client: Any, run_id: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="nbmlops-outputs-") as tmp:
        try:
            path = mlflow_client.download_artifacts(run_id, s.OUTPUTS_JSON, tmp)
        except Exception:
            return []
        data = json.loads(Path(path).read_text())
    outputs = data.get("outputs", []) if isinstance(data, dict) else []
    return [o for o in outputs if isinstance(o, dict)]


def _load(digest: str, roots: list[Path]) -> tuple[Any, str]:
    """The saved DataFrame ``digest``, loaded as ``StepCache.load_output`` allows: nothing
    is unpickled unless a cache entry sealed by the user's key vouches for it."""
    from nbmlops.cache.objects import Unverified
    from nbmlops.cache.store import StepCache
    from nbmlops.capture.hashing import hash_data

    for root in roots:
        try:
            frame = StepCache(root).load_output(digest, lambda v: hash_data(v) == digest)
        except LookupError:
            continue
        except (Unverified, OSError, ValueError) as exc:
            return None, str(exc)
        return frame, ""
    where = ", ".join(str(r / "objects") for r in roots)
    return None, f"not in the object store ({where}); promote from the project folder"


def state_dirs(run: Any) -> list[Path]:
    """Where the run's saved outputs may be: this project's ``.nbmlops``, the run's own."""
    from nbmlops import project

    roots = [project.state_dir()]
    output_dir = run.data.tags.get(s.OUTPUT_DIR, "")
    if f"/{project.STATE_DIR}/" in output_dir:
        head = output_dir.split(f"/{project.STATE_DIR}/")[0]
        roots.append(Path(head) / project.STATE_DIR)
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique
