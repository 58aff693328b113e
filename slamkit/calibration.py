"""Calibrate an LLM judge on human labels, and correct judge win rates with a few of them.

On the human pairs of the store (widget or imported, :mod:`slamkit.preferences`),
:func:`calibrate_judge` runs any OpenAI-compatible judge (both orders, on the job engine,
resumable) and :func:`calibration_report` measures it:

* ``agreement`` - judge vs each annotator and vs the human majority: raw agreement and
  Cohen's kappa, each with a bootstrap CI over pairs;
* ``annotators`` - inter-annotator agreement where pairs were judged more than once
  (:func:`slamkit.human.annotator_agreement`: Cohen per annotator pair, Fleiss for all);
* ``ratings`` - Bradley-Terry strengths (Davidson ties) with bootstrap CIs from the human
  labels and from the judge on the same pairs, side by side, and their Spearman rank
  correlation (``ratings.attrs['spearman']``);
* ``win_rates`` - per pair of models, the win rate of the first (ties half) from the
  human labels alone, from the judge alone, and **prediction-powered** (Angelopoulos et
  al., "Prediction-powered inference", Science 2023; PPI++: Angelopoulos, Duchi & Zrnic,
  "PPI++: efficient prediction-powered inference", 2023): the judge's mean over the
  pairs with no human label, corrected by the judge's mean error on the labeled ones
  (:func:`ppi_mean`; PPI++ power tuning is an option). ``n_labeled`` keeps only
  that many human labels (chosen at random) to show what a few labels buy.

:func:`simulate_ppi` checks the PPI interval's coverage by simulation. All functions but
the two entry points are pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import special

from slamkit.errors import SlamkitError
from slamkit.human import annotator_agreement, human_outcomes
from slamkit.judge.analysis import pairwise_outcomes
from slamkit.store import readers

if TYPE_CHECKING:
    from slamkit.engine import Executor, JobResult
    from slamkit.judge.client import JudgeConfig
    from slamkit.store import Store

_PAIR = ["candidate_kind", "candidate_id", "other_kind", "other_id", "criterion"]
_SCORE = {"candidate": 1.0, "tie": 0.5, "other": 0.0}
_JUDGEABLE = ("generation", "reference", "text")


# -- prediction-powered inference -------------------------------------------------------
def _z(conf: float, df: int | None = None) -> float:
    """The two-sided normal quantile, or Student's t with ``df`` degrees of freedom."""
    q = 1 - (1 - conf) / 2
    if df is None:
        return float(special.ndtri(q))
    return float(special.stdtrit(max(df, 1), q))


