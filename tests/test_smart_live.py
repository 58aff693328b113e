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


def test_live_unit_costs_from_a_cost_callback() -> None:
    """Self-hosted calls priced by the cost model from their latency: u = mean over calls."""
    from slamkit.cost import self_hosted_cost_per_request

    N = 800
    base = CountingModels({"small": 0.999}, N, seed=2)

    def generate(model: str, item: int) -> dict[str, object]:
        out = base(model, item)
        return {**out, "latency_s": 2.0 if item % 2 else 4.0}

    def cost(model: str, out: dict[str, object]) -> float:
        if model == "gpt-4":
            return 0.03
        return self_hosted_cost_per_request(0.9, float(out["latency_s"]), 0.5)

    prices = {"gpt-4": 0.03, "small": 0.0}
    sel = smart_live(list(range(N)), ["small"], "gpt-4", generate, Normalized(), prices,
                     delta=0.1, method="smart", cost=cost)  # fmt: skip
    small = sel.details["models"][0]
    per_call = {2.0: 0.9 / 900, 4.0: 0.9 / 450}  # 3600/latency * 0.5 requests per hour
    assert small["state"] == "satisfied"
    assert per_call[2.0] <= small["unit_cost"] <= per_call[4.0]
    assert small["cost"] == pytest.approx(small["unit_cost"] * small["n"])


def test_live_through_slamkit_backends_with_cost_model_prices() -> None:
    from slamkit.backends.mock import MockBackend
    from slamkit.smart.live import backend_generate, priced

    def label(user: str) -> str:
        return "positive" if int(user.split()[-1]) % 3 else "negative"

    ref = MockBackend(label, name="gpt-4")
    good = MockBackend(lambda u: label(u).upper(), name="good")
    bad = MockBackend(["positive"], name="bad")
    gen = backend_generate({"gpt-4": ref, "good": good, "bad": bad}, lambda i: f"review {i}")
    cost = priced(api={"gpt-4": (0.03, 0.06)}, hourly={"good": 0.9, "bad": 0.5})
    N = 3000
    sel = smart_live(list(range(N)), ["good", "bad"], "gpt-4", gen, Normalized(),
                     {"gpt-4": 0.03, "good": 1e-6, "bad": 5e-7}, delta=0.05, cost=cost)  # fmt: skip
    stats = {m["model"]: m for m in sel.details["models"]}
    assert len(ref.calls) == sel.n_profiled < N
    assert len(good.calls) == stats["good"]["n"] and len(bad.calls) == stats["bad"]["n"]
    assert stats["bad"]["state"] == "invalid" and stats["good"]["state"] == "satisfied"
    assert sel.details["u_ref"] == pytest.approx((2 * 0.03 + 1 * 0.06) / 1000)
    assert sel.choice.get("good", 0) > 0.9 and sel.saving > 10
