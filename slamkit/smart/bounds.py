"""Confidence bounds for a conformity rate: Clopper-Pearson and anytime-valid sequences.

Every family answers two questions about ``k`` conforming outputs out of ``n``:

* ``excludes_below(k, n, t)``: is the lower bound >= ``t``?  (the model is *satisfied*)
* ``excludes_above(k, n, t)``: is the upper bound <  ``t``?  (the model is *invalid*)

and ``interval(k, n)`` gives the bounds themselves. All functions are vectorized over
numpy arrays. ``thresholds(nmax, t)`` turns the predicates into integer tables
``k_inv[n]`` (largest k that is invalid) and ``k_sat[n]`` (smallest k that is satisfied),
which is what the fast simulator and the expected-cost early stop use.

Families:

* :class:`ClopperPearson` - the exact binomial interval at one confidence level. Valid
  for one look at the data; SMART checks it after every batch ("peeking").
* :class:`AlphaSpendingCP` - Clopper-Pearson at level ``1 - alpha/(j(j+1))`` at the j-th
  look (look = every ``batch`` items). Since sum_j alpha/(j(j+1)) = alpha, a union bound
  makes the guarantee hold over *all* looks.
* :class:`BetaBinomialCS` - Robbins' mixture confidence sequence. For a Beta(a, b)
  prior, M_n(p) = B(a+k, b+n-k) / B(a, b) / (p^k (1-p)^(n-k)) is a nonnegative
  martingale under p, so by Ville's inequality {p : M_n(p) < 1/alpha} covers the true p
  at every n simultaneously with probability >= 1 - alpha (anytime-valid).
* :class:`FinitePopulationCS` - the same mixture idea for the *finite* population of the N
  items sampled without replacement (Waudby-Smith & Ramdas, "Confidence sequences for
  sampling without replacement", NeurIPS 2020, section 3: the prior-posterior ratio
  martingale for a binary population with a beta-binomial prior). Its predicates answer
  the guarantee's own question: will the accuracy on all N items reach ``t`` when the n
  profiled items keep the reference's outputs (they agree by construction) and the model
  answers the N - n others? Checked after every item; slamkit's default anytime family.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Protocol

import numpy as np
from scipy import special

ArrayLike = np.ndarray | int | float


class BoundFamily(Protocol):
    @property
    def name(self) -> str: ...

    def excludes_below(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray: ...

    def excludes_above(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray: ...

    def interval(self, k: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> str: ...


def clopper_pearson(
    k: ArrayLike, n: ArrayLike, conf: float = 0.95, sided: str = "two"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial interval. ``sided='two'`` splits 1-conf over both tails;
    ``'lower'``/``'upper'`` put it all in one tail (the other bound is 0 or 1).

    >>> lo, hi = clopper_pearson(9, 10, 0.95)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.555, 0.9975)
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    a = (1 - conf) / 2 if sided == "two" else (1 - conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        from scipy import stats  # lazy: ~65 MB, needed only when bounds are computed

        lo = np.where(k > 0, stats.beta.ppf(a, np.maximum(k, 1e-300), n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - a, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    lo = np.where(n > 0, lo, 0.0)
    hi = np.where(n > 0, hi, 1.0)
    if sided == "lower":
        hi = np.ones_like(hi)
    elif sided == "upper":
        lo = np.zeros_like(lo)
    return lo, hi


def _cp_excludes_below(k: ArrayLike, n: ArrayLike, t: float, a: ArrayLike) -> np.ndarray:
    """Clopper-Pearson lower bound >= t  <=>  P(Bin(n, t) >= k) <= a (exact duality)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    tail = np.where(k > 0, special.bdtrc(np.maximum(k - 1, 0), n, t), 1.0)
    return (n > 0) & (tail <= a)