def wilson_mean_interval(
    values: Sequence[float] | np.ndarray, conf: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval for the mean p of values in [0, 1] (win 1, tie 0.5, loss 0).

    Solves ``(mean - p)^2 = t^2 p (1 - p) / n`` for p in closed form, as Wilson (1927) does
    for a proportion. ``p (1 - p)`` is the largest variance a [0, 1] variable with mean p
    can have (the binomial's), so with ties the interval is conservative; unlike the
    t-interval ``mean +- t sd / sqrt(n)`` it does not collapse when every label agrees
    (sd = 0) and keeps its coverage near 0 and 1 (README, ``simulate_ppi``). The quantile
    is Student's t with n - 1 df, as in :func:`ppi_mean` (and Kott & Carr's
    Wilson-with-t): with the normal z, Wilson covers only 0.941 (exact) at n = 10 and a
    true win rate 0.965 from 95% wins / 3% ties. The bounds lie in [0, 1]; n = 1 gives a
    wide interval, n = 0 NaN.

    >>> [round(b, 4) for b in wilson_mean_interval([1] * 10)]  # all wins: not [1, 1]
    [0.6615, 1.0]
    >>> [round(b, 4) for b in wilson_mean_interval([1, 0, 0.5, 1])]
    [0.1158, 0.955]
    >>> [round(b, 4) for b in wilson_mean_interval([1])]  # one label: wide, not NaN
    [0.0062, 1.0]
    """
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return float("nan"), float("nan")
    p, z2 = float(v.mean()), _z(conf, n - 1) ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = np.sqrt(z2 * p * (1 - p) / n + z2**2 / (4 * n**2)) / (1 + z2 / n)
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def ppi_mean(
    y_labeled: Sequence[float] | np.ndarray,
    f_labeled: Sequence[float] | np.ndarray,
    f_unlabeled: Sequence[float] | np.ndarray,
    conf: float = 0.95,
    power_tuning: bool = False,
) -> dict[str, float]:
    """Prediction-powered estimate and normal CI of the mean of ``y``.

    ``y_labeled``: human labels on n items; ``f_labeled``: the judge on the same items;
    ``f_unlabeled``: the judge on N other items (from the same population). The estimate
    is ``lam * mean(f_unlabeled) + mean(y_labeled - lam * f_labeled)`` with variance
    ``lam^2 var(f_unlabeled) / N + var(y - lam f) / n``. Two small-sample guards, both
    conservative: the interval uses Student's t with n - 1 degrees of freedom, and the
    rectifier's variance is at least an Agresti-Coull-style value when the judge agrees
    with nearly every label (:func:`_rectifier_variance`). Without them the paper's normal
    interval covers 0.94 at n = 20 and 0.93 at n = 50 with a 95%-accurate judge; with
    them >= 0.95 in every simulated setting (README, ``simulate_ppi``).
    ``lam = 1`` is plain PPI;
    ``power_tuning`` picks the variance-minimising ``lam = cov(y, f) / ((1 + n/N) var(f))``
    clipped to [0, 1] (PPI++), so a useless judge falls back to the human mean (lam = 0);
    tuned on the same labels it is narrower but can undercover at small n (lam is fitted
    on the labels it then corrects), so plain PPI is the default.
    Returns estimate, lo, hi, se, lam, n, N and the human-only ``classical`` estimate with
    its CI (``classical_lo``/``classical_hi``).

    >>> r = ppi_mean([1, 0, 1, 1], [1, 0, 1, 0], [1, 1, 0, 1, 0, 1], power_tuning=False)
    >>> round(r["estimate"], 4), r["lam"]
    (0.9167, 1.0)
    """
    y = np.asarray(y_labeled, dtype=float)
    fl = np.asarray(f_labeled, dtype=float)
    fu = np.asarray(f_unlabeled, dtype=float)
    if len(y) != len(fl):
        raise SlamkitError(f"ppi_mean needs a judge value per human label ({len(y)} vs {len(fl)}).")
    n, big_n = len(y), len(fu)
    z = _z(conf, n - 1)  # t with n - 1 df: the labeled term dominates; safer at small n
    nan = float("nan")
    out = {"n": float(n), "N": float(big_n)}
    if n == 0:
        return {**out, "estimate": nan, "lo": nan, "hi": nan, "se": nan, "lam": nan,
                "classical": nan, "classical_lo": nan, "classical_hi": nan}  # fmt: skip
    c_lo, c_hi = wilson_mean_interval(y, conf)
    out.update(classical=float(y.mean()), classical_lo=c_lo, classical_hi=c_hi)
    if big_n == 0:
        lam = 0.0
    elif power_tuning:
        f_all = np.concatenate([fl, fu])
        var_f = float(f_all.var(ddof=1)) if len(f_all) > 1 else 0.0
        cov = float(np.cov(y, fl, ddof=1)[0, 1]) if n > 1 else 0.0
        lam = 0.0 if var_f <= 0 else float(np.clip(cov / ((1 + n / big_n) * var_f), 0.0, 1.0))
    else:
        lam = 1.0
    rect = y - lam * fl
    est = float((lam * fu.mean() if big_n else 0.0) + rect.mean())
    var_u = lam**2 * float(fu.var(ddof=1)) / big_n if big_n > 1 else 0.0
    var_l = _rectifier_variance(rect) / n if n > 1 else nan
    se = float(np.sqrt(var_u + var_l))
    return {**out, "estimate": est, "lo": est - z * se, "hi": est + z * se, "se": se, "lam": lam}


def _rectifier_variance(rect: np.ndarray) -> float:
    """Variance of the rectifier y - lam f, guarded against few disagreements.

    A good judge agrees with most labels, so the rectifier is mostly 0 and its sample
    variance is unstable (0 when the n labeled items all agree): the plain interval then
    undercovers (simulated 0.93 at n = 50 and judge accuracy 0.95). As Agresti-Coull do for
    a proportion, the share p of nonzero values is taken as (k + 2) / (n + 4) in
    ``p E[V^2] - p^2 E[V]^2`` (V: the nonzero values; E[V^2] = 1/4 when k = 0), and the
    larger of that and the sample variance is used.
    """
    n = len(rect)
    nz = rect[np.abs(rect) > 1e-12]
    k = len(nz)
    ev2 = float(np.mean(nz**2)) if k else 0.25
    ev = float(np.mean(nz)) if k else 0.0
    p = (k + 2) / (n + 4)
    guarded = (p * ev2 - p**2 * ev**2) * n / (n - 1)
    return max(float(rect.var(ddof=1)), guarded)


def simulate_ppi(
    n_sims: int = 2000,
    n: int = 50,
    big_n: int = 1000,
    p_win: float = 0.55,
    p_tie: float = 0.15,
    judge_accuracy: float = 0.7,
    judge_bias: float = 0.3,
    conf: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Coverage and mean width of the PPI, PPI++, human-only and judge-only intervals of a
    win rate over ``n_sims`` simulated studies.

    Each study draws n + N pairs: the human outcome is a win (``p_win``), a tie
    (``p_tie``) or a loss; the judge copies it with probability ``judge_accuracy``, else
    answers at random, and turns a further ``judge_bias`` share of losses into wins (a
    judge that favours one side). A uniform random n of the pairs keep their human label.
    The truth is ``p_win + p_tie / 2``. "human only" is :func:`ppi_mean`'s classical
    interval (:func:`wilson_mean_interval`); "judge only" a normal interval over all n + N
    judge values. Columns: method, coverage, mean_width, coverage_se (binomial), n_sims.
    """
    rng = np.random.default_rng(seed)
    total = n + big_n
    truth = p_win + p_tie / 2
    u = rng.random((n_sims, total))
    y = np.where(u < p_win, 1.0, np.where(u < p_win + p_tie, 0.5, 0.0))
    copy = rng.random((n_sims, total)) < judge_accuracy
    noise = rng.choice([0.0, 0.5, 1.0], size=(n_sims, total))
    f = np.where(copy, y, noise)
    f = np.where((f == 0.0) & (rng.random((n_sims, total)) < judge_bias), 1.0, f)
    labeled = np.argsort(rng.random((n_sims, total)), axis=1)[:, :n]
    rows: dict[str, list[tuple[bool, float]]] = {
        "ppi": [], "ppi++": [], "human only": [], "judge only": []
    }  # fmt: skip
    z = _z(conf)
    for s in range(n_sims):
        mask = np.zeros(total, dtype=bool)
        mask[labeled[s]] = True
        for name, tuned in (("ppi", False), ("ppi++", True)):
            r = ppi_mean(y[s, mask], f[s, mask], f[s, ~mask], conf, power_tuning=tuned)
            rows[name].append((r["lo"] <= truth <= r["hi"], r["hi"] - r["lo"]))
        rows["human only"].append(
            (r["classical_lo"] <= truth <= r["classical_hi"], r["classical_hi"] - r["classical_lo"])
        )
        fm, fs = f[s].mean(), f[s].std(ddof=1) / np.sqrt(total)
        rows["judge only"].append((fm - z * fs <= truth <= fm + z * fs, 2 * z * fs))
    out = []
    for name, vals in rows.items():
        cov = float(np.mean([c for c, _ in vals]))
        width = float(np.mean([w for _, w in vals]))
        se = float(np.sqrt(cov * (1 - cov) / n_sims))
        out.append({"method": name, "coverage": cov, "mean_width": width, "coverage_se": se,
                    "n_sims": n_sims})  # fmt: skip
    df = pd.DataFrame(out)
    df.attrs.update(truth=truth, n=n, N=big_n, conf=conf, judge_accuracy=judge_accuracy,
                    judge_bias=judge_bias, seed=seed)  # fmt: skip
    return df


# -- agreement with CIs --------------------------------------------------------------------
def _kappa_boot(a: np.ndarray, b: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """Cohen's kappa of label codes a, b (0..k-1) for each row of resample indices."""
    aa, bb = a[idx], b[idx]
    m = idx.shape[1]
    po = (aa == bb).mean(axis=1)
    pa = np.stack([(aa == c).mean(axis=1) for c in range(k)], axis=1)
    pb = np.stack([(bb == c).mean(axis=1) for c in range(k)], axis=1)
    pe = (pa * pb).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
    del m
    return kappa


def agreement_ci(
    a: Sequence[Any], b: Sequence[Any], n_boot: int = 1000, conf: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Raw agreement and Cohen's kappa of two label lists with percentile bootstrap CIs
    (resampling items). Kappa equals :func:`slamkit.human.cohen_kappa`.

    >>> r = agreement_ci(["x", "y", "x", "y"], ["x", "y", "y", "y"])
    >>> r["n"], r["agreement"], round(r["kappa"], 3)
    (4, 0.75, 0.5)
    """
    if len(a) != len(b):
        raise SlamkitError(f"agreement_ci needs equal-length label lists ({len(a)} vs {len(b)}).")
    n = len(a)
    nan = float("nan")
    if n == 0:
        return {"n": 0, "agreement": nan, "agreement_lo": nan, "agreement_hi": nan,
                "kappa": nan, "kappa_lo": nan, "kappa_hi": nan}  # fmt: skip
    labels = sorted(set(a) | set(b), key=str)
    pos = {c: i for i, c in enumerate(labels)}
    ca = np.array([pos[x] for x in a])
    cb = np.array([pos[x] for x in b])
    full = np.arange(n)[None, :]
    kappa = float(_kappa_boot(ca, cb, len(labels), full)[0])
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    agree = (ca[idx] == cb[idx]).mean(axis=1)
    kb = _kappa_boot(ca, cb, len(labels), idx)
    q = [(1 - conf) / 2, 1 - (1 - conf) / 2]
    alo, ahi = np.quantile(agree, q)
    kb = kb[np.isfinite(kb)]
    klo, khi = np.quantile(kb, q) if len(kb) and np.isfinite(kappa) else (nan, nan)
    return {"n": n, "agreement": float((ca == cb).mean()), "agreement_lo": float(alo),
            "agreement_hi": float(ahi), "kappa": kappa, "kappa_lo": float(klo),
            "kappa_hi": float(khi)}  # fmt: skip


def _majority(s: pd.Series) -> str:
    vc = s.value_counts()
    return str(vc.index[0]) if len(vc) == 1 or vc.iloc[0] > vc.iloc[1] else "tie"


AGREEMENT_COLUMNS = ["judge_model", "criterion", "annotator", "n", "agreement", "agreement_lo",
                     "agreement_hi", "kappa", "kappa_lo", "kappa_hi"]  # fmt: skip


def judge_human_agreement_ci(
    judge: pd.DataFrame, human: pd.DataFrame, n_boot: int = 1000, conf: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """Judge vs each annotator and vs the majority ('majority'; no strict majority is a
    tie), with CIs (:func:`agreement_ci`). ``judge``: :func:`slamkit.judge.pairwise_outcomes`;
    ``human``: :func:`slamkit.human.human_outcomes` (an annotator's last label per pair)."""
    j = judge.dropna(subset=["outcome"])
    if j.empty or human.empty:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    h = human.drop_duplicates([*_PAIR, "annotator"], keep="last")
    maj = h.groupby(_PAIR)["outcome"].agg(_majority).reset_index().assign(annotator="majority")
    h = pd.concat([h[[*_PAIR, "annotator", "outcome"]], maj], ignore_index=True)
    merged = j.merge(h, on=_PAIR, suffixes=("_judge", "_human"))
    rows = []
    for (jm, crit, ann), g in merged.groupby(["judge_model", "criterion", "annotator"]):
        r = agreement_ci(list(g["outcome_judge"]), list(g["outcome_human"]), n_boot, conf, seed)
        rows.append({"judge_model": jm, "criterion": crit, "annotator": ann, **r})
    out = pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
    order = out["annotator"].ne("majority")  # the majority row first per judge
    return (
        out.assign(_o=order)
        .sort_values(["judge_model", "criterion", "_o", "annotator"])
        .drop(columns="_o")
        .reset_index(drop=True)
    )


# -- ratings --------------------------------------------------------------------------------
RATING_COLUMNS = ["judge_model", "model", "human_theta", "human_lo", "human_hi", "judge_theta",
                  "judge_lo", "judge_hi", "human_rank", "judge_rank", "comparisons"]  # fmt: skip


def _named(df: pd.DataFrame, names: dict[tuple[str, str], str]) -> pd.DataFrame:
    out = df.copy()
    out["model_a"] = [
        names.get((k, i)) for k, i in zip(df.candidate_kind, df.candidate_id, strict=True)
    ]
    out["model_b"] = [names.get((k, i)) for k, i in zip(df.other_kind, df.other_id, strict=True)]
    out["winner"] = df["outcome"].map({"candidate": "a", "other": "b", "tie": "tie"})
    return out.dropna(subset=["model_a", "model_b", "winner"])


def rating_table(
    judge: pd.DataFrame, human: pd.DataFrame, names: dict[tuple[str, str], str],
    n_boot: int = 200, conf: float = 0.95, seed: int = 0, criterion: str = "overall",
) -> pd.DataFrame:  # fmt: skip
    """Bradley-Terry strengths (Davidson ties, theta centred) with bootstrap CIs from the
    human labels and from each judge on the same pairs, on one ``criterion``;
    ``attrs['spearman']`` holds ``{judge: rho}`` of the two orders (NaN with fewer than 3
    models, or when either side has no order)."""
    from scipy import stats as sps

    from slamkit.stats import bradley_terry

    human = human[human["criterion"] == criterion]
    judge = judge[judge["criterion"] == criterion]
    hv = _named(human, names)
    hv = hv[hv["model_a"] != hv["model_b"]]
    empty = pd.DataFrame(columns=RATING_COLUMNS)
    empty.attrs["spearman"] = {}
    if hv.empty or len(set(hv.model_a) | set(hv.model_b)) < 2:
        return empty
    keys = set(map(tuple, hv[_PAIR].to_numpy().tolist()))
    hbt = bradley_terry(hv, n_boot=n_boot, conf=conf, seed=seed)
    frames, rhos = [], {}
    for jm, g in judge.dropna(subset=["outcome"]).groupby("judge_model"):
        jv = _named(g, names)
        jv = jv[[tuple(r) in keys for r in jv[_PAIR].to_numpy().tolist()]]
        if len(set(jv.model_a) | set(jv.model_b)) < 2:
            continue
        jbt = bradley_terry(jv, n_boot=n_boot, conf=conf, seed=seed)
        m = hbt[["model", "theta", "ci_lo", "ci_hi", "comparisons"]].merge(
            jbt[["model", "theta", "ci_lo", "ci_hi"]], on="model", suffixes=("_h", "_j")
        )
        m = m.rename(columns={
            "theta_h": "human_theta", "ci_lo_h": "human_lo", "ci_hi_h": "human_hi",
            "theta_j": "judge_theta", "ci_lo_j": "judge_lo", "ci_hi_j": "judge_hi",
        })  # fmt: skip
        # ranks and rho of strengths rounded to 1e-6: a judge that calls every pair a tie
        # has strengths 0 up to the optimiser's noise, which must not read as an order
        hr, jr = m["human_theta"].round(6), m["judge_theta"].round(6)
        m["human_rank"] = hr.rank(ascending=False, method="min").astype(int)
        m["judge_rank"] = jr.rank(ascending=False, method="min").astype(int)
        m.insert(0, "judge_model", jm)
        rho = float("nan")
        if len(m) >= 3 and hr.nunique() > 1 and jr.nunique() > 1:
            rho = float(sps.spearmanr(hr, jr).statistic)
        rhos[str(jm)] = rho
        frames.append(m[RATING_COLUMNS])
    if not frames:
        return empty
    out = pd.concat(frames, ignore_index=True)
    out.attrs["spearman"] = rhos
    return out


# -- win rates -------------------------------------------------------------------------------
WIN_COLUMNS = ["judge_model", "model_a", "model_b", "n_labeled", "n_unlabeled", "human",
               "human_lo", "human_hi", "judge", "judge_lo", "judge_hi", "ppi", "ppi_lo",
               "ppi_hi", "lam", "human_all", "n_human_all"]  # fmt: skip


def _oriented(df: pd.DataFrame, names: dict[tuple[str, str], str]) -> pd.DataFrame:
    """Rows with model_a < model_b (names) and the score of model_a (win 1, tie 0.5)."""
    v = _named(df, names)
    v = v[v["model_a"] != v["model_b"]].copy()
    score = v["outcome"].map(_SCORE).astype(float)
    swap = v["model_a"] > v["model_b"]
    v["score"] = np.where(swap, 1 - score, score)
    v["m1"] = np.where(swap, v["model_b"], v["model_a"])
    v["m2"] = np.where(swap, v["model_a"], v["model_b"])
    v["pair"] = [
        tuple(sorted([(a, b), (c, d)]))
        for a, b, c, d in zip(
            v.candidate_kind, v.candidate_id, v.other_kind, v.other_id, strict=True
        )
    ]
    return v


def win_rate_table(
    judge: pd.DataFrame,
    human: pd.DataFrame,
    names: dict[tuple[str, str], str],
    n_labeled: int | None = None,
    conf: float = 0.95,
    seed: int = 0,
    power_tuning: bool = False,
) -> pd.DataFrame:
    """Per judge and pair of models (model_a < model_b by name): model_a's win rate over
    model_b (ties half) from the humans (mean over annotators per pair, then over pairs),
    from the judge on every pair it judged, and prediction-powered (:func:`ppi_mean`: the
    judge on the pairs without a human label, corrected on the labeled ones); bounds are
    clipped to [0, 1]. With
    ``n_labeled``, only that many labeled pairs (a seeded random choice) keep their human
    label; ``human_all`` is then the estimate from all of them, for comparison."""
    z = _z(conf)
    hv = _oriented(human[human["criterion"] == "overall"], names)
    rows = []
    rng = np.random.default_rng(seed)
    if hv.empty:
        return pd.DataFrame(columns=WIN_COLUMNS)
    hp = hv.groupby(["m1", "m2", "pair"])["score"].mean().reset_index()
    jall = judge[(judge["criterion"] == "overall")].dropna(subset=["outcome"])
    for jm, g in jall.groupby("judge_model"):
        jv = _oriented(g, names).drop_duplicates("pair", keep="last")
        for (m1, m2), hg in hp.groupby(["m1", "m2"]):
            jg = jv[(jv["m1"] == m1) & (jv["m2"] == m2)]
            if jg.empty:
                continue
            lab = hg.merge(jg[["pair", "score"]], on="pair", suffixes=("_h", "_j"))
            n_all = len(lab)
            human_all = float(lab["score_h"].mean()) if n_all else float("nan")
            if n_labeled is not None and n_all > n_labeled:
                keep = np.sort(rng.choice(n_all, size=n_labeled, replace=False))
                lab = lab.iloc[keep]
            unl = jg[~jg["pair"].isin(set(lab["pair"]))]
            r = ppi_mean(lab["score_h"], lab["score_j"], unl["score"], conf, power_tuning)
            js = jg["score"].to_numpy(dtype=float)
            jse = js.std(ddof=1) / np.sqrt(len(js)) if len(js) > 1 else float("nan")
            r = {
                k: float(np.clip(v, 0, 1))
                if k in ("lo", "hi", "classical_lo", "classical_hi")
                else v
                for k, v in r.items()
            }  # a win rate lies in [0, 1]: so do its bounds
            jlo, jhi = np.clip([js.mean() - z * jse, js.mean() + z * jse], 0, 1)
            rows.append(
                {"judge_model": jm, "model_a": m1, "model_b": m2, "n_labeled": len(lab),
                 "n_unlabeled": len(unl), "human": r["classical"], "human_lo": r["classical_lo"],
                 "human_hi": r["classical_hi"], "judge": float(js.mean()),
                 "judge_lo": float(jlo), "judge_hi": float(jhi),
                 "ppi": r["estimate"], "ppi_lo": r["lo"], "ppi_hi": r["hi"], "lam": r["lam"],
                 "human_all": human_all, "n_human_all": n_all}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=WIN_COLUMNS)


# -- the report ---------------------------------------------------------------------------------
@dataclass
class Calibration:
    """Judge-vs-human tables (see the module doc); ``note`` says what is missing."""

    agreement: pd.DataFrame
    annotators: pd.DataFrame
    ratings: pd.DataFrame
    win_rates: pd.DataFrame
    note: str = ""
    judged: dict[str, Any] = field(default_factory=dict)

    @property
    def spearman(self) -> dict[str, float]:
        """Judge -> Spearman rank correlation of its Bradley-Terry order with the humans'."""
        return dict(self.ratings.attrs.get("spearman", {}))

    def summary(self) -> pd.DataFrame:
        """One row per judge: kappa and agreement vs the majority (with CIs), Spearman."""
        cols = ["judge_model", "n", "agreement", "agreement_lo", "agreement_hi", "kappa",
                "kappa_lo", "kappa_hi", "spearman"]  # fmt: skip
        a = self.agreement[(self.agreement["annotator"] == "majority")
                           & (self.agreement["criterion"] == "overall")]  # fmt: skip
        out = a.assign(spearman=[self.spearman.get(str(j), np.nan) for j in a["judge_model"]])
        return out[cols].reset_index(drop=True)

    def __repr__(self) -> str:
        return f"Calibration({self.note or self.summary().to_string(index=False)})"


def _human_frame(store: Store, task_id: str | None, source: str | None) -> pd.DataFrame:
    h = readers.human_judgments(store, task_id=task_id)
    if source is not None and not h.empty:
        h = h[h["source"].fillna("").str.contains(source, regex=False)]
    return h


def _names(store: Store, outcomes: Sequence[pd.DataFrame]) -> dict[tuple[str, str], str]:
    sides: set[tuple[str, str]] = set()
    for o in outcomes:
        sides |= set(zip(o["candidate_kind"], o["candidate_id"], strict=True))
        sides |= set(zip(o["other_kind"], o["other_id"], strict=True))
    names = readers.model_names(
        store,
        gen_keys=sorted(i for k, i in sides if k == "generation"),
        ref_ids=sorted(i for k, i in sides if k == "reference"),
    )
    return {**names, **readers.human_side_models(store)}


def calibration_report(
    store: Store,
    judge_model: str | None = None,
    task_id: str | None = None,
    source: str | None = None,
    n_labeled: int | None = None,
    conf: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    power_tuning: bool = False,
) -> Calibration:
    """The judge-vs-human tables from what the store holds (no judge calls).

    ``source`` keeps the human labels whose source contains it (e.g. a file name);
    ``judge_model`` one judge (default: every judge). Without human labels, or without
    judge verdicts on them, the tables are empty and ``note`` says what to do.
    """
    if n_labeled is not None and (not isinstance(n_labeled, int) or n_labeled < 2):
        raise SlamkitError(f"n_labeled must be a whole number >= 2 (or None), got {n_labeled!r}.")
    h = _human_frame(store, task_id, source)
    ho = human_outcomes(h)
    jo = pairwise_outcomes(readers.judgments(store, judge_model))
    if task_id is not None:
        jo = jo[jo["task_id"] == task_id]
    names = _names(store, [ho, jo])
    agreement = judge_human_agreement_ci(jo, ho, n_boot, conf, seed)
    annotators = annotator_agreement(ho) if not ho.empty else annotator_agreement(ho.iloc[0:0])
    ratings = rating_table(jo, ho, names, min(n_boot, 200), conf, seed)
    wins = win_rate_table(jo, ho, names, n_labeled, conf, seed, power_tuning)
    note = ""
    if ho.empty:
        note = ("no human labels in the store: label pairs in the A/B widget or import a file "
                "(slamkit human import FILE --task ...)")  # fmt: skip
    elif agreement.empty:
        note = ("no judge verdicts on the human pairs yet: run slamkit human calibrate "
                "--base-url ... --model ... (or calibrate_judge)")  # fmt: skip
    elif annotators.empty:
        note = "no pair was judged by more than one annotator: no inter-annotator agreement"
    return Calibration(agreement, annotators, ratings, wins, note)


def human_pairs(
    store: Store, task_id: str | None = None, source: str | None = None
) -> pd.DataFrame:
    """The distinct pairs humans judged (overall), as judge pairs: task_id, item_id, a_kind,
    a_id, b_kind, b_id with a = the candidate of :func:`slamkit.human.human_outcomes`, so
    judge and human outcomes line up. Sides without a stored text are left out."""
    cols = ["task_id", "item_id", "a_kind", "a_id", "b_kind", "b_id"]
    ho = human_outcomes(_human_frame(store, task_id, source))
    if ho.empty:
        return pd.DataFrame(columns=cols)
    ho = ho[ho["candidate_kind"].isin(_JUDGEABLE) & ho["other_kind"].isin(_JUDGEABLE)]
    ho = ho.drop_duplicates(["candidate_kind", "candidate_id", "other_kind", "other_id"])
    out = ho.rename(columns={"candidate_kind": "a_kind", "candidate_id": "a_id",
                             "other_kind": "b_kind", "other_id": "b_id"})  # fmt: skip
    return out[cols].reset_index(drop=True)


def calibrate_judge(
    store: Store,
    config: JudgeConfig,
    task_id: str | None = None,
    source: str | None = None,
    limit: int | None = None,
    criteria: Sequence[str] = (),
    progress: bool = True,
    executor: str | Executor = "sequential",
    concurrency: int | None = None,
    **report: Any,
) -> Calibration:
    """Run the judge ``config`` (pairwise, both orders) on the human pairs not yet judged
    by it and return :func:`calibration_report` for it. ``criteria``: also judge these
    criteria (mode 'criteria'), to compare with per-criterion human choices of the same
    names. ``limit``: the first N human pairs (in label order; None: all). Resumable like
    :func:`slamkit.judge.run_judge`."""
    from slamkit.judge.run import run_judge
    from slamkit.tasks import check_limit

    check_limit(limit, what="human pairs")
    pairs = human_pairs(store, task_id, source)
    if limit is not None:
        pairs = pairs.head(int(limit))
    result: JobResult | None = None
    crits = [c for c in dict.fromkeys(criteria) if c != "overall"]  # overall: pairwise
    if not pairs.empty:
        result = run_judge(store, config, mode="pairwise", pairs=pairs, progress=progress,
                           executor=executor, concurrency=concurrency)  # fmt: skip
        if crits:
            more = run_judge(
                store, config, mode="criteria", pairs=pairs, criteria=crits,
                progress=progress, executor=executor, concurrency=concurrency,
            )  # fmt: skip
            for k in ("planned", "cached", "done", "failed"):
                setattr(result, k, getattr(result, k) + getattr(more, k))
    cal = calibration_report(store, judge_model=config.model, task_id=task_id, source=source,
                             **report)  # fmt: skip
    if result is not None:
        cal.judged = {"planned": result.planned, "cached": result.cached, "done": result.done,
                      "failed": result.failed}  # fmt: skip
    return cal
