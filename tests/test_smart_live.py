"""Live SMART: generations that are not needed are never requested."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from slamkit.smart.equivalence import Normalized
from slamkit.smart.live import smart_live


class CountingModels:
    """A mock runner: the reference answers 'pos'/'neg'; candidates agree at given rates."""

    def __init__(self, rates: dict[str, float], n_items: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.truth = {i: ("pos" if rng.random() < 0.5 else "neg") for i in range(n_items)}
        self.agree = {m: rng.random(n_items) < p for m, p in rates.items()}
        self.calls: Counter[str] = Counter()
        self.seen: set[tuple[str, int]] = set()

    def __call__(self, model: str, item: int) -> dict[str, object]:
        assert (model, item) not in self.seen, "the same generation was requested twice"
        self.seen.add((model, item))
        self.calls[model] += 1
        if model == "gpt-4":
            return {"text": self.truth[item], "cost": 0.03}
        ok = self.agree[model][item]
        text = self.truth[item] if ok else ("neg" if self.truth[item] == "pos" else "pos")
        return {"text": text.upper() + ".", "cost": 0.001}


@pytest.mark.parametrize("method", ["smart", "anytime"])
def test_live_profiling_only_generates_what_the_decision_needs(method: str) -> None:
    N = 5000
    mock = CountingModels({"tiny": 0.55, "small": 0.995}, N)
    prices = {"gpt-4": 0.03, "tiny": 0.0005, "small": 0.001}
    sel = smart_live(
        list(range(N)), ["tiny", "small"], "gpt-4", mock, Normalized(), prices, delta=0.05,
        gamma=0.95, method=method,
    )  # fmt: skip
    stats = {m["model"]: m for m in sel.details["models"]}
    # exactly one call per processed item, and nothing beyond what profiling used
    assert mock.calls["gpt-4"] == sel.n_profiled < N
    assert mock.calls["tiny"] == stats["tiny"]["n"]
    assert mock.calls["small"] == stats["small"]["n"]
    assert mock.calls["tiny"] < sel.n_profiled  # dropped as invalid early
    assert stats["tiny"]["state"] == "invalid"
    assert sum(mock.calls.values()) < 3 * N / 4
    assert sel.choice.get("small", 0) > 0.5
    assert "small" in sel.guarantee
