"""Turn a profiling result into a choice - one model, or a mix - with its guarantee."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from slamkit.errors import SlamkitError
from slamkit.smart.bounds import (
    AfterScreening,
    CalibratedCS,
    ClopperPearson,
    FinitePopulationCS,
    anytime_family,
    clopper_pearson,
    screened_family,
)
from slamkit.smart.mix import largest_safe_share, solve_mix_milp
from slamkit.smart.profile import ProfileResult

#: confidence levels ModelMix may assign to a model (plus the free option: level 1, a = 0)
MIX_LEVELS = np.round(np.arange(0.95, 0.9951, 0.005), 3)

METHODS = ("smart", "smart-mix", "anytime", "anytime-mix")
#: the methods whose guarantee holds however often bounds are checked
GUARANTEED = ("anytime", "anytime-mix")
#: error budget the guaranteed mix keeps for the random split of the remaining items
MIX_SPLIT_ALPHA = 0.01
#: items the guaranteed methods screen with before any confidence sequence starts: fewer
#: waste less evidence, more drop a good candidate less often (5 items, keep >= 3 agreeing:
#: a candidate at 0.88 is dropped 1.4% of the time, at 0.94 0.2%); 10 and 5 compared on the
#: simulator: 5 saves more in every cell checked
SCREEN = 5


@dataclass
class Selection:
    """A SMART decision: shares of the remaining items per model, and what is guaranteed."""

    method: str
    choice: dict[str, float]  # model -> share of the N - n_profiled remaining items
    guarantee: str
    expected_cost: float  # profiling cost + remaining items at the chosen unit costs
    reference_cost: float  # N items all processed by the reference
    n_items: int
    n_profiled: int
    delta: float
    gamma: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def saving(self) -> float:
        return self.reference_cost / self.expected_cost if self.expected_cost > 0 else np.inf

    def row(self, **extra: Any) -> dict[str, Any]:
        """A ``selections`` table row (extra: selection_id, task_id, reference_model, ...)."""
        return jsonable(
            {
                **extra,
                "method": self.method,
                "delta": self.delta,
                "gamma": self.gamma,
                "n_items": self.n_items,
                "n_profiled": self.n_profiled,
                "choice": self.choice,
                "guarantee": self.guarantee,
                "expected_cost": self.expected_cost,
                "reference_cost": self.reference_cost,
                "details": self.details,
            }
        )


def jsonable(obj: Any) -> Any:
    """Plain Python types only (numpy scalars -> int/float, NaN -> None), for JSON columns."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _profiling_cost(res: ProfileResult) -> float:
    return float(res.reference_cost + res.stats["cost"].sum())


def _details(res: ProfileResult) -> dict[str, Any]:
    st = res.stats.replace({np.nan: None})
    return {
        "stopped_by": res.stopped_by,
        "profiled_items": [str(i) for i in res.profiled_items],
        "u_ref": res.u_ref,
        "models": st.to_dict(orient="records"),
        "bounds": {m: f.describe() for m, f in res.bounds.items()},
    }


def _share_text(choice: dict[str, float], remaining: int) -> str:
    parts = [f"{m} {r:.1%} (~{round(r * remaining)} items)" for m, r in choice.items() if r > 1e-9]
    return ", ".join(parts)


def _all_profiled(res: ProfileResult) -> str:
    return (
        f"All {res.n_items} items were profiled, so every output is {res.reference}'s own "
        "(100% agreement, no statistical statement needed); with more items a cheaper "
        "model could take over part of them."
    )


