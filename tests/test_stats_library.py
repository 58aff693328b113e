"""The statistics agree with scipy / statsmodels (the routines kept hand-written, to 1e-9).

slamkit.stats keeps its bootstrap (vectorised over groups for speed, finite intervals where
scipy's are NaN) and Bradley-Terry (Davidson ties: no library fits them); holm,
benjamini_hochberg, mcnemar and the kappas call statsmodels, the sign test scipy. These
tests pin both: the kept code to the library, the wrappers to independent definitions.
"""

from __future__ import annotations

import inspect
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats import contingency_tables, inter_rater, multitest

from slamkit.human import cohen_kappa, fleiss_kappa
from slamkit.stats import (
    _intervals,
    benjamini_hochberg,
    bootstrap_ci,
    bradley_terry,
    holm,
    mcnemar,
    mean_ci,
    paired_bootstrap,
    sign_test,
)

TOL = 1e-9


def _scipy_ci(x, statistic, n_boot, conf, method, seed, **kw):
    """scipy.stats.bootstrap with the generator slamkit seeds (``rng`` since scipy 1.15)."""
    key = "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"
    kw[key] = np.random.default_rng(seed)
    res = sps.bootstrap(
        (np.asarray(x, dtype=float),), statistic, n_resamples=n_boot, confidence_level=conf,
        method={"bca": "BCa"}.get(method, method), **kw,
    )  # fmt: skip
    return res.confidence_interval.low, res.confidence_interval.high


def _samples() -> dict[str, np.ndarray]:
    """Continuous data (a resample mean equals the mean only for permutations, which are
    negligible from n = 30) or dyadic values (exact sums): there scipy's exact comparison
    with the estimate is exact, and the two agree; see the test on rounding below."""
    rng = np.random.default_rng(11)
    return {
        "normal": rng.normal(0.6, 0.2, 50),
        "skewed": rng.exponential(1.0, 30),
        "binary (ties)": (rng.random(40) < 0.3).astype(float),
        "likert 1-5": rng.integers(1, 6, 25).astype(float),
        "halves": rng.integers(0, 3, 60) / 2,
        "one outlier": np.r_[np.zeros(9), 1.0],
        "all equal but one": np.r_[np.full(15, 0.25), 0.75],
        "n=2": np.array([0.0, 1.0]),
        "n=3": np.array([0.25, 0.5, 1.0]),
        "large": rng.beta(2, 5, 805),
    }


SAMPLES = _samples()


@pytest.mark.parametrize("method", ["bca", "percentile"])
@pytest.mark.parametrize("name", list(SAMPLES))
def test_bootstrap_ci_of_the_mean_is_scipys(name: str, method: str) -> None:
    x = SAMPLES[name]
    for seed, conf, n_boot in [(0, 0.95, 2000), (7, 0.9, 999)]:
        ci = bootstrap_ci(x, n_boot=n_boot, conf=conf, method=method, seed=seed)
        lo, hi = _scipy_ci(x, np.mean, n_boot, conf, method, seed)
        assert ci.estimate == pytest.approx(x.mean(), abs=TOL)
        assert (ci.lo, ci.hi) == pytest.approx((lo, hi), abs=TOL), (name, seed)


@pytest.mark.parametrize("method", ["bca", "percentile"])
@pytest.mark.parametrize(
    "statistic",
    [np.median, np.std, lambda v: sps.trim_mean(v, 0.1)],
    ids=["median", "std", "trim_mean"],
)
def test_bootstrap_ci_of_any_statistic_is_scipys(statistic, method: str) -> None:
    rng = np.random.default_rng(4)
    for x in [rng.normal(0, 1, 25), rng.integers(0, 50, 31).astype(float), rng.gamma(2, 1, 12)]:
        ci = bootstrap_ci(x, statistic, n_boot=400, method=method, seed=3)
        lo, hi = _scipy_ci(x, statistic, 400, 0.95, method, 3, vectorized=False)
        assert ci.estimate == pytest.approx(statistic(x), abs=TOL)
        assert (ci.lo, ci.hi) == pytest.approx((lo, hi), abs=TOL)


def test_bca_bias_correction_and_acceleration_are_scipys() -> None:
    """The deterministic part of BCa alone: the same bootstrap distribution (any, here not
    even from resampling, with values at the estimate) and the same data give the same
    interval, so z0 (bias correction) and the jackknife acceleration agree."""
    rng = np.random.default_rng(5)
    for x, conf in [(rng.exponential(1, 40), 0.95), (rng.normal(3, 1, 9), 0.8),
                    (np.r_[np.zeros(30), np.ones(5)], 0.99)]:  # fmt: skip
        est, n = x.mean(), len(x)
        for boot in [rng.normal(est + 0.1, 0.3, 1500), np.r_[rng.gamma(2, 0.2, 700) + est - 0.3,
                     np.full(50, est)], np.round(rng.normal(est, 0.5, 800), 1)]:  # fmt: skip
            jack = (x.sum() - x) / (n - 1)
            lo, hi = _intervals(boot[None], np.array([est]), jack[None], conf, "bca")
            res = sps.bootstrap(
                (x,), np.mean, n_resamples=0, confidence_level=conf, method="BCa",
                bootstrap_result=SimpleNamespace(bootstrap_distribution=boot),
            )  # fmt: skip
            ref = res.confidence_interval
            assert (lo[0], hi[0]) == pytest.approx((ref.low, ref.high), abs=TOL)


