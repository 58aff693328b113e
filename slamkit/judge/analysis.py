"""Pure functions over judgment rows: order-robust outcomes and position-bias rates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from slamkit.store import Store, readers

_PAIR_COLS = ["judge_model", "mode", "criterion", "task_id", "item_id"]


def _candidate_view(verdict: object, swapped: bool) -> object:
    if verdict not in ("A", "B", "tie"):
        return None
    if verdict == "tie":
        return "tie"
    first_wins = verdict == "A"
    return "candidate" if first_wins != bool(swapped) else "other"


def pairwise_outcomes(judgments: pd.DataFrame) -> pd.DataFrame:
    """One row per (judge, mode, criterion, candidate, other): both orders combined.

    The candidate is what stood in position A of the unswapped call (a generation in the
    default pairs). ``outcome`` is 'candidate', 'other' or 'tie'; a verdict that changes
    with the order counts as 'tie'; NULL while an order is missing or failed. ``flipped``
    is True when the winner changed sides with the order (pure position bias).
    """
    cols = [*_PAIR_COLS, "candidate_kind", "candidate_id", "other_kind", "other_id",
            "verdict_ab", "verdict_ba", "outcome", "flipped"]  # fmt: skip
    df = judgments[judgments["mode"].isin(["pairwise", "criteria"])].copy()
    if df.empty:
        return pd.DataFrame(columns=cols)
    sw = df["order_swapped"].astype(bool)
    df["candidate_kind"] = np.where(sw, df["b_kind"], df["a_kind"])
    df["candidate_id"] = np.where(sw, df["b_id"], df["a_id"])
    df["other_kind"] = np.where(sw, df["a_kind"], df["b_kind"])
    df["other_id"] = np.where(sw, df["a_id"], df["b_id"])
    df["view"] = [_candidate_view(v, s) for v, s in zip(df["verdict"], sw, strict=True)]
    df["criterion"] = df["criterion"].fillna("overall")
    keys = [*_PAIR_COLS, "candidate_kind", "candidate_id", "other_kind", "other_id"]
    first = df.loc[~sw, [*keys, "view"]].drop_duplicates(keys)
    second = df.loc[sw, [*keys, "view"]].drop_duplicates(keys)
    wide = first.merge(second, on=keys, how="outer", suffixes=("_ab", "_ba"))
    wide = wide.rename(columns={"view_ab": "verdict_ab", "view_ba": "verdict_ba"})
    wide = wide.astype({"verdict_ab": object, "verdict_ba": object})
    wide = wide.where(wide.notna(), None)
    ab, ba = wide["verdict_ab"], wide["verdict_ba"]
    complete = ab.notna() & ba.notna()
    wide["outcome"] = pd.Series(
        [(x if x == y else "tie") if c else None for x, y, c in zip(ab, ba, complete, strict=True)],
        index=wide.index,
        dtype=object,
    )
    wide["flipped"] = complete & (ab != ba) & (ab != "tie") & (ba != "tie")
    return wide[cols]


def position_bias(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per judge (and mode): how often the verdict depends on the order.

    ``flip_rate``: share of complete pairs whose winner changed sides when the order was
    swapped; ``inconsistent_rate`` also counts win-vs-tie changes; ``first_position_rate``:
    share of non-tie verdicts (both orders) that chose position A (0.5 = unbiased).
    """
    cols = ["judge_model", "mode", "n_pairs", "flips", "flip_rate", "inconsistent_rate",
            "first_position_rate"]  # fmt: skip
    done = outcomes.dropna(subset=["verdict_ab", "verdict_ba"])
    if done.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (judge, mode), g in done.groupby(["judge_model", "mode"]):
        first = (g["verdict_ab"] == "candidate").sum() + (g["verdict_ba"] == "other").sum()
        decisive = (g["verdict_ab"] != "tie").sum() + (g["verdict_ba"] != "tie").sum()
        rows.append(
            {
                "judge_model": judge,
                "mode": mode,
                "n_pairs": len(g),
                "flips": int(g["flipped"].sum()),
                "flip_rate": float(g["flipped"].mean()),
                "inconsistent_rate": float((g["verdict_ab"] != g["verdict_ba"]).mean()),
                "first_position_rate": float(first / decisive) if decisive else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def load_judgments(store: Store, judge_model: str | None = None) -> pd.DataFrame:
    """All judgment rows (optionally of one judge), oldest first."""
    return readers.judgments(store, judge_model)