def own_evidence_missing(res: ProfileResult, rows: pd.DataFrame) -> pd.Series:
    """Which satisfied ``rows`` qualify only through the profiled items: the profiled items
    alone (answered by the reference) already reach 1 - delta of all N, so any candidate is
    "satisfied", and the candidate's own observed conformity is below 1 - delta. Choosing
    one would be valid but no recommendation, so :func:`choose_single` and
    :func:`choose_safe_mix` keep the reference instead (more conservative, still valid).

    This state needs all but about delta * N items profiled; the simulator
    (:mod:`slamkit.smart.simulate`) keeps SMART's plain rule (cheapest satisfied model),
    which its cells do not reach in this state (checked over 200 seeds per cell).
    """
    target = 1 - res.delta
    need = float(np.ceil(target * res.n_items - 1e-9))
    trivial = res.n_profiled >= need
    return (rows["conformity"].fillna(0.0) < target - 1e-12) & trivial


def choose_single(res: ProfileResult, gamma: float, method: str = "smart") -> Selection:
    """The remaining items go to the cheapest satisfied model, else to the reference."""
    st = res.stats
    sat = st[st["state"] == "satisfied"]
    R = res.remaining
    target = 1 - res.delta
    hollow = sat[own_evidence_missing(res, sat)]
    sat = sat.drop(hollow.index)
    if len(sat):
        best = sat.iloc[0]
        model, u = str(best["model"]), float(best["unit_cost"])
        fam = res.bounds[model]
        inner = fam.inner if isinstance(fam, AfterScreening) else fam
        why = (
            (
                f"the remaining {R} go to {model} (conformity {best['conformity']:.3f} on "
                f"{int(best['n'])} items; satisfied by {fam.describe()}: the chance that "
                f"choosing it leaves the accuracy below {target:.1%} of all {res.n_items} is "
                f"at most its share {inner.alpha:.3g} of the budget; the plain sequence at "
                f"that level puts at least {float(best['lower']):.3f} of the "
                f"{res.n_items - int(best['n'])} items it did not see in agreement)"
            )
            if isinstance(inner, CalibratedCS)
            else (
                f"the remaining {R} go to {model} (conformity {best['conformity']:.3f} on "
                f"{int(best['n'])} items; by {fam.describe()}, at least "
                f"{float(best['lower']):.3f} of the {res.n_items - int(best['n'])} items it did "
                "not "
                f"see agree, enough with the profiled items for {target:.1%} of all {res.n_items})"
            )
            if isinstance(fam, (FinitePopulationCS, AfterScreening))
            else (
                f"the remaining {R} go to {model} (conformity {best['conformity']:.3f} on "
                f"{int(best['n'])} items, lower bound {best['lower']:.3f} >= {target:.3f} by "
                f"{res.bounds[model].describe()})"
            )
        )
    elif len(hollow):
        model, u = res.reference, res.u_ref
        h = hollow.iloc[0]
        why = (
            f"no candidate qualified on its own evidence: the guarantee would hold for "
            f"{h['model']} (conformity {h['conformity']:.3f} on {int(h['n'])} items, below "
            f"{target:.1%}) only because the {res.n_profiled} profiled items already reach "
            f"{target:.1%} of all {res.n_items} with {R} items left, so the reference is kept "
            f"and the remaining {R} also use {model} (no saving is claimed)"
        )
    else:
        model, u = res.reference, res.u_ref
        why = f"no candidate reached the bound, so the remaining {R} also use {model}"
    caveat = (
        " The confidence is nominal: re-checking after every batch is not corrected for."
        if method == "smart"
        else " Anytime-valid: it holds however often the bounds were checked, and it is about "
        "the outputs actually produced (not an expected rate)."
    )
    text = (
        f"With confidence {gamma:g}, at least {target:.1%} of the {res.n_items} outputs agree "
        f"with {res.reference}: the {res.n_profiled} profiled items use {res.reference}'s "
        f"output; {why}.{caveat}"
    )
    if R <= 0:
        text = _all_profiled(res)
    return Selection(
        method=method,
        choice={model: 1.0},
        guarantee=text,
        expected_cost=_profiling_cost(res) + R * u,
        reference_cost=res.n_items * res.u_ref,
        n_items=res.n_items,
        n_profiled=res.n_profiled,
        delta=res.delta,
        gamma=gamma,
        details=_details(res),
    )


