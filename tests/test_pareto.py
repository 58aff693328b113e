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
