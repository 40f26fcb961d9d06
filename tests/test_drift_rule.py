"""The drift rule, statistically: false alarms and detection rates over seeded samples, with
a file reference and with a reference profile; the Wasserstein distance a profile gives
against scipy's on the raw data; Holm's correction and the two-proportion test against
their definitions; "small" for a significant change too small to matter."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nbmlops.capture.profile import build_profile
from nbmlops.monitor import stats as drift_stats
from nbmlops.monitor.drift import check_drift
from nbmlops.monitor.reference import Reference

SAMPLES = 200
REFERENCE_ROWS = 15_000
CURRENT_ROWS = 3_000
FEATURES = [f"f{i}" for i in range(8)]


@pytest.fixture(scope="module")
def references() -> dict[str, Reference]:
    """The training data (15,000 rows, 8 standard normal features) as a file reference
    and as the reference profile promotion stores (KS on its 5,000-row sample)."""
    rng = np.random.default_rng(2026)
    train = pd.DataFrame(rng.normal(size=(REFERENCE_ROWS, len(FEATURES))), columns=FEATURES)
    return {
        "file": Reference.from_frame(train),
        "profile": Reference.from_profile(build_profile(train)),
    }


def alarm_rates(reference: Reference, shifted_samples: int) -> dict[str, float]:
    """Share of SAMPLES seeded samples of 3,000 rows (drawn from the training population)
    where the dataset drifts; and of the first ``shifted_samples`` of them with feature 0's
    mean moved 0.3 sd, and with the variance of features 1 and 2 multiplied by 1.5."""
    hits = {"unshifted": 0, "mean": 0, "variance": 0}
    flagged: dict[str, list[str]] = {k: [] for k in hits}
    for i in range(SAMPLES):
        x = np.random.default_rng(10_000 + i).normal(size=(CURRENT_ROWS, len(FEATURES)))
        mean, variance = x.copy(), x.copy()
        mean[:, 0] += 0.3
        variance[:, 1:3] *= np.sqrt(1.5)
        cases = (("unshifted", x), ("mean", mean), ("variance", variance))
        for kind, data in cases[: 1 if i >= shifted_samples else 3]:
            result = check_drift(reference, pd.DataFrame(data, columns=FEATURES))
            hits[kind] += result.any_drift
            flagged[kind] += result.drifted
    n = {"unshifted": SAMPLES, "mean": shifted_samples, "variance": shifted_samples}
    rates = {k: v / n[k] for k, v in hits.items()}
    # detection is of the shifted features, not by luck elsewhere
    assert set(flagged["mean"]) <= {"f0"}, flagged["mean"]
    assert set(flagged["variance"]) <= {"f1", "f2"}, flagged["variance"]
    return rates


@pytest.mark.parametrize(("kind", "shifted_samples"), [("file", SAMPLES), ("profile", 100)])
def test_false_alarms_at_most_1_percent_and_shifts_detected_95_percent(
    references: dict[str, Reference], kind: str, shifted_samples: int
) -> None:
    """Against a profile the KS test is scipy's exact one on its 5,000-row sample (20 ms a
    feature): the shifted cases take 100 samples there, the false alarms all 200."""
    rates = alarm_rates(references[kind], shifted_samples)
    assert rates["unshifted"] <= 0.01, rates
    assert rates["mean"] >= 0.95, rates
    assert rates["variance"] >= 0.95, rates


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.normal(10, 3, n),
        lambda rng, n: rng.exponential(2.0, n),
        lambda rng, n: rng.standard_t(3, n),
        lambda rng, n: rng.integers(0, 7, n).astype(float),
        lambda rng, n: np.where(rng.random(n) < 0.7, rng.normal(0, 1, n), rng.normal(5, 2, n)),
    ],
    ids=["normal", "exponential", "t3", "integers", "mixture"],
)
def test_wasserstein_from_the_profile_matches_scipy_on_the_raw_data(draw: Any) -> None:
    """The profile keeps 1,000 slice means of the training data's quantile function, not
    its rows: the distance from them is within 0.003 training sds of scipy's exact one."""
    rng = np.random.default_rng(7)
    train = pd.DataFrame({"x": draw(rng, 40_000)})
    profile = build_profile(train, sample_rows=500)
    sd = float(train["x"].std())
    for shift, scale, rows in [(0, 1, 3_000), (0.3, 1, 3_000), (0, 1.25, 100_000), (1, 1, 700)]:
        current = pd.DataFrame({"x": draw(rng, rows) * scale + shift * sd})
        expected = stats.wasserstein_distance(train["x"], current["x"])
        for reference in (profile, train):
            [f] = check_drift(reference, current).features
            assert f.stats["wasserstein"] == pytest.approx(expected, abs=0.003 * sd)
            assert f.stats["wasserstein"] <= expected + 1e-12, "a lower bound"
            assert f.effect == pytest.approx(f.stats["wasserstein"] / sd, rel=1e-9)


