"""Smart-ModelMix: the MILP, the brute force and the vectorized pair solver agree."""

from __future__ import annotations

import numpy as np
import pytest

from slamkit.smart.mix import solve_mix_bruteforce, solve_mix_milp, solve_mix_pairs

LEVELS = np.array([0.95, 0.97, 0.99])


def _instance(rng: np.random.Generator, m: int = 3):
    u = np.append(np.sort(rng.uniform(0.01, 1.0, m)), 3.0)  # reference last, most expensive
    A = np.sort(rng.uniform(0.3, 0.99, (m, len(LEVELS))), axis=1)[:, ::-1]  # lower at higher l
    A = np.vstack([A, np.ones(len(LEVELS))])
    free = np.append(np.zeros(m), 1.0)
    return u, A, free, float(rng.uniform(0.5, 0.99))


@pytest.mark.parametrize("rule", ["product", "bonferroni"])
def test_milp_equals_bruteforce_and_pairs_on_random_instances(rule: str) -> None:
    rng = np.random.default_rng(42)
    for _ in range(12):
        u, A, free, a_star = _instance(rng)
        milp = solve_mix_milp(u, A, LEVELS, a_star, 0.95, rule, free)
        brute = solve_mix_bruteforce(u, A, LEVELS, a_star, 0.95, rule, free)
        cost, ratios = solve_mix_pairs(u, A[None], LEVELS, np.array([a_star]), 0.95, rule, free)
        assert milp.cost == pytest.approx(brute.cost, abs=1e-7)
        assert cost[0] == pytest.approx(brute.cost, abs=1e-7)
        # the solution is feasible and costs what it says
        for r, a in [(milp.ratios, milp.accuracies), (brute.ratios, brute.accuracies)]:
            assert r.sum() == pytest.approx(1.0)
            assert r @ a >= a_star - 1e-7
        assert ratios[0].sum() == pytest.approx(1.0)
        assert ratios[0] @ u == pytest.approx(cost[0])
        spent = -np.log(milp.levels).sum() if rule == "product" else (1 - milp.levels).sum()
        budget = -np.log(0.95) if rule == "product" else 0.05
        assert spent <= budget + 1e-9


def test_hand_example_mixes_cheap_model_with_reference() -> None:
    """One cheap model (u=1, lower bound 0.8 at level 0.95) and the reference (u=10, a=1):
    to reach 0.9 use half of each, cost 5.5 per item. The free option (a=0) alone would need
    90% reference (cost 9.1), so the bound is worth using."""
    u = np.array([1.0, 10.0])
    A = np.array([[0.8], [1.0]])
    free = np.array([0.0, 1.0])
    sol = solve_mix_milp(u, A, np.array([0.95]), 0.9, 0.95, "product", free)
    assert sol.cost == pytest.approx(5.5)
    assert sol.ratios == pytest.approx([0.5, 0.5])
    # with gamma above the level, the bound cannot be used: only the free option remains
    sol = solve_mix_milp(u, A, np.array([0.95]), 0.9, 0.96, "product", free)
    assert sol.cost == pytest.approx(0.1 * 1 + 0.9 * 10)