def test_where_scipy_gives_no_interval_slamkit_gives_a_finite_one() -> None:
    """The documented reason (besides speed) to keep the hand-written bootstrap: constant
    data, or a statistic whose jackknife values are all equal (zero acceleration here)."""
    for c in (0.25, 0.1):
        x = np.full(12, c)
        assert bootstrap_ci(x) == bootstrap_ci(x, method="percentile")
        ci = bootstrap_ci(x)
        assert ci.lo == ci.hi == ci.estimate == pytest.approx(c, abs=TOL)
    ties = np.r_[np.zeros(10), np.full(11, 2.0), np.full(10, 5.0)]  # every jackknife median 2
    ci = bootstrap_ci(ties, np.median, n_boot=500, seed=1)
    assert np.isfinite([ci.lo, ci.hi]).all() and ci.lo <= 2.0 <= ci.hi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(_scipy_ci(np.full(12, 0.25), np.mean, 2000, 0.95, "bca", 0)).all()
        scipy_median = _scipy_ci(ties, np.median, 500, 0.95, "bca", 1, vectorized=False)
        assert np.isnan(scipy_median).all()
    with pytest.raises(ValueError):
        _scipy_ci([4.0], np.mean, 100, 0.95, "bca", 0)
    assert bootstrap_ci([4.0]) == bootstrap_ci([4.0], np.median)
    assert bootstrap_ci([4.0]).lo == 4.0


def test_ties_with_the_estimate_do_not_depend_on_rounding() -> None:
    """Per-item means of 3 samples (k/3) and the same data times 3 (integers, exact sums)
    have the same interval up to the factor: resample means equal to the estimate are ties
    even when rounding makes them differ by an ulp (scipy's own result depends on it)."""
    rng = np.random.default_rng(3)
    k = rng.integers(0, 4, 805).astype(float)
    for seed in range(3):
        thirds, ints = bootstrap_ci(k / 3, seed=seed), bootstrap_ci(k, seed=seed)
        assert (3 * thirds.lo, 3 * thirds.hi) == pytest.approx((ints.lo, ints.hi), abs=TOL)
        assert (ints.lo, ints.hi) == pytest.approx(_scipy_ci(k, np.mean, 2000, 0.95, "bca", seed))


def _groups_frame() -> pd.DataFrame:
    rng = np.random.default_rng(8)
    parts = [("a", rng.normal(0.5, 0.2, 805)), ("b", rng.integers(0, 4, 805) / 3),
             ("c", np.r_[rng.random(100), [np.nan] * 3]), ("d", (rng.random(805) < 0.9) * 1.0),
             ("e", np.array([0.7])), ("f", np.full(20, 0.3)), ("g", np.array([np.nan, np.nan])),
             ("h", rng.random(100))]  # fmt: skip
    return pd.concat([pd.DataFrame({"model": m, "score": v}) for m, v in parts])


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_mean_ci_is_bootstrap_ci_per_group(method: str) -> None:
    df = _groups_frame()
    out = mean_ci(df, "score", n_boot=1500, conf=0.9, method=method, seed=2).set_index("model")
    assert list(out.index) == list("abcdefgh")
    for model, g in df.groupby("model"):
        x = g["score"].to_numpy()
        ci = bootstrap_ci(x, n_boot=1500, conf=0.9, method=method, seed=2)
        row = out.loc[model]
        assert row["n"] == int(np.sum(~np.isnan(x)))
        got = np.array([row["estimate"], row["ci_lo"], row["ci_hi"]], dtype=float)
        want = np.array([ci.estimate, ci.lo, ci.hi])
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
        x = x[~np.isnan(x)]
        if model != "b" and len(x) > 1 and np.ptp(x) > 0:  # b: thirds, see the test above
            lo, hi = _scipy_ci(x, np.mean, 1500, 0.9, method, 2)
            assert (row["ci_lo"], row["ci_hi"]) == pytest.approx((lo, hi), abs=TOL), model
    assert np.isnan(out.loc["g", ["estimate", "ci_lo", "ci_hi"]].astype(float)).all()
    assert out.loc["e", "ci_lo"] == out.loc["e", "ci_hi"] == 0.7


