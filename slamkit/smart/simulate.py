"""Bernoulli simulator for SMART, Smart-ModelMix and slamkit's guaranteed variants.

Reproduces the settings of Jo & Trummer (arXiv 2403.13835) as given in METHOD.md: N and
the conformity rates with GPT-4 per data set (:data:`SETTINGS`), prices per 1K tokens
(read from the dated price table ``data/prices.csv`` through :mod:`slamkit.cost`, rows
dated on or before :data:`PRICES_AS_OF`) and **each model's own mean input/output tokens
per item** from the authors' measurements (:data:`PAPER_TOKENS`, their ``llm_result.csv``:
e.g. IMDB GPT-4 316 in / 1 out, davinci-002 and babbage-002 ~16 out). Per-item cost =
(tokens_in * price_in + tokens_out * price_out) / 1000, per model.

Each seed draws one random conformity matrix (N items x candidates, independent
Bernoulli(rate), :class:`Conformity`), shared by every method and every delta (common random
numbers), so the methods differ only by their rules.

Methods (:data:`SIM_METHODS`; all profile item by item with the expected-cost early stop,
evaluated every 10 items, then less often on long runs - :func:`~slamkit.smart.profile.stop_step`):

* ``smart``: two-sided Clopper-Pearson at gamma, re-checked every 10 items (the paper's
  rule; nominal - peeking is not corrected for); the remaining items go to the cheapest
  satisfied model, else the reference. Unit cost = mean cost over the items a model
  processed.
* ``smart_authors_cost``: the same with the authors' unit cost (cost / all profiled
  items), to show what that bug changes.
* ``mix``: SMART's profiling; the remaining items are split by Smart-ModelMix with
  one-sided Clopper-Pearson lower bounds on a level grid (:data:`MIX_LEVELS`) and the
  product rule prod l_i >= gamma (nominal).
* ``anytime`` (guaranteed): the first :data:`SCREEN` items screen (candidates agreeing on
  at most 1 of the 5 are dropped); each survivor then gets a finite-population confidence
  sequence (:class:`~slamkit.smart.bounds.FinitePopulationCS`: a beta-binomial-mixture
  prior on its agreeing count among the N items, sampling without replacement) over the
  later items, at alpha = 1 - gamma split over the survivors only - by price rank, the
  r-th cheapest getting a share proportional to RANK_DECAY**r
  (:func:`~slamkit.smart.bounds.alpha_share`) - checked after every item, with each
  sequence's level calibrated by exact computation of its worst-case violation
  (:func:`~slamkit.smart.bounds.calibrated_family`); the remaining items go to the cheapest
  satisfied model, else the reference.
* ``mix_safe`` (guaranteed): the same (uncalibrated) sequences at alpha = 1 - gamma -
  :data:`MIX_SPLIT_ALPHA`; the remaining items go to the cheaper of the single satisfied
  model and, per candidate, the largest random share it may answer with the reference
  answering the rest (:func:`safe_mix`, the split bounded at :data:`MIX_SPLIT_ALPHA`).

A *violation* (the guarantee's own statement) is a seed whose realized accuracy on all N
items is below 1 - delta: the profiled items count as agreeing (GPT-4 answered them), each
candidate's random share of the remaining items agrees as often as that seed's matrix says
(hypergeometric draws). A guaranteed method must keep the rate <= 1 - gamma (plus
simulation error). The *expected* violation (the policy's expected accuracy with the true
rates below 1 - delta) is reported beside it; it understates.

A fourth, *Boundary* setting (not from the paper) stress-tests peeking: N = 20,000, its one
useful candidate conforms at 1 - delta - 0.005, just below the target.

The live and stored selection (:mod:`slamkit.smart.select`) additionally refuses a
candidate that is "satisfied" only because the profiled items alone already reach
1 - delta with its own conformity below it (see
:func:`~slamkit.smart.select.own_evidence_missing`); the simulated cells never reach that
state, so the simulator keeps the plain rule.

Run: ``slamkit simulate --seeds 1000`` (or ``python -m slamkit.smart.simulate``); writes
``./simulation_results.csv`` and ``.md`` (``--out data/simulation_results`` rewrites the
committed table).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from slamkit.cost import api_cost_per_request, api_price, load_prices
from slamkit.smart.bounds import (
    SCREEN_KEEP,
    BoundFamily,
    ClopperPearson,
    anytime_family,
    screened_family,
    threshold_table,
    thresholds_at,
)
from slamkit.smart.mix import largest_safe_share, solve_mix_pairs
from slamkit.smart.profile import expected_cost_stop, stop_step
from slamkit.smart.simulate_args import add_simulate_arguments

REFERENCE = "gpt-4"
CANDIDATES = ["gpt-3.5-turbo-instruct", "gpt-3.5-turbo-1106", "davinci-002", "babbage-002"]
#: the SMART paper's prices are the price table's rows dated on or before this day
PRICES_AS_OF = "2023-12-31"


def prices_per_1k(
    models: tuple[str, ...] = (REFERENCE, *CANDIDATES),
    as_of: str = PRICES_AS_OF,
    path: str | Path | None = None,
) -> dict[str, tuple[float, float]]:
    """(input, output) USD per 1K tokens of each model: the newest row dated on or before
    ``as_of`` of the price table (:func:`slamkit.cost.load_prices`, ``data/prices.csv``) -
    for the default date the prices of METHOD.md section 3 / the SMART paper."""
    table = load_prices(path)
    out: dict[str, tuple[float, float]] = {}
    for m in models:
        row = api_price(table, m, as_of)
        out[m] = (float(row["input_per_1k_usd"]), float(row["output_per_1k_usd"]))
    return out


#: per-item (input, output) tokens of each model in the SMART authors' measurements
#: (github.com/saehanjo/smart-llms, ``llm_result.csv``: totals over 100 profiled items / 100)
PAPER_TOKENS: dict[str, dict[str, tuple[float, float]]] = {
    "IMDB": {
        "gpt-4": (316.0, 1.0), "gpt-3.5-turbo-instruct": (309.0, 1.03),
        "gpt-3.5-turbo-1106": (316.0, 1.0), "davinci-002": (309.0, 15.99),
        "babbage-002": (309.0, 16.0),
    },
    "SMS Spam": {
        "gpt-4": (50.38, 2.0), "gpt-3.5-turbo-instruct": (43.38, 2.13),
        "gpt-3.5-turbo-1106": (50.38, 2.0), "davinci-002": (43.38, 16.0),
        "babbage-002": (43.38, 16.0),
    },
    "AG News": {
        "gpt-4": (85.54, 1.36), "gpt-3.5-turbo-instruct": (78.54, 1.38),
        "gpt-3.5-turbo-1106": (85.54, 1.34), "davinci-002": (78.54, 15.86),
        "babbage-002": (78.54, 16.0),
    },
}  # fmt: skip


@dataclass(frozen=True)
class Setting:
    name: str
    n_items: int
    rates: tuple[float, float, float, float]  # conformity of CANDIDATES with GPT-4
    tokens: str = "AG News"  # whose per-model token counts (a key of PAPER_TOKENS)

    def unit_costs(self) -> tuple[float, np.ndarray]:
        """USD per item of the reference and of each of :data:`CANDIDATES`, from each
        model's own mean input/output tokens (:data:`PAPER_TOKENS`)."""
        prices = prices_per_1k()
        tok = PAPER_TOKENS[self.tokens]

        def c(m: str) -> float:
            pin, pout = prices[m]
            return api_cost_per_request(tok[m][0], tok[m][1], pin, pout)

        return c(REFERENCE), np.array([c(m) for m in CANDIDATES])


