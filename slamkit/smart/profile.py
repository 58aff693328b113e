"""SMART profiling (METHOD.md section 3): bounds every batch, expected-cost early stop.

The profiler is written once, item by item, over two callbacks, so the same code serves
stored generations (conformity looked up in a table) and live models (the callback runs
the model; see :mod:`slamkit.smart.live`):

* ``run_reference(item) -> cost``: the reference output is the answer for a profiled item;
* ``judge(model, item) -> (conforms, cost)``: run a candidate on the item and compare.

Unit costs ``u_m`` are the mean cost over the items model m actually processed
(:func:`unit_costs`). The authors' code divides by all profiled items, which makes a model
that was dropped early look cheaper; :func:`unit_costs` with ``buggy=True`` reproduces
that only so a test can show the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from slamkit.errors import SlamkitError
from slamkit.smart.bounds import SCREEN_KEEP, AfterScreening, BoundFamily, thresholds_at

UNKNOWN, SATISFIED, INVALID = "unknown", "satisfied", "invalid"


def unit_costs(
    cost_sum: np.ndarray, n_processed: np.ndarray, n_profiled: int, prior: np.ndarray,
    buggy: bool = False,
) -> np.ndarray:  # fmt: skip
    """Mean cost per item of each model over the items it processed (``prior`` if none).

    ``buggy=True`` divides by all profiled items instead (the authors' code) - kept only to
    document the difference in a test; never use it.
    """
    cost_sum = np.asarray(cost_sum, dtype=float)
    denom = np.full_like(cost_sum, float(n_profiled)) if buggy else np.asarray(n_processed, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = cost_sum / denom
    return np.where(denom > 0, u, np.asarray(prior, dtype=float))


def success_probability(k: np.ndarray, n: np.ndarray, h: np.ndarray, t: np.ndarray) -> np.ndarray:
    """P(at least t conforming among h further items), p ~ Normal(k/n, p(1-p)/n).

    Normal approximation of the binomial tail averaged over the normal posterior
    (count ~ N(h p, h p(1-p) + h^2 p(1-p)/n)), with continuity correction.
    """
    k = np.asarray(k, dtype=float)
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    phat = k / n
    pv = (k + 0.5) * (n - k + 0.5) / (n + 1.0) ** 2  # smoothed p(1-p), > 0 at the edges
    var = h * pv + h * h * pv / n
    z = (h * phat - (t - 0.5)) / np.sqrt(var)
    p = special.ndtr(z)
    return np.where(t <= 0, 1.0, np.where(t > h, 0.0, p))


def expected_cost_stop(
    k: np.ndarray,
    n: np.ndarray,
    in_u: np.ndarray,
    u: np.ndarray,
    u_ref: float,
    u_s: np.ndarray,
    R: np.ndarray,
    k_sat: Callable[[np.ndarray], np.ndarray],
    batch: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """SMART's early stop, vectorized over S profiling states (rows).

    ``k, n, in_u``: (S, M) conforming counts, processed counts, and the mask of unknown
    models still being profiled (columns in price order); ``u``: (S, M) or (M,) unit
    costs; ``u_s``: (S,) unit cost of the cheapest satisfied model (reference if none);
    ``R``: (S,) items left; ``k_sat(n)``: smallest conforming count that satisfies a model
    at sample size n. Horizons are h = batch * 1, 2, 4, ... < R (looks stay on the batch
    grid). Returns (stop mask (S,), min_h E(h) (S,)).
    """
    S, M = k.shape
    R = np.asarray(R, dtype=np.int64)
    u = np.broadcast_to(np.asarray(u, dtype=float), (S, M))
    rmax = int(R.max()) if R.size else 0
    hs = []
    h = batch
    while h < rmax:
        hs.append(h)
        h *= 2
    if not hs:
        return np.ones(S, dtype=bool), R * u_s
    H = np.array(hs, dtype=np.int64)  # (K,)
    nn = n[:, :, None] + H[None, None, :]  # (S, M, K)
    t = k_sat(nn) - k[:, :, None]
    P = success_probability(k[:, :, None], n[:, :, None], H[None, None, :], t)
    P = np.where(in_u[:, :, None], P, 0.0)
    surv = np.cumprod(1 - P, axis=1)  # prob. that none of models <= j succeeds
    before = np.concatenate([np.ones((S, 1, len(H))), surv[:, :-1, :]], axis=1)
    rest = (R[:, None] - H[None, :]).astype(float)  # (S, K)
    profile_cost = H[None, :] * (u_ref + (u * in_u).sum(axis=1))[:, None]
    e = (
        profile_cost
        + ((before * P) * u[:, :, None]).sum(axis=1) * rest
        + surv[:, -1, :] * rest * np.asarray(u_s, dtype=float)[:, None]
    )
    e = np.where(H[None, :] < R[:, None], e, np.inf)
    e_min = e.min(axis=1)
    stop = e_min >= R * np.asarray(u_s, dtype=float)
    return stop, e_min


def stop_step(cnt: int, batch: int = 10) -> int:
    """How often the expected-cost stop is evaluated once ``cnt`` items are profiled: every
    ``batch`` items up to 100 batches, then every 10 batches up to 1000, then every 100 (the
    stop is a cost heuristic, not part of any guarantee; a late look costs <= 10% more
    profiling where profiling is long anyway).

    >>> [stop_step(c) for c in (10, 990, 1000, 9990, 10_000)]
    [10, 10, 100, 100, 1000]
    """
    if cnt < 100 * batch:
        return batch
    return 10 * batch if cnt < 1000 * batch else 100 * batch


@dataclass
class ProfileResult:
    """What profiling learned; feed it to :func:`choose_single` or :func:`choose_mix`."""

    models: list[str]  # candidates, price order
    reference: str
    stats: pd.DataFrame  # per model: price, k, n, cost, unit_cost, state, lower, upper
    n_items: int  # N
    n_profiled: int  # cnt
    profiled_items: list[Hashable]
    reference_cost: float  # total reference cost over profiled items
    u_ref: float
    stopped_by: str  # 'bounds' | 'expected-cost' | 'exhausted'
    delta: float
    bounds: dict[str, BoundFamily]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.n_items - self.n_profiled


def profile(
    items: Sequence[Hashable],
    models: Sequence[str],
    prices: Mapping[str, float],
    run_reference: Callable[[Hashable], float],
    judge: Callable[[str, Hashable], tuple[bool, float]],
    delta: float,
    bounds: BoundFamily | Mapping[str, BoundFamily],
    reference: str = "reference",
    batch: int = 10,
    early_stop: bool = True,
    n_items: int | None = None,
    check_every: int | None = None,
    screen: int = 0,
    screened: Callable[[int, int], Any] | None = None,
) -> ProfileResult:
    """Profile ``models`` on ``items`` (already shuffled) against the reference.

    ``prices`` orders the candidates (expected cost per item, e.g. from the cost model);
    measured unit costs replace them once a model has processed items. Bounds are checked
    every ``check_every`` items (default ``batch``, SMART's rule; 1 for an anytime-valid
    family, which may be checked after every item), the expected-cost stop every ``batch``.

    ``screen`` > 0 (with ``screened(survivors, rank) -> family``): the first ``screen`` items
    only screen - candidates agreeing on fewer than 40% of them are dropped - and the
    survivors are then judged by :class:`~slamkit.smart.bounds.AfterScreening` on the later
    items, at the error budget split over the survivors only (by price rank,
    :func:`~slamkit.smart.bounds.alpha_share`).
    """
    every = check_every or batch
    if not 0 < delta < 1:
        raise SlamkitError(f"delta must be in (0, 1), got {delta}.")
    missing = [m for m in models if m not in prices]
    if missing:
        raise SlamkitError(f"No price for candidate model(s) {missing}: pass prices[model].")
    order = sorted(models, key=lambda m: prices[m])
    fam = {m: bounds[m] if isinstance(bounds, Mapping) else bounds for m in order}
    M = len(order)
    N = len(items) if n_items is None else n_items
    target = 1 - delta
    k = np.zeros(M, dtype=np.int64)
    n = np.zeros(M, dtype=np.int64)
    cost = np.zeros(M)
    state = [UNKNOWN] * M
    price = np.array([prices[m] for m in order], dtype=float)
    ref_cost = 0.0
    cnt = 0
    stopped_by = "exhausted"
    history: list[dict[str, Any]] = []
    profiled: list[Hashable] = []

    def cheapest_satisfied() -> int:
        sat = [i for i in range(M) if state[i] == SATISFIED]
        return sat[0] if sat else M

    for item in items:
        s = cheapest_satisfied()
        ref_cost += float(run_reference(item))
        for i in range(M):
            if state[i] == UNKNOWN and i < s:
                ok, c = judge(order[i], item)
                k[i] += int(bool(ok))
                n[i] += 1
                cost[i] += float(c)
        cnt += 1
        profiled.append(item)
        if screen and screened is not None and cnt <= screen:
            if cnt < screen and cnt != len(items):
                continue
            keep = [i for i in range(M) if k[i] >= SCREEN_KEEP * cnt]
            for i in range(M):
                if i in keep:
                    rank = keep.index(i)  # its place among the survivors, cheapest first
                    fam[order[i]] = AfterScreening(screened(len(keep), rank), cnt, int(k[i]))
                else:
                    state[i] = INVALID
            history.append(
                {"n_profiled": cnt, "k": k.tolist(), "n": n.tolist(), "state": list(state),
                 "screening": True}
            )  # fmt: skip
            if not keep:
                stopped_by = "bounds"
                break
            continue
        if cnt % every and cnt != len(items):
            continue
        for i in range(M):
            if state[i] != UNKNOWN or n[i] == 0:
                continue
            if bool(fam[order[i]].excludes_above(k[i], n[i], target)):
                state[i] = INVALID
            elif bool(fam[order[i]].excludes_below(k[i], n[i], target)):
                state[i] = SATISFIED
        history.append({"n_profiled": cnt, "k": k.tolist(), "n": n.tolist(), "state": list(state)})
        first = next((i for i in range(M) if state[i] != INVALID), M)
        if first == M or state[first] == SATISFIED:
            stopped_by = "bounds"
            break
        if early_stop and cnt < N and cnt % stop_step(cnt, batch) == 0:
            s = cheapest_satisfied()
            u = unit_costs(cost, n, cnt, price)
            u_ref = ref_cost / cnt
            u_s = u[s] if s < M else u_ref
            in_u = np.array([state[i] == UNKNOWN and i < s for i in range(M)])

            def k_sat(nn: np.ndarray) -> np.ndarray:
                out = np.empty_like(nn)
                for i in range(M):
                    out[:, i] = thresholds_at(fam[order[i]], nn[:, i], target)[1]
                return out

            stop, e_min = expected_cost_stop(
                k[None], n[None], in_u[None], u[None], u_ref, np.array([u_s]),
                np.array([N - cnt]), k_sat, batch,
            )  # fmt: skip
            history[-1]["expected_cost"] = float(e_min[0])
            history[-1]["stay_cost"] = float((N - cnt) * u_s)
            if stop[0]:
                stopped_by = "expected-cost"
                break
    if cnt == 0:
        raise SlamkitError("No items to profile: the task has no items with reference outputs.")
    lo, hi = [], []
    for i in range(M):
        a, b = fam[order[i]].interval(k[i], n[i])
        lo.append(float(a))
        hi.append(float(b))
    stats = pd.DataFrame(
        {
            "model": order,
            "price": price,
            "k": k,
            "n": n,
            "conformity": np.where(n > 0, k / np.maximum(n, 1), np.nan),
            "cost": cost,
            "unit_cost": unit_costs(cost, n, cnt, price),
            "state": state,
            "lower": lo,
            "upper": hi,
        }
    )
    return ProfileResult(
        models=order,
        reference=reference,
        stats=stats,
        n_items=N,
        n_profiled=cnt,
        profiled_items=profiled,
        reference_cost=ref_cost,
        u_ref=ref_cost / cnt,
        stopped_by=stopped_by,
        delta=delta,
        bounds=fam,
        history=history,
    )
