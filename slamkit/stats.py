"""Statistics with confidence: bootstrap CIs, paired tests, multiple comparisons, Bradley-Terry.

All functions are pure (DataFrame/arrays in, DataFrame/dict out) and seeded.

* :func:`bootstrap_ci` - percentile or BCa interval of any statistic (fast path for the mean).
* :func:`mean_ci` / :func:`pass_rate_ci` / :func:`win_rate_ci` - per-model tables.
* :func:`paired_bootstrap`, :func:`mcnemar`, :func:`sign_test` - two models on the same items.
* :func:`holm`, :func:`benjamini_hochberg`, :func:`pairwise_comparisons` - many pairs.
* :func:`compare_to_reference` - each model vs the reference, with the explicit flag
  ``indistinguishable`` ("not distinguishable from the reference at level alpha"). It is
  *not* a claim of equivalence: a small sample is indistinguishable from anything.
* :func:`bradley_terry` - strengths from pairwise verdicts (human or judge) with ties
  either by Davidson's model (a tie parameter nu is fitted) or as half a win for each
  side; bootstrap CIs over verdicts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

# scipy.stats, scipy.optimize and statsmodels are imported where they are used: importing
# them costs ~100 MB and a second, and a summary table needs neither
from slamkit.errors import SlamkitError
from slamkit.store import readers

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class CI:
    estimate: float
    lo: float
    hi: float


# The bootstrap intervals are hand-written, not scipy.stats.bootstrap: mean_ci bootstraps all
# groups at once (one draw of resample indices per group size, the means as one matrix
# product; 29 groups x 805 items ~30 ms here, scipy.stats.bootstrap per group ~0.5 s), and
# they stay finite where scipy's are NaN or raise (n = 1, constant data or jackknife values,
# an estimate outside the bootstrap distribution). With the same seed they draw scipy's
# resamples, and tests/test_stats_library.py checks the intervals equal
# scipy.stats.bootstrap's (BCa and percentile) to 1e-9.

_METHODS = ("percentile", "bca")


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise SlamkitError(f"Unknown bootstrap method {method!r}: use 'percentile' or 'bca'.")


def _boot_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    return x[idx].mean(axis=1)


def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """n_boot x n: how often each observation is drawn in each resample. The draws are those
    of ``scipy.stats.bootstrap(..., rng=np.random.default_rng(seed))``."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    idx += n * np.arange(n_boot)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _intervals(
    boot: np.ndarray, est: np.ndarray, jack: np.ndarray, conf: float, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile or BCa (Efron 1987) interval per row of ``boot`` (groups x resamples).

    ``est``: the statistic per group; ``jack``: groups x n leave-one-out values of it (BCa
    acceleration). Values within a relative 1e-10 of the estimate count as ties with it:
    a resample mean that equals it mathematically (common for per-item means such as 1/3)
    may differ from it by rounding, which depends on the order of summation. A bootstrap
    distribution of one value (constant data) gives the interval [estimate, estimate].
    """
    alpha = 1 - conf
    z = float(special.ndtri(alpha / 2))
    tol = 1e-10 * np.maximum(np.abs(boot).max(axis=1), np.abs(est))
    if method == "percentile":
        levels = np.tile([alpha / 2, 1 - alpha / 2], (len(boot), 1))
    else:
        n_boot = boot.shape[1]
        dev = boot - est[:, None]
        below = np.sum(dev < -tol[:, None], axis=1)
        ties = np.sum(np.abs(dev) <= tol[:, None], axis=1)
        prop = (below + 0.5 * ties) / n_boot
        # clipped: an estimate outside the bootstrap distribution still gives an interval
        z0 = special.ndtri(np.clip(prop, 1 / (2 * n_boot), 1 - 1 / (2 * n_boot)))[:, None]
        d = jack.mean(axis=1, keepdims=True) - jack
        num, den = np.sum(d**3, axis=1), 6.0 * np.sum(d**2, axis=1) ** 1.5
        acc = np.divide(num, den, out=np.zeros_like(num), where=den > 0)[:, None]
        zz = z0 + np.array([z, -z])
        levels = np.clip(special.ndtr(z0 + zz / (1 - acc * zz)), 0, 1)
    ci = np.array([np.quantile(b, q) for b, q in zip(boot, levels, strict=True)])
    flat = np.ptp(boot, axis=1) <= tol
    ci[flat] = est[flat, None]
    return ci[:, 0], ci[:, 1]


def _mean_cis(
    samples: Sequence[np.ndarray], n_boot: int, conf: float, method: str, seed: int
) -> list[CI]:
    """Bootstrap CI of the mean of each sample (no NaNs). Samples of one size share one draw
    of resample indices: the draw a separate call with the same seed would make."""
    _check_method(method)
    out = [CI(np.nan, np.nan, np.nan)] * len(samples)
    by_size: dict[int, list[int]] = {}
    for k, s in enumerate(samples):
        by_size.setdefault(len(s), []).append(k)
    for n, ks in by_size.items():
        if n == 0:
            continue
        x = np.stack([np.asarray(samples[k], dtype=float) for k in ks])
        est = x.mean(axis=1)
        if n == 1:
            lo = hi = est
        else:
            boot = x @ _resample_counts(n, n_boot, seed).T / n
            jack = (x.sum(axis=1, keepdims=True) - x) / (n - 1)
            lo, hi = _intervals(boot, est, jack, conf, method)
        for k, e, lo_k, hi_k in zip(ks, est, lo, hi, strict=True):
            out[k] = CI(float(e), float(lo_k), float(hi_k))
    return out


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Statistic | None = None,
    n_boot: int = 2000,
    conf: float = 0.95,
    method: str = "bca",
    seed: int = 0,
) -> CI:
    """Bootstrap interval of ``statistic`` (default: the mean) of ``values``.

    ``method='percentile'`` or ``'bca'`` (bias-corrected and accelerated, Efron 1987;
    acceleration from the jackknife). NaNs are dropped. The same seed gives the interval of
    ``scipy.stats.bootstrap((values,), statistic, n_resamples=n_boot, method='BCa',
    rng=np.random.default_rng(seed))``, where that one is finite and does not depend on
    rounding (see :func:`_intervals` on ties).

    >>> ci = bootstrap_ci([1.0, 2.0, 3.0, 4.0], n_boot=500, seed=1)
    >>> ci.estimate
    2.5
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if statistic is None:
        return _mean_cis([x], n_boot, conf, method, seed)[0]
    _check_method(method)
    n = len(x)
    if n == 0:
        return CI(np.nan, np.nan, np.nan)
    est = float(statistic(x))
    if n == 1:
        return CI(est, est, est)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = np.array([[statistic(x[i]) for i in idx]], dtype=float)
    jack = np.zeros((1, n))
    if method == "bca":
        jack[0] = [statistic(np.delete(x, i)) for i in range(n)]
    lo, hi = _intervals(boot, np.array([est]), jack, conf, method)
    return CI(est, float(lo[0]), float(hi[0]))


