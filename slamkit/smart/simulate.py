"""Bernoulli simulator for SMART, Smart-ModelMix and the anytime-valid variant.

Reproduces the settings of Jo & Trummer (arXiv 2403.13835) as given in METHOD.md:
prices per 1K tokens (read from the dated price table ``data/prices.csv`` through
:mod:`slamkit.cost`, rows dated on or before :data:`PRICES_AS_OF`), conformity rates with
GPT-4 and N per data set. Each seed draws
every candidate's conformity on each item as an independent Bernoulli(rate).

Assumptions (documented, editable in :data:`SETTINGS`): items are classification
prompts whose cost is dominated by input tokens - IMDB ~340 input tokens (a ~230-word
review plus a 40-token instruction), SMS Spam ~60, AG News ~95; every answer is a 2-token
label. Per-item cost = (tokens_in * price_in + tokens_out * price_out) / 1000.

Methods (all profile in batches of 10 items, with the expected-cost early stop):

* ``smart``: two-sided Clopper-Pearson at gamma re-checked every batch (the paper's rule);
  the remaining items go to the cheapest satisfied model (else the reference).
* ``mix``: same profiling; the remaining items are split by Smart-ModelMix with one-sided
  Clopper-Pearson lower bounds on a level grid and the product rule prod l_i >= gamma.
* ``anytime``: beta-binomial mixture confidence sequence per candidate at
  alpha_m = (1-gamma)/M (Bonferroni over the M candidates; Beta prior centred on 1 - delta
  with 10 pseudo-items, see :func:`~slamkit.smart.bounds.anytime_family`); the remaining
  items are split by the LP with each model's confidence-sequence lower bound (the
  confidence was spent up front, so no level search and no data-dependent choice of levels).

A *violation* is a seed whose policy has expected accuracy below 1 - delta, where the
expected accuracy is (profiled items + sum_i r_i p_i * remaining) / N with the true rates
p_i - the quantity the bounds are about. The *realized* violation rate (actual Bernoulli
outcomes on the remaining items) is reported too; at a rate exactly equal to 1 - delta it
is a coin flip for any method, so it is not the guarantee's target.

A fourth, *Boundary* setting (not from the paper) stress-tests peeking: its one useful
candidate conforms at 1 - delta - 0.005, just below the target.

Run: ``python -m slamkit.smart.simulate --seeds 1000`` (or ``slamkit simulate``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from slamkit.cost import api_cost_per_request, api_price, load_prices
from slamkit.smart.bounds import BoundFamily, ClopperPearson, anytime_family, threshold_table
from slamkit.smart.mix import solve_mix_pairs
from slamkit.smart.profile import expected_cost_stop
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


@dataclass(frozen=True)
class Setting:
    name: str
    n_items: int
    rates: tuple[float, float, float, float]  # conformity of CANDIDATES with GPT-4
    tokens_in: int
    tokens_out: int = 2

    def unit_costs(self) -> tuple[float, np.ndarray]:
        """USD per item of the reference and of each of :data:`CANDIDATES`."""
        prices = prices_per_1k()

        def c(m: str) -> float:
            pin, pout = prices[m]
            return api_cost_per_request(self.tokens_in, self.tokens_out, pin, pout)

        return c(REFERENCE), np.array([c(m) for m in CANDIDATES])


SETTINGS = {
    "IMDB": Setting("IMDB", 50_000, (0.96, 0.94, 0.00, 0.00), tokens_in=340),
    "SMS Spam": Setting("SMS Spam", 5_574, (0.88, 0.94, 0.00, 0.00), tokens_in=60),
    "AG News": Setting("AG News", 127_600, (0.94, 0.90, 0.01, 0.00), tokens_in=95),
}
#: stress test for peeking: one candidate whose true rate sits just below the target
BOUNDARY = "Boundary"
BOUNDARY_GAP = 0.005


def boundary_setting(delta: float) -> Setting:
    """N = 20,000; gpt-3.5-turbo-instruct's rate is 1 - delta - 0.005 (so choosing it alone
    is always a violation), the other candidates never conform; 100 input tokens per item."""
    return Setting(BOUNDARY, 20_000, (1 - delta - BOUNDARY_GAP, 0.0, 0.0, 0.0), tokens_in=100)


DELTAS = tuple(round(0.02 * i, 2) for i in range(1, 11))
MIX_LEVELS = np.round(np.arange(0.95, 0.9951, 0.005), 3)


def profile_vectorized(
    p: np.ndarray,
    u: np.ndarray,
    u_ref: float,
    n_items: int,
    delta: float,
    family: BoundFamily,
    seeds: int,
    rng: np.random.Generator,
    batch: int = 10,
    early_stop: bool = True,
) -> dict[str, np.ndarray]:
    """Run SMART profiling for ``seeds`` independent replicas at once.

    ``p``, ``u``: candidate conformity rates and unit costs, in price order. Returns
    per-seed arrays: k, n (S, M), state (0 unknown, 1 satisfied, 2 invalid), cnt (S,).
    """
    S, M = seeds, len(p)
    target = 1 - delta
    k_inv_t, k_sat_t = threshold_table(family, n_items, round(target, 12), batch)  # type: ignore[arg-type]
    last = len(k_sat_t) - 1

    def k_sat(nn: np.ndarray) -> np.ndarray:
        return k_sat_t[np.minimum(nn // batch, last)]

    k = np.zeros((S, M), dtype=np.int64)
    n = np.zeros((S, M), dtype=np.int64)
    state = np.zeros((S, M), dtype=np.int8)
    cnt = np.zeros(S, dtype=np.int64)
    active = np.ones(S, dtype=bool)
    cols = np.arange(M)
    n_batches = -(-n_items // batch)
    for j in range(n_batches):
        size = min(batch, n_items - j * batch)
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        st = state[idx]
        sat = st == 1
        first_sat = np.where(sat.any(axis=1), sat.argmax(axis=1), M)
        run = (st == 0) & (cols[None, :] < first_sat[:, None])
        draws = rng.binomial(size, p, size=(idx.size, M)) * run
        kk = k[idx] + draws
        nn = n[idx] + size * run
        cnt[idx] += size
        if size < batch:  # last partial batch: everything is profiled, nothing left to decide
            k[idx], n[idx] = kk, nn
            break
        b = nn // batch
        unknown = (st == 0) & (nn > 0)
        inv = unknown & (kk <= k_inv_t[b])
        satn = unknown & ~inv & (kk >= k_sat_t[b])
        st = np.where(inv, 2, np.where(satn, 1, st)).astype(np.int8)
        k[idx], n[idx], state[idx] = kk, nn, st
        noninv = st != 2
        first = np.where(noninv.any(axis=1), noninv.argmax(axis=1), M)
        stop = (first == M) | (st[np.arange(idx.size), np.minimum(first, M - 1)] == 1)
        if early_stop:
            go = ~stop
            if go.any():
                g = idx[go]
                sg = st[go]
                sat = sg == 1
                fs = np.where(sat.any(axis=1), sat.argmax(axis=1), M)
                u_s = np.where(fs < M, u[np.minimum(fs, M - 1)], u_ref)
                in_u = (sg == 0) & (cols[None, :] < fs[:, None])
                es, _ = expected_cost_stop(
                    k[g], n[g], in_u, u, u_ref, u_s, n_items - cnt[g], k_sat, batch
                )
                stop[go] = es
        active[idx[stop]] = False
    return {"k": k, "n": n, "state": state, "cnt": cnt}


def _accuracy(cnt: np.ndarray, ratios: np.ndarray, p_all: np.ndarray, n_items: int) -> np.ndarray:
    R = n_items - cnt
    return (cnt + R * (ratios * p_all[None, :]).sum(axis=1)) / n_items


def _realized(
    cnt: np.ndarray, ratios: np.ndarray, p_all: np.ndarray, n_items: int, rng: np.random.Generator
) -> np.ndarray:
    R = n_items - cnt
    shares = np.floor(ratios * R[:, None]).astype(np.int64)
    shares[:, -1] += R - shares.sum(axis=1)  # rounding remainder goes to the reference
    return (cnt + rng.binomial(shares, p_all[None, :]).sum(axis=1)) / n_items


def simulate_cell(
    setting: Setting,
    delta: float,
    gamma: float = 0.95,
    seeds: int = 1000,
    seed: int = 0,
    batch: int = 10,
) -> list[dict[str, object]]:
    """Simulate one (setting, delta) cell for the three methods; one dict per method."""
    rng = np.random.default_rng([seed, int(round(delta * 1000)), setting.n_items])
    u_ref, u_c = setting.unit_costs()
    order = np.argsort(u_c, kind="stable")
    u = u_c[order]
    p = np.asarray(setting.rates, dtype=float)[order]
    M = len(u)
    N = setting.n_items
    u_all = np.append(u, u_ref)
    p_all = np.append(p, 1.0)
    target = 1 - delta
    always_ref = N * u_ref
    rows: list[dict[str, object]] = []

    def record(method: str, res: dict[str, np.ndarray], ratios: np.ndarray, per_item: np.ndarray):
        cnt = res["cnt"]
        R = N - cnt
        total = cnt * u_ref + (res["n"] * u[None, :]).sum(axis=1) + R * per_item
        acc = _accuracy(cnt, ratios, p_all, N)
        real = _realized(cnt, ratios, p_all, N, rng)
        rows.append(
            {
                "setting": setting.name,
                "delta": delta,
                "gamma": gamma,
                "method": method,
                "seeds": seeds,
                "saving": always_ref / total.mean(),
                "violation_rate": float(np.mean(acc < target - 1e-9)),
                "realized_violation_rate": float(np.mean(real < target - 1e-9)),
                "mean_profiled": float(cnt.mean()),
            }
        )

    # SMART and Smart-ModelMix share one profiling run (Clopper-Pearson at gamma).
    res = profile_vectorized(p, u, u_ref, N, delta, ClopperPearson(gamma), seeds, rng, batch)
    S = seeds
    sat = res["state"] == 1
    fs = np.where(sat.any(axis=1), sat.argmax(axis=1), M)
    ratios = np.zeros((S, M + 1))
    ratios[np.arange(S), fs] = 1.0
    record("smart", res, ratios, u_all[fs])

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
    record("mix", res, r, cost)

    # Anytime-valid: confidence sequence per candidate at (1-gamma)/M, LP on its lower bound.
    fam = anytime_family((1 - gamma) / M, target)
    res = profile_vectorized(p, u, u_ref, N, delta, fam, seeds, rng, batch)
    lo, _ = fam.interval(res["k"], res["n"])
    A = np.concatenate([lo, np.ones((S, 1))], axis=1)[:, :, None]
    a_star = (target * N - res["cnt"]) / np.maximum(N - res["cnt"], 1)
    cost, r = solve_mix_pairs(u_all, A, np.array([1.0]), a_star, gamma, "bonferroni", free)
    record("anytime", res, r, cost)
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
        for d in deltas:
            setting = boundary_setting(d) if name == BOUNDARY else SETTINGS[name]
            rows.extend(simulate_cell(setting, d, gamma, seeds, seed))
    return pd.DataFrame(rows)


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """Setting x delta rows, saving and violation columns per method."""
    w = long.pivot_table(
        index=["setting", "delta"],
        columns="method",
        values=["saving", "violation_rate", "realized_violation_rate"],
    )
    order = [m for m in ("smart", "mix", "anytime") if m in long["method"].unique()]
    cols = {}
    for m in order:
        cols[f"saving_{m}"] = w[("saving", m)]
    for m in order:
        cols[f"violation_{m}"] = w[("violation_rate", m)]
    for m in order:
        cols[f"realized_violation_{m}"] = w[("realized_violation_rate", m)]
    out = pd.DataFrame(cols).reset_index()
    setting_order = {s: i for i, s in enumerate([*SETTINGS, BOUNDARY])}
    return out.sort_values(
        ["setting", "delta"], key=lambda c: c.map(setting_order) if c.name == "setting" else c
    ).reset_index(drop=True)


def to_markdown(wide: pd.DataFrame, seeds: int, gamma: float, seconds: float) -> str:
    head = (
        f"# SMART simulation (gamma = {gamma}, {seeds} seeds per cell)\n\n"
        "Produced by `python -m slamkit.smart.simulate --seeds "
        f"{seeds}` in {seconds:.0f} s. Saving = cost of always using GPT-4 / mean cost of "
        "the method (profiling included). Violation = share of seeds whose policy's expected "
        f"accuracy is below 1 - delta (must be <= {1 - gamma:.2f}); realized = share whose "
        "actual accuracy on the simulated items is below 1 - delta. IMDB, SMS Spam and AG News "
        "use the SMART paper's N, conformity rates and prices; *Boundary* is a stress test "
        f"whose one useful candidate conforms at 1 - delta - {BOUNDARY_GAP}, just below the "
        "target, where re-checking bounds every batch (peeking) is most dangerous. "
        "Assumptions: see `slamkit/smart/simulate.py`.\n\n"
    )
    cols = list(wide.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in wide.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c.startswith("saving"):
                cells.append(f"{v:.1f}x")
            elif c.startswith(("violation", "realized")):
                cells.append(f"{v:.3f}")
            elif c == "delta":
                cells.append(f"{v:.2f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


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
