"""SMART profiling: decisions, unit costs over processed items, early stop, consistency
between the item-by-item profiler and the vectorized simulator."""

from __future__ import annotations

import numpy as np
import pytest

from slamkit.errors import SlamkitError
from slamkit.smart.bounds import BetaBinomialCS, ClopperPearson, anytime_family, thresholds_at
from slamkit.smart.profile import expected_cost_stop, profile, unit_costs
from slamkit.smart.select import choose
from slamkit.smart.simulate import Conformity, profile_vectorized


def _oracle(rates: dict[str, float], n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    conf = {m: rng.random(n) < p for m, p in rates.items()}
    return conf


def test_profile_picks_cheapest_satisfied_and_drops_bad_models() -> None:
    rates = {"good": 0.99, "bad": 0.3}
    prices = {"good": 0.002, "bad": 0.001}
    conf = _oracle(rates, 2000)
    res = profile(
        list(range(2000)), list(rates), prices, lambda i: 0.03,
        lambda m, i: (bool(conf[m][i]), prices[m]), 0.05, ClopperPearson(0.95),
    )  # fmt: skip
    st = res.stats.set_index("model")
    assert st.loc["bad", "state"] == "invalid" and st.loc["bad", "n"] == 10
    assert st.loc["good", "state"] == "satisfied"
    assert res.stopped_by == "bounds" and res.n_profiled == st.loc["good", "n"]
    sel = choose(res, "smart", 0.95)
    assert sel.choice == {"good": 1.0}
    assert "at least 95.0% of the 2000 outputs" in sel.guarantee
    assert sel.saving > 5


def test_all_invalid_falls_back_to_reference() -> None:
    conf = _oracle({"a": 0.5}, 500)
    res = profile(
        list(range(500)), ["a"], {"a": 0.001}, lambda i: 0.03,
        lambda m, i: (bool(conf[m][i]), 0.001), 0.1, ClopperPearson(0.95), reference="gpt-4",
    )  # fmt: skip
    sel = choose(res, "smart", 0.95)
    assert sel.choice == {"gpt-4": 1.0}
    assert "no candidate reached the bound" in sel.guarantee


def test_unit_cost_is_over_processed_items_not_all_profiled_items() -> None:
    """A model dropped after 10 of 200 profiled items, at 0.002 per call, costs 0.002 per item.
    The authors' code divides by all 200 profiled items and reports 0.0001 - 20x too cheap."""
    correct = unit_costs(np.array([10 * 0.002]), np.array([10]), 200, np.array([0.5]))
    buggy = unit_costs(np.array([10 * 0.002]), np.array([10]), 200, np.array([0.5]), buggy=True)
    assert correct[0] == pytest.approx(0.002)
    assert buggy[0] == pytest.approx(0.0001)
    # in a real profiling run, the early-dropped model's unit cost is its price per call
    conf = _oracle({"cheap-bad": 0.2, "ok": 0.995}, 1000)
    prices = {"cheap-bad": 0.002, "ok": 0.004}
    res = profile(
        list(range(1000)), list(prices), prices, lambda i: 0.03,
        lambda m, i: (bool(conf[m][i]), prices[m]), 0.05, ClopperPearson(0.95),
    )  # fmt: skip
    st = res.stats.set_index("model")
    assert st.loc["cheap-bad", "n"] < res.n_profiled
    assert st.loc["cheap-bad", "unit_cost"] == pytest.approx(0.002)


def test_the_unit_cost_bug_changes_the_early_stop_decision() -> None:
    """A satisfied model s processed 100 items at 0.01 each; profiling went on for 1000 items
    for a cheaper unknown model. Correct u_s = 0.01; the bug gives u_s = 1/1000 = 0.001, which
    makes 'stop now and use s' look cheap, so it stops - the correct cost says continue."""
    family = ClopperPearson(0.95)
    t = 0.95

    def k_sat(nn: np.ndarray) -> np.ndarray:
        return thresholds_at(family, nn, t)[1]

    k = np.array([[955, 100]])  # cheaper unknown model: 955/1000 ; s: 100/100
    n = np.array([[1000, 100]])
    in_u = np.array([[True, False]])
    u_correct = unit_costs(np.array([1.0, 1.0]), n[0], 1000, np.zeros(2))  # [0.001, 0.01]
    u_buggy = unit_costs(np.array([1.0, 1.0]), n[0], 1000, np.zeros(2), buggy=True)
    R = np.array([50_000])
    stop_ok, _ = expected_cost_stop(k, n, in_u, u_correct, 0.03, u_correct[1:2], R, k_sat)
    stop_bug, _ = expected_cost_stop(k, n, in_u, u_buggy, 0.03, u_buggy[1:2], R, k_sat)
    assert u_correct[1] == pytest.approx(0.01) and u_buggy[1] == pytest.approx(0.001)
    assert not stop_ok[0]
    assert stop_bug[0]


def test_expected_cost_stop_gives_up_on_hopeless_models() -> None:
    """A model at 0.80 when 0.95 is needed, with 1000 items seen, has ~no chance: stop."""
    fam = ClopperPearson(0.95)
    stop, e = expected_cost_stop(
        np.array([[800]]), np.array([[1000]]), np.array([[True]]), np.array([0.001]), 0.03,
        np.array([0.03]), np.array([10_000]), lambda nn: thresholds_at(fam, nn, 0.95)[1],
    )  # fmt: skip
    assert stop[0] and e[0] >= 10_000 * 0.03


@pytest.mark.parametrize(
    ("family", "every"),
    [(ClopperPearson(0.95), 10), (BetaBinomialCS(0.05 / 3), 10),
     (anytime_family(0.05 / 3, 0.94, 4000), 1)],
)  # fmt: skip
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_item_by_item_profiler_matches_vectorized_simulator(family, every, seed) -> None:
    _match(family, every, seed)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_screened_anytime_profiler_matches_vectorized_simulator(seed) -> None:
    """The guaranteed methods' profiling (the first 5 items screen, then finite-population
    sequences at alpha split over the survivors, checked after every item) is the same item
    by item and vectorized; the 0.1-rate candidate is dropped by the screening."""
    res, vec = _match(None, 1, seed, screened=True)
    assert res.stats["state"].iloc[0] == "invalid" and int(vec["survivors"][0]) == 2


def _match(family, every, seed, screened: bool = False):
    """Same conformity matrix, same decisions: the simulator's vectorized profiler (bounds
    checked every batch, or after every item for the anytime family) is the item-by-item one."""
    N, batch, delta = 4000, 10, 0.06
    names = ["m0", "m1", "m2"]
    p = np.array([0.5, 0.93, 0.97])
    u = np.array([0.0005, 0.001, 0.002])
    rng = np.random.default_rng(seed)
    if screened:
        p = np.array([0.1, 0.93, 0.97])
    conf = rng.random((N, 3)) < p
    extra: dict = {}
    if screened:
        from slamkit.smart.select import profile_options

        extra = profile_options("anytime", 0.95, 3, delta, N, batch)
        family = extra.pop("bounds")
        extra.pop("check_every")
    res = profile(
        list(range(N)), names, dict(zip(names, u, strict=True)), lambda i: 0.03,
        lambda m, i: (bool(conf[i, names.index(m)]), u[names.index(m)]), delta, family,
        check_every=every, **extra,
    )  # fmt: skip
    vec = profile_vectorized(
        Conformity.from_matrix(conf[None]), u, 0.03, N, delta, family, batch=batch,
        check_every=every, **extra,
    )  # fmt: skip
    assert vec["cnt"][0] == res.n_profiled
    assert list(vec["k"][0]) == list(res.stats["k"])
    assert list(vec["n"][0]) == list(res.stats["n"])
    states = {0: "unknown", 1: "satisfied", 2: "invalid"}
    assert [states[int(s)] for s in vec["state"][0]] == list(res.stats["state"])
    return res, vec


def test_profile_rejects_bad_inputs() -> None:
    with pytest.raises(SlamkitError, match="delta"):
        profile([1], ["a"], {"a": 1.0}, lambda i: 1.0, lambda m, i: (True, 1.0), 1.5,
                ClopperPearson())  # fmt: skip
    with pytest.raises(SlamkitError, match="No price"):
        profile([1], ["a"], {}, lambda i: 1.0, lambda m, i: (True, 1.0), 0.1, ClopperPearson())


@pytest.mark.parametrize("method", ["smart", "smart-mix", "anytime", "anytime-mix"])
def test_tiny_task_is_fully_profiled_and_says_so(method: str) -> None:
    from slamkit.smart.select import bounds_for

    res = profile(
        list(range(5)), ["a"], {"a": 0.001}, lambda i: 0.03, lambda m, i: (True, 0.001), 0.1,
        bounds_for(method, 0.95, 1, 0.1), reference="gpt-4",
    )  # fmt: skip
    sel = choose(res, method, 0.95)
    assert res.n_profiled == 5 and res.stopped_by == "exhausted"
    assert sel.choice == {"gpt-4": 1.0}
    assert sel.guarantee.startswith("All 5 items were profiled")
    assert sel.expected_cost == pytest.approx(5 * 0.03 + 5 * 0.001)


def test_items_needed_grows_as_conformity_nears_the_target() -> None:
    from slamkit.smart.select import items_needed

    rates = [0.99, 0.97, 0.95, 0.93]
    smart = [items_needed(r, 0.1, method="smart") for r in rates]
    anytime = [items_needed(r, 0.1, n_candidates=2) for r in rates]
    assert smart == sorted(smart) and anytime == sorted(anytime)
    # the guarantee costs items: the anytime method needs more than SMART's peeking
    assert all(a > s for a, s in zip(anytime, smart, strict=True))
    # consistent with the bound itself: at that n, floor(rate * n) satisfies SMART's bound
    from slamkit.smart.bounds import ClopperPearson

    n = smart[1]
    assert ClopperPearson(0.95).excludes_below(int(0.97 * n), n, 0.9)
    assert not ClopperPearson(0.95).excludes_below(int(0.97 * (n - 10)), n - 10, 0.9)


def test_items_needed_display_says_how_far_from_a_decision_ten_items_are() -> None:
    """The 08 notebook's table: 10 items profile (nearly) everything; at the observed
    conformity a guaranteed decision would need hundreds more, SMART's nominal one fewer."""
    from slamkit.smart.display import items_needed_display
    from slamkit.smart.select import profile_options

    conf = {("good", i): i != 9 for i in range(10)} | {("poor", i): i < 4 for i in range(10)}
    opts = profile_options("anytime", 0.95, 2, 0.1, 10)
    res = profile(list(range(10)), ["good", "poor"], {"good": 0.001, "poor": 0.002},
                  lambda i: 0.03, lambda m, i: (conf[(m, i)], 0.001), 0.1, **opts)  # fmt: skip
    sel = choose(res, "anytime", 0.95)
    t = items_needed_display(sel, n_plan=100_000).frame
    assert list(t.index) == ["good", "poor"]
    assert res.n_profiled == 9 and t.loc["good", "conformity"] == "9/9 = 1.000"
    # 4/9 is below the target: no number of items makes a decision for it
    assert t.loc["poor", "items needed (anytime, guaranteed)"] == "never"
    assert t.loc["poor", "items needed (SMART, nominal)"] == "never"
    assert set(t["task size (items)"]) == {"100,000 (given)"}
    smart = int(str(t.loc["good", "items needed (SMART, nominal)"]).replace(",", ""))
    anytime = int(str(t.loc["good", "items needed (anytime, guaranteed)"]).replace(",", ""))
    assert 10 < smart < anytime
    # by default the task is the selection's own N, and the table says so
    own = items_needed_display(sel).frame
    assert set(own["task size (items)"]) == {"10 (your task's N)"}
    assert own.loc["poor", "items needed (anytime, guaranteed)"] == "never"
    row = {"details": sel.details, "gamma": 0.95, "delta": 0.1}  # no task size known
    assert set(items_needed_display(row).frame["task size (items)"]) == {
        "100,000 (assumed: no task size known)"
    }


@pytest.mark.parametrize("method", ["anytime", "anytime-mix"])
def test_a_candidate_satisfied_only_by_the_profiled_items_is_not_chosen(method: str) -> None:
    """10 items, delta 0.1: once 9 are profiled (answered by the reference) they alone
    carry 90% of 10, so a candidate that never agreed is "satisfied" - valid, but no
    recommendation: the reference is kept and no saving is claimed. A candidate that
    agreed on every profiled item still takes the rest."""
    from slamkit.smart.select import profile_options

    opts = profile_options(method, 0.95, 1, 0.1, 10)
    for agrees, chosen in ((False, "gpt-4"), (True, "c")):
        res = profile(list(range(10)), ["c"], {"c": 0.001}, lambda i: 0.03,
                      lambda m, i, a=agrees: (a, 0.001), 0.1, reference="gpt-4",
                      **opts)  # fmt: skip
        st = res.stats.set_index("model")
        assert res.n_profiled == (8 if agrees else 9) and st.loc["c", "state"] == "satisfied"
        sel = choose(res, method, 0.95)
        assert set(sel.choice) == {chosen}
        if not agrees:
            if method == "anytime":
                assert "no candidate qualified on its own evidence" in sel.guarantee
                assert "the reference is kept" in sel.guarantee
            assert sel.expected_cost == pytest.approx(9 * (0.03 + 0.001) + 0.03)
            assert sel.saving < 1
        else:
            assert sel.expected_cost == pytest.approx(8 * (0.03 + 0.001) + 2 * 0.001)


def test_calibrated_choice_states_plain_bounds_and_the_mix_refuses_it() -> None:
    """With the exactly calibrated sequences (method 'anytime') the shown lower bound is the
    plain sequence's at the candidate's budget share - a confidence statement at that level,
    not at the calibrated alpha' - and the guaranteed mix, which needs confidence sequences,
    refuses such a profile instead of silently using it."""
    from slamkit.smart.bounds import AfterScreening, CalibratedCS
    from slamkit.smart.select import profile_options

    N, delta = 3000, 0.06
    rng = np.random.default_rng(3)
    agree = rng.random((N, 2)) < np.array([0.975, 0.5])
    names = ["cheap", "dear"]
    u = {"cheap": 0.0005, "dear": 0.001}
    opts = profile_options("anytime", 0.95, 2, delta, N, 10)
    fam = opts.pop("bounds")
    res = profile(
        list(range(N)), names, u, lambda i: 0.03,
        lambda m, i: (bool(agree[i, names.index(m)]), u[m]), delta, fam, **opts,
    )  # fmt: skip
    b = res.bounds["cheap"]
    assert isinstance(b, AfterScreening) and isinstance(b.inner, CalibratedCS)
    row = res.stats.set_index("model").loc["cheap"]
    assert row["state"] == "satisfied"
    plain_lo = b.inner.plain.interval(int(row["k"]) - b.k0, int(row["n"]) - b.screen)[0]
    early_lo = b.inner.early.interval(int(row["k"]) - b.k0, int(row["n"]) - b.screen)[0]
    assert row["lower"] == pytest.approx(float(plain_lo)) and plain_lo < early_lo
    sel = choose(res, "anytime", 0.95)
    assert sel.choice == {"cheap": 1.0} and "plain sequence" in sel.guarantee
    with pytest.raises(SlamkitError, match="anytime-mix"):
        choose(res, "anytime-mix", 0.95)