def mean_ci(
    df: pd.DataFrame,
    value: str,
    by: str | Sequence[str] = "model",
    n_boot: int = 2000,
    conf: float = 0.95,
    method: str = "bca",
    seed: int = 0,
) -> pd.DataFrame:
    """Per group: n, mean and its bootstrap CI (columns estimate, ci_lo, ci_hi).

    Each group's interval is :func:`bootstrap_ci` of its values with the same seed."""
    if value not in df.columns:
        raise SlamkitError(f"Column {value!r} not in the data ({', '.join(map(str, df.columns))}).")
    keys = [by] if isinstance(by, str) else list(by)
    groups = [(key, pd.to_numeric(g[value], errors="coerce").to_numpy(float))
              for key, g in df.groupby(keys, sort=True)]  # fmt: skip
    cis = _mean_cis([x[~np.isnan(x)] for _, x in groups], n_boot, conf, method, seed)
    rows = []
    for (key, x), ci in zip(groups, cis, strict=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            {**dict(zip(keys, key, strict=True)), "n": int((~np.isnan(x)).sum()),
             "estimate": ci.estimate, "ci_lo": ci.lo, "ci_hi": ci.hi, "method": method,
             "conf": conf, "n_boot": n_boot, "seed": seed}
        )  # fmt: skip
    return pd.DataFrame(rows)


def pass_rate_ci(df: pd.DataFrame, passed: str, by: str = "model", **kw: object) -> pd.DataFrame:
    """Share of rows where ``passed`` is true, per group, with a bootstrap CI."""
    d = df.assign(**{passed: df[passed].astype(float)})
    return mean_ci(d, passed, by, **kw)  # type: ignore[arg-type]


OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def win_rate_ci(
    df: pd.DataFrame,
    outcome: str = "outcome",
    by: str = "model",
    conf: float = 0.95,
    **kw: object,
) -> pd.DataFrame:
    """Win rate against the reference (a tie counts half) with a bootstrap CI and the flag
    ``indistinguishable_from_reference`` (the CI contains 0.5).

    ``outcome`` holds 'win' | 'tie' | 'loss' (from the model's side) or a number in [0, 1].
    """
    s = df[outcome]
    numeric = pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
    score = s.astype(float) if numeric else s.map(OUTCOME_SCORE)
    if score.isna().any() and not numeric:
        bad = sorted(set(s[score.isna()].dropna().astype(str)))
        if bad:
            raise SlamkitError(f"Unknown outcome(s) {bad} in {outcome!r}: use win / tie / loss.")
    out = mean_ci(df.assign(_score=score), "_score", by, conf=conf, **kw)  # type: ignore[arg-type]
    out["indistinguishable_from_reference"] = (out["ci_lo"] <= 0.5) & (out["ci_hi"] >= 0.5)
    return out


def _paired_matrix(
    df: pd.DataFrame, value: str, model_col: str, item_col: str, models: Sequence[str]
) -> pd.DataFrame:
    """Items x models of per-item means (several samples per item are averaged)."""
    d = df[df[model_col].isin(models)]
    wide = d.groupby([item_col, model_col])[value].mean().unstack(model_col)
    return wide.reindex(columns=list(models)).dropna()


