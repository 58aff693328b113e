"""slamkit.smart.limits: Wald's bound, the allowed items and the ModelMix decomposition."""

from __future__ import annotations

import math

import pytest

from slamkit.smart import limits
from slamkit.smart.simulate import CANDIDATES, SCREEN, SETTINGS, _conformity, simulate_cell


def test_wald_bound_by_hand() -> None:
    # p = 0.94 against t = 0.90, alpha = 0.05, power 0.95 (beta = 0.05)
    num = 0.95 * math.log(0.95 / 0.05) + 0.05 * math.log(0.05 / 0.95)
    kl = 0.94 * math.log(0.94 / 0.90) + 0.06 * math.log(0.06 / 0.10)
    assert limits.wald_bound(0.94, 0.90, 0.05) == pytest.approx(num / kl, rel=1e-12)
    assert num / kl == pytest.approx(259.13, abs=0.01)
    # alpha = 0.025: a larger numerator, same KL
    num2 = 0.95 * math.log(0.95 / 0.025) + 0.05 * math.log(0.05 / 0.975)
    assert limits.wald_bound(0.94, 0.90, 0.025) == pytest.approx(num2 / kl, rel=1e-12)
    assert limits.wald_bound(0.90, 0.90, 0.05) == math.inf  # no test certifies at the target


def test_wald_items_is_the_fixed_point() -> None:
    N, delta, p = 5574, 0.10, 0.94
    n = limits.wald_items(p, delta, N, 0.05)
    t = ((1 - delta) * N - n) / (N - n)  # the unseen items' target after n profiled items
    assert t < 1 - delta
    assert n == pytest.approx(limits.wald_bound(p, t, 0.05), abs=1e-6)
    # plain iteration from n = 0 reaches the same point
    m = 0.0
    for _ in range(100):
        m = limits.wald_bound(p, ((1 - delta) * N - m) / (N - m), 0.05)
    assert m == pytest.approx(n, abs=1e-6)
    assert n < limits.wald_bound(p, 1 - delta, 0.05)  # the slack only helps
    assert limits.wald_items(0.90, 0.06, N, 0.05) == math.inf  # below the target


def _direct_saving(name: str, n: int, chosen: int) -> float:
    """Cost evaluated by hand: the reference and the two survivors on n items, davinci and
    babbage on the first SCREEN items, the chosen candidate on the other N - n."""
    s = SETTINGS[name]
    u_ref, u = s.unit_costs()
    i = {m: j for j, m in enumerate(CANDIDATES)}
    surv = u[i["gpt-3.5-turbo-instruct"]] + u[i["gpt-3.5-turbo-1106"]]
    out = u[i["davinci-002"]] + u[i["babbage-002"]]
    cost = n * u_ref + n * surv + min(n, SCREEN) * out + (s.n_items - n) * u[chosen]
    return s.n_items * u_ref / cost


@pytest.mark.parametrize("name", ["SMS Spam", "AG News"])
def test_allowed_items_against_direct_cost(name: str) -> None:
    s = SETTINGS[name]
    (smart,) = simulate_cell(s, 0.12, seeds=20, methods=("smart",))
    target = 0.9 * float(smart["saving"])  # type: ignore[arg-type]
    for chosen in limits.qualifying(s, 0.12):
        n = limits.allowed_items(s, chosen, float(smart["saving"]))  # type: ignore[arg-type]
        if n < 0:
            assert _direct_saving(name, 0, chosen) < target
            continue
        assert _direct_saving(name, n, chosen) >= target
        assert _direct_saving(name, n + 1, chosen) < target
        assert limits.saving_at(s, n, chosen) == pytest.approx(_direct_saving(name, n, chosen))


def test_qualifying_is_cheapest_first() -> None:
    s = SETTINGS["AG News"]
    _, u = s.unit_costs()
    q = limits.qualifying(s, 0.10)
    assert {CANDIDATES[c] for c in q} == {"gpt-3.5-turbo-instruct", "gpt-3.5-turbo-1106"}
    assert u[q[0]] <= u[q[1]]
    assert limits.qualifying(s, 0.02) == []


def test_mix_decomposition_fresh_two_sided_below_paper() -> None:
    df = limits.mix_decomposition(seeds=200, cells=(("SMS Spam", 0.06),))
    (row,) = df.to_dict("records")
    assert row["violation_fresh_two_sided"] < row["violation_paper"]
    assert row["violation_fresh"] < row["violation_paper"]
    assert row["violation_two_sided"] <= row["violation_paper"]
    assert row["violation_paper"] > 0.05  # the paper's mix breaks its promise here


def test_paper_variant_is_simulate_cells_mix() -> None:
    s = SETTINGS["SMS Spam"]
    conf = _conformity(s, 100, 0)
    got = limits.mix_cell(s, 0.08, seeds=100, conf=conf)
    (ref,) = simulate_cell(s, 0.08, seeds=100, conf=conf, methods=("mix",))
    assert got["paper"]["violation"] == ref["realized_violation_rate"]
    assert got["paper"]["saving"] == pytest.approx(float(ref["saving"]))  # type: ignore[arg-type]


def test_cli_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert limits.main(["--seeds", "10", "--settings", "SMS Spam"]) == 0
    out = capsys.readouterr().out
    assert "| setting | delta | viol. paper mix" in out
    assert "| setting | delta | candidate | rate | SMART saving" in out
    assert out.count("| SMS Spam | 0.06 |") == 2  # one row in each table
    assert out.count("| SMS Spam |") == 1 + 13  # 8 deltas, a second candidate at 0.12-0.20
    assert "| IMDB |" not in out