def choose_mix(
    res: ProfileResult,
    gamma: float,
    method: str = "smart-mix",
    levels: np.ndarray = MIX_LEVELS,
    rule: str = "product",
) -> Selection:
    """Smart-ModelMix over the profiled candidates plus the reference (MILP, HiGHS).

    ``method='smart-mix'``: one-sided Clopper-Pearson lower bounds on the ``levels`` grid
    combined by ``rule``; ``method='anytime'``: each candidate's confidence-sequence lower
    bound at the alpha spent up front (no level search).
    """
    st = res.stats
    N, cnt, R = res.n_items, res.n_profiled, res.remaining
    target = 1 - res.delta
    a_star = (target * N - cnt) / R if R > 0 else 0.0
    names = list(st["model"]) + [res.reference]
    u = np.append(st["unit_cost"].to_numpy(float), res.u_ref)
    free = np.append(np.zeros(len(st)), 1.0)
    k, n = st["k"].to_numpy(float), st["n"].to_numpy(float)
    if method == "anytime":
        lv = np.array([1.0])
        A = np.append(st["lower"].to_numpy(float), 1.0)[:, None]
        rule_used = "bonferroni"
        how = "confidence-sequence lower bounds (alpha split over candidates up front)"
    else:
        lv = np.asarray(levels, dtype=float)
        A = np.vstack(
            [np.stack([clopper_pearson(k, n, lev, "lower")[0] for lev in lv], axis=1),
             np.ones((1, len(lv)))]
        )  # fmt: skip
        rule_used = rule
        how = f"one-sided Clopper-Pearson lower bounds, levels combined by the {rule} rule"
    if R <= 0:
        shares = {res.reference: 1.0}
        per_item = 0.0
        sol_levels: dict[str, float] = {}
    else:
        sol = solve_mix_milp(u, A, lv, a_star, gamma, rule_used, free)
        shares = {names[i]: float(r) for i, r in enumerate(sol.ratios) if r > 1e-9}
        per_item = sol.cost
        sol_levels = {
            names[i]: float(sol.levels[i]) for i in range(len(names)) if sol.ratios[i] > 1e-9
        }
    caveat = (
        " Nominal: profiling re-checked Clopper-Pearson bounds every batch and the levels were "
        "chosen after seeing the data."
        if method == "smart-mix"
        else " Anytime-valid: holds however often the bounds were checked."
    )
    text = (
        f"With confidence {gamma:g}, at least {target:.1%} of the {N} outputs agree with "
        f"{res.reference} in expectation: the {cnt} profiled items use {res.reference}'s output; "
        f"the remaining {R} are split {_share_text(shares, R)} so that the mix's accuracy lower "
        f"bound is >= {a_star:.3f}, using {how}.{caveat}"
    )
    if R <= 0:
        text = _all_profiled(res)
    details = _details(res)
    details.update({"a_star": a_star, "levels": sol_levels, "rule": rule_used})
    return Selection(
        method=method,
        choice=shares,
        guarantee=text,
        expected_cost=_profiling_cost(res) + R * per_item,
        reference_cost=N * res.u_ref,
        n_items=N,
        n_profiled=cnt,
        delta=res.delta,
        gamma=gamma,
        details=details,
    )


def bounds_for(
    method: str, gamma: float, n_candidates: int, delta: float, n_items: int | None = None
) -> Any:
    """The bound family each method profiles with: Clopper-Pearson at gamma for the paper's
    methods; for the guaranteed ones a finite-population confidence sequence per candidate
    over the ``n_items`` items at alpha = (1 - gamma) / candidates (Bonferroni; the mix keeps
    :data:`MIX_SPLIT_ALPHA` of 1 - gamma for its random split)."""
    m = max(n_candidates, 1)
    if method == "anytime":
        return anytime_family((1 - gamma) / m, 1 - delta, n_items)
    if method == "anytime-mix":
        return anytime_family((1 - gamma - MIX_SPLIT_ALPHA) / m, 1 - delta, n_items)
    return ClopperPearson(gamma)