def _cp_excludes_above(k: ArrayLike, n: ArrayLike, t: float, a: ArrayLike) -> np.ndarray:
    """Clopper-Pearson upper bound < t  <=>  P(Bin(n, t) <= k) < a."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    return (n > 0) & (k < n) & (special.bdtr(np.minimum(k, n), n, t) < a)


@dataclass(frozen=True)
class ClopperPearson:
    """Two-sided Clopper-Pearson at ``conf``, re-evaluated at every look (SMART's rule)."""

    conf: float = 0.95
    name: str = field(default="clopper-pearson", init=False)

    def interval(self, k: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        return clopper_pearson(k, n, self.conf)

    def excludes_below(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        return _cp_excludes_below(k, n, t, (1 - self.conf) / 2)

    def excludes_above(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        return _cp_excludes_above(k, n, t, (1 - self.conf) / 2)

    def describe(self) -> str:
        return f"two-sided Clopper-Pearson at {self.conf:g}, checked every batch"


@dataclass(frozen=True)
class AlphaSpendingCP:
    """Clopper-Pearson at 1 - alpha/(j(j+1)) at look j = ceil(n / batch): valid over all looks."""

    alpha: float = 0.05
    batch: int = 10
    name: str = field(default="alpha-spending-cp", init=False)

    def _conf(self, n: ArrayLike) -> np.ndarray:
        j = np.maximum(np.ceil(np.asarray(n, dtype=float) / self.batch), 1.0)
        return 1 - self.alpha / (j * (j + 1))

    def interval(self, k: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        k = np.asarray(k, dtype=float)
        n = np.asarray(n, dtype=float)
        a = (1 - self._conf(n)) / 2
        from scipy import stats  # lazy: ~65 MB, needed only when bounds are computed

        with np.errstate(invalid="ignore", divide="ignore"):
            lo = np.where(k > 0, stats.beta.ppf(a, np.maximum(k, 1e-300), n - k + 1), 0.0)
            hi = np.where(k < n, stats.beta.ppf(1 - a, k + 1, np.maximum(n - k, 1e-300)), 1.0)
        return np.where(n > 0, lo, 0.0), np.where(n > 0, hi, 1.0)

    def excludes_below(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        return _cp_excludes_below(k, n, t, (1 - self._conf(n)) / 2)

    def excludes_above(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        return _cp_excludes_above(k, n, t, (1 - self._conf(n)) / 2)

    def describe(self) -> str:
        return (
            f"Clopper-Pearson with alpha spending (alpha={self.alpha:g} split as "
            f"alpha/(j(j+1)) over looks every {self.batch} items): anytime-valid"
        )


@dataclass(frozen=True)
class BetaBinomialCS:
    """Robbins' beta-binomial mixture confidence sequence (anytime-valid, two-sided)."""

    alpha: float = 0.05
    a: float = 1.0
    b: float = 1.0
    name: str = field(default="beta-binomial-cs", init=False)

    def log_martingale(self, k: ArrayLike, n: ArrayLike, p: ArrayLike) -> np.ndarray:
        k = np.asarray(k, dtype=float)
        n = np.asarray(n, dtype=float)
        p = np.clip(np.asarray(p, dtype=float), 1e-15, 1 - 1e-15)
        log_mix = special.betaln(self.a + k, self.b + n - k) - special.betaln(self.a, self.b)
        return log_mix - k * np.log(p) - (n - k) * np.log1p(-p)

    def excludes_below(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        k = np.asarray(k, dtype=float)
        n = np.asarray(n, dtype=float)
        right = k >= t * n
        return right & (n > 0) & (self.log_martingale(k, n, t) >= np.log(1 / self.alpha))

    def excludes_above(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        k = np.asarray(k, dtype=float)
        n = np.asarray(n, dtype=float)
        left = k < t * n
        return left & (n > 0) & (self.log_martingale(k, n, t) >= np.log(1 / self.alpha))

    def interval(self, k: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
        phat = np.where(n > 0, k / np.maximum(n, 1), 0.5)
        thr = np.log(1 / self.alpha)

        def solve(lo: np.ndarray, hi: np.ndarray, inside_is_hi: bool) -> np.ndarray:
            # bisection for the boundary between excluded and included p
            for _ in range(60):
                mid = (lo + hi) / 2
                excluded = self.log_martingale(k, n, mid) >= thr
                if inside_is_hi:  # lower boundary: excluded below, included above
                    lo, hi = np.where(excluded, mid, lo), np.where(excluded, hi, mid)
                else:
                    lo, hi = np.where(excluded, lo, mid), np.where(excluded, mid, hi)
            return (lo + hi) / 2

        lower = solve(np.zeros_like(phat), phat.copy(), True)
        upper = solve(phat.copy(), np.ones_like(phat), False)
        lower = np.where(self.log_martingale(k, n, 0.0) >= thr, lower, 0.0)
        upper = np.where(self.log_martingale(k, n, 1.0) >= thr, upper, 1.0)
        return np.where(n > 0, lower, 0.0), np.where(n > 0, upper, 1.0)

    def describe(self) -> str:
        return (
            f"beta-binomial mixture confidence sequence (Beta({self.a:g},{self.b:g}) prior, "
            f"alpha={self.alpha:g}): anytime-valid, may be checked after every item"
        )


def _lnchoose(n: ArrayLike, k: ArrayLike) -> np.ndarray:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


#: the prior mixture of :func:`anytime_family`: (mean offset above the target, strength, weight)
ANYTIME_PRIOR = ((0.015, 600.0, 1 / 3), (0.04, 80.0, 1 / 3), (0.10, 15.0, 1 / 3))


@dataclass(frozen=True)
class FinitePopulationCS:
    """Anytime-valid bounds on a model's agreement with the reference over a finite set of
    ``n_items`` items processed in random order (sampling without replacement).

    The n items seen so far hold k agreeing outputs; K is the unknown number among all N.
    Under a prior pi on K (a mixture of beta-binomials, ``prior``: (a, b, weight) per
    component), the posterior of the unseen count K - k is again beta-binomial, and the ratio

        M_n(K) = prior(K) / posterior_n(K) = [sum_j w_j B(a_j+k, b_j+n-k) / B(a_j, b_j)]
                                             * C(N, K) / C(N-n, K-k)

    is a nonnegative martingale with mean 1 under K (Waudby-Smith & Ramdas 2020, Thm 3.1), so
    by Ville's inequality the set {K : M_n(K) < 1/alpha} covers K at every n at once with
    probability >= 1 - alpha. The likelihood C(K, k) C(N-K, n-k) is unimodal in K, so the set
    is an interval and testing its edge decides.

    ``excludes_below(k, n, t)``: every K < t*N - n + k is excluded, i.e. the agreeing count
    over the N - n unseen items is at least t*N - n: answering them with the model and the n
    profiled items with the reference reaches accuracy t on all N items. The target for the
    unseen part, (t*N - n) / (N - n), is below t - the slack of the profiled items.
    ``excludes_above``: even that is excluded (the model cannot reach t). ``interval``: the
    bounds on the unseen items' agreement rate (K - k) / (N - n). Once every item is
    profiled (n = N) nothing is left to decide: neither predicate holds, the interval is [0, 1].

    >>> cs = FinitePopulationCS(alpha=0.05, n_items=1000)
    >>> bool(cs.excludes_below(196, 200, 0.9)), bool(cs.excludes_below(190, 200, 0.9))
    (True, False)
    """

    alpha: float = 0.05
    n_items: int = 1000
    prior: tuple[tuple[float, float, float], ...] = ((1.0, 1.0, 1.0),)
    name: str = field(default="finite-population-cs", init=False)

    def log_mixture(self, k: np.ndarray, n: np.ndarray) -> np.ndarray:
        """log of the prior-predictive probability of the observed sequence."""
        terms = [
            np.log(w) + special.betaln(a + k, b + n - k) - special.betaln(a, b)
            for a, b, w in self.prior
        ]
        return np.logaddexp.reduce(np.stack(terms), axis=0) if len(terms) > 1 else terms[0]

    def log_martingale(self, k: ArrayLike, n: ArrayLike, K: ArrayLike) -> np.ndarray:
        """log M_n(K) for a hypothesised total agreeing count K (k <= K <= N - n + k)."""
        k = np.asarray(k, dtype=float)
        n = np.asarray(n, dtype=float)
        K = np.asarray(K, dtype=float)
        N = float(self.n_items)
        return self.log_mixture(k, n) + _lnchoose(N, K) - _lnchoose(N - n, K - k)

    def _args(self, k: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
        return k, np.minimum(n, self.n_items)

    def excludes_below(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        k, n = self._args(k, n)
        N = self.n_items
        need = np.ceil(t * N - 1e-9) - n  # agreeing outputs needed among the N - n unseen
        K = need - 1 + k  # the largest total that falls short
        mode_right = (K + 1) * np.maximum(n, 1) <= k * (N + 1)  # K left of the likelihood mode
        ok = (K >= k) & mode_right
        lm = self.log_martingale(k, n, np.clip(K, k, N - n + k))
        decide = (n > 0) & (n < N)  # with every item profiled nothing is left to decide
        return decide & ((need <= 0) | (ok & (lm >= np.log(1 / self.alpha))))

    def excludes_above(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        k, n = self._args(k, n)
        N = self.n_items
        need = np.ceil(t * N - 1e-9) - n
        K = need + k  # the smallest total that reaches t
        impossible = need > N - n
        mode_left = K * np.maximum(n, 1) >= k * (N + 1)  # K right of the likelihood mode
        lm = self.log_martingale(k, n, np.clip(K, k, N - n + k))
        ok = (need > 0) & mode_left & (lm >= np.log(1 / self.alpha))
        return (n > 0) & (n < N) & (impossible | ok)

    def interval(self, k: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on the agreement rate of the N - n unseen items (continuous in K)."""
        k, n = self._args(k, n)
        N = float(self.n_items)
        rest = np.maximum(N - n, 1.0)
        thr = np.log(1 / self.alpha)
        mode = np.clip(k * (N + 1) / np.maximum(n, 1) - 0.5, k, N - n + k)

        def edge(lo: np.ndarray, hi: np.ndarray, lower: bool) -> np.ndarray:
            for _ in range(60):
                mid = (lo + hi) / 2
                out = self.log_martingale(k, n, mid) >= thr
                if lower:  # excluded below the edge
                    lo, hi = np.where(out, mid, lo), np.where(out, hi, mid)
                else:
                    lo, hi = np.where(out, lo, mid), np.where(out, mid, hi)
            return (lo + hi) / 2

        k_lo = np.where(self.log_martingale(k, n, k) >= thr, edge(k.copy(), mode.copy(), True), k)
        k_hi_end = N - n + k
        k_hi = np.where(
            self.log_martingale(k, n, k_hi_end) >= thr,
            edge(mode.copy(), k_hi_end.copy(), False),
            k_hi_end,
        )
        lo = np.clip((k_lo - k) / rest, 0.0, 1.0)
        hi = np.clip((k_hi - k) / rest, 0.0, 1.0)
        some = (n > 0) & (n < N)  # no unseen items (n = N): no statement, [0, 1]
        return np.where(some, lo, 0.0), np.where(some, hi, 1.0)

    def describe(self) -> str:
        return (
            f"finite-population confidence sequence (beta-binomial prior mixture, "
            f"alpha={self.alpha:.3g}, N={self.n_items}; Waudby-Smith & Ramdas 2020): "
            "anytime-valid, checked after every item, profiled items count as agreeing"
        )


#: a candidate agreeing on fewer than this share of the screening items is dropped
SCREEN_KEEP = 0.4


@dataclass(frozen=True)
class AfterScreening:
    """A finite-population sequence applied to the items *after* a screening sample.

    The first ``screen`` items (random, like all) decide which candidates are worth a
    confidence sequence at all: those agreeing on fewer than :data:`SCREEN_KEEP` of them are
    dropped. The survivors' sequences (``inner``: over the N - screen later items, at alpha
    split over the survivors only, by price rank: :func:`alpha_share`) use only the later
    items, whose order is still uniformly random given the screening sample - so they stay
    valid whatever the screening kept, and the error budget is split over the survivors
    instead of all candidates. The screening
    items keep the reference's output like every profiled item. ``k0``: the candidate's
    agreeing screening items (set aside, not used as evidence).
    """

    inner: FinitePopulationCS | CalibratedCS
    screen: int
    k0: int
    name: str = field(default="screened-finite-population-cs", init=False)

    def _t(self, t: float) -> float:
        N = self.inner.n_items + self.screen
        return (t * N - self.screen) / self.inner.n_items

    def excludes_below(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        n = np.asarray(n)
        out = self.inner.excludes_below(np.asarray(k) - self.k0, n - self.screen, self._t(t))
        return out & (n > self.screen)

    def excludes_above(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        n = np.asarray(n)
        out = self.inner.excludes_above(np.asarray(k) - self.k0, n - self.screen, self._t(t))
        return out & (n > self.screen)

    def interval(self, k: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.interval(
            np.asarray(k) - self.k0, np.maximum(np.asarray(n) - self.screen, 0)
        )

    def describe(self) -> str:
        return (
            f"{self.inner.describe()}, on the items after a {self.screen}-item screening "
            f"(candidates below {SCREEN_KEEP:.0%} agreement there dropped, alpha split over "
            f"the rest by price rank, 1 : {RANK_DECAY:g} : {RANK_DECAY:g}^2 ...)"
        )


#: the error budget's split over the screening's survivors, in price order: the r-th cheapest
#: gets a share proportional to RANK_DECAY**r (fixed before any data: a cheaper model saves
#: more when chosen, so it gets more of the budget; RANK_DECAY = 1 would be an even split)
RANK_DECAY = 0.15


def alpha_share(rank: int, survivors: int, decay: float | None = None) -> float:
    """Share of the error budget of the ``rank``-th cheapest (0 = cheapest) of ``survivors``
    candidates: decay**rank / sum_j decay**j (Bonferroni with fixed weights: the shares of
    all survivors sum to 1).

    >>> round(alpha_share(0, 2), 3), round(alpha_share(1, 2), 3), alpha_share(0, 1)
    (0.87, 0.13, 1.0)
    """
    d = RANK_DECAY if decay is None else decay
    m = max(int(survivors), 1)
    if not 0 <= rank < m:
        raise ValueError(f"rank {rank} is not among {m} survivors")
    return float(d**rank / sum(d**j for j in range(m)))


def screened_family(
    alpha_total: float,
    target: float,
    n_items: int,
    screen: int,
    survivors: int,
    rank: int = 0,
    calibrate: bool = False,
) -> FinitePopulationCS | CalibratedCS:
    """The inner family of :class:`AfterScreening` for the ``rank``-th cheapest of the
    ``survivors``: alpha_total times its :func:`alpha_share`, over the N - screen later
    items, at the target those items need. ``calibrate``: with its level set by exact
    computation (:func:`calibrated_family`; for a single model's choice - its interval is
    not a confidence sequence at the budget, so the mix does not use it)."""
    t2 = (target * n_items - screen) / (n_items - screen)
    a = alpha_total * alpha_share(rank, survivors)
    if calibrate:
        return calibrated_family(a, t2, n_items - screen)
    return anytime_family(a, t2, n_items - screen)  # type: ignore[return-value]


def anytime_family(
    alpha: float, target: float, n_items: int | None = None, strength: float = 10.0
) -> BetaBinomialCS | FinitePopulationCS:
    """slamkit's anytime-valid family.

    With ``n_items`` (the default everywhere N is known): a :class:`FinitePopulationCS`
    whose prior is an even mixture of three beta-binomials fixed before any data is seen
    (:data:`ANYTIME_PRIOR`), each tuned to the horizon of one margin above the target:
    +0.015 with 600 pseudo-items (a decision after ~1000 items), +0.04 with 80, +0.10 with
    15 (a decision after a few dozen). Chosen on the simulator among 2-4 component mixtures
    (within 1-3% of each other). Without ``n_items``: the i.i.d. beta-binomial mixture of
    earlier versions."""
    if n_items is not None:
        comps = []
        for off, s, w in ANYTIME_PRIOR:
            m = min(target + off, 1 - 0.5 / s)
            comps.append((s * m, s * (1 - m), w))
        return FinitePopulationCS(alpha=alpha, n_items=int(n_items), prior=tuple(comps))
    return BetaBinomialCS(alpha=alpha, a=strength * target, b=strength * (1 - target))


def thresholds_at(family: BoundFamily, n: ArrayLike, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer thresholds for each sample size in ``n`` (any shape).

    ``k_inv``: the largest k with upper bound < t (-1 if none);
    ``k_sat``: the smallest k with lower bound >= t (n+1 if none).
    Bisection over k, bracketed around n*t (the bounds are monotone in k).
    """
    n = np.asarray(n, dtype=np.int64)
    shape = n.shape
    n = n.ravel()
    spread = np.ceil(12 * np.sqrt(n * t * (1 - t)) + 40).astype(np.int64)
    centre = np.floor(n * t).astype(np.int64)
    # k_sat: predicate False at lo, True at hi (hi = n+1 is a sentinel)
    lo = np.maximum(centre - spread, -1)
    lo = np.where(family.excludes_below(np.maximum(lo, 0), n, t) & (lo >= 0), -1, lo)
    hi = np.minimum(centre + spread, n + 1)
    hi = np.where(family.excludes_below(np.minimum(hi, n), n, t) | (hi > n), hi, n + 1)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        ok = (mid > n) | ((mid >= 0) & family.excludes_below(np.clip(mid, 0, n), n, t))
        lo, hi = np.where(ok, lo, mid), np.where(ok, mid, hi)
    k_sat = hi
    # k_inv: predicate True at lo (lo = -1 is a sentinel), False at hi
    lo = np.maximum(centre - spread, -1)
    lo = np.where((lo < 0) | family.excludes_above(np.clip(lo, 0, n), n, t), lo, -1)
    hi = np.minimum(centre + spread, n + 1)
    hi = np.where((hi > n) | ~family.excludes_above(np.minimum(hi, n), n, t), hi, n + 1)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        ok = (mid < 0) | ((mid <= n) & family.excludes_above(np.clip(mid, 0, n), n, t))
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    k_inv = lo
    return k_inv.reshape(shape), k_sat.reshape(shape)


@lru_cache(maxsize=128)
def threshold_table(
    family: BoundFamily, nmax: int, t: float, step: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Cached ``thresholds_at`` for n = 0, step, 2*step, ... <= nmax (index = n // step)."""
    k_inv, k_sat = thresholds_at(family, np.arange(0, nmax + 1, step), t)
    k_inv.setflags(write=False)
    k_sat.setflags(write=False)
    return k_inv, k_sat


# -- exact calibration of the single-model sequence ----------------------------------------------

#: items (after the screening) over which the single-model sequence's error is computed exactly
CAL_HORIZON = 2000
#: share of a candidate's error budget kept for the plain sequence used after the horizon
CAL_LATE_SHARE = 0.05


def _certify_emax(family: BoundFamily, target: float, m: int) -> np.ndarray:
    """emax[n] for n = 0..m: the most disagreeing outputs among n items that still satisfy
    the family at ``target`` (-1: none can)."""
    n = np.arange(m + 1)
    return n - thresholds_at(family, n, target)[1]


def exact_violation(
    family: BoundFamily, target: float, n_items: int, horizon: int, debug: bool = False
) -> float:
    """An upper bound, tight where it matters, on the largest probability over every
    population that choosing the model when ``family`` first satisfies it within
    ``horizon`` items leaves the accuracy on the ``n_items`` items below ``target``.

    A population is fixed by its deficit D = ceil(target N) - K >= 1 (K agreeing items out
    of N, in uniformly random order; D <= 0 cannot be violated). With e disagreeing outputs
    among the n items seen, the model is satisfied when e <= emax[n]
    (:func:`_certify_emax`), and choosing it then violates iff K + e < ceil(target N)
    (the n seen items keep the reference's output), i.e. iff e <= D - 1. e never decreases,
    so a violation needs the walk to enter {e <= min(emax[n], D - 1)} at some n <= horizon
    - whatever the stopping rule and however often the bound is checked - and n < ceil(target
    N) (with that many items profiled the target is met whatever the model does). One dynamic
    programme over e (rows: populations) computes this probability exactly for each D (for
    D <= :data:`_EXACT_D` when there are too many); a larger D in a block [D_a, D_b] is
    bounded by the population D_a entering {e <= min(emax[n], D_b - 1)} (fewer agreeing
    items only delay entering: a coupling), with blocks about sqrt(D) / 3 wide up to the
    deficit beyond which every satisfaction is a violation, and a last row for all larger D."""
    N = int(n_items)
    m = int(min(horizon, N - 1))
    need = int(np.ceil(target * N - 1e-9))
    em = _certify_emax(family, target, m)
    if em.max() < 0:
        return 0.0
    m = min(m, need - 1)  # with need items profiled the target is met whatever the model does
    em = em[: m + 1]
    if m < 1 or em.max() < 0:
        return 0.0
    top = int(em.max()) + 1  # for D >= top every satisfaction within the horizon violates
    n_exact = top if top * top * m <= 2e8 else min(_EXACT_D, top)
    exact = np.arange(1, n_exact + 1)
    pop, cap = [int(x) for x in exact], [int(x) - 1 for x in exact]
    lo = int(exact[-1]) + 1
    while lo <= top:  # blocks about a third of the walk's spread (~sqrt(D)) wide
        hi = min(lo + max(int(np.sqrt(lo) / 3), 1) - 1, top)
        pop.append(lo)
        cap.append(hi - 1)
        lo = hi + 1
    pop.append(top + 1)
    cap.append(top)
    P = np.asarray(pop, dtype=float)[:, None]
    C = np.asarray(cap)[:, None]
    e = np.arange(top + 1)[None, :]
    live = (e <= C).astype(float)
    bad = np.maximum(N - need + P - e, 0.0) * live  # disagreeing items not yet seen, per e
    dist = np.zeros((len(pop), top + 1))
    dist[:, 0] = 1.0
    hit = np.zeros(len(pop))
    low = 0  # columns < low hold no mass: absorbed, and e never decreases
    for n in range(m):
        hi = min(n + 2, top + 1)  # e <= n + 1 after this item
        w = dist[:, low:hi]
        moved = w * (bad[:, low:hi] / (N - n))
        w -= moved
        w[:, 1:] += moved[:, :-1]
        if hi <= top:
            dist[:, hi] += moved[:, -1]
        w *= live[:, low:hi]
        lim = int(em[n + 1])
        if lim >= low:  # the satisfied region grew: absorb e in [low, lim] (within each cap)
            hit += dist[:, low : lim + 1].sum(1)
            dist[:, low : lim + 1] = 0.0
            low = lim + 1
    if debug:
        return hit, np.asarray(pop), np.asarray(cap)  # type: ignore[return-value]
    return float(hit.max())


#: deficits computed exactly by :func:`exact_violation` (larger ones are bounded in blocks)
_EXACT_D = 160


@dataclass(frozen=True)
class CalibratedCS:
    """The single-model sequence with its level set by exact computation.

    Ville's inequality is loose for a sequence checked on 0/1 outcomes: at the level alpha'
    of the mixture, the true chance that choosing the model violates the target is about
    alpha' / 2. ``early`` is the :class:`FinitePopulationCS` at the largest alpha' whose
    exact worst-case violation (:func:`exact_violation`, over every population) within
    ``horizon`` items is <= ``early_budget``; after the horizon ``late`` (a plain sequence at
    ``late_alpha``, None when the horizon covers every item) decides. The chance of a
    violation is at most early_budget + late_alpha = ``alpha``. Only the predicates at the
    calibrated ``target`` carry this guarantee; :meth:`interval` gives the bounds of the plain
    sequence at the whole budget (a confidence statement at that level), not those at alpha'."""

    early: FinitePopulationCS
    late: FinitePopulationCS | None
    target: float
    horizon: int
    alpha: float
    early_budget: float
    early_violation: float
    name: str = field(default="calibrated-finite-population-cs", init=False)

    @property
    def n_items(self) -> int:
        return self.early.n_items

    def _split(self, n: ArrayLike) -> np.ndarray:
        return np.asarray(n) <= self.horizon

    def _check(self, t: float) -> None:
        if abs(t - self.target) > 1e-9:
            raise ValueError(
                f"this sequence is calibrated for target {self.target:.6g}, not {t:.6g}"
            )

    def excludes_below(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        self._check(t)
        out = self.early.excludes_below(k, n, t)
        if self.late is None:
            return out & self._split(n)
        return np.where(self._split(n), out, self.late.excludes_below(k, n, t))

    def excludes_above(self, k: ArrayLike, n: ArrayLike, t: float) -> np.ndarray:
        out = self.early.excludes_above(k, n, t)
        if self.late is None:
            return out
        return np.where(self._split(n), out, self.late.excludes_above(k, n, t))

    @property
    def plain(self) -> FinitePopulationCS:
        """The same sequence at the whole budget: a confidence sequence at that level."""
        return replace(self.early, alpha=self.alpha)

    def interval(self, k: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The plain sequence's bounds at the budget (:attr:`plain`) - a statement at that
        confidence; the calibrated level alpha' carries only the decision's guarantee."""
        return self.plain.interval(k, n)

    def describe(self) -> str:
        late = (
            f"; after {self.horizon} items the plain sequence at {self.late.alpha:.3g}"
            if self.late is not None
            else ""
        )
        return (
            f"finite-population confidence sequence with its level calibrated exactly "
            f"(alpha' = {self.early.alpha:.3g} gives a worst-case violation of "
            f"{self.early_violation:.3g} <= {self.early_budget:.3g} within {self.horizon} "
            f"items{late}; total budget {self.alpha:.3g}), checked after every item"
        )


@lru_cache(maxsize=512)
def calibrated_family(
    alpha: float,
    target: float,
    n_items: int,
    horizon: int = CAL_HORIZON,
    late_share: float = CAL_LATE_SHARE,
) -> CalibratedCS:
    """:func:`anytime_family` at the largest level whose exact worst-case violation
    (:func:`exact_violation`) within ``horizon`` items stays inside the budget ``alpha``
    (less ``late_share`` of it when the horizon does not cover every item). Up to four
    secant steps on alpha' in [budget, 4 budget]; only a level whose violation was computed
    inside the budget is used (else the budget itself, valid by Ville's inequality), so the
    guarantee does not rest on the search.

    >>> cs = calibrated_family(0.05, 0.9, 400)
    >>> cs.early.alpha > 0.05 and cs.early_violation <= 0.05
    True
    """
    N = int(n_items)
    m = int(min(horizon, N - 1))
    covers = m >= N - 1
    budget = alpha if covers else alpha * (1 - late_share)

    def fam(a: float) -> FinitePopulationCS:
        return anytime_family(a, target, N)  # type: ignore[return-value]

    late = None if covers else fam(alpha * late_share)

    # Ville: the level itself is always valid; search above it for the largest valid level.
    # The violation grows about in proportion to the level: secant steps from 2 x budget.
    best_a, best_v = budget, float("nan")
    a = 2 * budget
    for _ in range(4):
        v = exact_violation(fam(a), target, N, m)
        if v <= budget and a > best_a:
            best_a, best_v = a, v
        step = a * budget / max(v, 1e-12) * (0.99 if v <= budget else 0.97)
        nxt = float(np.clip(step, budget, 4 * budget))
        if v <= budget and nxt < best_a * 1.02:
            break  # within 2% of the largest valid level
        a = nxt
    if best_a == budget:
        best_v = exact_violation(fam(budget), target, N, m)
    return CalibratedCS(
        early=fam(best_a), late=late, target=float(target), horizon=m, alpha=float(alpha),
        early_budget=float(budget), early_violation=float(best_v),
    )  # fmt: skip
