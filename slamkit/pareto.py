"""Pareto frontier over quality (max), cost (min) and p95 latency (min): the input of the
trade-off charts. A row is on the frontier when no other row is at least as good on every
objective and strictly better on one. Rows with a missing objective are never on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from slamkit.errors import SlamkitError


def pareto_mask(
    df: pd.DataFrame, maximize: Sequence[str] = (), minimize: Sequence[str] = ()
) -> np.ndarray:
    """Boolean array: which rows are not dominated."""
    cols = list(maximize) + list(minimize)
    if not cols:
        raise SlamkitError("pareto needs at least one objective to maximize or minimize.")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SlamkitError(f"Objective column(s) {missing} not in the data ({list(df.columns)}).")
    x = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float, copy=True)
    x[:, len(maximize) :] *= -1  # everything is "higher is better" from here
    ok = ~np.isnan(x).any(axis=1)
    ge = (x[:, None, :] >= x[None, :, :]).all(axis=2)  # ge[j, i]: j at least as good as i
    gt = (x[:, None, :] > x[None, :, :]).any(axis=2)
    dominated = ((ge & gt) & ok[:, None]).any(axis=0)
    return ok & ~dominated


def pareto_frontier(
    df: pd.DataFrame,
    quality: str = "quality",
    cost: str = "cost_per_request",
    latency: str = "p95_latency_s",
    extra_maximize: Sequence[str] = (),
    extra_minimize: Sequence[str] = (),
    only_frontier: bool = False,
) -> pd.DataFrame:
    """``df`` with a boolean ``on_frontier`` column (or only the frontier rows), sorted by cost.

    Pass ``latency=None``/``cost=None`` to drop an objective.
    """
    maximize = [quality, *extra_maximize] if quality else list(extra_maximize)
    minimize = [c for c in (cost, latency) if c] + list(extra_minimize)
    out = df.copy()
    out["on_frontier"] = pareto_mask(out, maximize, minimize)
    if only_frontier:
        out = out[out["on_frontier"]]
    sort = [c for c in (cost, quality) if c]
    return out.sort_values(sort, ascending=[True, False][: len(sort)]).reset_index(drop=True)
