"""The step cache's object store against what a user would do instead, alternating,
medians and ratios, on a DataFrame of N rows x 20 float columns (fresh values each round).

* **restore**: what a cache hit does to bring the frame back (read the file once, check
  its MAC, decode the Arrow IPC) against ``pd.read_parquet`` of the same data (the target:
  no slower) and against unpickling it (the old format, which ran code);
* **save**: what a step's end does (encode to Arrow, MAC, write) against ``to_parquet``
  and against ``cloudpickle.dump``;
* **size** of each file against the frame's bytes in memory.

    python bench/bench_store.py [--rows 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
from _common import timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbmlops.cache import objects  # noqa: E402
from nbmlops.capture.hashing import hash_data  # noqa: E402


def one_round(i: int, root: Path, rows: int, times: dict[str, list[float]]) -> dict[str, int]:
    """Save and restore one fresh frame each way (in alternating order); the file sizes."""
    rng = np.random.default_rng(i)
    frame = pd.DataFrame(rng.normal(size=(rows, 20)), columns=[f"f{j}" for j in range(20)])
    digest = hash_data(frame)
    store = root / f"objects-{i}"
    parquet, pkl = root / f"{i}.parquet", root / f"{i}.pkl"
    saved: dict[str, object] = {}
    sides = {
        "save: nbmlops (Arrow + MAC)": lambda: saved.update(objects.save(store, digest, frame)),
        "save: to_parquet": lambda: frame.to_parquet(parquet),
        "save: cloudpickle": lambda: pkl.write_bytes(cloudpickle.dumps(frame, protocol=5)),
    }
    for label in list(sides) if i % 2 == 0 else list(reversed(sides)):  # alternate
        times.setdefault(label, []).append(timed(sides[label]))
    fmt, blob = str(saved["format"]), str(saved["blob"])
    path = objects.object_path(store, digest, fmt)
    loads = {
        "restore: nbmlops (read + MAC + Arrow)": lambda: objects.load(path, fmt, blob),
        "restore: read_parquet": lambda: pd.read_parquet(parquet),
        "restore: unpickle (runs code)": lambda: cloudpickle.loads(pkl.read_bytes()),
    }
    for label in list(loads) if i % 2 == 0 else list(reversed(loads)):
        times.setdefault(label, []).append(timed(loads[label]))
    assert fmt == "arrow" and hash_data(objects.load(path, fmt, blob)) == digest
    return {
        "nbmlops (Arrow IPC)": path.stat().st_size,
        "parquet (snappy)": parquet.stat().st_size,
        "cloudpickle": pkl.stat().st_size,
        "in memory": int(frame.memory_usage(deep=True).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-store-") as tmp:
        for i in range(args.repeat):
            sizes = one_round(i, Path(tmp), args.rows, times)
            print(f"round {i + 1}/{args.repeat} done", file=sys.stderr)
    print(f"\nobject store, {args.rows:,} rows x 20 floats, {args.repeat} rounds, medians")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"  {k:40s} {v:7.3f} s")
    r = med["restore: nbmlops (read + MAC + Arrow)"]
    s = med["save: nbmlops (Arrow + MAC)"]
    print(
        f"  restore ratio nbmlops / read_parquet: {r / med['restore: read_parquet']:.2f} (target <= 1)"
    )
    print(f"  restore ratio nbmlops / unpickle:     {r / med['restore: unpickle (runs code)']:.2f}")
    print(f"  save ratio nbmlops / to_parquet:      {s / med['save: to_parquet']:.2f}")
    print(f"  save ratio nbmlops / cloudpickle:     {s / med['save: cloudpickle']:.2f}")
    for k, v in sizes.items():
        print(f"  size {k:22s} {v / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
