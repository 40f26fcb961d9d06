"""``nbmlops monitor drift``: reference profiles, the statistics against scipy, the command
line end to end (exit codes, reports, errors) and retraining on drift, on real files and a
real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import code, pipeline_runs, write_notebook
from scipy import stats
from scipy.spatial.distance import jensenshannon

from nbmlops.capture.profile import (
    ProfileError,
    build_profile,
    load_profile,
    sample_frame,
    save_profile,
)
from nbmlops.monitor.drift import Thresholds, check_drift
from nbmlops.monitor.errors import MonitorInputError


def frame(rows: int, seed: int, shift: float = 0.0, shares: tuple[float, ...] = (0.5, 0.3, 0.2)):
    """Inputs of a model: two numeric features and a categorical one."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(40 + shift, 10, rows),
            "visits": rng.integers(0, 6, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows, p=list(shares)),
        }
    )


@pytest.fixture
def files(project: Path) -> dict[str, Path]:
    paths = {
        "reference": project / "train.csv",
        "same": project / "today.csv",
        "shifted": project / "shifted.parquet",
    }
    frame(20_000, seed=0).to_csv(paths["reference"], index=False)
    frame(3_000, seed=1).to_csv(paths["same"], index=False)
    # age's mean moves by half a standard deviation; plan's shares change
    frame(3_000, seed=2, shift=5.0, shares=(0.3, 0.3, 0.4)).to_parquet(paths["shifted"])
    return paths


def plots_in(html: str) -> int:
    return html.count("<img class='plot'")


# --- the command line -------------------------------------------------------------------


def test_unshifted_sample_passes_and_shifted_one_drifts(
    files: dict[str, Path], nbmlops: Any, project: Path
) -> None:
    same = nbmlops(
        "monitor", "drift", "--reference", "train.csv", "--current", "today.csv",
        "--report", "same.html", "--json", "same.json",
    )  # fmt: skip
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.strip().splitlines()[-1].startswith("no drift: 3 features compared")
    assert "DRIFT" not in same.stdout
    assert json.loads((project / "same.json").read_text())["drifted"] == []

    shifted = nbmlops(
        "monitor", "drift", "--reference", "train.csv", "--current", "shifted.parquet",
        "--report", "out/drift.html", "--json", "out/drift.json",
    )  # fmt: skip
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr
    assert shifted.stdout.strip().splitlines()[-1] == "drift in 2 of 3 features: age, plan"
    marked = {
        line.split()[0] for line in shifted.stdout.splitlines() if line.rstrip().endswith("DRIFT")
    }
    assert marked == {"age", "plan"}

    result = json.loads((project / "out/drift.json").read_text())
    assert result["drifted"] == ["age", "plan"]
    by_name = {f["name"]: f for f in result["features"]}
    age, plan, visits = by_name["age"], by_name["plan"], by_name["visits"]
    assert age["verdict"] == "drift" and plan["verdict"] == "drift"
    assert age["stats"]["wasserstein_sd"] == pytest.approx(0.5, abs=0.05)  # 5 / sd 10
    assert age["stats"]["ks_pvalue_holm"] < 0.01
    w = age["stats"]["wasserstein_sd"]
    assert age["reasons"][0].startswith(f"Wasserstein {w:.3g} sd >= 0.1, KS p ")
    assert age["reasons"][0].endswith("(Holm) < 0.01")
    assert plan["stats"]["js_distance"] >= 0.1 and plan["stats"]["chi2_pvalue_holm"] < 0.01
    assert visits["verdict"] == "none" and not visits["drifted"]
    assert result["tests"] == 3, "one test per feature: nothing is missing"

    html = (project / "out/drift.html").read_text()
    assert plots_in(html) == 3, "one plot per feature"
    assert "drift in 2 of 3 features: age, plan" in html
    assert html.count('<tr class="drifted">') == 2
    assert "src='http" not in html and "<script src" not in html, "self-contained"
    assert plots_in((project / "same.html").read_text()) == 3


