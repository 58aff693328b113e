"""The Bernoulli simulator of the SMART paper's settings (small seed counts here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from slamkit.smart.simulate import SETTINGS, boundary_setting, main, simulate_cell, wide_table


def test_costs_follow_the_documented_token_assumptions() -> None:
    u_ref, u = SETTINGS["IMDB"].unit_costs()
    assert u_ref == pytest.approx((340 * 0.03 + 2 * 0.06) / 1000)
    assert u[3] == pytest.approx((340 * 0.0004 + 2 * 0.0004) / 1000)  # babbage-002


def test_sms_cells_save_money_and_the_anytime_variant_keeps_its_guarantee() -> None:
    seeds = 300
    se = np.sqrt(0.05 * 0.95 / seeds)
    rows = {(r["delta"], r["method"]): r for d in (0.06, 0.2)
            for r in simulate_cell(SETTINGS["SMS Spam"], d, seeds=seeds)}  # fmt: skip
    for d in (0.06, 0.2):
        assert rows[(d, "anytime")]["violation_rate"] <= 0.05 + 3 * se
    # loose delta: savings of the paper's order (~20x+), tight delta: little to gain
    assert rows[(0.2, "smart")]["saving"] > 15
    assert rows[(0.2, "mix")]["saving"] >= rows[(0.2, "smart")]["saving"] * 0.99
    assert rows[(0.2, "anytime")]["saving"] > 10
    assert rows[(0.06, "smart")]["saving"] < 5


def test_cli_writes_csv_and_markdown(tmp_path, capsys) -> None:
    out = tmp_path / "sim"
    assert main(["--seeds", "20", "--settings", "SMS Spam", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| SMS Spam | 0.20 |" in printed
    table = pd.read_csv(f"{out}.csv")
    assert len(table) == 10 and {"saving_smart", "saving_mix", "saving_anytime",
                                 "violation_anytime"} <= set(table.columns)  # fmt: skip
    assert (tmp_path / "sim.md").read_text().startswith("# SMART simulation")


def test_wide_table_orders_settings_as_in_the_paper() -> None:
    long = pd.DataFrame(
        [{"setting": s, "delta": d, "method": m, "saving": 1.0, "violation_rate": 0.0,
          "realized_violation_rate": 0.0}
         for s in ("AG News", "IMDB") for d in (0.2, 0.02) for m in ("anytime", "smart")]
    )  # fmt: skip
    w = wide_table(long)
    assert list(w["setting"]) == ["IMDB", "IMDB", "AG News", "AG News"]
    assert list(w["delta"]) == [0.02, 0.2, 0.02, 0.2]
    assert list(w.columns[:4]) == ["setting", "delta", "saving_smart", "saving_anytime"]


def test_boundary_stress_peeking_violates_but_the_anytime_variant_does_not() -> None:
    """A candidate just below the target (1 - delta - 0.005): re-checking Clopper-Pearson
    every batch lets it through too often; the confidence sequence holds."""
    rows = {r["method"]: r for r in simulate_cell(boundary_setting(0.2), 0.2, seeds=400)}
    assert rows["mix"]["violation_rate"] > 0.06
    assert rows["anytime"]["violation_rate"] < 0.03


def test_cli_setting_names_match_the_simulator() -> None:
    from slamkit.smart.cli import SIM_SETTINGS
    from slamkit.smart.simulate import BOUNDARY

    assert SIM_SETTINGS == [*SETTINGS, BOUNDARY]
