"""The Bernoulli simulator of the SMART paper's settings (small seed counts here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slamkit.smart.simulate import (
    GUARANTEED,
    SETTINGS,
    Conformity,
    Setting,
    boundary_setting,
    main,
    simulate_cell,
    wide_table,
)


def _se(seeds: int) -> float:
    return 3 * np.sqrt(0.05 * 0.95 / seeds)


def test_costs_use_each_models_own_tokens_from_the_papers_data() -> None:
    u_ref, u = SETTINGS["IMDB"].unit_costs()
    assert u_ref == pytest.approx((316 * 0.03 + 1 * 0.06) / 1000)  # GPT-4: 316 in / 1 out
    assert u[3] == pytest.approx((309 * 0.0004 + 16 * 0.0004) / 1000)  # babbage-002: 16 out
    assert u[0] == pytest.approx((309 * 0.0015 + 1.03 * 0.002) / 1000)  # 3.5-turbo-instruct


def test_conformity_matrix_is_shared_and_consistent() -> None:
    """Common random numbers: the same (seed, block) gives the same items to every method and
    delta; prefix counts and totals agree with the item-level matrix."""
    a = Conformity(np.array([0.3, 0.9]), 2500, 7, seed=3)
    b = Conformity(np.array([0.3, 0.9]), 2500, 7, seed=3)
    assert (a.window(990, 30) == b.window(990, 30)).all()
    full = np.concatenate([a.block(i) for i in range(3)], axis=2)
    assert full.shape == (7, 2, 2500)
    cnt = np.array([0, 1, 999, 1000, 1001, 2499, 2500])
    want = np.stack([full[s, :, : cnt[s]].sum(axis=1) for s in range(7)])
    assert (a.prefix(cnt) == want).all()
    assert (a.totals() == full.sum(axis=2)).all()
    assert abs(full[:, 1].mean() - 0.9) < 0.02


def test_sms_cells_save_money_and_the_guaranteed_methods_keep_the_realized_guarantee() -> None:
    seeds = 300
    rows = {(r["delta"], r["method"]): r for d in (0.06, 0.2)
            for r in simulate_cell(SETTINGS["SMS Spam"], d, seeds=seeds)}  # fmt: skip
    for d in (0.06, 0.2):
        for m in GUARANTEED:
            assert rows[(d, m)]["realized_violation_rate"] <= 0.05 + _se(seeds)
    # loose delta: savings of the paper's order (~20x+), tight delta: little to gain
    assert rows[(0.2, "smart")]["saving"] > 15
    assert rows[(0.2, "anytime")]["saving"] > 0.8 * rows[(0.2, "smart")]["saving"]
    assert rows[(0.06, "smart")]["saving"] < 5
    # the anytime variant needs more items than SMART's peeking, but a bounded number
    assert rows[(0.2, "smart")]["items_needed"] <= rows[(0.2, "anytime")]["items_needed"] < 200


def test_cli_writes_csv_and_markdown(tmp_path, capsys, monkeypatch) -> None:
    """By default into the current directory, never over the committed data/ table."""
    committed = Path(__file__).resolve().parents[1] / "data" / "simulation_results.csv"
    before = committed.read_bytes()
    monkeypatch.chdir(tmp_path)
    assert main(["--seeds", "20", "--settings", "SMS Spam"]) == 0
    assert committed.read_bytes() == before
    out = tmp_path / "simulation_results"
    assert f"wrote {out.name}.csv" in capsys.readouterr().out
    assert len(pd.read_csv(f"{out}.csv")) == 10 and Path(f"{out}.md").exists()
    assert main(["--seeds", "20", "--settings", "SMS Spam", "--out", str(tmp_path / "sim")]) == 0
    out = tmp_path / "sim"
    printed = capsys.readouterr().out
    assert "| SMS Spam | 0.20 |" in printed and "guaranteed" in printed
    table = pd.read_csv(f"{out}.csv")
    assert len(table) == 10
    for m in ("smart", "smart_authors_cost", "mix", "anytime", "mix_safe"):
        assert {f"saving_{m}", f"violation_{m}", f"expected_violation_{m}",
                f"items_{m}"} <= set(table.columns)  # fmt: skip
    assert (tmp_path / "sim.md").read_text().startswith("# SMART simulation")


def test_wide_table_orders_settings_as_in_the_paper() -> None:
    long = pd.DataFrame(
        [{"setting": s, "delta": d, "method": m, "saving": 1.0, "violation_rate": 0.0,
          "realized_violation_rate": 0.0, "items_needed": 10.0}
         for s in ("AG News", "IMDB") for d in (0.2, 0.02) for m in ("anytime", "smart")]
    )  # fmt: skip
    w = wide_table(long)
    assert list(w["setting"]) == ["IMDB", "IMDB", "AG News", "AG News"]
    assert list(w["delta"]) == [0.02, 0.2, 0.02, 0.2]
    assert list(w.columns[:4]) == ["setting", "delta", "saving_smart", "saving_anytime"]


def test_boundary_stress_peeking_violates_but_the_guaranteed_methods_do_not() -> None:
    """A candidate just below the target (1 - delta - 0.005): re-checking Clopper-Pearson
    every batch lets it through too often; the confidence sequences hold."""
    seeds = 400
    rows = {r["method"]: r for r in simulate_cell(boundary_setting(0.2), 0.2, seeds=seeds)}
    assert rows["mix"]["realized_violation_rate"] > 0.06
    for m in GUARANTEED:
        assert rows[m]["realized_violation_rate"] <= 0.05 + _se(seeds)


def test_fixed_mix_keeps_its_guarantee_where_the_papers_mix_breaks_it() -> None:
    """A fast setting (N = 4000) whose cheap candidate sits at the target (0.94, delta 0.06):
    the paper's ModelMix leans on it and misses 1 - delta on the N items far more often than
    5%; the guaranteed mix still gives it part of the items, and keeps 0.05."""
    setting = Setting("fast", 4000, (0.94, 0.0, 0.0, 0.0))
    seeds = 600
    rows = {r["method"]: r for r in simulate_cell(setting, 0.06, seeds=seeds,
                                                  methods=("mix", "mix_safe"))}  # fmt: skip
    assert rows["mix"]["realized_violation_rate"] > 0.1
    assert rows["mix_safe"]["realized_violation_rate"] <= 0.05 + _se(seeds)
    assert rows["mix_safe"]["saving"] > 2  # the candidate still answers part of the items


def test_cli_setting_names_match_the_simulator() -> None:
    from slamkit.smart.cli import SIM_SETTINGS
    from slamkit.smart.simulate import BOUNDARY

    assert SIM_SETTINGS == [*SETTINGS, BOUNDARY]


def test_exact_calibration_and_the_price_split_buy_items_at_no_cost_to_the_guarantee() -> None:
    """On SMS Spam at delta = 0.10 (gpt-3.5-turbo-1106 at 0.94, the cheaper survivor):
    the same shared matrix profiled with the plain sequences at an even split, the plain
    ones split by price, and the calibrated ones split by price - each step decides with
    fewer items, and the calibrated variant still keeps the realized guarantee."""
    import slamkit.smart.bounds as bounds
    from slamkit.smart.simulate import _conformity, _profile_anytime

    st, d, seeds = SETTINGS["SMS Spam"], 0.10, 300
    u_ref, u_c = st.unit_costs()
    u = np.sort(u_c)
    conf = _conformity(st, seeds, 0)
    old = bounds.RANK_DECAY
    try:
        bounds.RANK_DECAY = 1.0
        even = _profile_anytime(conf, u, u_ref, st.n_items, d, 0.05, 10)
    finally:
        bounds.RANK_DECAY = old
    split = _profile_anytime(conf, u, u_ref, st.n_items, d, 0.05, 10)
    cal = _profile_anytime(conf, u, u_ref, st.n_items, d, 0.05, 10, calibrate=True)
    assert cal["cnt"].mean() < split["cnt"].mean() < even["cnt"].mean()
    assert np.median(cal["cnt"]) < 0.85 * np.median(even["cnt"])
    row = simulate_cell(st, d, seeds=seeds, methods=("anytime",), conf=conf)[0]
    assert row["realized_violation_rate"] <= 0.05 + _se(seeds)
    assert row["mean_profiled"] == pytest.approx(cal["cnt"].mean())
