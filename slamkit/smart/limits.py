"""Where Smart-ModelMix's violations come from, and how few items a valid test can need.

Two analyses behind the README's SMART simulation section, on the simulator of
:mod:`slamkit.smart.simulate` (same settings, same shared conformity matrices, same
profiling):

* :func:`mix_decomposition` - the realized violation rate (share of seeds whose accuracy on
  the N items is below 1 - delta, profiled items counted as agreeing, exactly as
  :func:`~slamkit.smart.simulate.simulate_cell` computes it for ``mix``) of four variants of
  Smart-ModelMix after SMART's profiling (two-sided Clopper-Pearson at gamma, every 10 items):

  - ``paper``: one-sided Clopper-Pearson lower bounds at the levels
    :data:`~slamkit.smart.simulate.MIX_LEVELS` (0.95 ... 0.995), the product rule
    prod l_i >= gamma, bounds read on the profiled sample when profiling stopped
    (simulate_cell's ``mix``);
  - ``two_sided``: the authors' two-sided levels :data:`AUTHORS_LEVELS` (0.95 ... 0.99,
    the lower end of a two-sided interval: quantile (1 - level) / 2), as in their
    ``processor.py`` / ``utils_math.binom_ci``;
  - ``fresh``: one-sided, but each candidate's bounds come from a *fresh* independent sample
    of the size it was profiled on (Bernoulli at its true rate, its own random generator):
    no peeking, the bounds no longer read at a stopping time the data chose;
  - ``fresh_two_sided``: both.

  Every variant splits the remaining items with
  :func:`~slamkit.smart.mix.solve_mix_pairs` and is scored on the same matrix with the same
  hypergeometric draws (common random numbers).

* :func:`wald_bounds` - per paper setting and delta = 0.06 ... 0.20: SMART's saving and mean
  profiled items (:func:`~slamkit.smart.simulate.simulate_cell`); the *allowed items*
  (:func:`allowed_items`): the most profiled items n that still leave a saving of
  0.9 x SMART's when the cheapest candidate whose true rate reaches 1 - delta answers the
  other N - n items (cost model of simulate_cell: n items of the reference, the screening
  survivors on all n, the screened-out candidates on the first
  :data:`~slamkit.smart.simulate.SCREEN` only); and Wald's lower bound
  (:func:`wald_items`) on the expected items of *any* level-alpha sequential test with power
  1 - beta that certifies that candidate, even an oracle SPRT that knows its rate:

      E[tau] >= [(1 - beta) log((1 - beta) / alpha) + beta log(beta / (1 - alpha))]
                / KL(p || t_n),      t_n = ((1 - delta) N - n) / (N - n),

  t_n being the rate the N - n unseen items need once n items are profiled (the fixed point
  n = bound(t_n) is solved by bisection), at alpha = 0.05 (no split over candidates) and
  0.025 (two survivors, Bonferroni).

Run: ``python -m slamkit.smart.limits [--seeds N]`` prints both tables (markdown).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from slamkit.smart.bounds import SCREEN_KEEP, ClopperPearson
from slamkit.smart.mix import solve_mix_pairs
from slamkit.smart.simulate import (
    CANDIDATES,
    MIX_LEVELS,
    SCREEN,
    SETTINGS,
    Conformity,
    Setting,
    _conformity,
    _realized_correct,
    profile_vectorized,
    simulate_cell,
)

#: the SMART authors' mix levels (``np.linspace(confidence, 1.0, num=5, endpoint=False)``
#: in their ``processor.py``), used as two-sided Clopper-Pearson levels
AUTHORS_LEVELS = np.round(np.linspace(0.95, 1.0, num=5, endpoint=False), 3)
#: the cells of the README's decomposition
MIX_CELLS: tuple[tuple[str, float], ...] = (
    ("SMS Spam", 0.06), ("AG News", 0.06), ("IMDB", 0.06), ("AG News", 0.10), ("IMDB", 0.04),
)  # fmt: skip
#: (key, label): the four variants of :func:`mix_decomposition`
MIX_VARIANTS = (
    ("paper", "paper mix (one-sided 0.95-0.995)"),
    ("two_sided", "two-sided 0.95-0.99"),
    ("fresh", "fresh one-sided"),
    ("fresh_two_sided", "fresh two-sided"),
)
WALD_DELTAS = tuple(round(0.06 + 0.02 * i, 2) for i in range(8))
WALD_ALPHAS = (0.05, 0.025)
#: the share of SMART's saving the allowed items must keep
KEEP = 0.9


def _mix_lower_bounds(
    k: np.ndarray, n: np.ndarray, levels: np.ndarray, two_sided: bool
) -> np.ndarray:
    """(S, M + 1, G) Clopper-Pearson lower bounds of each candidate at each level, the
    reference (always right) last - as simulate_cell's ``mix`` builds them."""
    S = k.shape[0]
    q = (1 - levels) / 2 if two_sided else 1 - levels
    with np.errstate(invalid="ignore", divide="ignore"):
        A = stats.beta.ppf(
            q[None, None, :], np.maximum(k, 1e-300)[:, :, None], (n - k + 1)[:, :, None]
        )
    A = np.where((k > 0)[:, :, None], A, 0.0)
    return np.concatenate([A, np.ones((S, 1, len(levels)))], axis=1)