def test_a_significant_change_too_small_to_matter_is_small_not_drift() -> None:
    """At 100,000 rows a 0.05 sd move has KS p far below 0.01: "small", exit 0."""
    rng = np.random.default_rng(3)
    train = pd.DataFrame({"x": rng.normal(size=REFERENCE_ROWS), "y": rng.normal(size=15_000)})
    current = pd.DataFrame({"x": rng.normal(0.05, 1, 100_000), "y": rng.normal(size=100_000)})
    result = check_drift(train, current)
    x, y = result.features
    assert x.stats["ks_pvalue_holm"] < 1e-6 and x.effect is not None and x.effect < 0.1
    assert (x.verdict, y.verdict) == ("small", "none")
    assert not result.any_drift and result.small == ["x"]
    assert x.reasons[0].endswith("sd < 0.1: a real change, too small to act on")
    assert result.summary().endswith("; small changes in x")


def test_an_effect_on_too_few_rows_is_not_drift() -> None:
    """30 rows moved 0.3 sd: the distance is above 0.1 sd, the test cannot tell it apart
    from chance, and the reason says so."""
    rng = np.random.default_rng(4)
    train = pd.DataFrame({"x": rng.normal(size=REFERENCE_ROWS)})
    [x] = check_drift(train, pd.DataFrame({"x": rng.normal(0.3, 1, 30)})).features
    assert x.effect is not None and x.effect >= 0.1
    assert x.verdict == "none"
    assert x.reasons[0].endswith("not distinguishable from chance at this sample size")


def test_missing_values_are_tested_in_the_same_family() -> None:
    rng = np.random.default_rng(5)
    train = pd.DataFrame({n: rng.normal(size=10_000) for n in "xyz"})
    train["c"] = rng.choice(["a", "b"], 10_000)
    train.loc[:499, ["x", "y"]] = np.nan  # 5% missing in training
    current = pd.DataFrame({n: rng.normal(size=4_000) for n in "xyz"})
    current["c"] = rng.choice(["a", "b"], 4_000)
    current.loc[:1199, "x"] = np.nan  # 30% in production
    current.loc[:299, "y"] = np.nan  # 7.5%: significant, below the 0.05 change
    current.loc[:9, "c"] = None  # 0.25%, none in training
    result = check_drift(train, current)
    x, y, z, c = result.features
    assert result.tests == 7, "KS or chi-square per feature, missing for x, y and c"
    assert x.verdict == "drift" and x.stats["missing_share_change"] == pytest.approx(0.25)
    assert y.stats["missing_share_change"] == pytest.approx(0.025)
    assert y.stats["missing_pvalue_holm"] < 0.01 and y.verdict == "small"
    assert "missing_pvalue_holm" not in z.stats and z.verdict == "none"
    assert c.stats["missing_share_change"] == pytest.approx(0.0025)


def holm_rejections(pvalues: list[float], alpha: float) -> set[int]:
    """Holm's procedure as written: the i-th smallest against alpha / (m - i), stop at the
    first that is not below."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected: set[int] = set()
    for rank, i in enumerate(order):
        if pvalues[i] >= alpha / (len(pvalues) - rank):
            break
        rejected.add(i)
    return rejected


def test_holm_adjusted_pvalues_reject_what_holms_procedure_rejects() -> None:
    rng = np.random.default_rng(6)
    for _ in range(300):
        m = int(rng.integers(1, 40))
        p = list(rng.random(m) ** rng.uniform(1, 8))
        adjusted = drift_stats.holm(p)
        assert all(a >= q for a, q in zip(adjusted, p, strict=True)) and max(adjusted) <= 1
        for alpha in (0.001, 0.01, 0.05, 0.2):
            assert {i for i, a in enumerate(adjusted) if a < alpha} == holm_rejections(p, alpha)


def test_two_proportions_is_the_uncorrected_chi_square_on_the_2x2_table() -> None:
    for x1, n1, x2, n2 in [(10, 1000, 30, 1000), (0, 500, 7, 300), (250, 10_000, 1200, 4000)]:
        table = np.array([[x1, n1 - x1], [x2, n2 - x2]])
        expected = stats.chi2_contingency(table, correction=False).pvalue
        assert drift_stats.two_proportions(x1, n1, x2, n2) == pytest.approx(expected, rel=1e-9)
    assert drift_stats.two_proportions(0, 100, 0, 50) == 1.0