def paired_bootstrap(
    df: pd.DataFrame,
    value: str,
    model_a: str,
    model_b: str,
    model_col: str = "model",
    item_col: str = "item_id",
    n_boot: int = 2000,
    conf: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean difference a - b over shared items, its percentile CI and a two-sided bootstrap
    p-value (share of centred resamples at least as extreme as the observed difference).

    The CI is ``scipy.stats.bootstrap(method='percentile')``'s with the same seed (tested); the
    resamples are kept here because the p-value (no scipy/statsmodels counterpart) needs them.
    """
    w = _paired_matrix(df, value, model_col, item_col, [model_a, model_b])
    if w.empty:
        raise SlamkitError(
            f"{model_a!r} and {model_b!r} share no items with a {value!r} value: compare models "
            "scored on the same items."
        )
    d = (w[model_a] - w[model_b]).to_numpy(float)
    rng = np.random.default_rng(seed)
    boot = _boot_means(d, n_boot, rng)
    diff = float(d.mean())
    lo, hi = np.quantile(boot, [(1 - conf) / 2, 1 - (1 - conf) / 2])
    if np.all(d == d[0]):
        p = 1.0 if diff == 0 else 0.0
    else:
        p = float((np.sum(np.abs(boot - diff) >= abs(diff)) + 1) / (n_boot + 1))
    return {"model_a": model_a, "model_b": model_b, "n": len(d), "mean_a": float(w[model_a].mean()),
            "mean_b": float(w[model_b].mean()), "diff": diff, "ci_lo": float(lo),
            "ci_hi": float(hi), "p_value": min(p, 1.0), "test": "paired-bootstrap"}  # fmt: skip


def mcnemar(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> dict[str, Any]:
    """Exact McNemar test on paired pass/fail outcomes (binomial test on discordant pairs;
    ``statsmodels.stats.contingency_tables.mcnemar(exact=True)``)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    n01 = int(np.sum(a & ~b))  # a passes, b fails
    n10 = int(np.sum(~a & b))
    table = [[int(np.sum(a & b)), n01], [n10, int(np.sum(~a & ~b))]]
    from statsmodels.stats import contingency_tables

    p = float(contingency_tables.mcnemar(table, exact=True).pvalue)  # 1.0 without discordance
    return {"a_only": n01, "b_only": n10, "n": len(a), "p_value": p, "test": "mcnemar"}


def sign_test(diff: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Two-sided sign test of paired differences (zeros dropped; ``scipy.stats.binomtest``)."""
    d = np.asarray(diff, dtype=float)
    d = d[~np.isnan(d)]
    pos, neg = int(np.sum(d > 0)), int(np.sum(d < 0))
    from scipy import stats as sps

    p = 1.0 if pos + neg == 0 else float(sps.binomtest(pos, pos + neg, 0.5).pvalue)
    return {"positive": pos, "negative": neg, "n": len(d), "p_value": p, "test": "sign"}


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control; statsmodels
    ``multipletests(method='holm')``)."""
    from statsmodels.stats import multitest

    return multitest.multipletests(np.asarray(p, dtype=float), method="holm")[1]


def benjamini_hochberg(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate control; statsmodels
    ``multipletests(method='fdr_bh')``)."""
    from statsmodels.stats import multitest

    return multitest.multipletests(np.asarray(p, dtype=float), method="fdr_bh")[1]


def _adjust(p: np.ndarray, correction: str) -> np.ndarray:
    if correction == "holm":
        return holm(p)
    if correction in ("bh", "fdr"):
        return benjamini_hochberg(p)
    if correction == "none":
        return p
    raise SlamkitError(f"Unknown correction {correction!r}: use 'holm', 'bh' or 'none'.")


def _pair_test(
    df: pd.DataFrame, value: str, a: str, b: str, test: str, model_col: str, item_col: str,
    n_boot: int, conf: float, seed: int,
) -> dict[str, object]:  # fmt: skip
    if test == "paired_bootstrap":
        return paired_bootstrap(df, value, a, b, model_col, item_col, n_boot, conf, seed)
    w = _paired_matrix(df, value, model_col, item_col, [a, b])
    if test == "mcnemar":
        r = mcnemar(w[a] > 0.5, w[b] > 0.5)
    elif test == "sign":
        r = sign_test(w[a] - w[b])
    else:
        raise SlamkitError(f"Unknown test {test!r}: use paired_bootstrap, mcnemar or sign.")
    return {"model_a": a, "model_b": b, "diff": float((w[a] - w[b]).mean()), **r}


def pairwise_comparisons(
    df: pd.DataFrame,
    value: str,
    models: Sequence[str] | None = None,
    test: str = "paired_bootstrap",
    correction: str = "holm",
    alpha: float = 0.05,
    model_col: str = "model",
    item_col: str = "item_id",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every pair of models on shared items, p-values adjusted for the number of pairs.

    ``test``: 'paired_bootstrap' (mean difference), 'mcnemar' (values are pass=1 / fail=0;
    an item's mean over samples > 0.5 counts as a pass) or 'sign' (sign of the difference).
    """
    models = list(models) if models is not None else sorted(df[model_col].unique())
    rows = [
        _pair_test(df, value, a, b, test, model_col, item_col, n_boot, 1 - alpha, seed)
        for a, b in itertools.combinations(models, 2)
    ]
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_adjusted"] = _adjust(out["p_value"].to_numpy(float), correction)
    out["correction"] = correction
    out["significant"] = out["p_adjusted"] < alpha
    return out


def compare_to_reference(
    df: pd.DataFrame,
    value: str,
    reference: str,
    test: str = "paired_bootstrap",
    correction: str = "holm",
    alpha: float = 0.05,
    model_col: str = "model",
    item_col: str = "item_id",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Each model vs ``reference`` on shared items; ``indistinguishable`` = adjusted p >= alpha."""
    others = [m for m in sorted(df[model_col].unique()) if m != reference]
    if reference not in set(df[model_col]):
        raise SlamkitError(f"The reference {reference!r} has no {value!r} values in the data.")
    if not others:
        raise SlamkitError(
            f"compare_to_reference: only the reference {reference!r} has {value!r} values in "
            f"the data ({model_col!r} column), so there is no other model to compare. Add rows "
            "for at least one other model (run generations and score them first)."
        )
    rows = [
        _pair_test(df, value, m, reference, test, model_col, item_col, n_boot, 1 - alpha, seed)
        for m in others
    ]
    out = pd.DataFrame(rows).rename(columns={"model_a": "model", "model_b": "reference"})
    out["p_adjusted"] = _adjust(out["p_value"].to_numpy(float), correction)
    out["correction"] = correction
    out["alpha"] = alpha
    out["indistinguishable"] = out["p_adjusted"] >= alpha
    return out


# -- Bradley-Terry -----------------------------------------------------------------------
# Hand-written: neither scipy nor statsmodels fits Davidson's tie model. ties='half' is a
# logistic regression; tests/test_stats_library.py checks it against statsmodels' GLM.


def _aggregate(a: np.ndarray, b: np.ndarray, res: np.ndarray, m: int) -> np.ndarray:
    """Counts per ordered pair index (i<j): [wins_i, wins_j, ties]."""
    i, j = np.minimum(a, b), np.maximum(a, b)
    flip = a > b
    win_a = res == 1
    win_b = res == 2
    tie = res == 0
    wi = np.where(flip, win_b, win_a)
    wj = np.where(flip, win_a, win_b)
    key = i * m + j
    c = np.zeros((m * m, 3))
    np.add.at(c, (key, 0), wi)
    np.add.at(c, (key, 1), wj)
    np.add.at(c, (key, 2), tie)
    return c


def _fit_bt(counts: np.ndarray, m: int, ties: str, ridge: float) -> tuple[np.ndarray, float]:
    keys = np.nonzero(counts.sum(axis=1))[0]
    ii, jj = keys // m, keys % m
    wi, wj, t = counts[keys, 0], counts[keys, 1], counts[keys, 2]
    if ties == "half":
        wi, wj, t = wi + t / 2, wj + t / 2, np.zeros_like(t)
    n = wi + wj + t
    davidson = ties == "davidson"

    def nll(par: np.ndarray) -> tuple[float, np.ndarray]:
        th = par[:m]
        lnu = par[m] if davidson else -np.inf
        nu = np.exp(lnu)
        ei, ej = np.exp(th[ii]), np.exp(th[jj])
        eh = np.exp((th[ii] + th[jj]) / 2)
        D = ei + ej + nu * eh
        ll = wi * th[ii] + wj * th[jj] - n * np.log(D)
        if davidson:
            ll = ll + t * (lnu + (th[ii] + th[jj]) / 2)
        gi = wi + t / 2 - n * (ei + nu * eh / 2) / D
        gj = wj + t / 2 - n * (ej + nu * eh / 2) / D
        g = np.zeros_like(par)
        np.add.at(g, ii, -gi)
        np.add.at(g, jj, -gj)
        g[:m] += ridge * th
        val = -ll.sum() + ridge / 2 * np.sum(th**2)
        if davidson:
            g[m] = -(t - n * nu * eh / D).sum()
        return float(val), g

    x0 = np.zeros(m + (1 if davidson else 0))
    from scipy import optimize

    r = optimize.minimize(nll, x0, jac=True, method="L-BFGS-B")
    th = r.x[:m] - r.x[:m].mean()
    return th, float(np.exp(r.x[m])) if davidson else 0.0


def bradley_terry(
    verdicts: pd.DataFrame,
    a: str = "model_a",
    b: str = "model_b",
    winner: str = "winner",
    ties: str = "davidson",
    reference: str | None = None,
    n_boot: int = 500,
    conf: float = 0.95,
    seed: int = 0,
    ridge: float = 1e-3,
) -> pd.DataFrame:
    """Bradley-Terry strengths from pairwise verdicts, with bootstrap (percentile) CIs.

    ``winner`` is 'a' | 'b' | 'tie' (also accepted: 'A', 'B', the model name itself).
    ``ties='davidson'``: P(i beats j) = pi_i / (pi_i + pi_j + nu sqrt(pi_i pi_j)) and
    P(tie) = nu sqrt(pi_i pi_j) / (same), nu fitted (reported in ``df.attrs['nu']``);
    ``ties='half'``: a tie is half a win for each side. Strengths theta = log pi are
    centred (mean 0), or anchored at ``reference`` (theta_ref = 0) when given; then
    ``indistinguishable_from_reference`` says whether the CI of theta contains 0. A small
    ridge penalty keeps strengths finite when a model never loses. Elo scale: 400/ln(10) theta.
    """
    if ties not in ("davidson", "half"):
        raise SlamkitError(f"ties must be 'davidson' or 'half', got {ties!r}.")
    v = verdicts[[a, b, winner]].dropna()
    models = sorted(set(v[a]) | set(v[b]))
    if len(models) < 2:
        raise SlamkitError("Bradley-Terry needs verdicts between at least two models.")
    idx = {mname: k for k, mname in enumerate(models)}
    ai = v[a].map(idx).to_numpy()
    bi = v[b].map(idx).to_numpy()
    w = v[winner].astype(str)
    res = np.where(
        w.str.lower().eq("a") | (w == v[a]), 1,
        np.where(w.str.lower().eq("b") | (w == v[b]), 2, np.where(w.str.lower().eq("tie"), 0, -1)),
    )  # fmt: skip
    if (res < 0).any():
        bad = sorted(set(w[res < 0]))[:5]
        raise SlamkitError(f"Unknown winner value(s) {bad} in {winner!r}: use a / b / tie.")
    m = len(models)

    def fit(sel: np.ndarray) -> tuple[np.ndarray, float]:
        th, nu = _fit_bt(_aggregate(ai[sel], bi[sel], res[sel], m), m, ties, ridge)
        if reference is not None:
            th = th - th[idx[reference]]
        return th, nu

    if reference is not None and reference not in idx:
        raise SlamkitError(f"The reference {reference!r} appears in no verdict.")
    theta, nu = fit(np.arange(len(v)))
    rng = np.random.default_rng(seed)
    boots = np.array([fit(rng.integers(0, len(v), len(v)))[0] for _ in range(n_boot)])
    lo, hi = np.quantile(boots, [(1 - conf) / 2, 1 - (1 - conf) / 2], axis=0)
    games = np.bincount(ai, minlength=m) + np.bincount(bi, minlength=m)
    wins = np.bincount(ai[res == 1], minlength=m) + np.bincount(bi[res == 2], minlength=m)
    tie_n = np.bincount(ai[res == 0], minlength=m) + np.bincount(bi[res == 0], minlength=m)
    scale = 400 / np.log(10)
    out = pd.DataFrame(
        {"model": models, "theta": theta, "ci_lo": lo, "ci_hi": hi, "elo": 1000 + scale * theta,
         "comparisons": games, "wins": wins, "ties": tie_n, "losses": games - wins - tie_n}
    )  # fmt: skip
    if reference is not None:
        out["indistinguishable_from_reference"] = (out["ci_lo"] <= 0) & (out["ci_hi"] >= 0)
    out.attrs.update({"nu": nu, "ties": ties, "n_boot": n_boot, "conf": conf, "seed": seed})
    return out.sort_values("theta", ascending=False).reset_index(drop=True)


# -- reader ------------------------------------------------------------------------------


def verdicts_from_store(
    store: object,
    source: str = "judge",
    task_id: str | None = None,
    criterion: str = "overall",
    judge_model: str | None = None,
) -> pd.DataFrame:
    """Pairwise verdicts as (model_a, model_b, winner 'a'|'b'|'tie') for :func:`bradley_terry`.

    ``source='judge'``: LLM-judge rows, both presentation orders combined (a verdict that
    flips with the order is a tie; pairs judged in one order only are left out).
    ``source='human'``: blind A/B choices (left/right/tie), one row per choice.
    """
    if source == "judge":
        from slamkit.judge.analysis import pairwise_outcomes

        o = pairwise_outcomes(readers.judgments(store, judge_model))  # type: ignore[arg-type]
        o = o[(o["criterion"] == criterion) & o["outcome"].notna()]
        if task_id is not None:
            o = o[o["task_id"] == task_id]
        a_kind, a_id, b_kind, b_id = "candidate_kind", "candidate_id", "other_kind", "other_id"
        winner = o["outcome"].map({"candidate": "a", "other": "b", "tie": "tie"})
    elif source == "human":
        o = readers.human_judgments(store, criterion=criterion, task_id=task_id)  # type: ignore[arg-type]
        a_kind, a_id, b_kind, b_id = "left_kind", "left_id", "right_kind", "right_id"
        winner = o["choice"].map({"left": "a", "right": "b", "tie": "tie"})
    else:
        raise SlamkitError(f"source must be 'judge' or 'human', got {source!r}.")
    cols = ["task_id", "item_id", "model_a", "model_b", "winner", "source"]
    if o.empty:
        return pd.DataFrame(columns=cols)
    ids = pd.concat(
        [o[[a_kind, a_id]].set_axis(["kind", "id"], axis=1),
         o[[b_kind, b_id]].set_axis(["kind", "id"], axis=1)]
    )  # fmt: skip
    names = readers.model_names(
        store,  # type: ignore[arg-type]
        gen_keys=ids.loc[ids["kind"] == "generation", "id"].unique().tolist(),
        ref_ids=ids.loc[ids["kind"] == "reference", "id"].unique().tolist(),
    )
    out = pd.DataFrame(
        {
            "task_id": o["task_id"].to_numpy(),
            "item_id": o["item_id"].to_numpy(),
            "model_a": [names.get((k, i)) for k, i in zip(o[a_kind], o[a_id], strict=True)],
            "model_b": [names.get((k, i)) for k, i in zip(o[b_kind], o[b_id], strict=True)],
            "winner": winner.to_numpy(),
            "source": source,
        }
    )
    return out.dropna(subset=["model_a", "model_b", "winner"]).reset_index(drop=True)
