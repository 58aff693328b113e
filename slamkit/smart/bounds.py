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

from dataclasses import dataclass, field
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
SCREEN_KEEP = 0.5


@dataclass(frozen=True)
class AfterScreening:
    """A finite-population sequence applied to the items *after* a screening sample.

    The first ``screen`` items (random, like all) decide which candidates are worth a
    confidence sequence at all: those agreeing on fewer than :data:`SCREEN_KEEP` of them are
    dropped. The survivors' sequences (``inner``: over the N - screen later items, at alpha
    split over the survivors only) use only the later items, whose order is still uniformly
    random given the screening sample - so they stay valid whatever the screening kept, and
    the error budget is split over the survivors instead of all candidates. The screening
    items keep the reference's output like every profiled item. ``k0``: the candidate's
    agreeing screening items (set aside, not used as evidence).
    """

    inner: FinitePopulationCS
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
            "the rest)"
        )


def screened_family(
    alpha_total: float, target: float, n_items: int, screen: int, survivors: int
) -> FinitePopulationCS:
    """The inner family of :class:`AfterScreening`: alpha split over the ``survivors``, over
    the N - screen later items, at the target those items need."""
    t2 = (target * n_items - screen) / (n_items - screen)
    return anytime_family(alpha_total / max(survivors, 1), t2, n_items - screen)  # type: ignore[return-value]


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
