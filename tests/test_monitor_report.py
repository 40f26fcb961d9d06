"""The over-time report, CBPE and segments on logs in the service's format: a seeded
classifier whose inputs shift from day 6 on, with over-confident probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbmlops.capture.profile import build_profile
from nbmlops.monitor.feedback import load_joined
from nbmlops.monitor.performance import Rule, evaluate
from nbmlops.monitor.segments import segment
from nbmlops.monitor.timeline import build_timeline, render_html
from nbmlops.promote.gates import parse_gate

DAYS, PER_DAY = 10, 3000


def rows(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x0": rng.normal(shift, 1, n),
            "x1": rng.normal(0, 1, n),
            "plan": rng.choice(["free", "pro", "team"], n),
        }
    )


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A monitor folder: DAYS days of predictions (all labelled except the last day's),
    the labels of plan 'team' noisier (the model is worse there)."""
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("logs") / "m-v1"
    (folder / "data").mkdir(parents=True)
    (folder / "feedback").mkdir()
    start = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=DAYS - 1)
    with (
        open(folder / "data" / "data.0.log", "w") as data,
        open(folder / "feedback" / "feedback.0.log", "w") as labels,
    ):
        for day in range(DAYS):
            frame = rows(rng, PER_DAY, 1.0 if day >= 5 else 0.0)
            p = 1 / (1 + np.exp(-(1.5 * frame["x0"] - frame["x1"])))
            p_model = 1 / (1 + np.exp(-2 * np.log(p / (1 - p))))  # over-confident
            y = rng.random(PER_DAY) < p
            y = np.where((frame["plan"] == "team") & (rng.random(PER_DAY) < 0.3), ~y, y)
            stamp = (start + pd.Timedelta(days=day, hours=12)).isoformat()
            for i, row in enumerate(frame.to_dict(orient="records")):
                rid = f"{day}-{i}"
                line = {"timestamp": stamp, "request_id": rid, "latency_ms": 2.0 + day, **row}
                line["prediction"] = int(p_model[i] > 0.5)
                line["proba"] = {"0": 1 - p_model[i], "1": p_model[i]}
                data.write(json.dumps(line) + "\n")
                if day < DAYS - 1:
                    labels.write(
                        json.dumps({"timestamp": stamp, "request_id": rid, "label": int(y[i])})
                        + "\n"
                    )
    return folder, rows(np.random.default_rng(1), 5000, 0.0)


def test_cbpe_calibrated_on_earlier_labels_tracks_realised_accuracy(
    logged: tuple[Path, pd.DataFrame],
) -> None:
    folder, _ = logged
    joined = load_joined(folder)
    result = evaluate(joined.frame, model="m/1", window="1d")
    assert len(result.windows) == DAYS
    last = result.windows[-1]
    assert last.labelled == 0 and not last.realised and last.estimated["accuracy"] > 0.5
    judged = [w for w in result.windows[1:-1]]
    assert all(w.calibrated_on >= 3000 for w in judged)
    errors = [abs(w.estimated["accuracy"] - w.realised["accuracy"]) for w in judged]
    assert np.mean(errors) < 0.03
    raw = result.windows[0]  # no earlier labels: the over-confident probabilities as they are
    assert raw.calibrated_on == 0
    assert raw.estimated["accuracy"] - raw.realised["accuracy"] > 0.05


def test_a_drop_below_training_or_a_gate_alerts_on_the_latest_labelled_window(
    logged: tuple[Path, pd.DataFrame],
) -> None:
    frame = load_joined(logged[0]).frame
    fine = evaluate(frame, model="m/1", training={"accuracy": 0.8}, rule=Rule(max_drop=0.2))
    assert not fine.alert
    drop = evaluate(
        frame, model="m/1", training={"accuracy": 0.99, "f1": 0.99},
        rule=Rule(max_drop=0.05, metric="accuracy"),
    )  # fmt: skip
    assert drop.alert and "worse than at training (0.9900)" in drop.alerts[0]
    assert drop.windows[-2].start[:10] in drop.alerts[0]  # the last day has no labels
    gate = evaluate(frame, model="m/1", rule=Rule(gate=parse_gate("roc_auc>=0.99")))
    assert gate.alert and "breaks roc_auc>=0.99" in gate.summary()


def test_segments_flag_the_plan_the_model_is_worse_on(logged: tuple[Path, pd.DataFrame]) -> None:
    frame = load_joined(logged[0]).frame
    found = segment(frame, ["plan"])
    largest = found.largest
    assert largest is not None and largest.column == "plan" and largest.gap_of == "metric"
    assert "team" in largest.between and largest.gap > 0.1
    assert {g.value for g in largest.groups} == {"free", "pro", "team"}


def test_the_report_shows_drift_from_the_day_the_inputs_shifted(
    logged: tuple[Path, pd.DataFrame],
) -> None:
    folder, reference = logged
    frame = load_joined(folder).frame
    perf = evaluate(frame, model="m/1", training={"accuracy": 0.8})
    line = build_timeline(
        frame,
        model="m/1",
        reference=build_profile(reference),
        performance=perf,
        segments=segment(frame, ["plan"]),
    )
    assert line.traffic == [PER_DAY] * DAYS
    assert line.latency_p50 == [2.0 + d for d in range(DAYS)]
    assert all(line.drifted["x0"][5:])  # flagged from the shift on (flags before it are the
    # drift rule's false alarms, not the report's); its PSI is many times the unshifted one
    early, late = line.drift["x0"][:5], line.drift["x0"][5:]
    assert min(v or 0.0 for v in late) > 5 * max(v or 0.0 for v in early)
    assert set(line.predictions) == {"0", "1"}
    page = render_html(line)
    assert page.count("data:image/svg+xml;base64,") == 4
    assert "<h2>Input drift per window</h2>" in page and "<h2>Segments</h2>" in page
    assert "largest gap: plan metric" in page and f"{PER_DAY * DAYS} predictions" in page


def test_without_a_reference_the_report_says_so(logged: tuple[Path, pd.DataFrame]) -> None:
    frame = load_joined(logged[0]).frame
    page = render_html(build_timeline(frame, model="m/1", window="12h"))
    assert "no reference profile: drift is not shown" in page
    assert page.count("data:image/svg+xml;base64,") == 2


def test_a_regressor_gets_rmse_and_mae_and_a_rise_in_rmse_alerts() -> None:
    stamps = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(200) * 600, "s")
    rng = np.random.default_rng(5)
    truth = rng.normal(10, 2, 200)
    frame = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(200)],
            "timestamp": stamps,
            "x": rng.normal(size=200),
            "prediction": truth + rng.normal(0, 1, 200),
            "label": truth,
        }
    )
    result = evaluate(
        frame, model="r/1", training={"rmse": 0.5, "accuracy": 0.9}, rule=Rule(max_drop=0.2)
    )
    assert result.kind == "regressor" and result.training == {"rmse": 0.5}
    first = result.windows[0].realised
    assert set(first) == {"rmse", "mae"} and 0.7 < first["rmse"] < 1.3
    assert first["mae"] < first["rmse"] and not result.windows[0].estimated
    assert (
        result.alert and "rmse" in result.alerts[0] and "worse than at training" in result.alerts[0]
    )
    line = build_timeline(frame, model="r/1", performance=result)
    assert set(line.predictions) == {"p10", "p50", "p90"}
    assert render_html(line).count("data:image/svg+xml;base64,") == 3