def test_paired_bootstrap_interval_is_scipys_percentile_interval() -> None:
    rng = np.random.default_rng(6)
    base = rng.normal(0.6, 0.2, 120)
    df = pd.DataFrame({"model": np.repeat(["x", "y"], 120), "item_id": np.tile(range(120), 2),
                       "score": np.r_[base + rng.normal(0, 0.05, 120), base]})  # fmt: skip
    r = paired_bootstrap(df, "score", "x", "y", n_boot=1000, conf=0.9, seed=4)
    d = df["score"].to_numpy()[:120] - base
    assert r["diff"] == pytest.approx(d.mean(), abs=TOL)
    assert (r["ci_lo"], r["ci_hi"]) == pytest.approx(
        _scipy_ci(d, np.mean, 1000, 0.9, "percentile", 4), abs=TOL
    )


# -- tests on pairs and many pairs ---------------------------------------------------------


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs() -> None:
    rng = np.random.default_rng(9)
    one_way = np.r_[np.ones(30), np.zeros(5)] > 0
    cases = [
        (rng.random(80) < 0.7, rng.random(80) < 0.5),
        (np.ones(5, bool), np.zeros(5, bool)),  # all discordant, one way
        (np.array([True]), np.array([False])),
        (np.ones(9, bool), np.ones(9, bool)),  # no discordant pair
        (one_way, ~one_way),
    ]
    for a, b in cases:
        r = mcnemar(a, b)
        n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
        assert (r["a_only"], r["b_only"], r["n"]) == (n01, n10, len(a))
        want = 1.0 if n01 + n10 == 0 else sps.binomtest(n01, n01 + n10, 0.5).pvalue
        assert r["p_value"] == pytest.approx(want, abs=1e-12)
        table = pd.crosstab(pd.Categorical(a, [True, False]), pd.Categorical(b, [True, False]),
                            dropna=False).to_numpy()  # fmt: skip
        sm = contingency_tables.mcnemar(table, exact=True).pvalue
        assert r["p_value"] == pytest.approx(sm, abs=1e-12)


def test_sign_test_is_the_binomial_test_on_signs() -> None:
    d = np.r_[np.ones(12), -np.ones(4), np.zeros(6), np.nan]
    r = sign_test(d)
    assert (r["positive"], r["negative"], r["n"]) == (12, 4, 22)
    assert r["p_value"] == pytest.approx(2 * sps.binom.cdf(4, 16, 0.5), abs=1e-12)
    assert sign_test(np.zeros(3))["p_value"] == 1.0


def _holm_by_definition(p: np.ndarray) -> np.ndarray:
    m, order = len(p), np.argsort(p, kind="stable")
    s = p[order]
    adj = [min(1.0, max((m - j) * s[j] for j in range(k + 1))) for k in range(m)]
    out = np.empty(m)
    out[order] = adj
    return out


def _bh_by_definition(p: np.ndarray) -> np.ndarray:
    m, order = len(p), np.argsort(p, kind="stable")
    s = p[order]
    adj = [min(1.0, min(m * s[j] / (j + 1) for j in range(k, m))) for k in range(m)]
    out = np.empty(m)
    out[order] = adj
    return out


P_VALUES = [
    [0.01, 0.04, 0.03, 0.005],
    [0.01, 0.02, 0.03, 0.04, 0.05],
    [0.2, 0.2, 0.01, 0.2, 1.0, 0.01],  # ties
    [0.5],
    [1.0, 1.0],
    list(np.random.default_rng(10).random(25) ** 3),
]


@pytest.mark.parametrize("p", P_VALUES)
def test_holm_and_bh_match_their_definitions_and_statsmodels(p: list[float]) -> None:
    arr = np.asarray(p)
    assert holm(p) == pytest.approx(_holm_by_definition(arr), abs=1e-12)
    assert benjamini_hochberg(p) == pytest.approx(_bh_by_definition(arr), abs=1e-12)
    assert holm(p) == pytest.approx(multitest.multipletests(arr, method="holm")[1], abs=1e-12)
    bh = multitest.multipletests(arr, method="fdr_bh")[1]
    assert benjamini_hochberg(p) == pytest.approx(bh, abs=1e-12)


