"""Smart-ModelMix: split the remaining items among models at minimum cost.

Given unit costs ``u_i`` and, for each model, accuracy lower bounds ``A[i, g]`` at
confidence levels ``levels[g]``, choose one option per model and ratios ``r_i``:

    minimize   sum_i u_i r_i
    subject to sum_i a_i r_i >= a_star,  sum_i r_i = 1,  r_i >= 0,
               prod_i l_i >= gamma        (rule='product', the paper's)
            or sum_i (1 - l_i) <= 1-gamma (rule='bonferroni', valid without independence)

Every model also has the free option "accuracy 0 at level 1" (a bound that always holds),
so a model may still take a share of the items without spending confidence. The
reference model is passed as a row with accuracy 1 at level 1.

Three solvers that must agree (tests check it): :func:`solve_mix_milp` (HiGHS MILP with
binary option indicators), :func:`solve_mix_bruteforce` (enumerate options, one LP each)
and :func:`solve_mix_pairs` (vectorized over many instances; an LP with two constraints
has an optimal basic solution with at most two nonzero ratios, so enumerating singles and
pairs is exact). The simulator uses the last one.

Those three are the paper's ModelMix: its levels are picked after seeing the data and its
accuracy constraint is about *expected* accuracy, so the accuracy actually reached on the N
items falls below the target far more often than 1 - gamma (see ``slamkit simulate``).
:func:`largest_safe_share` is the guaranteed split slamkit uses instead: a candidate whose
agreeing count among the R remaining items is bounded below by an anytime-valid confidence
sequence answers the largest share s of them (drawn at random) such that even the
split's own sampling error (:func:`split_lower_bound`) keeps the N items' accuracy at target.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from slamkit.errors import SlamkitError


@dataclass
class MixSolution:
    ratios: np.ndarray  # r_i per model
    levels: np.ndarray  # chosen confidence level per model (1.0 = free option)
    accuracies: np.ndarray  # a_i used per model
    cost: float  # sum u_i r_i (per item)


def _options(
    A: np.ndarray, levels: np.ndarray, free: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per model: option accuracies (M, G+1) and levels (G+1,); the last option is free
    (level 1, accuracy ``free[i]``: 0 for a profiled model, 1 for the reference)."""
    M = A.shape[0]
    f = np.zeros(M) if free is None else np.asarray(free, dtype=float)
    acc = np.concatenate([np.clip(A, 0.0, 1.0), f[:, None]], axis=1)
    lv = np.concatenate([np.asarray(levels, dtype=float), [1.0]])
    return acc, lv


def _spend(lv: np.ndarray, gamma: float, rule: str) -> tuple[np.ndarray, float]:
    if rule == "product":
        return -np.log(lv), -np.log(gamma)
    if rule == "bonferroni":
        return 1.0 - lv, 1.0 - gamma
    raise SlamkitError(f"Unknown confidence rule {rule!r}: use 'product' or 'bonferroni'.")


def solve_mix_milp(
    u: np.ndarray,
    A: np.ndarray,
    levels: np.ndarray,
    a_star: float,
    gamma: float,
    rule: str = "product",
    free: np.ndarray | None = None,
) -> MixSolution:
    """MILP over binary option indicators y[i,g] and shares z[i,g] (r_i = sum_g z[i,g])."""
    u = np.asarray(u, dtype=float)
    acc, lv = _options(np.asarray(A, dtype=float), levels, free)
    M, G = acc.shape
    spend, budget = _spend(lv, gamma, rule)
    nz = M * G
    # variables: z (nz, continuous [0,1]) then y (nz, binary)
    c = np.concatenate([np.repeat(u, G), np.zeros(nz)])
    rows, lb, ub = [], [], []

    def row() -> np.ndarray:
        return np.zeros(2 * nz)

    r = row()
    r[:nz] = 1.0
    rows.append(r)
    lb.append(1.0)
    ub.append(1.0)  # sum of shares = 1
    r = row()
    r[:nz] = acc.ravel()
    rows.append(r)
    lb.append(a_star)
    ub.append(np.inf)  # accuracy
    r = row()
    r[nz:] = np.tile(spend, M)
    rows.append(r)
    lb.append(-np.inf)
    ub.append(budget + 1e-12)  # confidence budget
    for i in range(M):  # one option per model
        r = row()
        r[nz + i * G : nz + (i + 1) * G] = 1.0
        rows.append(r)
        lb.append(1.0)
        ub.append(1.0)
    for j in range(nz):  # z <= y
        r = row()
        r[j] = 1.0
        r[nz + j] = -1.0
        rows.append(r)
        lb.append(-np.inf)
        ub.append(0.0)
    from scipy import optimize

    res = optimize.milp(
        c,
        constraints=optimize.LinearConstraint(np.array(rows), lb, ub),
        integrality=np.concatenate([np.zeros(nz), np.ones(nz)]),
        bounds=optimize.Bounds(0.0, 1.0),
    )
    if not res.success:
        raise SlamkitError(
            f"The model-mix MILP found no solution ({res.message}); include the reference "
            "model (accuracy 1 at level 1) so the problem is always feasible."
        )
    z = res.x[:nz].reshape(M, G)
    y = res.x[nz:].reshape(M, G).round()
    choice = y.argmax(axis=1)
    return MixSolution(
        ratios=z.sum(axis=1),
        levels=lv[choice],
        accuracies=acc[np.arange(M), choice],
        cost=float(res.fun),
    )


