"""SMART results for people: the per-candidate conformity table of a selection and the
simulated savings of the SMART paper's settings (labelled as simulated)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slamkit.display import Table
from slamkit.errors import SlamkitError
from slamkit.smart.bounds import clopper_pearson

#: the SMART simulator's results, written by ``slamkit simulate``
SIMULATION_CSV = Path(__file__).resolve().parents[2] / "data" / "simulation_results.csv"


def selection_table(selection: Any) -> pd.DataFrame:
    """Per candidate of a SMART selection: conformity, its Clopper-Pearson interval, verdict.

    ``selection``: a :class:`slamkit.smart.Selection`, or a ``selections`` row (dict or
    Series; ``details`` may be JSON text). Read from ``details["models"]`` (what profiling
    stored: k conforming of n profiled, the method's own bounds and state). Returns one
    row per model: ``model, conforming, profiled, conformity, cp_lo, cp_hi`` (two-sided
    Clopper-Pearson at confidence gamma), ``bound_lo, bound_hi`` (the bounds the method
    decided with, e.g. the anytime-valid confidence sequence), ``target`` (1 - delta) and
    ``verdict``: *invalid* (upper bound < target), *satisfied* (lower bound >= target) or
    *unknown* (the interval contains the target, or the model was not profiled).
    """
    row = _selection_row(selection)
    details = row["details"]
    if isinstance(details, str):
        details = json.loads(details)
    gamma, delta = float(row["gamma"]), float(row["delta"])
    cols = ["model", "conforming", "profiled", "conformity", "cp_lo", "cp_hi", "bound_lo",
            "bound_hi", "target", "verdict"]  # fmt: skip
    rows = []
    for m in (details or {}).get("models", []):
        k, n = int(m.get("k") or 0), int(m.get("n") or 0)
        lo, hi = clopper_pearson(k, n, gamma) if n else (np.nan, np.nan)
        rows.append(
            {"model": m["model"], "conforming": k, "profiled": n,
             "conformity": k / n if n else np.nan, "cp_lo": float(lo), "cp_hi": float(hi),
             "bound_lo": m.get("lower") if n else np.nan,
             "bound_hi": m.get("upper") if n else np.nan,
             "target": 1 - delta, "verdict": m.get("state") or "unknown"}
        )  # fmt: skip
    out = pd.DataFrame(rows, columns=cols)
    for c in ("bound_lo", "bound_hi"):
        out[c] = out[c].astype(float)
    return out


def _selection_row(selection: Any) -> Any:
    if isinstance(selection, (dict, pd.Series)):
        return selection
    return {k: getattr(selection, k, None) for k in ("details", "gamma", "delta", "n_items")}


def selection_display(selection: Any) -> Table:
    """:func:`selection_table` as the report shows it: counts, intervals, verdict vs target."""
    t = selection_table(selection)
    gamma = float(_selection_row(selection)["gamma"])

    def iv(lo: float, hi: float) -> str | None:
        return None if pd.isna(lo) else f"[{lo:.3f}, {hi:.3f}]"

    shown = pd.DataFrame(
        {
            "model": t["model"],
            "conforming / profiled": [f"{k}/{n}" for k, n in zip(t["conforming"],
                                                                  t["profiled"], strict=True)],
            "conformity": t["conformity"].round(3),
            f"Clopper-Pearson {gamma:.0%} CI": [
                iv(a, b) for a, b in zip(t["cp_lo"], t["cp_hi"], strict=True)
            ],
            "bounds used by the method": [
                iv(a, b) for a, b in zip(t["bound_lo"], t["bound_hi"], strict=True)
            ],
            "target (1 - delta)": t["target"].round(3),
            "verdict (method's bounds)": t["verdict"],
        }
    )  # fmt: skip
    return Table(shown.set_index("model"))


def simulation_long(path: str | None = None, setting: str = "IMDB") -> pd.DataFrame:
    """SMART simulation results (data/simulation_results.csv) for ``charts.smart_savings``."""
    p = Path(path) if path else SIMULATION_CSV
    if not p.exists():
        raise SlamkitError(f"{p} is missing: run `slamkit simulate` to produce it.")
    w = pd.read_csv(p)
    if setting not in set(w["setting"]):
        raise SlamkitError(f"{p} has no setting {setting!r}; it has {sorted(set(w['setting']))}.")
    w = w[w["setting"] == setting]
    names = {"smart": "SMART", "mix": "SMART-ModelMix", "anytime": "anytime-valid (slamkit)",
             "mix_safe": "guaranteed mix (slamkit)"}  # fmt: skip
    rows = []
    for r in w.to_dict("records"):
        for m, label in names.items():
            if f"saving_{m}" in r:
                rows.append({"delta": r["delta"], "method": label, "savings": r[f"saving_{m}"],
                             "violation_rate": r.get(f"violation_{m}")})  # fmt: skip
    out = pd.DataFrame(rows)
    out.attrs["source"] = simulation_source(setting, _simulation_seeds(p))
    return out


def simulation_source(setting: str, seeds: int | None = None) -> str:
    """The label every chart of simulated SMART results carries (it is not the user's data)."""
    runs = f", {seeds} seeds" if seeds else ""
    return f"Simulated: {setting} setting of Jo & Trummer (SMART){runs} \u2014 not your data"


def _simulation_seeds(csv: Any) -> int | None:
    """Seeds per cell, from the header the simulator writes beside the CSV (``.md``)."""
    md = Path(csv).with_suffix(".md")
    if not md.exists():
        return None
    m = re.search(r"([\d,]+) seeds per cell", md.read_text(encoding="utf-8")[:2000])
    return int(m.group(1).replace(",", "")) if m else None


def items_needed_display(selection: Any, n_plan: int | None = None) -> Table:
    """How many items a decision would need at the conformity each candidate showed.

    Per profiled candidate: its conformity on the profiled items, the target 1 - delta, and
    the profiled items SMART (Clopper-Pearson every 10 items; nominal) and the guaranteed
    anytime method would need before choosing it if it kept agreeing at that rate - on a
    task of ``n_plan`` items (default: the selection's own task size N when known, else
    :data:`~slamkit.smart.select.PLAN_ITEMS`; the ``task size`` column says which) - and how
    many more than were profiled here. "never" when the conformity is not above the target
    (only the profiled items' own agreement could then carry the guarantee, which is no
    decision for the candidate), or when no number of items up to the task size suffices.
    """
    from slamkit.smart.select import PLAN_ITEMS, items_needed

    row = _selection_row(selection)
    details = row["details"]
    if isinstance(details, str):
        details = json.loads(details)
    gamma, delta = float(row["gamma"]), float(row["delta"])
    own = row.get("n_items")
    own = None if own is None or pd.isna(own) else int(own)
    plan = int(n_plan or own or PLAN_ITEMS)
    size = f"{plan:,} " + (
        "(given)" if n_plan else "(your task's N)" if own else "(assumed: no task size known)"
    )
    models = [m for m in (details or {}).get("models", []) if int(m.get("n") or 0) > 0]
    rows = []
    for rank, m in enumerate(models):  # in price order: the budget's share by rank
        k, n = int(m["k"]), int(m["n"])
        rate = k / n
        need: dict[str, int | None] = {
            meth: None if rate <= 1 - delta + 1e-12
            else items_needed(rate, delta, gamma, len(models), meth, plan, rank=rank)
            for meth in ("smart", "anytime")
        }  # fmt: skip
        rows.append(
            {"model": m["model"], "conformity": f"{k}/{n} = {rate:.3f}",
             "target (1 - delta)": round(1 - delta, 3),
             "items needed (SMART, nominal)": _need(need["smart"]),
             "items needed (anytime, guaranteed)": _need(need["anytime"]),
             "more than profiled here": _need(None if need["anytime"] is None
                                              else max(need["anytime"] - n, 0)),
             "task size (items)": size}
        )  # fmt: skip
    out = pd.DataFrame(rows, columns=["model", "conformity", "target (1 - delta)",
                                      "items needed (SMART, nominal)",
                                      "items needed (anytime, guaranteed)",
                                      "more than profiled here", "task size (items)"])  # fmt: skip
    return Table(out.set_index("model"))


def _need(v: int | None) -> str:
    return "never" if v is None else f"{v:,}"
