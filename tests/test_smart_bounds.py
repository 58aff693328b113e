"""Confidence bounds: exact values, coverage, thresholds, and why peeking needs a CS."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from slamkit.smart.bounds import (
    AlphaSpendingCP,
    BetaBinomialCS,
    ClopperPearson,
    clopper_pearson,
    threshold_table,
    thresholds_at,
)


def test_clopper_pearson_known_values_and_edges() -> None:
    lo, hi = clopper_pearson(9, 10, 0.95)
    assert float(lo) == pytest.approx(0.5549839, abs=1e-6)
    assert float(hi) == pytest.approx(0.9974714, abs=1e-6)
    lo, hi = clopper_pearson(0, 10, 0.95)
    assert float(lo) == 0.0 and float(hi) == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = clopper_pearson(10, 10, 0.95)
    assert float(hi) == 1.0 and float(lo) == pytest.approx(0.025 ** (1 / 10))
    lo, _ = clopper_pearson(10, 10, 0.95, sided="lower")
    assert float(lo) == pytest.approx(0.05 ** (1 / 10))


@pytest.mark.parametrize("p", [0.5, 0.9, 0.97])
def test_clopper_pearson_exact_coverage_at_least_nominal(p: float) -> None:
    n = 60
    k = np.arange(n + 1)
    lo, hi = clopper_pearson(k, n, 0.95)
    cover = stats.binom.pmf(k, n, p)[(lo <= p) & (p <= hi)].sum()
    assert 0.95 <= cover < 0.995


@pytest.mark.parametrize(
    "family", [ClopperPearson(0.9), AlphaSpendingCP(0.05), BetaBinomialCS(0.05)]
)
def test_thresholds_match_predicates(family) -> None:
    t = 0.93
    n = np.array([1, 5, 10, 37, 100, 1000, 12345])
    k_inv, k_sat = thresholds_at(family, n, t)
    for ni, ki, ks in zip(n, k_inv, k_sat, strict=True):
        if ks <= ni:
            assert family.excludes_below(ks, ni, t)
        if ks - 1 >= 0:
            assert not family.excludes_below(ks - 1, ni, t)
        if ki >= 0:
            assert family.excludes_above(ki, ni, t)
        if ki + 1 <= ni:
            assert not family.excludes_above(ki + 1, ni, t)
    table_inv, table_sat = threshold_table(family, 1000, t, 10)
    assert table_sat[100] == thresholds_at(family, np.array([1000]), t)[1][0]
    assert table_inv[10] == thresholds_at(family, np.array([100]), t)[0][0]


def test_mixture_interval_agrees_with_predicates() -> None:
    cs = BetaBinomialCS(0.05)
    k, n = np.array([90, 950, 3]), np.array([100, 1000, 10])
    lo, hi = cs.interval(k, n)
    assert np.all(lo < k / n) and np.all(k / n < hi)
    assert not cs.excludes_below(k, n, lo + 1e-6).any()
    assert cs.excludes_below(k, n, lo - 1e-6).all()
    assert cs.excludes_above(k, n, hi + 1e-6).all()
    # wider than a single-look Clopper-Pearson interval at the same alpha
    cp_lo, cp_hi = clopper_pearson(k, n, 0.95)
    assert np.all(lo <= cp_lo) and np.all(hi >= cp_hi)


def _ever_excluded(family, p: float, seeds: int, n_max: int, batch: int) -> float:
    rng = np.random.default_rng(7)
    x = rng.random((seeds, n_max)) < p
    looks = np.arange(batch, n_max + 1, batch)
    k = np.cumsum(x, axis=1)[:, looks - 1]
    n = np.broadcast_to(looks, k.shape)
    bad = family.excludes_below(k, n, p) | family.excludes_above(k, n, p)
    return float(bad.any(axis=1).mean())


def test_peeking_breaks_clopper_pearson_but_not_the_confidence_sequences() -> None:
    """Check after every 10 items up to 1000: the true rate leaves a 95% Clopper-Pearson
    interval far more often than 5%, but stays inside the anytime-valid ones."""
    p, seeds = 0.9, 2000
    cp = _ever_excluded(ClopperPearson(0.95), p, seeds, 1000, 10)
    cs = _ever_excluded(BetaBinomialCS(0.05), p, seeds, 1000, 10)
    sp = _ever_excluded(AlphaSpendingCP(0.05, 10), p, seeds, 1000, 10)
    assert cp > 0.10
    se = np.sqrt(0.05 * 0.95 / seeds)
    assert cs <= 0.05 + 3 * se
    assert sp <= 0.05 + 3 * se