def test_thresholds_decide(files: dict[str, Path], nbmlops: Any) -> None:
    """Effects below loose enough thresholds are "small", not drift; the rule is printed."""
    loose = nbmlops(
        "monitor", "drift", "--reference", "train.csv", "--current", "shifted.parquet",
        "--wasserstein-threshold", "5", "--js-threshold", "1", "--pvalue", "0.001",
    )  # fmt: skip
    assert loose.returncode == 0, loose.stdout + loose.stderr
    assert "numeric: Wasserstein >= 5 sd and KS p < 0.001 after Holm" in loose.stdout
    assert loose.stdout.strip().splitlines()[-1] == (
        "no drift: 3 features compared, none past the thresholds; small changes in age, plan"
    )
    marked = {li.split()[0] for li in loose.stdout.splitlines() if li.rstrip().endswith("small")}
    assert marked == {"age", "plan"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--current", "missing.csv"], "missing.csv: no such file or folder"),
        (
            ["--current", "nocol.csv"],
            "1 reference feature(s) missing from the current data: visits",
        ),
        (
            ["--current", "text.csv"],
            "column 'age' is numeric in the reference but holds non-numeric",
        ),
        (["--current", "notes.txt"], "notes.txt: cannot read .txt"),
        ([], "Missing option '--current'"),
        (["--current", "today.csv", "--pvalue", "2"], "--pvalue: 2.0 is not in 0..1"),
        (
            ["--current", "today.csv", "--wasserstein-threshold", "-1"],
            "--wasserstein-threshold: -1.0 is negative",
        ),
    ],
)
def test_bad_inputs_exit_2_with_a_clear_message(
    files: dict[str, Path], nbmlops: Any, project: Path, args: list[str], expected: str
) -> None:
    frame(50, seed=3).drop(columns=["visits"]).to_csv(project / "nocol.csv", index=False)
    text = frame(50, seed=3).astype({"age": object})
    text.loc[7, "age"] = "forty"
    text.to_csv(project / "text.csv", index=False)
    (project / "notes.txt").write_text("age\n1\n")
    result = nbmlops("monitor", "drift", "--reference", "train.csv", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    if "text.csv" in args:
        assert "'forty'" in result.stderr and "first at row 7" in result.stderr


def test_missing_columns_allowed_are_reported_and_new_columns_ignored(
    files: dict[str, Path], nbmlops: Any, project: Path
) -> None:
    current = frame(2_000, seed=4).drop(columns=["visits"]).assign(prediction=1.0)
    current.to_csv(project / "logs.csv", index=False)
    result = nbmlops(
        "monitor", "drift", "--reference", "train.csv", "--current", "logs.csv",
        "--allow-missing-columns", "--json", "r.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "missing from current (not compared): visits" in result.stdout
    assert "not in the reference (ignored): prediction" in result.stdout
    saved = json.loads((project / "r.json").read_text())
    assert saved["missing_columns"] == ["visits"] and saved["new_columns"] == ["prediction"]
    assert [f["name"] for f in saved["features"]] == ["age", "plan"]


def test_neither_or_both_references_is_a_usage_error(files: dict[str, Path], nbmlops: Any) -> None:
    result = nbmlops("monitor", "drift", "--current", "today.csv")
    assert result.returncode == 2
    assert "give either MODEL[@ALIAS] or --reference FILE" in result.stderr


def test_saved_profile_as_reference(files: dict[str, Path], nbmlops: Any, project: Path) -> None:
    save_profile(build_profile(pd.read_csv(files["reference"])), project / "profile.json")
    same = nbmlops("monitor", "drift", "--reference", "profile.json", "--current", "today.csv")
    assert same.returncode == 0, same.stdout + same.stderr
    shifted = nbmlops(
        "monitor", "drift", "--reference", "profile.json", "--current", "shifted.parquet"
    )
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr
    assert shifted.stdout.strip().splitlines()[-1] == "drift in 2 of 3 features: age, plan"


# --- retraining -------------------------------------------------------------------------


def test_retrain_on_drift_runs_the_notebook_tagged_with_the_report(
    files: dict[str, Path], nbmlops: Any, client: Any, project: Path
) -> None:
    write_notebook(
        project / "train_model.ipynb",
        [code("rows = 10", "parameters"), code("import nbmlops\nnbmlops.log_metric('rows', rows)")],
    )
    result = nbmlops(
        "monitor", "drift", "--reference", "train.csv", "--current", "shifted.parquet",
        "--retrain", "train_model.ipynb", "--report", "drift.html",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(li for li in result.stdout.splitlines() if li.startswith("retrain run "))
    run_id = line.split()[2]
    [run] = pipeline_runs(client, "train_model")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["nbmlops.retrain.trigger"] == "drift"
    assert tags["nbmlops.retrain.drift_report"] == f"runs:/{run_id}/drift/drift.json"
    assert "nbmlops.retrain.model" not in tags  # a file reference, no model
    artifacts = {a.path for a in client.list_artifacts(run_id, "drift")}
    assert artifacts == {"drift/drift.json", "drift/drift.html"}
    local = client.download_artifacts(run_id, "drift/drift.json", str(project))
    assert json.loads(Path(local).read_text())["drifted"] == ["age", "plan"]


def test_a_retrain_notebook_that_cannot_run_is_refused_before_comparing(
    files: dict[str, Path], nbmlops: Any
) -> None:
    result = nbmlops(
        "monitor", "drift", "--reference", "train.csv", "--current", "shifted.parquet",
        "--retrain", "nope.ipynb",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "nope.ipynb" in result.stderr and result.stdout == ""


def test_no_retrain_without_drift(files: dict[str, Path], nbmlops: Any, project: Path) -> None:
    write_notebook(project / "train_model.ipynb", [code("raise SystemExit('must not run')")])
    result = nbmlops(
        "monitor", "drift", "--reference", "train.csv", "--current", "today.csv",
        "--retrain", "train_model.ipynb",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "retrain" not in result.stdout


# --- the statistics against scipy and numpy ---------------------------------------------


def psi_by_numpy(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI as documented, written independently: deciles of the reference, open ends."""
    cuts = np.unique(np.quantile(reference, np.arange(1, 10) / 10))
    edges = np.concatenate(([-np.inf], cuts, [np.inf]))
    # bins are (a, b]: count values <= b minus values <= a
    ref = np.diff([np.sum(reference <= e) for e in edges]).astype(float)
    cur = np.diff([np.sum(current <= e) for e in edges]).astype(float)
    p = np.maximum(ref / ref.sum(), 1e-4)
    q = np.maximum(cur / cur.sum(), 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


@pytest.mark.parametrize(("n_ref", "n_cur"), [(600, 400), (30_000, 12_000)])
def test_numeric_statistics_match_scipy(n_ref: int, n_cur: int) -> None:
    rng = np.random.default_rng(n_ref)
    ref = pd.DataFrame(
        {"x": rng.normal(0, 1, n_ref), "ties": rng.integers(0, 8, n_ref).astype(float)}
    )
    cur = pd.DataFrame(
        {"x": rng.normal(0.1, 1.1, n_cur), "ties": rng.integers(0, 9, n_cur).astype(float)}
    )
    result = check_drift(ref, cur)
    for f in result.features:
        res = stats.ks_2samp(ref[f.name], cur[f.name])
        assert f.stats["ks_statistic"] == pytest.approx(res.statistic, abs=1e-12)
        assert f.stats["ks_pvalue"] == pytest.approx(res.pvalue, rel=1e-9, abs=1e-300)
        assert f.stats["ks_method"] == ("exact" if max(n_ref, n_cur) <= 10_000 else "asymp")
        assert f.stats["psi"] == pytest.approx(
            psi_by_numpy(ref[f.name].to_numpy(), cur[f.name].to_numpy()), rel=1e-12
        )
        distance = stats.wasserstein_distance(ref[f.name], cur[f.name])
        assert f.stats["wasserstein"] == pytest.approx(distance, abs=0.003 * ref[f.name].std())
        assert f.stats["wasserstein_sd"] == pytest.approx(
            f.stats["wasserstein"] / ref[f.name].std(), rel=1e-12
        )


def test_categorical_statistics_match_scipy() -> None:
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"c": rng.choice(["a", "b", "c", "d"], 5000, p=[0.4, 0.3, 0.2, 0.1])})
    cur = pd.DataFrame({"c": rng.choice(["a", "b", "c", "e"], 800, p=[0.3, 0.3, 0.3, 0.1])})
    cur.loc[:19, "c"] = None
    [f] = check_drift(ref, cur).features
    labels = ["a", "b", "c", "d"]
    ref_counts = [int((ref.c == v).sum()) for v in labels] + [0, 0]
    cur_counts = [int((cur.c == v).sum()) for v in labels] + [int((cur.c == "e").sum()), 20]
    table = np.array([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]  # the empty "other" bucket of the reference
    expected = stats.chi2_contingency(table)
    assert f.stats["chi2_statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert f.stats["chi2_pvalue"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert f.stats["chi2_dof"] == expected.dof == 5
    assert f.stats["js_distance"] == pytest.approx(
        jensenshannon(table[0], table[1], base=2), rel=1e-12
    )
    assert f.stats["new_categories"] == ["e"] and f.stats["current_missing"] == 20
    assert f.drifted


def test_missing_values_count_in_psi_and_are_left_out_of_ks() -> None:
    rng = np.random.default_rng(9)
    ref = pd.DataFrame({"x": rng.normal(size=4000)})
    cur = pd.DataFrame({"x": rng.normal(size=2000)})
    cur.loc[:599, "x"] = np.nan  # 30% missing in production, none in training
    [f] = check_drift(ref, cur).features
    res = stats.ks_2samp(ref.x, cur.x.dropna())
    assert f.stats["ks_statistic"] == pytest.approx(res.statistic, abs=1e-12)
    assert f.stats["current_missing"] == 600
    assert f.stats["psi"] > 1, "a new 30% missing bin is major drift"
    assert f.stats["missing_share_change"] == pytest.approx(0.3)
    assert f.stats["missing_pvalue_holm"] < 1e-100
    assert f.drifted and f.verdict == "drift"
    assert any(r.startswith("missing share change 0.3 >= 0.05") for r in f.reasons)


def test_thresholds_are_validated() -> None:
    with pytest.raises(MonitorInputError, match="--wasserstein-threshold"):
        Thresholds(wasserstein=-1)
    with pytest.raises(MonitorInputError, match="--missing-threshold"):
        Thresholds(missing=1.5)


# --- the reference profile --------------------------------------------------------------


def test_profile_is_json_reproducible_and_gives_back_the_sample(tmp_path: Path) -> None:
    df = frame(12_000, seed=7)
    df["flag"] = df["age"] > 45
    df["tier"] = pd.Categorical(df["plan"])
    df["count"] = pd.array(np.arange(12_000) % 5, dtype="Int64")
    df.loc[3, "age"] = np.nan
    profile = build_profile(df, sample_rows=1000)
    text = json.dumps(profile, allow_nan=False)
    assert build_profile(df, sample_rows=1000) == profile, "seeded: same data, same profile"

    back = json.loads(text)
    assert back["features"]["age"]["kind"] == "numeric"
    assert back["features"]["plan"]["kind"] == "categorical"
    assert back["features"]["flag"]["kind"] == "categorical"
    summary = back["features"]["age"]["summary"]
    assert summary["count"] == 11_999 and summary["missing"] == 1
    assert summary["mean"] == pytest.approx(df["age"].mean())
    assert summary["quantiles"]["0.5"] == pytest.approx(df["age"].median())
    hist = back["features"]["age"]["histogram"]
    assert sum(hist["counts"]) == 11_999 and len(hist["counts"]) == 10
    cats = back["features"]["plan"]["categories"]
    assert (
        dict(zip(cats["labels"], cats["counts"], strict=True))
        == df["plan"].value_counts().to_dict()
    )

    sample = sample_frame(back)
    assert len(sample) == 1000 and list(sample.columns) == list(df.columns)
    assert sample.dtypes.to_dict() == df.dtypes.to_dict()
    pd.testing.assert_frame_equal(sample, df.loc[sample.index])

    save_profile(profile, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == back


def test_profile_reference_tests_ks_on_its_sample() -> None:
    train = frame(20_000, seed=8)
    profile = build_profile(train, sample_rows=2000)
    current = frame(1500, seed=9, shift=1.0)
    result = check_drift(profile, current)
    sample = sample_frame(profile)
    age = result.features[0]
    expected = stats.ks_2samp(sample["age"], current["age"])
    assert age.stats["ks_statistic"] == pytest.approx(expected.statistic, abs=1e-12)
    assert age.stats["ks_pvalue"] == pytest.approx(expected.pvalue, rel=1e-9)
    # PSI bins and counts come from all 20,000 training rows, not the sample
    assert psi_by_numpy(train["age"].to_numpy(), current["age"].to_numpy()) == pytest.approx(
        age.stats["psi"], rel=1e-12
    )
    assert result.ks_reference == "a sample of 2000 rows"


def test_a_file_that_is_not_a_profile_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"rows": 3}')
    with pytest.raises(ProfileError, match="not an nbmlops reference profile"):
        load_profile(tmp_path / "p.json")


@pytest.mark.parametrize("n", [141, 2_000, 60_000, 500_000])
def test_kstwo_sf_matches_scipy_across_its_branches(n: int) -> None:
    from nbmlops.monitor.stats import kstwo_sf

    for nd2 in [0.1, 1.0, 2.0, 2.2, 3.0, 10.0, 50.0, 200.0, 369.0, 400.0]:
        d = float(np.sqrt(nd2 / n))
        expected = float(stats.kstwo.sf(d, n))
        assert kstwo_sf(d, n) == pytest.approx(expected, rel=1e-11, abs=1e-300), (n, nd2)


# --- a promoted model's reference profile -----------------------------------------------

TRAINING = [
    code(
        "import numpy as np\nimport pandas as pd\nimport nbmlops\n"
        "from sklearn.compose import make_column_transformer\n"
        "from sklearn.linear_model import LinearRegression\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import OneHotEncoder"
    ),
    code("seed = 0\nrows = 4000", "parameters"),
    code(
        "rng = np.random.default_rng(seed)\n"
        "X_train = pd.DataFrame({'age': rng.normal(40, 10, rows), "
        "'visits': rng.integers(0, 6, rows), "
        "'plan': rng.choice(['basic', 'plus', 'pro'], rows, p=[0.5, 0.3, 0.2])})\n"
        "y_train = X_train['age'] * 0.1 + X_train['visits'] + rng.normal(size=rows)",
        "step:data",
    ),
    code(
        "model = make_pipeline(make_column_transformer("
        "(OneHotEncoder(), ['plan']), remainder='passthrough'), LinearRegression())\n"
        "model.fit(X_train, y_train)\n"
        "nbmlops.log_metric('r2', model.score(X_train, y_train))\n"
        "nbmlops.log_model(model, name='model', input_example=X_train.head(3))",
        "step:train",
    ),
]


def test_drift_against_a_promoted_models_reference_and_retrain_tags_the_model(
    files: dict[str, Path], nbmlops: Any, client: Any, project: Path, experiment: str
) -> None:
    write_notebook(project / "train_model.ipynb", TRAINING)
    nbmlops("run", "train_model.ipynb", "--experiment", experiment, "-q", check=True)
    promoted = nbmlops("promote", "--experiment", experiment, "--metric", "r2", check=True)
    assert "no reference profile" not in promoted.stdout + promoted.stderr

    same = nbmlops("monitor", "drift", f"{experiment}@champion", "--current", "today.csv")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "reference profile" in same.stdout.splitlines()[0]
    assert "(4000 rows)" in same.stdout.splitlines()[0]

    shifted = nbmlops(
        "monitor", "drift", f"{experiment}@champion", "--current", "shifted.parquet",
        "--json", "drift.json", "--retrain", "train_model.ipynb",
    )  # fmt: skip
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr
    assert "drift in 2 of 3 features: age, plan" in shifted.stdout
    result = json.loads((project / "drift.json").read_text())
    assert result["ks_reference"] == "all rows"  # 4000 rows fit the profile's sample

    run_id = next(
        li for li in shifted.stdout.splitlines() if li.startswith("retrain run ")
    ).split()[2]
    tags = client.get_run(run_id).data.tags
    assert tags["nbmlops.retrain.model"] == f"{experiment}@champion"
    assert tags["nbmlops.retrain.trigger"] == "drift"
    assert {a.path for a in client.list_artifacts(run_id, "drift")} == {
        "drift/drift.json",
        "drift/drift.html",
    }

    unknown = nbmlops("monitor", "drift", f"{experiment}@nope", "--current", "today.csv")
    assert unknown.returncode == 2 and "has no alias @nope" in unknown.stderr


def test_current_from_the_services_monitor_logs(
    files: dict[str, Path], nbmlops: Any, project: Path
) -> None:
    """The JSON lines bentoml.monitor writes (the layout nbmlops serve reads back)."""
    shifted = pd.read_parquet(files["shifted"])
    data = project / "monitoring" / "model_inputs" / "data"
    data.mkdir(parents=True)
    with open(data / "data.1.log", "w") as fh:
        for i, row in enumerate(shifted.to_dict("records")):
            record = {
                "timestamp": f"2026-11-23T10:{i // 60 % 60:02d}:{i % 60:02d}",
                "request_id": str(i),
            }
            fh.write(json.dumps({**record, **row, "prediction": 1.0}) + "\n")
        fh.write('{"timestamp": "2026-11-23T11:00:00", "age": 4')  # cut short: skipped
    result = nbmlops("monitor", "drift", "--reference", "train.csv", "--current", "monitoring")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"({len(shifted)} rows)" in result.stdout
    assert "not in the reference (ignored): request_id, timestamp, prediction" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "drift in 2 of 3 features: age, plan"

    empty = project / "empty_logs"
    empty.mkdir()
    none = nbmlops("monitor", "drift", "--reference", "train.csv", "--current", "empty_logs")
    assert none.returncode == 2 and "no monitor logs under" in none.stderr


def test_ks_statistic_equals_scipy_on_many_tied_and_untied_samples() -> None:
    from nbmlops.monitor.stats import ks_statistic

    rng = np.random.default_rng(11)
    for _ in range(300):
        n1, n2 = rng.integers(1, 60, size=2)
        levels = int(rng.integers(1, 12))
        a = rng.integers(0, levels, n1) * rng.choice([1.0, 0.5])
        b = rng.integers(0, levels + int(rng.integers(0, 3)), n2).astype(float)
        if rng.random() < 0.3:
            a, b = a + rng.normal(size=n1), b + rng.normal(size=n2)
        # method="asymp" keeps the raw statistic; "exact" rounds it to h / lcm(n1, n2)
        expected = stats.ks_2samp(a, b, method="asymp").statistic
        assert ks_statistic(np.sort(a), np.sort(b)) == expected, (a, b)


def test_ks_statistic_equals_scipy_across_search_blocks() -> None:
    """Samples larger than a search block (tied and untied): the blocks' seams change
    nothing."""
    from nbmlops.monitor.stats import KS_BLOCK, ks_statistic

    rng = np.random.default_rng(12)
    n = 3 * KS_BLOCK + 17
    for a, b in [
        (rng.normal(size=n), rng.normal(0.01, 1, n + 5)),
        (rng.integers(0, 50_000, n).astype(float), rng.integers(0, 60_000, 2 * n) * 1.0),
        (rng.normal(size=2 * n), rng.normal(size=40)),
    ]:
        expected = stats.ks_2samp(a, b, method="asymp").statistic
        assert ks_statistic(np.sort(a), np.sort(b)) == expected