SETTINGS = {
    "IMDB": Setting("IMDB", 50_000, (0.96, 0.94, 0.00, 0.00), tokens="IMDB"),
    "SMS Spam": Setting("SMS Spam", 5_574, (0.88, 0.94, 0.00, 0.00), tokens="SMS Spam"),
    "AG News": Setting("AG News", 127_600, (0.94, 0.90, 0.01, 0.00), tokens="AG News"),
}
#: stress test for peeking: one candidate whose true rate sits just below the target
BOUNDARY = "Boundary"
BOUNDARY_GAP = 0.005


def boundary_setting(delta: float) -> Setting:
    """N = 20,000; gpt-3.5-turbo-instruct's rate is 1 - delta - 0.005 (so choosing it alone
    is almost always a violation), the other candidates never conform; AG News tokens."""
    return Setting(BOUNDARY, 20_000, (1 - delta - BOUNDARY_GAP, 0.0, 0.0, 0.0))


DELTAS = tuple(round(0.02 * i, 2) for i in range(1, 11))
MIX_LEVELS = np.round(np.arange(0.95, 0.9951, 0.005), 3)
#: items in the guaranteed methods' screening sample (as :data:`slamkit.smart.select.SCREEN`)
SCREEN = 5
#: the error budget the guaranteed mix keeps for the random split of the remaining items
MIX_SPLIT_ALPHA = 0.01


