"""A 30-day monitor report over 3,000,000 logged predictions, and how close CBPE gets.

Logs are generated in the service's format (``bento_service.log_records``: one JSON line
per record with timestamp, request_id, latency_ms, 8 features, prediction and proba,
rotated files per worker) with labels for a third of them in the feedback format. A binary
classifier whose probabilities are over-confident scores rows whose features shift from
day 15 on (covariate shift: P(y | x) stays, accuracy moves).

Printed: reading the logs with the pyarrow reader against the line-by-line Python reader
it replaced (rounds alternate; medians and the ratio), the time of the whole report
(read, join, per-day performance and CBPE, segments, per-day drift against the reference
profile, the HTML page) and, per window, CBPE's estimate minus the realised accuracy and
F1 (mean, sd, max |.|), calibrated on a labelled held-out reference set (what
``log_model(reference=...)`` stores: the model's probabilities on 5,000 unshifted rows and
their labels), on earlier labels and uncalibrated.

    .venv/bin/python bench/bench_monitor.py [--records N] [--rounds R] [--days D]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbmlops.capture.profile import build_profile
from nbmlops.monitor.estimate import Calibration, estimate
from nbmlops.monitor.feedback import join_labels, read_feedback
from nbmlops.monitor.performance import evaluate
from nbmlops.monitor.segments import segment
from nbmlops.monitor.timeline import build_timeline, render_html
from nbmlops.serve.monitoring import read_monitor_logs

NUMERIC = [f"x{i}" for i in range(6)]
WEIGHTS = np.array([1.2, -0.8, 0.5, 0.3, 0.0, 0.0])
PLANS, REGIONS = ["free", "pro", "team"], ["eu", "us", "apac", "latam"]
FILE_RECORDS = 400_000  # records per log file before it rotates (about 100 MB)


def features(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    frame = pd.DataFrame({c: rng.normal(0, 1, n) for c in NUMERIC})
    frame["x0"] += shift
    frame["plan"] = rng.choice(PLANS, n, p=[0.5, 0.35, 0.15])
    frame["region"] = rng.choice(REGIONS, n)
    return frame


def truth(frame: pd.DataFrame) -> np.ndarray:
    logit = frame[NUMERIC].to_numpy() @ WEIGHTS + np.where(frame["plan"] == "team", 0.7, 0.0)
    return np.asarray(1 / (1 + np.exp(-logit)))


def model_proba(p: np.ndarray) -> np.ndarray:
    """The model: right ranking, over-confident probabilities."""
    return np.asarray(1 / (1 + np.exp(-2.0 * np.log(p / (1 - p)))))


def held_out(rows: int = 5000, seed: int = 2) -> pd.DataFrame:
    """A labelled reference set (unshifted) as ``read_calibration_document`` returns it."""
    rng = np.random.default_rng(seed)
    p = truth(features(rng, rows, 0.0))
    p_model = model_proba(p)
    labels = (rng.random(rows) < p).astype(int).astype(str)
    return pd.DataFrame({"proba_0": 1 - p_model, "proba_1": p_model, "label": labels})


def generate(folder: Path, records: int, days: int, seed: int = 0) -> pd.DataFrame:
    """Write the logs under ``folder`` (a monitor's folder); returns the reference rows."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=days - 1)
    per_day = records // days
    data, feedback = folder / "data", folder / "feedback"
    data.mkdir(parents=True)
    feedback.mkdir()
    writers = {w: _Rotating(data, w) for w in (0, 1)}
    with open(feedback / "feedback.0.log", "w") as labels_out:
        for day in range(days):
            frame = features(rng, per_day, shift=0.6 * max(0, day - 14) / (days - 15))
            p = truth(frame)
            y = rng.random(per_day) < p
            p_model = model_proba(p)
            seconds = np.sort(rng.uniform(0, 86400, per_day))
            stamps = (start + pd.Timedelta(days=day) + pd.to_timedelta(seconds, "s")).strftime(
                "%Y-%m-%dT%H:%M:%S.%f+00:00"
            )
            latency = np.round(rng.lognormal(1.5, 0.4, per_day), 3)
            rows = frame.to_dict(orient="records")
            for i, row in enumerate(rows):
                rid = f"{day:02d}-{i:07d}"
                line = {"timestamp": stamps[i], "request_id": rid, "latency_ms": latency[i], **row}
                line["prediction"] = int(p_model[i] > 0.5)
                line["proba"] = {"0": 1 - p_model[i], "1": p_model[i]}
                writers[i % 2].write(json.dumps(line) + "\n")
                if i % 3 == 0:
                    labels_out.write(
                        json.dumps({"timestamp": stamps[i], "request_id": rid, "label": int(y[i])})
                        + "\n"
                    )
    for w in writers.values():
        w.close()
    return features(np.random.default_rng(seed + 1), 15_000, 0.0)


class _Rotating:
    def __init__(self, folder: Path, worker: int) -> None:
        self.folder, self.worker, self.count, self.part = folder, worker, 0, 0
        self.out = open(folder / f"data.{worker}.log.p0", "w")  # noqa: SIM115

    def write(self, line: str) -> None:
        if self.count and self.count % FILE_RECORDS == 0:
            self.out.close()
            self.part += 1
            self.out = open(self.folder / f"data.{self.worker}.log.p{self.part}", "w")  # noqa: SIM115
        self.out.write(line)
        self.count += 1

    def close(self) -> None:
        """Name the parts as the service does: the newest is data.N.log, older .1, .2..."""
        self.out.close()
        for k in range(self.part + 1):
            number = self.part - k
            name = f"data.{self.worker}.log" + (f".{number}" if number else "")
            (self.folder / f"data.{self.worker}.log.p{k}").rename(self.folder / name)


def python_reader(folder: Path) -> pd.DataFrame:
    """The reader pyarrow replaced: json.loads per line, one DataFrame of the dicts."""
    rows = []
    for file in sorted((folder / "data").glob("data.*.log*")):
        with open(file, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                rows.append(row)
    frame = pd.DataFrame(rows)
    probas = pd.DataFrame(list(frame.pop("proba"))).add_prefix("proba_")
    frame = frame.join(probas)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601", utc=True)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def read_joined(folder: Path) -> pd.DataFrame:
    return join_labels(read_monitor_logs(folder), read_feedback(folder)).frame


def report(folder: Path, profile: dict[str, Any]) -> tuple[str, Any]:
    joined = join_labels(read_monitor_logs(folder), read_feedback(folder))
    perf = evaluate(joined.frame, model="bench/1", window="1d", training={"accuracy": 0.8})
    line = build_timeline(
        joined.frame,
        model="bench/1",
        reference=profile,
        performance=perf,
        segments=segment(joined.frame, ["plan", "region"]),
    )
    return render_html(line), perf


def closeness(name: str, diffs: list[float]) -> str:
    a = np.asarray(diffs)
    return (
        f"  {name:<32} mean {a.mean():+.4f}  sd {a.std(ddof=1):.4f}  max |.| {np.abs(a).max():.4f}"
    )


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=3_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model-v1"
        started = time.perf_counter()
        reference = generate(folder, args.records, args.days)
        size = sum(f.stat().st_size for f in (folder / "data").iterdir()) / 1e6
        print(
            f"generated {args.records} records over {args.days} days "
            f"({size:.0f} MB of logs) in {time.perf_counter() - started:.1f} s"
        )
        profile = build_profile(reference)
        arrow, python, whole = [], [], []
        perf = None
        for _ in range(args.rounds):
            t = time.perf_counter()
            read_monitor_logs(folder)
            arrow.append(time.perf_counter() - t)
            t = time.perf_counter()
            python_reader(folder)
            python.append(time.perf_counter() - t)
            t = time.perf_counter()
            page, perf = report(folder, profile)
            whole.append(time.perf_counter() - t)
        a, p = statistics.median(arrow), statistics.median(python)
        print(f"read logs, pyarrow reader:     median {a:.2f} s")
        print(f"read logs, python line reader: median {p:.2f} s   ratio {p / a:.1f}x")
        print(
            f"30-day report (read, join, performance, CBPE, segments, drift, HTML): "
            f"median {statistics.median(whole):.2f} s ({len(page) / 1e6:.1f} MB page)"
        )
        assert perf is not None
        on_reference = evaluate(
            read_joined(folder), model="bench/1", window="1d", reference=held_out()
        )
        print(
            f"CBPE estimate minus realised over {len(perf.windows) - 1} daily windows "
            "(all but the first, which has no earlier labels to calibrate on):"
        )
        joined = read_joined(folder)
        raw = Calibration(["0", "1"])
        print(f"  (reference: {on_reference.calibrated_on()})")
        for metric in ("accuracy", "f1"):
            on_ref = [
                w.estimated[metric] - w.realised[metric]
                for w in on_reference.windows[1:]
                if w.realised
            ]
            print(closeness(f"{metric}, on the reference", on_ref))
            calibrated = [
                w.estimated[metric] - w.realised[metric] for w in perf.windows[1:] if w.realised
            ]
            print(closeness(f"{metric}, on production labels", calibrated))
            uncalibrated = []
            stamps = joined["timestamp"]
            for w in perf.windows[1:]:
                part = joined[(stamps >= pd.Timestamp(w.start)) & (stamps < pd.Timestamp(w.end))]
                uncalibrated.append(estimate(part, raw)[metric] - w.realised[metric])
            print(closeness(f"{metric}, uncalibrated", uncalibrated))
        first, last = perf.windows[0], perf.windows[-1]
        print(
            f"accuracy day 1 {first.realised['accuracy']:.4f} (est. {first.estimated['accuracy']:.4f}, "
            f"on the reference {on_reference.windows[0].estimated['accuracy']:.4f}), "
            f"day {len(perf.windows)} {last.realised['accuracy']:.4f} "
            f"(est. {last.estimated['accuracy']:.4f})"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
