"""The drift statistics, on plain numpy arrays: Wasserstein distance, two-sample
Kolmogorov-Smirnov, chi-square, Jensen-Shannon, PSI, the two-proportion test of the
missing-value shares, and Holm's correction of a family of p-values.

The KS statistic equals ``scipy.stats.ks_2samp``'s bit for bit: the same set of points
(every distinct value of either sample), the same integer counts divided by the sizes.
It sorts each sample once and merges through ``searchsorted`` over distinct values only,
instead of searching the concatenation twice. The p-value is scipy's for the same sizes:
exact (``ks_2samp`` itself) when both samples have at most 10,000 values, else
``scipy.stats.kstwo.sf(d, round(n1*n2/(n1+n2)))`` as ``ks_2samp`` does, with scipy's
slowest branch of it summed faster (``kstwo_sf``; same value to about 1e-13 relative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ks_2samp(method="auto") is exact up to this size (scipy's MAX_AUTO_N).
KS_EXACT_MAX_N = 10_000
# ks_statistic searches this many values at a time (arrays that stay in the CPU's cache).
KS_BLOCK = 1 << 15
# Shares below this are raised to it in PSI, so an empty bin does not make PSI infinite.
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class KSResult:
    statistic: float
    pvalue: float
    method: str  # "exact" or "asymp", as scipy.stats.ks_2samp would choose


def ks_statistic(a_sorted: np.ndarray, b_sorted: np.ndarray) -> float:
    """max |F_a(x) - F_b(x)| over every value x of either sample (both sorted, no NaN).

    The same set of values as scipy's, found with one search of ``b``'s distinct values
    ``v_k`` into ``a``: at ``v_k`` (``count(a <= v_k)/n1 - count(b <= v_k)/n2``) and at the
    last value of ``a`` below ``v_k`` (``count(a < v_k)/n1 - count(b <= v_{k-1})/n2``), which
    is where ``F_a - F_b`` is largest between two values of ``b``; its smallest values are
    at values of ``b``. Each difference is computed as scipy computes it. (For small
    samples ``ks_2samp``'s exact method then rounds its statistic to ``h / lcm(n1, n2)``;
    ``ks_test`` calls scipy itself there.) The values are taken ``KS_BLOCK`` at a time, each
    block searched in the slice of ``a`` it spans, so the work stays in the CPU's cache.
    """
    n1, n2 = len(a_sorted), len(b_sorted)
    last = _last_of_runs(b_sorted)
    values = b_sorted if last is None else b_sorted[last]
    best, previous_f_b, lo = 0.0, 0.0, 0
    for start in range(0, len(values), KS_BLOCK):
        v = values[start : start + KS_BLOCK]
        b_counts = (
            np.arange(start + 1, start + len(v) + 1)
            if last is None
            else last[start : start + KS_BLOCK] + 1
        )
        hi = int(np.searchsorted(a_sorted, v[-1], side="right"))
        span = a_sorted[lo:hi]  # every value of a in (previous block's last, v[-1]]
        below = np.searchsorted(span, v, side="left") + lo  # count(a < v_k)
        at = below  # count(a <= v_k): the same unless a holds v_k itself
        probe = a_sorted[np.minimum(below, n1 - 1)]
        tied = (below < n1) & (probe == v)
        if tied.any():
            at = below.copy()
            at[tied] = np.searchsorted(span, v[tied], side="right") + lo
        f_b = b_counts / n2
        f_a_below = below / n1
        on_b = (f_a_below if at is below else at / n1) - f_b
        before_b = f_a_below[1:] - f_b[:-1]  # and at the block's first value:
        first = f_a_below[0] - previous_f_b
        best = max(best, float(np.max(np.abs(on_b))), float(np.max(before_b, initial=0.0)))
        best = max(best, float(first))
        previous_f_b, lo = float(f_b[-1]), hi
    return best


def _last_of_runs(sorted_values: np.ndarray) -> np.ndarray | None:
    """Index of the last element of each run of equal values; None when all are distinct."""
    changes = sorted_values[1:] != sorted_values[:-1]
    if changes.all():
        return None
    return np.flatnonzero(np.append(changes, True))


def kstwo_sf(d: float, n: float) -> float:
    """``scipy.stats.kstwo.sf(d, n)``, with its slowest branch computed faster.

    For n > 140 and 2.2 <= n*d^2 < 370 (p between about 1e-160 and 0.02) scipy returns
    ``2 * scipy.special.smirnov(n, d)``, an exact double-double sum that takes 0.5 s at
    n = 500,000. The same Birnbaum-Tingey sum, ``smirnov(n, d) = d * sum_j
    binom.pmf(j; n, d + j/n) / (d + j/n)`` for j = 0 .. floor(n(1-d)), vectorised with
    scipy's binomial pmf over the terms that matter (``_smirnov_window``), agrees to about
    1e-13 relative in a tenth of the time or less. Every other case goes to scipy.
    """
    from scipy import stats

    t = n * d
    if n > 140 and 1.0 < t < n - 1 and d < 0.5 and 2.2 <= t * d < 370.0:
        last = int(np.floor(n * (1 - d)))
        lo, hi = _smirnov_window(d, n, last)
        j = np.arange(lo, hi + 1, dtype=np.float64)
        p = np.minimum(d + j / n, 1.0)
        smirnov = d * float(np.sum(stats.binom.pmf(j, n, p) / p))
        return float(np.clip(2 * smirnov, 0.0, 1.0))
    return float(stats.kstwo.sf(d, n))


def _smirnov_window(d: float, n: float, last: int) -> tuple[int, int]:
    """The terms j of the Birnbaum-Tingey sum that matter: those within e^-60 of the
    largest (the rest add less than 1e-20 relative). The terms are unimodal in j, so the
    window is found on a grid of about 1,000 of them."""
    from scipy import stats

    step = max(1, last // 1000)
    grid = np.arange(0, last + 1, step, dtype=np.float64)
    p = np.minimum(d + grid / n, 1.0)
    with np.errstate(divide="ignore"):
        log_terms = stats.binom.logpmf(grid, n, p) - np.log(p)
    keep = np.flatnonzero(log_terms > np.max(log_terms) - 60.0)
    return max(0, int(grid[keep[0]]) - step), min(last, int(grid[keep[-1]]) + step)


def ks_test(a_sorted: np.ndarray, b_sorted: np.ndarray) -> KSResult:
    """Two-sided two-sample KS test with the statistic and p-value of ``scipy.stats.ks_2samp``."""
    from scipy import stats

    n1, n2 = len(a_sorted), len(b_sorted)
    if max(n1, n2) <= KS_EXACT_MAX_N:
        res = stats.ks_2samp(a_sorted, b_sorted)
        return KSResult(float(res.statistic), float(res.pvalue), "exact")
    d = ks_statistic(a_sorted, b_sorted)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    p = float(np.clip(kstwo_sf(d, float(np.round(en))), 0, 1))
    return KSResult(d, p, "asymp")


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index: sum over bins of ``(q - p) * ln(q / p)``.

    ``p`` and ``q`` are the reference and current shares per bin, each raised to at least
    ``PSI_EPSILON`` (an empty bin would otherwise make PSI infinite).
    """
    p = np.maximum(reference_counts / max(reference_counts.sum(), 1), PSI_EPSILON)
    q = np.maximum(current_counts / max(current_counts.sum(), 1), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass(frozen=True)
class CategoricalResult:
    chi2_statistic: float
    chi2_pvalue: float
    chi2_dof: int
    js_distance: float


def categorical_test(reference_counts: np.ndarray, current_counts: np.ndarray) -> CategoricalResult:
    """Chi-square test of homogeneity (``scipy.stats.chi2_contingency`` on the 2 x K table,
    scipy's defaults: Yates' correction only when dof is 1) and the Jensen-Shannon distance
    of the two frequency vectors (``scipy.spatial.distance.jensenshannon``, base 2: 0 same,
    1 disjoint). Categories empty on both sides are dropped first."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    keep = (reference_counts + current_counts) > 0
    ref, cur = reference_counts[keep], current_counts[keep]
    js = float(jensenshannon(ref, cur, base=2)) if ref.sum() and cur.sum() else 1.0
    if len(ref) < 2 or not ref.sum() or not cur.sum():
        return CategoricalResult(0.0, 1.0, 0, js)
    res = chi2_contingency(np.vstack([ref, cur]))
    return CategoricalResult(float(res.statistic), float(res.pvalue), int(res.dof), js)


def wasserstein(reference_means: np.ndarray, current_means: np.ndarray) -> float:
    """The 1-Wasserstein distance ``integral over (0, 1) of |Q_ref(u) - Q_cur(u)| du`` from
    both quantile functions' slice means
    (:func:`nbmlops.capture.profile.quantile_means`, the same slices).

    It is ``mean_k |m_ref[k] - m_cur[k]|``: exact where the two quantile functions do not
    cross inside a slice, a little lower where they do (by at most the slice's share of the
    crossing). With 1,000 slices it is within 0.003 reference standard deviations of
    ``scipy.stats.wasserstein_distance`` on the raw values (tests/test_drift_rule.py).
    """
    if not len(reference_means) or not len(current_means):
        return float("nan")
    return float(np.mean(np.abs(reference_means - current_means)))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (the family-wise error rate across all of them).

    Sorted ascending, the i-th smallest (from 0) is multiplied by ``m - i``; each adjusted
    value is the running maximum of these, capped at 1. A test is significant at level
    alpha when its adjusted p-value is below alpha, exactly Holm's procedure.
    """
    m = len(pvalues)
    if not m:
        return []
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = scaled
    return [float(v) for v in adjusted]


def two_proportions(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z test of ``x1/n1`` against ``x2/n2``
    (1 when either sample is empty or the pooled share is 0 or 1: nothing to tell apart)."""
    from scipy.special import ndtr

    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    if pooled <= 0 or pooled >= 1:
        return 1.0
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = abs(x1 / n1 - x2 / n2) / se
    return float(2 * ndtr(-z))