class Conformity:
    """One random conformity matrix per seed (N items x M candidates, i.i.d. Bernoulli at the
    candidates' rates), generated block by block from ``(seed, block)`` so that every method
    and every delta sees the same items in the same order (common random numbers)."""

    BLOCK = 1000

    def __init__(self, rates: np.ndarray, n_items: int, seeds: int, seed: int = 0) -> None:
        self.p = np.asarray(rates, dtype=float)
        self.N, self.S, self.seed = int(n_items), int(seeds), int(seed)
        self._cache: dict[int, np.ndarray] = {}
        self._sums: np.ndarray | None = None
        self._matrix: np.ndarray | None = None
        self._last: tuple[int, np.ndarray] | None = None

    @classmethod
    def from_matrix(cls, conf: np.ndarray) -> Conformity:
        """A fixed (S, N, M) boolean matrix (tests replay a known sequence)."""
        S, N, M = conf.shape
        c = cls(np.zeros(M), N, S)
        c._matrix = np.ascontiguousarray(np.transpose(conf, (0, 2, 1)).astype(bool))
        return c

    def block(self, b: int) -> np.ndarray:
        """(S, M, size) agreement of items b*BLOCK ... of every seed."""
        lo = b * self.BLOCK
        size = min(self.BLOCK, self.N - lo)
        if self._matrix is not None:
            return self._matrix[:, :, lo : lo + size]
        if self._last is not None and self._last[0] == b:
            return self._last[1]
        packed = self._cache.get(b)
        if packed is None:
            rng = np.random.default_rng([self.seed, b, 7919])
            u = rng.random((self.S, len(self.p), size), dtype=np.float32)
            got = u < self.p[None, :, None].astype(np.float32)
            self._cache[b] = np.packbits(got, axis=2)  # 1 bit per item: all blocks fit
        else:
            got = np.unpackbits(packed, axis=2, count=size).astype(bool)
        self._last = (b, got)
        return got

    def window(self, start: int, size: int) -> np.ndarray:
        b0, b1 = start // self.BLOCK, (start + size - 1) // self.BLOCK
        parts = [self.block(b) for b in range(b0, b1 + 1)]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
        off = start - b0 * self.BLOCK
        return x[:, :, off : off + size]

    def block_sums(self) -> np.ndarray:
        if self._sums is None:
            nb = -(-self.N // self.BLOCK)
            self._sums = np.stack([self.block(b).sum(axis=2) for b in range(nb)], axis=2)
        return self._sums

    def prefix(self, cnt: np.ndarray) -> np.ndarray:
        """(S, M) agreeing items among the first ``cnt[s]`` items of each seed."""
        cnt = np.asarray(cnt, dtype=np.int64)
        sums = np.concatenate(
            [np.zeros((self.S, len(self.p), 1), np.int64), np.cumsum(self.block_sums(), 2)], 2
        )
        b = cnt // self.BLOCK
        out = sums[np.arange(self.S), :, b].astype(np.int64)
        for bb in np.unique(b):
            rows = np.nonzero((b == bb) & (cnt % self.BLOCK > 0))[0]
            if rows.size and bb * self.BLOCK < self.N:
                part = self.block(int(bb))[rows]
                upto = (cnt[rows] - bb * self.BLOCK)[:, None, None]
                out[rows] += (part & (np.arange(part.shape[2])[None, None, :] < upto)).sum(2)
        return out

    def totals(self) -> np.ndarray:
        return self.block_sums().sum(axis=2).astype(np.int64)


def profile_vectorized(
    conf: Conformity,
    u: np.ndarray,
    u_ref: float,
    n_items: int,
    delta: float,
    family: BoundFamily,
    batch: int = 10,
    check_every: int | None = None,
    early_stop: bool = True,
    authors_cost: bool = False,
    screen: int = 0,
    screened: Callable[[int, int], BoundFamily] | None = None,
) -> dict[str, np.ndarray]:
    """Run SMART profiling for every seed of ``conf`` at once (candidates in price order);
    the same decisions as :func:`slamkit.smart.profile.profile` on the same items.

    Bounds are checked every ``check_every`` items (default ``batch``: SMART's rule; 1 for
    an anytime-valid family), the expected-cost early stop every ``batch`` items (thinned by
    :func:`~slamkit.smart.profile.stop_step`). ``authors_cost``: the early stop uses the
    authors' unit costs (a model's cost divided by all profiled items, not by the items it
    processed). ``screen`` (<= ``batch``) with ``screened``: the first ``screen`` items screen (see
    :class:`~slamkit.smart.bounds.AfterScreening`). Returns per-seed arrays: k, n (S, M),
    state (0 unknown, 1 satisfied, 2 invalid), cnt (S,), ``stop`` (0 bounds, 1 expected
    cost, 2 exhausted), ``k0`` (agreeing screening items) and ``survivors`` (S,).
    """
    S, M = conf.S, len(u)
    every = check_every or batch
    target = round(1 - delta, 12)
    scr = screen if screened is not None else 0
    if scr and not 0 < scr <= batch:
        raise ValueError("the simulator screens at most the first batch")
    t2 = (target * n_items - scr) / (n_items - scr) if scr else target

    def build(fams: list[BoundFamily], n: int, t: float) -> tuple[list[_Table], np.ndarray]:
        tabs = [_lazy_table(f, n, t, every) for f in fams]
        return tabs, np.stack([threshold_table(f, n, t, batch)[1] for f in fams])  # type: ignore[arg-type]

    if not scr:
        tables, coarse = build([family], n_items, target)
    k = np.zeros((S, M), dtype=np.int64)
    n = np.zeros((S, M), dtype=np.int64)
    k0 = np.zeros((S, M), dtype=np.int64)  # set-aside screening agreement
    surv = np.full(S, M, dtype=np.int64)
    tix = np.zeros((S, M), dtype=np.int64)  # each candidate's table (survivors, rank)
    rank = np.zeros((S, M), dtype=np.int64)  # price rank among the survivors (-1: dropped)
    state = np.zeros((S, M), dtype=np.int8)
    cnt = np.zeros(S, dtype=np.int64)
    how = np.full(S, 2, dtype=np.int8)
    active = np.ones(S, dtype=bool)
    cols = np.arange(M)
    start = 0
    while start < n_items:
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        step = stop_step(start + batch, batch)  # up to the next look of the early stop
        size = min(step - start % step, n_items - start)
        if scr and start == 0:
            size = min(scr, n_items)
        x = conf.window(start, size)[idx].astype(np.int64)  # (A, M, size)
        cx = np.concatenate([np.zeros((idx.size, M, 1), np.int64), np.cumsum(x, 2)], 2)
        if scr and start == 0:  # the screening items: everyone runs, nothing is decided
            kk = cx[:, :, -1]
            k[idx], n[idx], cnt[idx] = kk, size, size
            keep = kk >= SCREEN_KEEP * size
            k0[idx] = kk
            surv[idx] = keep.sum(1)
            m_ = surv[idx][:, None]
            rank[idx] = np.where(keep, np.cumsum(keep, 1) - 1, -1)
            # one table per (survivors m, price rank r) that occurs, built only then
            sizes = np.broadcast_to(m_, keep.shape)[keep]
            pairs = sorted({(int(a), int(b)) for a, b in zip(sizes, rank[idx][keep], strict=True)})
            where = {pr: i for i, pr in enumerate(pairs)}
            for j, row in enumerate(idx):
                for c in range(M):
                    if keep[j, c]:
                        tix[row, c] = where[(int(surv[row]), int(rank[row, c]))]
            assert screened is not None
            fams = [screened(a, b) for a, b in pairs] or [family]
            tables, coarse = build(fams, n_items - scr, t2)
            state[idx] = np.where(keep, 0, 2).astype(np.int8)
            gone = surv[idx] == 0
            how[idx[gone]] = 0
            active[idx[gone]] = False
            start += size
            continue
        pos_all = start + np.arange(size) + 1  # items profiled after each offset
        check = (pos_all % every == 0) | (pos_all == n_items)
        top = start + size - scr
        parts = [t.upto(top) for t in tables]
        L = top // every + 1
        kinv_tab = np.stack([q[0][:L] for q in parts])  # (T, L)
        ksat_tab = np.stack([q[1][:L] for q in parts])
        last_inv = np.array([t.last[0] for t in tables])
        last_sat = np.array([t.last[1] for t in tables])
        ti = tix[idx][:, :, None]
        off = k0[idx][:, :, None]
        kk0, nn0, st = k[idx].copy(), n[idx].copy(), state[idx].copy()
        pos = np.zeros(idx.size, dtype=np.int64)  # first offset not yet applied
        done = np.zeros(idx.size, dtype=bool)
        stopped = np.zeros(idx.size, dtype=bool)
        rows = np.arange(idx.size)
        jj = np.arange(size)
        while not done.all():
            sat = st == 1
            fs = np.where(sat.any(1), sat.argmax(1), M)
            run = (st == 0) & (cols[None, :] < fs[:, None])
            base = cx[rows, :, pos][:, :, None]  # (A, M, 1)
            seen = (jj[None, :] >= pos[:, None])[:, None, :]  # (A, 1, size)
            kk = kk0[:, :, None] + run[:, :, None] * (cx[:, :, 1:] - base) * seen
            nn = nn0[:, :, None] + run[:, :, None] * np.maximum(
                jj[None, None, :] - pos[:, None, None] + 1, 0
            )
            ke, ne = kk - off, nn - scr  # the evidence the sequences use
            at = np.clip(ne // every, 0, L - 1)
            end = nn == n_items
            inv = ke <= np.where(end, last_inv[ti], kinv_tab[ti, at])
            satn = ke >= np.where(end, last_sat[ti], ksat_tab[ti, at])
            ev = (inv | satn) & run[:, :, None] & seen & check[None, None, :] & (ne > 0)
            evj = ev.any(1) & ~done[:, None]
            has = evj.any(1)
            e = np.where(has, evj.argmax(1), size - 1)
            r = rows[~done]
            kk0[r] = kk[r, :, e[r]]
            nn0[r] = nn[r, :, e[r]]
            hit = ev[r, :, e[r]]
            st[r] = np.where(hit & inv[r, :, e[r]], 2, np.where(hit, 1, st[r])).astype(np.int8)
            noninv = st[r] != 2
            first = np.where(noninv.any(1), noninv.argmax(1), M)
            stop = (first == M) | (st[r, np.minimum(first, M - 1)] == 1)
            stopped[r] = stop & has[r]
            pos[r] = e[r] + 1
            done[r] = stopped[r] | (pos[r] >= size) | ~has[r]
        used = np.where(stopped, pos, size)
        k[idx], n[idx], state[idx] = kk0, nn0, st
        cnt[idx] = start + used
        how[idx[stopped]] = 0
        stop_now = stopped.copy()
        start += size
        if early_stop and start < n_items and start % stop_step(start, batch) == 0:
            go = ~stopped & (cnt[idx] < n_items)
            if go.any():
                g = idx[go]
                sg = state[g]
                sat = sg == 1
                fs = np.where(sat.any(axis=1), sat.argmax(axis=1), M)
                in_u = (sg == 0) & (cols[None, :] < fs[:, None])
                uu = u[None, :] * n[g] / cnt[g][:, None] if authors_cost else u[None, :]
                uu = np.broadcast_to(uu, (g.size, M))
                u_s = np.where(fs < M, uu[np.arange(g.size), np.minimum(fs, M - 1)], u_ref)
                tg = tix[g][:, :, None]
                og = k0[g][:, :, None]

                def k_sat(
                    nn: np.ndarray,
                    tg: np.ndarray = tg,
                    og: np.ndarray = og,
                    co: np.ndarray = coarse,
                ) -> np.ndarray:
                    at = np.clip((nn - scr) // batch, 0, co.shape[1] - 1)
                    return og + co[tg, at]

                es, _ = expected_cost_stop(
                    k[g], n[g], in_u, uu, u_ref, u_s, n_items - cnt[g], k_sat, batch
                )
                stop_now[go] = es
                how[g[es]] = 1
        active[idx[stop_now]] = False
    return {
        "k": k,
        "n": n,
        "state": state,
        "cnt": cnt,
        "stop": how,
        "k0": k0,
        "survivors": surv,
        "rank": rank,
    }


class _Table:
    """Per-item thresholds (k_inv[n], k_sat[n]) of one family and target, computed in
    growing chunks as profiling reaches larger n (most cells decide within a few thousand)."""

    def __init__(self, family: BoundFamily, n_items: int, target: float, step: int) -> None:
        self.family, self.N, self.t, self.step = family, n_items, target, step
        self.k_inv = np.zeros(0, dtype=np.int64)
        self.k_sat = np.zeros(0, dtype=np.int64)
        ki, ks = thresholds_at(family, np.array([n_items]), target)
        self.last = (int(ki[0]), int(ks[0]))  # at n = N (the last look, maybe off the grid)

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Tables indexed by n // step, covering n (only multiples of step are exact)."""
        top_needed = n // self.step + 1
        if len(self.k_sat) < top_needed:
            top = min(max(2 * len(self.k_sat), top_needed, 2048), self.N // self.step + 1)
            grid = np.arange(len(self.k_sat), top) * self.step
            ki, ks = thresholds_at(self.family, grid, self.t)
            self.k_inv = np.concatenate([self.k_inv, ki])
            self.k_sat = np.concatenate([self.k_sat, ks])
        return self.k_inv, self.k_sat


_TABLES: dict[tuple[object, int, float, int], _Table] = {}


def _lazy_table(family: BoundFamily, n_items: int, target: float, step: int) -> _Table:
    key = (family, n_items, target, step)
    if key not in _TABLES:
        if len(_TABLES) > 256:
            _TABLES.clear()
        _TABLES[key] = _Table(family, n_items, target, step)
    return _TABLES[key]


def safe_mix(
    res: dict[str, np.ndarray],
    u: np.ndarray,
    u_ref: float,
    delta: float,
    N: int,
    split_alpha: float = MIX_SPLIT_ALPHA,
) -> tuple[np.ndarray, np.ndarray]:
    """The guaranteed model mix after anytime-valid profiling, per seed: the cheaper of the
    single satisfied model and, for each candidate, the largest share s of the R remaining
    items it may answer (the reference answers the rest) such that

        cnt + (R - s) + L_s >= (1 - delta) N

    where L_s bounds the agreeing items in a random s of the R: the candidate's
    confidence-sequence lower bound on its agreeing unseen items, minus the profiled items it
    did not see, then the without-replacement Chernoff bound at ``split_alpha``
    (:func:`~slamkit.smart.mix.largest_safe_share`). Error budget: the sequences' alpha +
    ``split_alpha``. Returns (cost of the remaining items per seed, shares (S, M+1),
    reference last)."""
    k, n, cnt = res["k"], res["n"], res["cnt"]
    S, M = k.shape
    R = N - cnt
    need = np.ceil((1 - delta) * N - 1e-9)
    lo_rate = lower_rates(res, N, delta)
    unseen_lo = np.floor(lo_rate * (N - n) + 1e-6)
    G = np.clip(unseen_lo - (cnt[:, None] - n), 0, R[:, None])  # agreeing among the R, at least
    best_cost = R * u_ref
    shares = np.zeros((S, M + 1))
    shares[:, M] = 1.0
    sat = res["state"] == 1
    fs = np.where(sat.any(1), sat.argmax(1), M)
    single = fs < M
    c1 = np.where(single, R * u[np.minimum(fs, M - 1)], np.inf)
    for m in range(M):
        s = largest_safe_share(cnt, R, G[:, m], need, split_alpha)
        c = s * u[m] + (R - s) * u_ref
        better = c < best_cost - 1e-15
        best_cost = np.where(better, c, best_cost)
        frac = np.where(R > 0, s / np.maximum(R, 1), 0.0)
        shares[better] = 0.0
        shares[better, m] = frac[better]
        shares[better, M] = 1 - frac[better]
    use1 = c1 < best_cost - 1e-15
    best_cost = np.where(use1, c1, best_cost)
    shares[use1] = 0.0
    shares[use1, np.minimum(fs, M - 1)[use1]] = 1.0
    return best_cost, shares


#: the methods of the simulation table: (key, label, guaranteed)
SIM_METHODS = (
    ("smart", "SMART (paper: Clopper-Pearson every 10 items)", False),
    ("smart_authors_cost", "SMART with the authors' unit cost (per profiled item)", False),
    ("mix", "Smart-ModelMix (paper: one-sided CP 0.95-0.995, product rule)", False),
    ("anytime", "anytime-valid (finite-population CS, exact level, every item)", True),
    ("mix_safe", "guaranteed mix (anytime CS + split bound)", True),
)
GUARANTEED = tuple(m for m, _, g in SIM_METHODS if g)


def _profile_anytime(
    conf: Conformity,
    u: np.ndarray,
    u_ref: float,
    N: int,
    delta: float,
    alpha: float,
    batch: int,
    screen: int | None = None,
    calibrate: bool = False,
) -> dict[str, np.ndarray]:
    """Anytime-valid profiling: the first :data:`SCREEN` items screen, then
    finite-population sequences at ``alpha`` split over the survivors, checked after every
    item."""
    target = 1 - delta
    scr = SCREEN if screen is None else screen

    def screened(m: int, r: int) -> BoundFamily:
        return screened_family(alpha, target, N, scr, m, r, calibrate=calibrate)

    res = profile_vectorized(
        conf, u, u_ref, N, delta, anytime_family(alpha / len(u), target, N), batch=batch,
        check_every=1, screen=scr, screened=screened,
    )  # fmt: skip
    res["alpha"] = np.array(alpha)
    res["screen"] = np.array(scr)
    return res


def lower_rates(res: dict[str, np.ndarray], N: int, delta: float) -> np.ndarray:
    """(S, M) lower bounds on each candidate's agreement rate over the items it did not see,
    from the screened finite-population sequences of :func:`_profile_anytime`."""
    k, n, k0, surv = res["k"], res["n"], res["k0"], res["survivors"]
    scr, alpha = int(res["screen"]), float(res["alpha"])
    lo = np.zeros(k.shape)
    rank = res["rank"]
    for m in np.unique(surv):
        if m == 0:
            continue
        for r in range(int(m)):
            cell = (surv[:, None] == m) & (rank == r)
            if not cell.any():
                continue
            fam = screened_family(alpha, 1 - delta, N, scr, int(m), r)
            lo[cell] = fam.interval(k[cell] - k0[cell], np.maximum(n[cell] - scr, 0))[0]
    return np.where(n > scr, lo, 0.0)


def _realized_correct(
    conf: Conformity, cnt: np.ndarray, shares: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Agreeing outputs among all N items: the profiled ones (the reference's own output)
    plus, for the remaining items split at random in ``shares`` (reference last), each
    candidate's agreeing items among its random part (hypergeometric draws from the
    candidate's agreeing remaining items of this seed's matrix)."""
    N = conf.N
    R = N - cnt
    M = shares.shape[1] - 1
    rem = conf.totals() - conf.prefix(cnt)  # (S, M) agreeing remaining items
    take = np.floor(shares[:, :M] * R[:, None] + 1e-9).astype(np.int64)
    correct = cnt + (R - take.sum(1))  # the reference's part
    for m in range(M):
        t = take[:, m]
        full = t >= R
        part = rng.hypergeometric(np.maximum(rem[:, m], 0), np.maximum(R - rem[:, m], 0),
                                  np.where(full, 0, t))  # fmt: skip
        correct = correct + np.where(full, rem[:, m], part)
    return correct


def simulate_cell(
    setting: Setting,
    delta: float,
    gamma: float = 0.95,
    seeds: int = 1000,
    seed: int = 0,
    batch: int = 10,
    conf: Conformity | None = None,
    methods: tuple[str, ...] | None = None,
) -> list[dict[str, object]]:
    """Simulate one (setting, delta) cell; one dict per method. ``conf``: the shared random
    conformity matrix (made here from ``seed`` if not given)."""
    u_ref, u_c = setting.unit_costs()
    order = np.argsort(u_c, kind="stable")
    u = u_c[order]
    p = np.asarray(setting.rates, dtype=float)[order]
    M = len(u)
    N = setting.n_items
    if conf is None:
        conf = _conformity(setting, seeds, seed)
    S = conf.S
    u_all = np.append(u, u_ref)
    p_all = np.append(p, 1.0)
    target = 1 - delta
    need = np.ceil(target * N - 1e-9)
    always_ref = N * u_ref
    rng = np.random.default_rng([seed, int(round(delta * 1000)), N, 11])
    todo = set(methods or [m for m, _, _ in SIM_METHODS])
    rows: list[dict[str, object]] = []

    def record(method: str, res: dict[str, np.ndarray], shares: np.ndarray, per_rest: np.ndarray):
        cnt = res["cnt"]
        R = N - cnt
        total = cnt * u_ref + (res["n"] * u[None, :]).sum(axis=1) + per_rest
        expected = cnt + R * (shares * p_all[None, :]).sum(axis=1)
        correct = _realized_correct(conf, cnt, shares, rng)
        rows.append(
            {
                "setting": setting.name, "delta": delta, "gamma": gamma, "method": method,
                "seeds": S, "saving": always_ref / total.mean(),
                "realized_violation_rate": float(np.mean(correct < need)),
                "violation_rate": float(np.mean(expected < target * N - 1e-6)),
                "items_needed": float(np.median(cnt)),
                "mean_profiled": float(cnt.mean()),
            }
        )  # fmt: skip

    def single(res: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        sat = res["state"] == 1
        fs = np.where(sat.any(axis=1), sat.argmax(axis=1), M)
        shares = np.zeros((S, M + 1))
        shares[np.arange(S), fs] = 1.0
        return shares, (N - res["cnt"]) * u_all[fs]

    cp = ClopperPearson(gamma)
    if todo & {"smart", "mix"}:
        res = profile_vectorized(conf, u, u_ref, N, delta, cp, batch=batch)
        if "smart" in todo:
            record("smart", res, *single(res))
        if "mix" in todo:
            k, n = res["k"], res["n"]
            lv = MIX_LEVELS
            with np.errstate(invalid="ignore", divide="ignore"):
                A = stats.beta.ppf(
                    1 - lv[None, None, :],
                    np.maximum(k, 1e-300)[:, :, None],
                    (n - k + 1)[:, :, None],
                )
            A = np.where((k > 0)[:, :, None], A, 0.0)
            A = np.concatenate([A, np.ones((S, 1, len(lv)))], axis=1)
            a_star = (target * N - res["cnt"]) / np.maximum(N - res["cnt"], 1)
            free = np.append(np.zeros(M), 1.0)
            cost, r = solve_mix_pairs(u_all, A, lv, a_star, gamma, "product", free)
            record("mix", res, r, cost * (N - res["cnt"]))
    if "smart_authors_cost" in todo:
        res = profile_vectorized(conf, u, u_ref, N, delta, cp, batch=batch, authors_cost=True)
        record("smart_authors_cost", res, *single(res))
    if "anytime" in todo:
        res = _profile_anytime(conf, u, u_ref, N, delta, 1 - gamma, batch, calibrate=True)
        record("anytime", res, *single(res))
    if "mix_safe" in todo:
        res = _profile_anytime(conf, u, u_ref, N, delta, 1 - gamma - MIX_SPLIT_ALPHA, batch)
        cost, shares = safe_mix(res, u, u_ref, delta, N)
        record("mix_safe", res, shares, cost)
    return rows


def simulate(
    seeds: int = 1000,
    deltas: tuple[float, ...] = DELTAS,
    settings: tuple[str, ...] = (*SETTINGS, BOUNDARY),
    gamma: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The full table: one row per (setting, delta, method)."""
    rows: list[dict[str, object]] = []
    for name in settings:
        shared = None
        for d in deltas:
            setting = boundary_setting(d) if name == BOUNDARY else SETTINGS[name]
            if shared is None or name == BOUNDARY:  # Boundary's rates depend on delta
                shared = _conformity(setting, seeds, seed)
            rows.extend(simulate_cell(setting, d, gamma, seeds, seed, conf=shared))
    return pd.DataFrame(rows)


def _conformity(setting: Setting, seeds: int, seed: int) -> Conformity:
    """The setting's shared random matrix (candidates in price order, as the methods see them)."""
    _, u_c = setting.unit_costs()
    order = np.argsort(u_c, kind="stable")
    key = sum(ord(c) for c in setting.name) * 1000 + int(round(setting.rates[0] * 1000))
    return Conformity(np.asarray(setting.rates, dtype=float)[order], setting.n_items, seeds,
                      seed * 1_000_003 + key)  # fmt: skip


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """Setting x delta rows; per method: ``saving_M``, ``violation_M`` (realized: accuracy on
    the N items below 1 - delta, the guarantee's own statement), ``expected_violation_M``
    (the policy's expected accuracy below 1 - delta) and ``items_M`` (median profiled items
    before the decision)."""
    values = {"saving": "saving", "violation": "realized_violation_rate",
              "expected_violation": "violation_rate", "items": "items_needed"}  # fmt: skip
    values = {k: v for k, v in values.items() if v in long.columns}
    w = long.pivot_table(index=["setting", "delta"], columns="method", values=list(values.values()))
    present = set(long["method"].unique())
    order = [m for m, _, _ in SIM_METHODS if m in present]
    cols = {}
    for prefix, col in values.items():
        for m in order:
            cols[f"{prefix}_{m}"] = w[(col, m)]
    out = pd.DataFrame(cols).reset_index()
    setting_order = {s: i for i, s in enumerate([*SETTINGS, BOUNDARY])}
    return out.sort_values(
        ["setting", "delta"], key=lambda c: c.map(setting_order) if c.name == "setting" else c
    ).reset_index(drop=True)


SHORT = {"smart": "SMART", "smart_authors_cost": "SMART authors' cost", "mix": "ModelMix",
         "anytime": "anytime", "mix_safe": "safe mix"}  # fmt: skip


def _md_table(wide: pd.DataFrame, cols: list[str], names: dict[str, str]) -> list[str]:
    lines = ["| " + " | ".join(names.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in wide.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c.startswith("saving"):
                cells.append(f"{v:.1f}x")
            elif "violation" in c:
                cells.append(f"{v:.3f}")
            elif c.startswith("items"):
                cells.append(f"{v:.0f}")
            elif c == "delta":
                cells.append(f"{v:.2f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(wide: pd.DataFrame, seeds: int, gamma: float, seconds: float) -> str:
    present = [m for m, _, _ in SIM_METHODS if f"saving_{m}" in wide.columns]
    se = 2 * np.sqrt((1 - gamma) * gamma / seeds)
    legend = "\n".join(
        f"* **{SHORT[m]}** - {label}: "
        + ("**guaranteed** (anytime-valid)" if g else "not guaranteed")
        for m, label, g in SIM_METHODS
        if m in present
    )
    head = (
        f"# SMART simulation (gamma = {gamma}, {seeds} seeds per cell)\n\n"
        f"Produced by `slamkit simulate --seeds {seeds}` in {seconds:.0f} s. "
        "Saving = cost of always using GPT-4 / mean cost of the method (profiling included). "
        "**Violation** = share of seeds whose accuracy on the N items is below 1 - delta - the "
        "guarantee's own statement (profiled items count as agreeing: GPT-4 answered them); "
        f"a guaranteed method must stay <= {1 - gamma:.2f} (+ simulation error, 2 s.e. = "
        f"{se:.3f}). Expected = share whose *expected* accuracy (true rates) is below 1 - delta "
        "(the earlier headline; it understates). Items = median profiled items before the "
        "decision. One random conformity matrix per seed is shared by every method and delta "
        "(common random numbers). IMDB, SMS Spam and AG News use the SMART paper's N, "
        "conformity rates, prices and per-model token counts (the authors' `llm_result.csv`); "
        f"*Boundary* is a stress test whose one useful candidate conforms at 1 - delta - "
        f"{BOUNDARY_GAP}, just below the target. Assumptions: see `slamkit/smart/simulate.py`."
        f"\n\nMethods:\n\n{legend}\n\n"
    )
    c1 = ["setting", "delta", *[f"saving_{m}" for m in present],
          *[f"violation_{m}" for m in present]]  # fmt: skip
    names = {f"{p}_{m}": f"{lab} {SHORT[m]}" for m in present
             for p, lab in (("saving", "saving"), ("violation", "viol."),
                            ("expected_violation", "exp. viol."), ("items", "items"))}  # fmt: skip
    c2 = [
        "setting",
        "delta",
        *[f"items_{m}" for m in present if f"items_{m}" in wide],
        *[f"expected_violation_{m}" for m in present if f"expected_violation_{m}" in wide],
    ]
    body = [
        "## Saving and realized violation",
        "",
        *_md_table(wide, c1, names),
        "",
        "## Items needed and expected-accuracy violation",
        "",
        *_md_table(wide, c2, names),
    ]
    return head + "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m slamkit.smart.simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_simulate_arguments(ap)
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    long = simulate(args.seeds, settings=tuple(args.settings), gamma=args.gamma, seed=args.seed)
    wide = wide_table(long)
    md = to_markdown(wide, args.seeds, args.gamma, time.time() - t0)
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        wide.to_csv(f"{args.out}.csv", index=False)
        Path(f"{args.out}.md").write_text(md)
        print(f"wrote {args.out}.csv and {args.out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
