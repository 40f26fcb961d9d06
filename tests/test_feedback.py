"""Labels joined with logged predictions: nothing dropped silently, and the log reader
(pyarrow, with its line-by-line fallback) reads what the service writes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nbmlops.monitor.errors import MonitorInputError
from nbmlops.monitor.feedback import (
    join_labels,
    read_feedback,
    read_labels_file,
    write_feedback,
)
from nbmlops.serve.monitoring import read_monitor_logs


def log_line(i: int, *, second: int = 0, a: float | int = 0.5) -> str:
    """One record as the service's log_records writes it."""
    return json.dumps(
        {
            "timestamp": f"2026-11-02T10:00:{second:02d}.000001+00:00",
            "request_id": f"r{i}",
            "latency_ms": 3.25,
            "a": a,
            "plan": "pro",
            "prediction": i % 2,
            "proba": {"0": 0.3, "1": 0.7},
        }
    )


def write_logs(folder: Path, lines: dict[str, list[str]]) -> Path:
    data = folder / "data"
    data.mkdir(parents=True)
    for name, content in lines.items():
        (data / name).write_text("".join(line + "\n" for line in content))
    return folder


def test_rotated_logs_a_cut_line_and_mixed_number_types_are_read(tmp_path: Path) -> None:
    folder = write_logs(
        tmp_path / "m-v1",
        {
            "data.0.log.1": [log_line(0, second=1), log_line(1, second=2, a=2)],
            "data.0.log": [log_line(2, second=3, a=1.5), log_line(3, second=4)[:40]],
            "data.1.log": [log_line(4, second=0)],
        },
    )
    frame = read_monitor_logs(folder)
    assert list(frame["request_id"]) == ["r4", "r0", "r1", "r2"]  # time order, cut line gone
    assert list(frame.columns) == [
        "request_id", "timestamp", "latency_ms", "a", "plan", "prediction", "proba_0", "proba_1"
    ]  # fmt: skip
    assert frame["a"].tolist() == [0.5, 0.5, 2.0, 1.5]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["proba_1"].tolist() == [0.7] * 4


def test_join_reports_unknown_ids_duplicates_and_repeated_predictions(tmp_path: Path) -> None:
    folder = write_logs(
        tmp_path / "m-v1",
        {"data.0.log": [log_line(i, second=i) for i in range(4)] + [log_line(3, second=9)]},
    )
    write_feedback(folder, pd.DataFrame({"request_id": ["r0", "r1", "nope"], "label": [0, 0, 1]}))
    write_feedback(folder, pd.DataFrame({"request_id": ["r1"], "label": [1]}), worker="3")
    labels = read_feedback(folder)
    assert list(labels.columns) == ["timestamp", "request_id", "label"]
    assert len(labels) == 4
    joined = join_labels(read_monitor_logs(folder), labels)
    assert len(joined.frame) == 5  # every prediction kept, labelled or not
    assert joined.matched == 2
    assert joined.unknown == ["nope"]
    assert joined.duplicates == ["r1"]
    assert joined.repeated == ["r3"]
    assert joined.labelled.set_index("request_id")["label"].to_dict() == {"r0": 0, "r1": 1}
    assert joined.summary() == (
        "2 of 5 predictions labelled; 1 unknown ids, 1 duplicate labels, "
        "1 ids predicted more than once"
    )


def test_labels_of_mixed_types_are_read(tmp_path: Path) -> None:
    write_feedback(tmp_path, pd.DataFrame({"request_id": ["a", "b"], "label": ["yes", 1]}))
    assert read_feedback(tmp_path)["label"].tolist() == ["yes", 1]


def test_no_feedback_yet_is_an_empty_table(tmp_path: Path) -> None:
    assert read_feedback(tmp_path).empty


def test_a_labels_file_without_the_columns_names_them(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    pd.DataFrame({"id": ["a"], "truth": [1]}).to_csv(path, index=False)
    with pytest.raises(MonitorInputError, match="no column 'request_id', 'label'") as caught:
        read_labels_file(path, "request_id", "label")
    assert "--id-column" in caught.value.fix
    pd.DataFrame({"id": ["a", "b"], "truth": [1, None]}).to_csv(path, index=False)
    with pytest.raises(MonitorInputError, match="empty id or label.*row 3"):
        read_labels_file(path, "id", "truth")
    with pytest.raises(MonitorInputError, match="no such file"):
        read_labels_file(tmp_path / "x.csv", "id", "truth")
