"""Production-like inputs for the demo: the breast-cancer features as they are, and shifted.

    python -m nbmlops.monitor.demo FOLDER

writes ``FOLDER/unshifted.csv`` (the data as it is) and ``FOLDER/shifted.csv`` (the
same rows with tumours measured 30% larger), for ``nbmlops monitor drift --current``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(folder: str) -> None:
    from sklearn.datasets import load_breast_cancer

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    features = load_breast_cancer(as_frame=True).data
    sample = features
    sample.to_csv(out / "unshifted.csv", index=False)
    shifted = sample.copy()
    for column in ("mean radius", "mean perimeter", "mean area", "worst radius"):
        shifted[column] *= 1.3
    shifted.to_csv(out / "shifted.csv", index=False)
    print(f"wrote {out / 'unshifted.csv'} and {out / 'shifted.csv'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".nbmlops/demo")
