"""Turn a profiling result into a choice - one model, or a mix - with its guarantee."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slamkit.smart.bounds import ClopperPearson, anytime_family, clopper_pearson
from slamkit.smart.mix import solve_mix_milp
from slamkit.smart.profile import ProfileResult

#: confidence levels ModelMix may assign to a model (plus the free option: level 1, a = 0)
MIX_LEVELS = np.round(np.arange(0.95, 0.9951, 0.005), 3)

METHODS = ("smart", "smart-mix", "anytime")


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


def choose_single(res: ProfileResult, gamma: float, method: str = "smart") -> Selection:
    """The remaining items go to the cheapest satisfied model, else to the reference."""
    st = res.stats
    sat = st[st["state"] == "satisfied"]
    R = res.remaining
    target = 1 - res.delta
    if len(sat):
        best = sat.iloc[0]
        model, u = str(best["model"]), float(best["unit_cost"])
        why = (
            f"the remaining {R} go to {model} (conformity {best['conformity']:.3f} on "
            f"{int(best['n'])} items, lower bound {best['lower']:.3f} >= {target:.3f} by "
            f"{res.bounds[model].describe()})"
        )
    else:
        model, u = res.reference, res.u_ref
        why = f"no candidate reached the bound, so the remaining {R} also use {model}"
    caveat = (
        " The confidence is nominal: re-checking after every batch is not corrected for."
        if method == "smart"
        else ""
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
        how = "confidence-sequence lower bounds (alpha split evenly over candidates up front)"
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


def bounds_for(method: str, gamma: float, n_candidates: int, delta: float) -> Any:
    """The bound family each method profiles with."""
    if method == "anytime":
        return anytime_family((1 - gamma) / max(n_candidates, 1), 1 - delta)
    return ClopperPearson(gamma)


def choose(res: ProfileResult, method: str, gamma: float) -> Selection:
    if method == "smart":
        return choose_single(res, gamma, "smart")
    if method in ("smart-mix", "anytime"):
        return choose_mix(res, gamma, method)
    from slamkit.errors import SlamkitError

    raise SlamkitError(f"Unknown SMART method {method!r}: use one of {', '.join(METHODS)}.")