def _lp(u: np.ndarray, a: np.ndarray, a_star: float) -> tuple[float, np.ndarray] | None:
    from scipy import optimize

    res = optimize.linprog(
        u, A_ub=-a[None, :], b_ub=[-a_star], A_eq=np.ones((1, len(u))), b_eq=[1.0],
        bounds=[(0, None)] * len(u), method="highs",
    )  # fmt: skip
    return (float(res.fun), res.x) if res.status == 0 else None


def solve_mix_bruteforce(
    u: np.ndarray,
    A: np.ndarray,
    levels: np.ndarray,
    a_star: float,
    gamma: float,
    rule: str = "product",
    free: np.ndarray | None = None,
) -> MixSolution:
    """Enumerate every option per model, solve one LP per admissible choice, keep the best."""
    u = np.asarray(u, dtype=float)
    acc, lv = _options(np.asarray(A, dtype=float), levels, free)
    M, G = acc.shape
    spend, budget = _spend(lv, gamma, rule)
    best: MixSolution | None = None
    for choice in itertools.product(range(G), repeat=M):
        ch = np.array(choice)
        if spend[ch].sum() > budget + 1e-12:
            continue
        a = acc[np.arange(M), ch]
        sol = _lp(u, a, a_star)
        if sol and (best is None or sol[0] < best.cost - 1e-12):
            best = MixSolution(ratios=sol[1], levels=lv[ch], accuracies=a, cost=sol[0])
    if best is None:
        raise SlamkitError("No admissible model mix: include the reference model.")
    return best


