"""Pareto frontier over quality, cost and p95 latency."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from slamkit.errors import SlamkitError
from slamkit.pareto import pareto_frontier, pareto_mask


def test_hand_example() -> None:
    df = pd.DataFrame(
        {
            "model": ["gpt-4", "7b-q4", "7b-q2", "3b-q4", "3b-q8", "broken"],
            "quality": [0.90, 0.80, 0.70, 0.70, 0.70, np.nan],
            "cost_per_request": [0.027, 0.002, 0.001, 0.001, 0.0015, 0.0001],
            "p95_latency_s": [9.0, 4.0, 3.0, 2.0, 2.0, 0.1],
        }
    )
    out = pareto_frontier(df).set_index("model")
    # 7b-q2 is dominated by 3b-q4 (same quality and cost, faster); 3b-q8 by 3b-q4 (cheaper);
    # a row with a missing objective is never on the frontier
    assert out["on_frontier"].to_dict() == {
        "broken": False, "7b-q2": False, "3b-q4": True, "3b-q8": False, "7b-q4": True,
        "gpt-4": True,
    }  # fmt: skip
    front = pareto_frontier(df, only_frontier=True)
    assert list(front["model"]) == ["3b-q4", "7b-q4", "gpt-4"]  # by cost
    # without latency, 7b-q2 and 3b-q4 tie exactly: neither dominates, both stay
    two = pareto_frontier(df, latency=None, only_frontier=True)
    assert set(two["model"]) == {"3b-q4", "7b-q2", "7b-q4", "gpt-4"}
    with pytest.raises(SlamkitError, match="p95_latency_s"):
        pareto_frontier(df.drop(columns="p95_latency_s"))


def test_matches_brute_force_definition() -> None:
    rng = np.random.default_rng(3)
    df = pd.DataFrame(rng.integers(0, 4, size=(40, 3)), columns=["q", "c", "l"]).astype(float)
    mask = pareto_mask(df, ["q"], ["c", "l"])
    for i in range(len(df)):
        dominated = False
        for j in range(len(df)):
            a, b = df.iloc[j], df.iloc[i]
            ge = a.q >= b.q and a.c <= b.c and a.l <= b.l
            gt = a.q > b.q or a.c < b.c or a.l < b.l
            dominated |= ge and gt
        assert mask[i] == (not dominated)


def test_unknown_latency_neither_drops_a_row_nor_drops_others() -> None:
    """A missing p95 latency is unknown: the row is compared on what it has."""
    df = pd.DataFrame(
        {"model": ["slow", "mid", "api"], "quality": [0.1, 0.5, 0.9],
         "cost_per_request": [1.0, 1.0, 2.0], "p95_latency_s": [1.0, 1.0, np.nan]}
    )  # fmt: skip
    # "api" is the best on quality: an unknown latency does not push it off the frontier
    out = pareto_frontier(df).set_index("model")["on_frontier"].to_dict()
    assert out == {"slow": False, "mid": True, "api": True}
    # ... and a row beaten on quality and cost is off it, whatever its latency might be
    worse = df.assign(quality=[0.1, 0.5, 0.4])
    assert pareto_mask(worse, ["quality"], ["cost_per_request", "p95_latency_s"],
                       optional=["p95_latency_s"]).tolist() == [False, True, False]  # fmt: skip
    # an unknown latency cannot dominate a known one (it might be worse)
    two = pd.DataFrame({"q": [0.6, 0.5], "c": [1.0, 1.0], "l": [np.nan, 1.0]})
    assert pareto_mask(two, ["q"], ["c", "l"], optional=["l"]).tolist() == [True, True]
    # a required objective stays required
    assert pareto_mask(two, ["q"], ["c", "l"]).tolist() == [False, True]
    with pytest.raises(SlamkitError, match="optional"):
        pareto_mask(two, ["q"], ["c"], optional=["l"])