def _split_rng(seed: int, delta: float, n_items: int) -> np.random.Generator:
    """The generator simulate_cell uses for the hypergeometric split draws."""
    return np.random.default_rng([seed, int(round(delta * 1000)), n_items, 11])


def mix_cell(
    setting: Setting,
    delta: float,
    gamma: float = 0.95,
    seeds: int = 1000,
    seed: int = 0,
    batch: int = 10,
    conf: Conformity | None = None,
) -> dict[str, dict[str, float]]:
    """The four mix variants in one (setting, delta) cell: per variant its realized
    violation rate and saving (vs always the reference, profiling included)."""
    u_ref, u_c = setting.unit_costs()
    order = np.argsort(u_c, kind="stable")
    u = u_c[order]
    p = np.asarray(setting.rates, dtype=float)[order]
    M, N = len(u), setting.n_items
    if conf is None:
        conf = _conformity(setting, seeds, seed)
    u_all = np.append(u, u_ref)
    target = 1 - delta
    need = np.ceil(target * N - 1e-9)
    res = profile_vectorized(conf, u, u_ref, N, delta, ClopperPearson(gamma), batch=batch)
    k, n, cnt = res["k"], res["n"], res["cnt"]
    a_star = (target * N - cnt) / np.maximum(N - cnt, 1)
    free = np.append(np.zeros(M), 1.0)
    fresh_rng = np.random.default_rng([seed, int(round(delta * 1000)), N, 13])
    k_fresh = fresh_rng.binomial(n, p[None, :])  # same sizes, independent items
    profiling = cnt * u_ref + (n * u[None, :]).sum(axis=1)
    out: dict[str, dict[str, float]] = {}
    for key, _ in MIX_VARIANTS:
        two = key.endswith("two_sided")
        levels = AUTHORS_LEVELS if two else MIX_LEVELS
        A = _mix_lower_bounds(k_fresh if key.startswith("fresh") else k, n, levels, two)
        cost, shares = solve_mix_pairs(u_all, A, levels, a_star, gamma, "product", free)
        correct = _realized_correct(conf, cnt, shares, _split_rng(seed, delta, N))
        total = profiling + cost * (N - cnt)
        out[key] = {
            "violation": float(np.mean(correct < need)),
            "saving": float(N * u_ref / total.mean()),
        }
    return out