def solve_mix_pairs(
    u: np.ndarray,
    A: np.ndarray,
    levels: np.ndarray,
    a_star: np.ndarray | float,
    gamma: float,
    rule: str = "product",
    free: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized exact solver over S instances.

    ``u``: (M,) unit costs; ``A``: (S, M, G) lower bounds; ``a_star``: (S,).
    ``free``: (M,) accuracy of each model's free option (1 for the reference, else 0).
    Returns (cost per item (S,), ratios (S, M)). Optimal LP solutions use at most two
    models, so the minimum over single models and pairs of options is exact.
    """
    u = np.asarray(u, dtype=float)
    A = np.asarray(A, dtype=float)
    S, M, _ = A.shape
    f = np.zeros(M) if free is None else np.asarray(free, dtype=float)
    fcol = np.broadcast_to(f[None, :, None], (S, M, 1))
    acc = np.concatenate([np.clip(A, 0, 1), fcol], axis=2)  # (S, M, G1)
    lv = np.concatenate([np.asarray(levels, dtype=float), [1.0]])
    spend, budget = _spend(lv, gamma, rule)
    G1 = len(lv)
    a_star = np.broadcast_to(np.asarray(a_star, dtype=float), (S,))
    # flatten options: index o = i * G1 + g
    a = acc.reshape(S, M * G1)
    model = np.repeat(np.arange(M), G1)
    sp = np.tile(spend, M)
    uo = u[model]
    best = np.full(S, np.inf)
    best_r = np.zeros((S, M))
    # singles
    single_ok = (a >= a_star[:, None] - 1e-12) & (sp[None, :] <= budget + 1e-12)
    cost1 = np.where(single_ok, uo[None, :], np.inf)
    o = cost1.argmin(axis=1)
    best = cost1[np.arange(S), o]
    best_r[np.arange(S), model[o]] = np.where(np.isfinite(best), 1.0, 0.0)
    # pairs of options from different models: i low accuracy, j high accuracy
    oi, oj = np.triu_indices(M * G1, k=1)
    keep = (model[oi] != model[oj]) & (sp[oi] + sp[oj] <= budget + 1e-12)
    oi, oj = oi[keep], oj[keep]
    ai, aj = a[:, oi], a[:, oj]
    lo_is_i = ai <= aj
    alo = np.where(lo_is_i, ai, aj)
    ahi = np.where(lo_is_i, aj, ai)
    ulo = np.where(lo_is_i, uo[oi], uo[oj])
    uhi = np.where(lo_is_i, uo[oj], uo[oi])
    ok = (alo < a_star[:, None]) & (ahi >= a_star[:, None]) & (ahi > alo)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_hi = np.where(ok, (a_star[:, None] - alo) / (ahi - alo), 0.0)
    cost2 = np.where(ok, ulo * (1 - r_hi) + uhi * r_hi, np.inf)
    if cost2.shape[1]:
        p = cost2.argmin(axis=1)
        c2 = cost2[np.arange(S), p]
        better = c2 < best - 1e-15
        if better.any():
            s_idx = np.nonzero(better)[0]
            pp = p[s_idx]
            rh = r_hi[s_idx, pp]
            li = lo_is_i[s_idx, pp]
            m_lo = np.where(li, model[oi[pp]], model[oj[pp]])
            m_hi = np.where(li, model[oj[pp]], model[oi[pp]])
            best_r[s_idx] = 0.0
            best_r[s_idx, m_lo] = 1 - rh
            best_r[s_idx, m_hi] += rh
            best[s_idx] = c2[s_idx]
    return best, best_r


def split_lower_bound(s: np.ndarray, g: np.ndarray, alpha: float) -> np.ndarray:
    """Agreeing items among ``s`` drawn at random without replacement from items that agree
    at rate ``g``: a lower bound that holds with probability >= 1 - ``alpha``. Chernoff's
    bound exp(-s KL(a || g)) holds for sampling without replacement too (Hoeffding 1963,
    Theorem 4), so the bound is s * a for the a < g with s KL(a || g) = log(1/alpha).

    >>> float(split_lower_bound(np.array(100.0), np.array(0.9), 0.05))
    81.0
    """
    s = np.asarray(s, dtype=float)
    g = np.clip(np.asarray(g, dtype=float), 0.0, 1.0)
    lo, hi = np.zeros_like(g * s), g * np.ones_like(s)
    c = np.log(1 / alpha)
    for _ in range(50):
        a = (lo + hi) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(a > 0, a * np.log(a / np.maximum(g, 1e-300)), 0.0) + np.where(
                a < 1, (1 - a) * np.log((1 - a) / np.maximum(1 - g, 1e-300)), 0.0
            )
        below = s * kl >= c  # a is excluded: the bound lies above it
        lo, hi = np.where(below, a, lo), np.where(below, hi, a)
    return np.floor(lo * s + 1e-9)


def largest_safe_share(
    cnt: np.ndarray, R: np.ndarray, G: np.ndarray, need: float | np.ndarray, alpha: float
) -> np.ndarray:
    """The most of the ``R`` remaining items a candidate may answer (the reference answers
    the rest) so that, with probability >= 1 - ``alpha`` over the random split,

        cnt + (R - s) + agreeing(s) >= need

    given at least ``G`` agreeing items among the R (from a confidence sequence). s = R needs
    no split bound (agreeing(R) = G); s = 0 always qualifies. Vectorized; bisection keeps a
    qualifying s, so the answer qualifies whatever the bound's shape.

    >>> int(largest_safe_share(np.array(100), np.array(900), np.array(800), 910, 0.01)[0])
    591
    >>> int(largest_safe_share(np.array(100), np.array(900), np.array(870), 910, 0.01)[0])
    900
    """
    cnt, R, G = (np.atleast_1d(np.asarray(x, dtype=float)) for x in (cnt, R, G))
    g = np.where(R > 0, G / np.maximum(R, 1), 0.0)
    lo = np.zeros_like(R)
    hi = R.copy()
    steps = int(np.ceil(np.log2(max(float(R.max()) if R.size else 1.0, 2.0)))) + 2
    for _ in range(steps):
        mid = np.minimum(np.floor((lo + hi + 1) / 2), R)
        bound = np.where(mid >= R, G, split_lower_bound(mid, g, alpha))
        ok = (cnt + (R - mid) + bound >= need) & (mid > lo)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, np.maximum(mid - 1, lo))
    return lo
