"""Pareto frontier over quality (max), cost (min) and p95 latency (min): the input of the
trade-off charts (:func:`slamkit.charts.pareto_scatter` uses :func:`pareto_mask`).

A row is on the frontier when no other row is at least as good on every objective and
strictly better on one.

Missing values (NaN), decided once here:

* a *required* objective (quality and cost by default) that is missing means the row
  cannot be placed: it is never on the frontier and dominates nothing;
* an *optional* objective (p95 latency by default: e.g. a variant or API whose latency was
  not measured) that is missing is *unknown*. It never drops the row by itself: the row
  is compared with the others on the objectives it has, so it leaves the frontier only
  when another row beats it there. And it cannot push anyone else off: a row whose value
  is unknown does not dominate a row whose value is known on that objective (the unknown
  value might be worse).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from slamkit.errors import SlamkitError


def pareto_mask(
    df: pd.DataFrame,
    maximize: Sequence[str] = (),
    minimize: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> np.ndarray:
    """Boolean array: which rows are not dominated.

    ``optional``: objective columns whose missing values are *unknown* rather than
    disqualifying (see the module docstring).

    >>> d = pd.DataFrame({"q": [.1, .5, .9], "c": [1, 1, 2], "lat": [1, 1, None]})
    >>> pareto_mask(d, ["q"], ["c", "lat"], optional=["lat"]).tolist()
    [False, True, True]
    """
    cols = list(maximize) + list(minimize)
    if not cols:
        raise SlamkitError("pareto needs at least one objective to maximize or minimize.")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SlamkitError(f"Objective column(s) {missing} not in the data ({list(df.columns)}).")
    unknown_ok = [c for c in optional if c not in cols]
    if unknown_ok:
        raise SlamkitError(f"optional={unknown_ok} names no objective; objectives are {cols}.")
    x = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float, copy=True)
    x[:, len(maximize) :] *= -1  # everything is "higher is better" from here
    nan = np.isnan(x)
    required = np.array([c not in set(optional) for c in cols], dtype=bool)
    ok = ~(nan & required).any(axis=1)
    # pairwise [j, i, objective]: does j's value settle the comparison with i's?
    i_unknown = nan[None, :, :]  # i's value unknown: this objective is not compared
    j_known = ~nan[:, None, :]
    with np.errstate(invalid="ignore"):
        ge = x[:, None, :] >= x[None, :, :]
        gt = x[:, None, :] > x[None, :, :]
    at_least = (i_unknown | (j_known & ge)).all(axis=2)  # j at least as good as i
    strictly = (gt & j_known & ~i_unknown).any(axis=2)
    dominated = (at_least & strictly & ok[:, None]).any(axis=0)
    return ok & ~dominated


def pareto_frontier(
    df: pd.DataFrame,
    quality: str = "quality",
    cost: str = "cost_per_request",
    latency: str | None = "p95_latency_s",
    extra_maximize: Sequence[str] = (),
    extra_minimize: Sequence[str] = (),
    only_frontier: bool = False,
) -> pd.DataFrame:
    """``df`` with a boolean ``on_frontier`` column (or only the frontier rows), sorted by cost.

    Pass ``latency=None``/``cost=None`` to drop an objective. A missing latency is
    unknown (optional objective); a missing quality or cost keeps a row off the frontier.
    """
    maximize = [quality, *extra_maximize] if quality else list(extra_maximize)
    minimize = [c for c in (cost, latency) if c] + list(extra_minimize)
    out = df.copy()
    out["on_frontier"] = pareto_mask(out, maximize, minimize, optional=[latency] if latency else [])
    if only_frontier:
        out = out[out["on_frontier"]]
    sort = [c for c in (cost, quality) if c]
    return out.sort_values(sort, ascending=[True, False][: len(sort)]).reset_index(drop=True)