def profile_options(
    method: str, gamma: float, n_candidates: int, delta: float, n_items: int, batch: int = 10
) -> dict[str, Any]:
    """The keyword arguments of :func:`~slamkit.smart.profile.profile` for ``method``: its
    bounds, how often they are checked, and - for the guaranteed methods - the
    :data:`SCREEN` screening items whose survivors share the error budget
    (:class:`~slamkit.smart.bounds.AfterScreening`)."""
    opts: dict[str, Any] = {
        "bounds": bounds_for(method, gamma, n_candidates, delta, n_items),
        "check_every": check_every(method, batch),
    }
    if method in GUARANTEED and n_items > max(SCREEN, batch):
        alpha = 1 - gamma - (MIX_SPLIT_ALPHA if method == "anytime-mix" else 0.0)
        opts["screen"] = SCREEN
        opts["screened"] = partial(
            screened_family, alpha, 1 - delta, n_items, SCREEN, calibrate=method == "anytime"
        )  # (survivors, rank) -> family; the single-model choice calibrated exactly
    return opts


def check_every(method: str, batch: int = 10) -> int:
    """How often a method checks its bounds: after every item when anytime-valid."""
    return 1 if method in GUARANTEED else batch


def choose_safe_mix(
    res: ProfileResult, gamma: float, alpha_split: float = MIX_SPLIT_ALPHA
) -> Selection:
    """The guaranteed model mix: the cheapest of the single satisfied model and, per
    candidate, the largest random share of the remaining items it may answer with the
    reference answering the rest (:func:`~slamkit.smart.mix.largest_safe_share`) - from the
    candidates' finite-population confidence-sequence lower bounds, minus the profiled items
    a candidate did not see."""
    st = res.stats
    N, cnt, R = res.n_items, res.n_profiled, res.remaining
    target = 1 - res.delta
    need = float(np.ceil(target * N - 1e-9))
    options: list[tuple[float, dict[str, float], str]] = [
        (R * res.u_ref, {res.reference: 1.0}, f"all {R} to {res.reference}")
    ]
    sat = st[st["state"] == "satisfied"]
    sat = sat[~own_evidence_missing(res, sat)]
    if len(sat) and R > 0:
        b = sat.iloc[0]
        why = f"all {R} to {b['model']} (its confidence-sequence bound holds)"
        options.append((R * float(b["unit_cost"]), {str(b["model"]): 1.0}, why))
    if any(
        isinstance(f, AfterScreening) and isinstance(f.inner, CalibratedCS)
        for f in res.bounds.values()
    ):
        raise SlamkitError(
            "The guaranteed mix needs the plain confidence sequences, but this profile used "
            "the exactly calibrated ones of method 'anytime' (their level holds only for "
            "choosing one model). Profile again with method 'anytime-mix'."
        )
    screened = any(isinstance(f, AfterScreening) for f in res.bounds.values())
    hollow = own_evidence_missing(res, st)
    for r, no_evidence in zip(st.itertuples(), hollow, strict=True):
        fam = res.bounds[r.model]
        # only bounds inside the error budget: the screening's survivors (or, without a
        # screening, every candidate's sequence); an invalid candidate may still take a share
        usable = isinstance(fam, AfterScreening) or (
            not screened and isinstance(fam, FinitePopulationCS)
        )
        if R <= 0 or r.n == 0 or not usable or no_evidence:
            continue
        unseen_lo = np.floor(float(r.lower) * (N - r.n) + 1e-6)
        G = float(np.clip(unseen_lo - (cnt - r.n), 0, R))
        s = float(largest_safe_share(np.array(cnt), np.array(R), np.array(G), need, alpha_split)[0])
        if s <= 0:
            continue
        c = s * float(r.unit_cost) + (R - s) * res.u_ref
        options.append((c, {str(r.model): s / R, res.reference: 1 - s / R},
                        f"{int(s)} drawn at random to {r.model} (at least {int(G)} of the {R} "
                        "agree "
                        f"with {res.reference} by its confidence sequence), the rest to "
                        f"{res.reference}"))  # fmt: skip
    cost, shares, how = min(options, key=lambda o: o[0])
    shares = {m: v for m, v in shares.items() if v > 1e-12}
    text = (
        f"With confidence {gamma:g}, at least {target:.1%} of the {N} outputs agree with "
        f"{res.reference}: the {cnt} profiled items use {res.reference}'s output; of the "
        f"remaining {R}, {how}. Anytime-valid: finite-population confidence sequences "
        f"(checked after every item, Bonferroni over the candidates) plus {alpha_split:g} for "
        "the random split; it is about the outputs actually produced."
    )
    if R <= 0:
        text = _all_profiled(res)
    details = _details(res)
    details.update({"need": need, "split_alpha": alpha_split})
    return Selection(
        method="anytime-mix", choice=shares, guarantee=text,
        expected_cost=_profiling_cost(res) + cost, reference_cost=N * res.u_ref, n_items=N,
        n_profiled=cnt, delta=res.delta, gamma=gamma, details=details,
    )  # fmt: skip