def test_corrections_known_values_and_empty() -> None:
    # R: p.adjust(c(.01,.02,.03,.04,.05), "holm") / "BH"
    assert holm([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    assert benjamini_hochberg([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05] * 5)
    assert len(holm([])) == 0 and len(benjamini_hochberg([])) == 0


# -- agreement -----------------------------------------------------------------------------


def _cohen_by_definition(a: list, b: list) -> float:
    n, labels = len(a), set(a) | set(b)
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pe = sum(a.count(c) / n * b.count(c) / n for c in labels)
    return (po - pe) / (1 - pe)


def test_cohen_kappa_matches_definition_and_statsmodels() -> None:
    rng = np.random.default_rng(12)
    cats = ["candidate", "other", "tie"]
    cases = [
        (list(rng.choice(cats, 60)), list(rng.choice(cats, 60))),
        (["x", "y", "x"], ["x", "y", "y"]),
        (["x", "x", "y", "y"], ["x", "z", "y", "z"]),  # a label only one rater uses
        (["y"] * 20 + ["n"] * 15 + ["y"] * 5 + ["n"] * 10,
         ["y"] * 20 + ["n"] * 15 + ["n"] * 5 + ["y"] * 10),
        ([1, 2, 1, 2], [2, 1, 2, 1]),  # full disagreement
    ]  # fmt: skip
    for a, b in cases:
        k = cohen_kappa(a, b)
        assert k == pytest.approx(_cohen_by_definition(a, b), abs=1e-12)
        assert k == pytest.approx(cohen_kappa(b, a), abs=1e-12)
        labels = sorted(set(a) | set(b), key=str)
        table = pd.crosstab(pd.Categorical(a, labels), pd.Categorical(b, labels), dropna=False)
        sm = inter_rater.cohens_kappa(table.to_numpy(), return_results=False)
        assert k == pytest.approx(sm, abs=1e-12)
    assert cohen_kappa(["x", "y"], ["x", "y"]) == 1.0
    assert np.isnan(cohen_kappa([], []))
    assert np.isnan(cohen_kappa(["x"] * 4, ["x"] * 4))  # one label: chance agreement is 1


def _fleiss_by_definition(m: np.ndarray) -> float:
    n_items, n = m.shape[0], m[0].sum()
    p_j = m.sum(axis=0) / (n_items * n)
    p_i = [(sum(c * c for c in row) - n) / (n * (n - 1)) for row in m]
    pe = float(np.sum(p_j**2))
    return (float(np.mean(p_i)) - pe) / (1 - pe)


def test_fleiss_kappa_matches_definition_and_statsmodels() -> None:
    rng = np.random.default_rng(13)
    tables = [np.array([[2, 0, 1], [0, 3, 0], [1, 1, 1], [3, 0, 0]]),
              np.array([[1, 1], [2, 0], [0, 2]]),  # two raters
              np.stack([rng.multinomial(7, [0.5, 0.3, 0.2]) for _ in range(40)]),
              np.array([[0, 4, 0], [0, 4, 0], [0, 3, 1]])]  # fmt: skip
    for t in tables:
        k = fleiss_kappa(t)
        assert k == pytest.approx(_fleiss_by_definition(t.astype(float)), abs=1e-12)
        assert k == pytest.approx(inter_rater.fleiss_kappa(t, method="fleiss"), abs=1e-12)
    assert np.isnan(fleiss_kappa([[0, 3], [0, 3]]))  # every rating in one category
    assert np.isnan(fleiss_kappa(np.zeros((0, 3))))


# -- Bradley-Terry ---------------------------------------------------------------------------


def test_bradley_terry_with_half_ties_is_statsmodels_logistic_regression() -> None:
    """ties='half' is a logistic regression on the pairs (theta_i - theta_j); without the
    ridge it must give statsmodels' maximum-likelihood fit (to the optimizer's tolerance:
    L-BFGS-B stops near 1e-6, so 1e-9 is not reachable)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(14)
    names = ["m0", "m1", "m2", "m3"]
    theta = {"m0": 0.0, "m1": 0.5, "m2": -0.4, "m3": 1.0}
    rows = []
    for _ in range(1500):
        i, j = rng.choice(4, 2, replace=False)
        pa = 1 / (1 + np.exp(theta[names[j]] - theta[names[i]]))
        u = rng.random()
        w = "tie" if u < 0.15 else ("a" if u < 0.15 + 0.85 * pa else "b")
        rows.append({"model_a": names[i], "model_b": names[j], "winner": w})
    v = pd.DataFrame(rows)
    bt = bradley_terry(v, ties="half", reference="m0", ridge=0.0, n_boot=2).set_index("model")

    counts = {}
    for (a, b), g in v.groupby(["model_a", "model_b"]):
        wins = (g["winner"] == "a").sum() + 0.5 * (g["winner"] == "tie").sum()
        counts[(a, b)] = (wins, len(g) - wins)
    exog = np.array([[(m == a) - (m == b) for m in names[1:]] for a, b in counts], dtype=float)
    endog = np.array(list(counts.values()))
    fit = sm.GLM(endog, exog, family=sm.families.Binomial()).fit(tol=1e-12)
    for m, t in zip(names[1:], fit.params, strict=True):
        assert bt.loc[m, "theta"] == pytest.approx(t, abs=1e-4)
    assert bt.loc["m0", "theta"] == 0.0
