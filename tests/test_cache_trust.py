"""Nothing in the step cache is loaded before it is authenticated; what a step reads and
writes on disk is seen; the store stays within its size.

The attacks are those of someone who can write to a shared cache but does not hold the
victim's key: a crafted pickle in place of an object, an entry re-sealed the unkeyed way
with a better metric, a whole entry sealed with the attacker's own key, objects planted
under the names the victim's first run will use, a pickle planted where ``promote`` looks
for the training data. Each time: the payload never runs (its marker file is absent), the
step is recomputed, and the run records what a clean run records.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import classifier, code, pipeline_runs, step_runs, write_notebook

from nbmlops.cache import objects
from nbmlops.capture.hashing import hash_bytes, hash_data

CELLS = [
    code("import numpy as np\nimport nbmlops"),
    code("C = 1.0", "parameters"),
    code("X = np.arange(20.0)", "step:data"),
    code(
        "model = {'w': float(X.sum()) * C, 'kind': 'linear'}\nnbmlops.log_metric('f1', 0.5 * C)",
        "step:train",
    ),
]


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(autouse=True)
def own_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The victim's key lives in a config folder of the test's own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(objects.KEY_ENV, raising=False)
    return tmp_path / "config" / "nbmlops" / "cache.key"


def _run(nbmlops: Any, experiment: str, *args: str) -> Any:
    return nbmlops("run", "pipe.ipynb", "--experiment", experiment, "-q", *args, check=True)


def _entries(cache: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    found = {}
    for path in (cache / "cache").glob("??/*.json"):
        doc = json.loads(path.read_text())
        found[doc["entry"]["step"]] = (path, doc)
    return found


def _output(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(o for o in doc["entry"]["outputs"] if o["name"] == name)


def _cache_tags(client: Any, experiment: str) -> dict[str, str]:
    run = pipeline_runs(client, experiment)[0]
    return {n: r.data.tags["nbmlops.cache"] for n, r in step_runs(client, run).items()}


def _reseal_unkeyed(path: Path, doc: dict[str, Any]) -> None:
    """What an attacker without the key can do: recompute plain digests and write them."""
    canonical = json.dumps(doc["entry"], sort_keys=True).encode()
    path.write_text(json.dumps({"seal": hash_bytes(canonical), "entry": doc["entry"]}))


def test_a_crafted_pickle_or_a_better_metric_resealed_without_the_key_is_refused(
    project: Path, nbmlops: Any, client: Any, experiment: str, own_key: Path
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    marker = project / "PWNED"
    _run(nbmlops, experiment, "--seed", "7")
    clean = pipeline_runs(client, experiment)[0].data.metrics
    cache = project / ".nbmlops"

    # A crafted pickle in place of the model, the entry re-sealed the unkeyed way.
    path, doc = _entries(cache)["train"]
    model = _output(doc, "model")
    assert model["format"] == "pickle"
    evil = pickle.dumps(Payload(marker))
    objects.object_path(cache / "objects", model["digest"], "pickle").write_bytes(evil)
    model["blob"] = hash_bytes(evil)
    _reseal_unkeyed(path, doc)
    result = _run(nbmlops, experiment, "--seed", "7")
    assert not marker.exists()
    assert "not sealed by your key" in result.stderr
    assert _cache_tags(client, experiment) == {"data": "hit", "train": "miss"}
    assert pipeline_runs(client, experiment)[0].data.metrics == clean

    # A better f1 written into the entry's events, re-sealed: recomputed, never reported.
    path, doc = _entries(cache)["train"]
    for event in doc["entry"]["events"]:
        if event.get("name") == "f1":
            event["value"] = 0.99
    _reseal_unkeyed(path, doc)
    _run(nbmlops, experiment, "--seed", "7")
    assert _cache_tags(client, experiment)["train"] == "miss"
    assert pipeline_runs(client, experiment)[0].data.metrics == clean == {"f1": 0.5}
    _run(nbmlops, experiment, "--seed", "7")  # the honest entry was written back
    assert set(_cache_tags(client, experiment).values()) == {"hit"}
    assert own_key.exists() and stat.S_IMODE(own_key.stat().st_mode) == 0o600


def test_entries_sealed_with_another_key_and_planted_objects_never_run(
    project: Path, nbmlops: Any, client: Any, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    marker = project / "PWNED"
    victim = project / "shared"

    # The attacker runs the same notebook into the shared cache with their own key, then
    # swaps the model for a payload and seals the entry properly, with that key.
    monkeypatch.setenv(objects.KEY_ENV, "mallory's key")
    _run(nbmlops, experiment, "--seed", "7", "--cache-dir", str(victim))
    path, doc = _entries(victim)["train"]
    model = _output(doc, "model")
    evil = pickle.dumps(Payload(marker))
    objects.object_path(victim / "objects", model["digest"], "pickle").write_bytes(evil)
    model["blob"] = objects.seal(evil)
    canonical = json.dumps(doc["entry"], sort_keys=True).encode()
    path.write_text(json.dumps({"seal": objects.seal(canonical), "entry": doc["entry"]}))
    # ... and plants a payload under the name of every other object the victim will save.
    for step in _entries(victim).values():
        for out in step[1]["entry"]["outputs"]:
            objects.object_path(victim / "objects", out["digest"], out["format"]).write_bytes(evil)

    monkeypatch.delenv(objects.KEY_ENV)  # the victim, with their own key
    result = _run(nbmlops, experiment, "--seed", "7", "--cache-dir", str(victim))
    assert not marker.exists()
    assert result.stderr.count("not sealed by your key") == 2
    assert _cache_tags(client, experiment) == {"data": "miss", "train": "miss"}
    clean = pipeline_runs(client, experiment)[0].data.metrics
    assert clean == {"f1": 0.5}

    # The planted files were replaced by the victim's own: the next run hits and loads them.
    _run(nbmlops, experiment, "--seed", "7", "--cache-dir", str(victim), "-p", "C=2.0")
    assert _cache_tags(client, experiment) == {"data": "hit", "train": "miss"}
    assert pipeline_runs(client, experiment)[0].data.metrics == {"f1": 1.0}
    assert not marker.exists()


def test_promote_never_unpickles_a_training_frame_no_sealed_entry_vouches_for(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", classifier())
    _run(nbmlops, experiment)
    marker = project / "PWNED"
    run = pipeline_runs(client, experiment)[0]
    split = step_runs(client, run)["split"].data.tags
    store = project / ".nbmlops" / "objects"
    for frame in ("X_train", "X_test"):  # a pickle where each frame with the columns was
        digest = split[f"nbmlops.data.{frame}"]
        objects.object_path(store, digest, "arrow").unlink()
        objects.object_path(store, digest, "pickle").write_bytes(pickle.dumps(Payload(marker)))
    result = nbmlops(
        "promote", "--experiment", experiment, "--metric", "score", "--model-name", experiment
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not marker.exists()
    assert "no training data found" in result.stdout + result.stderr
    assert "no cache entry sealed by your key names object" in result.stdout + result.stderr


def test_a_team_key_shares_a_cache_between_users_and_files_are_group_readable(
    project: Path, nbmlops: Any, client: Any, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_notebook(project / "pipe.ipynb", CELLS)
    shared = project / "team-cache"
    monkeypatch.setenv(objects.KEY_ENV, "the team's secret")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(project / "alice"))
    _run(nbmlops, experiment, "--seed", "7", "--cache-dir", str(shared))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(project / "bob"))  # another user, same team key
    _run(nbmlops, experiment, "--seed", "7", "--cache-dir", str(shared))
    assert set(_cache_tags(client, experiment).values()) == {"hit"}
    assert not (project / "alice").exists() and not (project / "bob").exists()  # no own keys
    # Written as open() would write them (umask 022 here), not 0600: the group can read.
    for path in [*shared.glob("cache/??/*.json"), *shared.glob("objects/??/*")]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o040, path


@pytest.mark.parametrize(
    "value",
    [
        pd.DataFrame({"a": np.arange(5.0), "b": np.arange(5), "c": [True, False] * 2 + [True]}),
        pd.DataFrame({"t": pd.date_range("2026-01-01", periods=3, tz="UTC")}, index=[3, 1, 2]),
        pd.Series(np.arange(4.0), name="price", index=pd.Index([9, 8, 7, 6], name="id")),
        pd.DataFrame({0: [1.0], 1: [2.0]}),  # integer column names: pickled
        pd.DataFrame({"s": ["x", None, float("nan")]}),  # objects: pickled
        pd.DataFrame({"k": pd.Categorical(["a", "b"])}),  # categories: pickled
        np.arange(12, dtype=np.int16).reshape(3, 4),
        np.array([{"a": 1}, None], dtype=object),  # objects: pickled
    ],
    ids=["numbers", "tz-dates", "series", "int-names", "objects", "category", "array", "obj-array"],
)
def test_outputs_load_back_exactly_and_only_objects_are_pickled(value: Any, tmp_path: Path) -> None:
    digest = hash_data(value)
    saved = objects.save(tmp_path, digest, value)
    path = objects.object_path(tmp_path, digest, saved["format"])
    back = objects.load(path, saved["format"], saved["blob"])
    assert hash_data(back) == digest
    plain = isinstance(value, np.ndarray) and not value.dtype.hasobject
    frame = isinstance(value, pd.DataFrame | pd.Series) and not any(
        isinstance(c, int) for c in getattr(value, "columns", [])
    )
    numeric = frame and all(
        getattr(t, "kind", "O") in "biufmM"
        for t in (value.dtypes if isinstance(value, pd.DataFrame) else [value.dtype])
    )
    assert saved["format"] == ("npy" if plain else "arrow" if numeric else "pickle")
    with pytest.raises(objects.Unverified):
        objects.load(path, saved["format"], "0" * 32)


def test_the_object_store_is_pruned_least_recently_used_past_its_cap(
    project: Path, nbmlops: Any, client: Any, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = [
        code("import numpy as np"),
        code("size = 200000", "parameters"),
        code("big = np.ones(size) * size", "step:make"),
    ]
    write_notebook(project / "pipe.ipynb", cells)
    monkeypatch.setenv("NBMLOPS_CACHE_MAX_SIZE", "2.5MB")  # one 1.6 MB array fits, two do not
    _run(nbmlops, experiment, "--seed", "7")
    _run(nbmlops, experiment, "--seed", "7", "-p", "size=200001")
    objects_dir = project / ".nbmlops" / "objects"
    total = sum(p.stat().st_size for p in objects_dir.glob("??/*"))
    assert total <= 2.5 * 2**20
    _run(nbmlops, experiment, "--seed", "7", "-p", "size=200001")  # the newest was kept
    assert _cache_tags(client, experiment) == {"make": "hit"}
    _run(nbmlops, experiment, "--seed", "7")  # the older was pruned
    assert _cache_tags(client, experiment) == {"make": "miss"}


@pytest.fixture
def outside() -> Any:
    """A file outside the project and outside the temporary folder (whose files are
    scratch, not results)."""
    folder = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nbmlops-test-"))
    yield folder / "out.txt"
    shutil.rmtree(folder)


def test_subprocesses_and_files_written_outside_the_project_are_named_and_not_cached(
    project: Path, nbmlops: Any, client: Any, experiment: str, outside: Path
) -> None:
    cells = [
        code("import subprocess"),
        code("n = 3", "parameters"),
        code(
            "listing = subprocess.run(['ls'], capture_output=True, text=True).stdout", "step:shell"
        ),
        code(f"with open({str(outside)!r}, 'w') as fh:\n    fh.write(str(n))", "step:export"),
        code("import polars as pl\nrows = pl.read_csv('rows.csv')", "step:native"),
        code("total = n * 2", "step:plain"),
    ]
    write_notebook(project / "pipe.ipynb", cells)
    # A stand-in with polars' name: what counts is the import (polars reads in Rust).
    (project / "polars.py").write_text("def read_csv(path):\n    return [path]\n")
    first = _run(nbmlops, experiment, "--seed", "7")
    said = first.stdout + first.stderr
    assert "step 'shell': it called subprocess.Popen(ls), whose file reads" in said
    assert f"step 'export': it wrote {outside} outside the project" in said
    assert "step 'native': it uses polars, whose file reads nbmlops cannot see" in said
    _run(nbmlops, experiment, "--seed", "7")
    tags = _cache_tags(client, experiment)
    assert tags == {"shell": "miss", "export": "miss", "native": "miss", "plain": "hit"}


def test_a_file_added_to_a_globbed_folder_is_a_change(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    (project / "parts").mkdir()
    (project / "parts" / "a.csv").write_text("x\n1\n")
    cells = [
        code("import glob\nimport pandas as pd\nimport nbmlops"),
        code(
            "total = sum(pd.read_csv(p)['x'].sum() for p in sorted(glob.glob('parts/*.csv')))\n"
            "nbmlops.log_metric('total', float(total))",
            "step:load",
        ),
    ]
    write_notebook(project / "pipe.ipynb", cells)
    _run(nbmlops, experiment, "--seed", "7")
    (project / "parts" / "b.csv").write_text("x\n5\n")
    _run(nbmlops, experiment, "--seed", "7")
    assert _cache_tags(client, experiment) == {"load": "miss"}
    assert pipeline_runs(client, experiment)[0].data.metrics == {"total": 6.0}


def test_a_resealed_entry_with_a_better_score_and_another_model_never_reaches_promote(
    project: Path, nbmlops: Any, client: Any, experiment: str
) -> None:
    write_notebook(project / "pipe.ipynb", classifier())
    _run(nbmlops, experiment)
    honest = pipeline_runs(client, experiment)[0]
    cache = project / ".nbmlops"
    entries = _entries(cache)
    # The attacker points the cached train step at another model and the cached evaluate
    # step at a better score, and re-seals both the only way they can: without the key.
    path, doc = entries["train"]
    for event in doc["entry"]["events"]:
        if event.get("kind") == "model":
            event["uri"] = "models:/m-0123456789abcdef0123456789abcdef"
    _reseal_unkeyed(path, doc)
    path, doc = entries["evaluate"]
    for event in doc["entry"]["events"]:
        if event.get("name") == "score":
            event["value"] = 0.99
    _reseal_unkeyed(path, doc)
    _run(nbmlops, experiment)
    assert _cache_tags(client, experiment) == {
        "load": "hit",
        "split": "hit",
        "train": "miss",
        "evaluate": "miss",
    }
    result = nbmlops(
        "promote", "--experiment", experiment, "--metric", "score", "--model-name", experiment
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = pipeline_runs(client, experiment)
    assert [r.data.metrics["score"] for r in runs] == [0.9, 0.9]
    champion = client.get_model_version_by_alias(experiment, "champion")
    assert champion.run_id in {r.info.run_id for r in runs}
    uris = {r.data.tags["nbmlops.model_uri"] for r in runs}
    assert "models:/m-0123456789abcdef0123456789abcdef" not in uris
    assert honest.data.tags["nbmlops.model_uri"] in uris