def mix_decomposition(
    seeds: int = 1000,
    cells: Sequence[tuple[str, float]] = MIX_CELLS,
    gamma: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per cell: ``violation_<variant>`` and ``saving_<variant>`` of the four
    variants (:data:`MIX_VARIANTS`), on the shared matrices of :mod:`slamkit.smart.simulate`."""
    rows: list[dict[str, object]] = []
    confs: dict[str, Conformity] = {}
    for name, delta in cells:
        setting = SETTINGS[name]
        if name not in confs:
            confs[name] = _conformity(setting, seeds, seed)
        got = mix_cell(setting, delta, gamma, seeds, seed, conf=confs[name])
        row: dict[str, object] = {"setting": name, "delta": delta, "seeds": seeds}
        for key, _ in MIX_VARIANTS:
            row[f"violation_{key}"] = got[key]["violation"]
        for key, _ in MIX_VARIANTS:
            row[f"saving_{key}"] = got[key]["saving"]
        rows.append(row)
    return pd.DataFrame(rows)


def wald_numerator(alpha: float, beta: float = 0.05) -> float:
    """(1 - beta) log((1 - beta) / alpha) + beta log(beta / (1 - alpha))."""
    return (1 - beta) * math.log((1 - beta) / alpha) + beta * math.log(beta / (1 - alpha))


def kl_bernoulli(p: float, t: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(t)), 0 log 0 = 0."""
    a = p * math.log(p / t) if p > 0 else 0.0
    b = (1 - p) * math.log((1 - p) / (1 - t)) if p < 1 else 0.0
    return a + b


def wald_bound(p: float, t: float, alpha: float, beta: float = 0.05) -> float:
    """Wald's lower bound on the expected items of a level-``alpha`` sequential test with
    power 1 - ``beta`` of rate ``p`` against the target ``t`` (inf where p <= t, 0 where
    t <= 0: nothing is left to certify).

    >>> round(wald_bound(0.94, 0.90, 0.05), 1)
    259.1
    """
    if t <= 0:
        return 0.0
    if p <= t:
        return math.inf
    return wald_numerator(alpha, beta) / kl_bernoulli(p, t)


def unseen_target(n: float, delta: float, n_items: int) -> float:
    """The agreement rate the N - n unseen items need after n profiled items (which count as
    agreeing): ((1 - delta) N - n) / (N - n)."""
    return ((1 - delta) * n_items - n) / (n_items - n)


def wald_items(p: float, delta: float, n_items: int, alpha: float, beta: float = 0.05) -> float:
    """The fixed point n = :func:`wald_bound` (p, t_n, alpha, beta) with t_n =
    :func:`unseen_target` (n): n - bound(t_n) increases in n, so bisection finds it.

    >>> round(wald_items(0.94, 0.10, 5574, 0.05), 1) < round(wald_bound(0.94, 0.90, 0.05), 1)
    True
    """
    if p < 1 - delta - 1e-12:
        return math.inf
    lo, hi = 0.0, (1 - delta) * n_items - 1.0  # t_n > 0 up to hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid - wald_bound(p, unseen_target(mid, delta, n_items), alpha, beta) < 0:
            lo = mid
        else:
            hi = mid
    return hi


def profiling_cost(setting: Setting, n: np.ndarray | int, chosen: int) -> np.ndarray:
    """Total cost of profiling n items and answering the other N - n with candidate
    ``chosen`` (index into :data:`~slamkit.smart.simulate.CANDIDATES`): n items of the
    reference, the screening survivors (true rate >= SCREEN_KEEP) on all n, the others on
    the first :data:`~slamkit.smart.simulate.SCREEN` only, as simulate_cell's ``record``
    charges them (each candidate its processed items times its unit cost)."""
    u_ref, u = setting.unit_costs()
    rates = np.asarray(setting.rates, dtype=float)
    nn = np.asarray(n, dtype=float)
    surv = u[rates >= SCREEN_KEEP].sum()
    out = u[rates < SCREEN_KEEP].sum()
    return np.asarray(
        nn * u_ref + nn * surv + np.minimum(nn, SCREEN) * out + (setting.n_items - nn) * u[chosen]
    )


def saving_at(setting: Setting, n: np.ndarray | int, chosen: int) -> np.ndarray:
    """Always-reference cost / :func:`profiling_cost`."""
    u_ref, _ = setting.unit_costs()
    return np.asarray(setting.n_items * u_ref / profiling_cost(setting, n, chosen))


def allowed_items(setting: Setting, chosen: int, smart_saving: float, keep: float = KEEP) -> int:
    """The most profiled items n whose :func:`saving_at` still reaches ``keep`` x
    ``smart_saving`` (-1 where not even n = 0 does)."""
    n = np.arange(setting.n_items + 1)
    ok = np.nonzero(saving_at(setting, n, chosen) >= keep * smart_saving)[0]
    return int(ok.max()) if ok.size else -1


def qualifying(setting: Setting, delta: float) -> list[int]:
    """Indices of :data:`~slamkit.smart.simulate.CANDIDATES` whose true rate reaches
    1 - delta, cheapest first."""
    _, u = setting.unit_costs()
    idx = [i for i, r in enumerate(setting.rates) if r >= 1 - delta - 1e-12]
    return sorted(idx, key=lambda i: (u[i], i))


def wald_bounds(
    seeds: int = 1000,
    settings: Sequence[str] = tuple(SETTINGS),
    deltas: Sequence[float] = WALD_DELTAS,
    alphas: Sequence[float] = WALD_ALPHAS,
    beta: float = 0.05,
    gamma: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (setting, delta, qualifying candidate - the cheapest and the second
    cheapest, ``rank`` 1 / 2): SMART's saving and mean profiled items at ``seeds`` seeds,
    the allowed items for that candidate, Wald's bound at each alpha at its fixed point
    (``wald_<alpha>``) and at the target after the allowed items (``wald_at_allowed_<alpha>``:
    bound(t_allowed); it exceeds the allowed items exactly where the fixed point does, so
    both columns say the same about reachability)."""
    rows: list[dict[str, object]] = []
    for name in settings:
        setting = SETTINGS[name]
        conf = _conformity(setting, seeds, seed)
        for d in deltas:
            (smart,) = simulate_cell(setting, d, gamma, seeds, seed, conf=conf, methods=("smart",))
            sav, items = float(smart["saving"]), float(smart["mean_profiled"])  # type: ignore[arg-type]
            for rank, c in enumerate(qualifying(setting, d)[:2], start=1):
                p = float(setting.rates[c])
                row: dict[str, object] = {
                    "setting": name, "delta": d, "rank": rank, "candidate": CANDIDATES[c],
                    "rate": p, "smart_saving": sav, "smart_items": items,
                    "allowed_items": allowed_items(setting, c, sav),
                }  # fmt: skip
                allowed = int(row["allowed_items"])  # type: ignore[call-overload]
                t_allowed = unseen_target(max(allowed, 0), d, setting.n_items)
                for a in alphas:
                    row[f"wald_{a:g}"] = wald_items(p, d, setting.n_items, a, beta)
                for a in alphas:
                    row[f"wald_at_allowed_{a:g}"] = wald_bound(p, t_allowed, a, beta)
                rows.append(row)
    return pd.DataFrame(rows)


def _fmt_items(v: float) -> str:
    return "never" if not math.isfinite(v) else f"{v:.0f}"


def mix_markdown(df: pd.DataFrame) -> str:
    names = dict(MIX_VARIANTS)
    cols = [f"viol. {names[k]}" for k, _ in MIX_VARIANTS] + [
        f"saving {names[k]}" for k, _ in MIX_VARIANTS
    ]
    lines = ["| setting | delta | " + " | ".join(cols) + " |", "|" + "---|" * (2 + len(cols))]
    for _, r in df.iterrows():
        cells = [str(r["setting"]), f"{r['delta']:.2f}"]
        cells += [f"{r[f'violation_{k}']:.3f}" for k, _ in MIX_VARIANTS]
        cells += [f"{r[f'saving_{k}']:.1f}x" for k, _ in MIX_VARIANTS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wald_markdown(df: pd.DataFrame, alphas: Sequence[float] = WALD_ALPHAS) -> str:
    head = ["setting", "delta", "candidate", "rate", "SMART saving", "SMART mean items",
            "allowed items", *[f"Wald alpha={a:g}" for a in alphas],
            *[f"Wald alpha={a:g} at t(allowed)" for a in alphas]]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [
            str(r["setting"]), f"{r['delta']:.2f}",
            str(r["candidate"]) + ("" if r["rank"] == 1 else " (2nd)"), f"{r['rate']:.2f}",
            f"{r['smart_saving']:.1f}x", f"{r['smart_items']:.0f}",
            "none" if r["allowed_items"] < 0 else str(r["allowed_items"]),
            *[_fmt_items(float(r[f"wald_{a:g}"])) for a in alphas],
            *[_fmt_items(float(r[f"wald_at_allowed_{a:g}"])) for a in alphas],
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m slamkit.smart.limits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--seeds", type=int, default=1000, help="seeds per cell (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    ap.add_argument("--gamma", type=float, default=0.95, help="confidence (default 0.95)")
    ap.add_argument(
        "--only", choices=("mix", "wald"), default=None, help="print only one of the tables"
    )
    ap.add_argument(
        "--settings", nargs="+", choices=tuple(SETTINGS), default=tuple(SETTINGS),
        metavar="NAME", help="paper settings to include (default: all three)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    chosen = tuple(args.settings)
    se = 2 * math.sqrt(0.1 * 0.9 / args.seeds)
    if args.only != "wald":
        t0 = time.time()
        cells = tuple(c for c in MIX_CELLS if c[0] in chosen)
        mix = mix_decomposition(args.seeds, cells, gamma=args.gamma, seed=args.seed)
        print(
            f"## Smart-ModelMix: where the violations come from ({args.seeds} seeds, "
            f"{time.time() - t0:.0f} s)\n\nRealized violation rate (accuracy on the N items "
            f"below 1 - delta) and saving; 2 s.e. at a rate of 0.1 = {se:.3f}.\n"
        )
        print(mix_markdown(mix) + "\n")
    if args.only != "mix":
        t0 = time.time()
        wald = wald_bounds(args.seeds, chosen, gamma=args.gamma, seed=args.seed)
        print(
            f"## Items any valid test needs ({args.seeds} seeds, {time.time() - t0:.0f} s)\n\n"
            f"Allowed items: the most profiled items that keep {KEEP} x SMART's saving with "
            "the candidate answering the rest; Wald: lower bound on the expected items of any "
            "level-alpha sequential test with power 0.95 certifying it (oracle SPRT), at its "
            "fixed point n = bound(t_n) and at the target t(allowed) left after the allowed "
            "items.\n"
        )
        print(wald_markdown(wald))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