def choose(res: ProfileResult, method: str, gamma: float) -> Selection:
    if method in ("smart", "anytime"):
        return choose_single(res, gamma, method)
    if method == "smart-mix":
        return choose_mix(res, gamma, method)
    if method == "anytime-mix":
        return choose_safe_mix(res, gamma)
    raise SlamkitError(f"Unknown SMART method {method!r}: use one of {', '.join(METHODS)}.")


#: the task size the "items needed" figures assume (a workload large enough to be worth it)
PLAN_ITEMS = 100_000


def items_needed(
    conformity: float,
    delta: float,
    gamma: float = 0.95,
    n_candidates: int = 1,
    method: str = "anytime",
    n_items: int = PLAN_ITEMS,
    batch: int = 10,
    cap: int = 200_000,
    rank: int = 0,
) -> int | None:
    """Profiled items a decision would need if a candidate kept agreeing at ``conformity``:
    the fewest items n at which floor(conformity * n) agreeing outputs satisfy ``method``'s
    bound for target 1 - delta (on a task of ``n_items``; SMART looks every ``batch``
    items, the guaranteed methods after every item, past their screening items with all
    ``n_candidates`` surviving). None when it never would (within ``cap`` items). At or
    below the target only the profiled items' own agreement can carry the guarantee, so the
    answer approaches the whole task.

    >>> items_needed(0.99, 0.1, method="smart"), items_needed(0.99, 0.1)
    (60, 71)
    >>> items_needed(0.95, 0.1), items_needed(0.95, 0.1, n_candidates=3)
    (243, 245)
    """
    t = 1 - delta
    step = batch if method in ("smart", "smart-mix") else 1
    n = np.arange(step, min(cap, n_items) + 1, step)
    if method in GUARANTEED:
        opts = profile_options(method, gamma, n_candidates, delta, n_items, batch)
        screen = int(opts.get("screen", 0))
        fam = (
            opts["screened"](n_candidates, rank) if screen else opts["bounds"]
        )  # the survivors' sequence (the rank-th cheapest's share of the budget)
        t2 = (t * n_items - screen) / (n_items - screen) if screen else t
        m = n[n > screen]
        ok = fam.excludes_below(np.floor(conformity * (m - screen)), m - screen, t2)
        hits = m[ok]
    else:
        ok = ClopperPearson(gamma).excludes_below(np.floor(conformity * n), n, t)
        hits = n[ok]
    return int(hits[0]) if hits.size else None
