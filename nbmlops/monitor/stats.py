"""The drift statistics, on plain numpy arrays: PSI, two-sample Kolmogorov-Smirnov,
chi-square and Jensen-Shannon.

The KS statistic equals ``scipy.stats.ks_2samp``'s bit for bit: the same set of points
(every distinct value of either sample), the same integer counts divided by the sizes.
It sorts each sample once and merges through ``searchsorted`` over distinct values only,
instead of searching the concatenation twice. The p-value is scipy's for the same sizes:
exact (``ks_2samp`` itself) when both samples have at most 10,000 values, else Smirnov's
asymptotic ``scipy.stats.kstwo.sf(d, round(n1*n2/(n1+n2)))``, as ``ks_2samp`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ks_2samp(method="auto") is exact up to this size (scipy's MAX_AUTO_N).
KS_EXACT_MAX_N = 10_000
# Shares below this are raised to it in PSI, so an empty bin does not make PSI infinite.
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class KSResult:
    statistic: float
    pvalue: float
    method: str  # "exact" or "asymp", as scipy.stats.ks_2samp would choose


def ks_statistic(a_sorted: np.ndarray, b_sorted: np.ndarray) -> float:
    """max |F_a(x) - F_b(x)| over every value x of either sample (both sorted, no NaN)."""
    n1, n2 = len(a_sorted), len(b_sorted)
    best = 0.0
    for own, other, n_own, n_other, own_first in (
        (a_sorted, b_sorted, n1, n2, True),
        (b_sorted, a_sorted, n2, n1, False),
    ):
        last = _last_of_runs(own)
        points = own if last is None else own[last]
        own_counts = np.arange(1, n_own + 1) if last is None else last + 1
        other_counts = np.searchsorted(other, points, side="right")
        if own_first:
            diff = own_counts / n_own - other_counts / n_other
        else:
            diff = other_counts / n_other - own_counts / n_own
        best = max(best, float(np.max(np.abs(diff))))
    return best


def _last_of_runs(sorted_values: np.ndarray) -> np.ndarray | None:
    """Index of the last element of each run of equal values; None when all are distinct."""
    changes = sorted_values[1:] != sorted_values[:-1]
    if changes.all():
        return None
    return np.flatnonzero(np.append(changes, True))


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
    p = float(np.clip(stats.kstwo.sf(d, np.round(en)), 0, 1))
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
