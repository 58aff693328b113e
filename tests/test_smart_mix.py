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


# --- the guaranteed split (slamkit's fixed mix) ---------------------------------------------

from slamkit.smart.mix import largest_safe_share, split_lower_bound  # noqa: E402


@pytest.mark.parametrize(("R", "G"), [(2000, 1880), (5000, 4600), (800, 790)])
def test_largest_safe_share_keeps_the_accuracy_over_random_splits(R: int, G: int) -> None:
    """With G of the R remaining items agreeing, the candidate answers s of them drawn at
    random: over 4000 random splits the accuracy on all items falls short at most alpha of
    the time - and s is not trivially 0."""
    cnt, alpha = 300, 0.01
    N = cnt + R
    need = np.ceil(0.955 * N) if G / R < 0.95 else np.ceil(0.95 * N)
    s = int(largest_safe_share(np.array(cnt), np.array(R), np.array(G), need, alpha)[0])
    assert 0 < s <= R
    rng = np.random.default_rng(R)
    agree = rng.hypergeometric(G, R - G, s, size=4000) if s < R else np.full(4000, G)
    short = (cnt + (R - s) + agree) < need
    assert short.mean() <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / 4000)
    # one more item would break the bound the choice was made with
    if s < R:
        more = cnt + (R - s - 1) + split_lower_bound(np.array(s + 1.0), np.array(G / R), alpha)
        assert more < need


def test_split_lower_bound_holds_for_sampling_without_replacement() -> None:
    rng = np.random.default_rng(3)
    for R, G, s in [(1000, 900, 300), (500, 480, 400), (10_000, 9_000, 50)]:
        b = split_lower_bound(np.array(float(s)), np.array(G / R), 0.05)
        draws = rng.hypergeometric(G, R - G, s, size=5000)
        assert np.mean(draws < b) <= 0.05
        assert b > 0.8 * s * G / R - 3 * np.sqrt(s)  # and not vacuous


def test_guaranteed_mix_on_a_profile_gives_part_of_the_items_to_a_candidate_at_the_target() -> None:
    """End to end through profile() and choose(): a cheap candidate agreeing 0.04 below the
    target is declared invalid, but the guaranteed mix still gives it a share."""
    from slamkit.smart.profile import profile
    from slamkit.smart.select import choose, profile_options

    N, delta = 6000, 0.06
    conf = np.random.default_rng(0).random(N) < 0.90
    opts = profile_options("anytime-mix", 0.95, 1, delta, N)
    res = profile(list(range(N)), ["cheap"], {"cheap": 0.001}, lambda i: 0.03,
                  lambda m, i: (bool(conf[i]), 0.001), delta, **opts)  # fmt: skip
    sel = choose(res, "anytime-mix", 0.95)
    assert res.stats["state"].iloc[0] == "invalid"
    assert sel.method == "anytime-mix"
    assert 0 < sel.choice.get("cheap", 0) < 1 and sel.choice["reference"] > 0
    assert sel.saving > 1.1
    assert "drawn at random to cheap" in sel.guarantee and "Anytime-valid" in sel.guarantee
