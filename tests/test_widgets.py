"""Explorers: changing a control redraws the figure in place with the new numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from slamkit import cost, widgets


def _perf() -> pd.DataFrame:
    return pd.DataFrame(
        {"variant": ["smol", "gemma"], "family": ["llama", "gemma3"], "quant": ["Q4_1", "Q4_K_M"],
         "bits": [5.0, 4.83], "n": [4, 4], "mean_latency_s": [1.0, 2.0],
         "p50_latency_s": [1.0, 2.0], "p95_latency_s": [1.5, 3.0], "ttft_p50_s": [0.1, 0.2],
         "decode_tps": [50.0, 40.0], "prompt_tokens": [20.0, 20.0],
         "completion_tokens": [50.0, 60.0]}
    )  # fmt: skip


def _scores() -> pd.DataFrame:
    rows = []
    for v, base in [("smol", 0.3), ("gemma", 0.2)]:
        for i in range(4):
            rows.append({"variant": v, "item_id": f"i{i}", "metric": "rougeL", "value": base})
            rows.append(
                {"variant": v, "item_id": f"i{i}", "metric": "chrf", "value": 40.0 + i + base}
            )
    return pd.DataFrame(rows)


REF = {"name": "GPT-4", "quality": 1.0, "cost_per_1k": 20.0, "usd_per_request": 0.02,
       "p95_latency_s": 5.0, "prompt_tokens": 20.0, "completion_tokens": 300.0}  # fmt: skip


def _explorer(**kw: object) -> widgets.TradeoffExplorer:
    subsets = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3"], "subset": ["a", "a", "b", "b"]})
    return widgets.TradeoffExplorer(_perf(), _scores(), reference=REF, subsets=subsets, **kw)


def _xs(ex: widgets.TradeoffExplorer) -> dict[str, list[float]]:
    return {t.name: list(t.x) for t in ex.figure.data if t.legendgroup == "family"}


def test_hourly_price_slider_moves_points() -> None:
    ex = _explorer(hourly_usd=0.36, utilization=0.5)
    # smol: 1 s/request -> 3600*0.5 = 1800 requests/hour -> $0.36/1800 = $0.0002/request
    assert _xs(ex)["llama"] == pytest.approx([0.2])
    before = ex.output.outputs[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]["x"]
    ex.controls["hourly_usd"].value = 0.72
    assert _xs(ex)["llama"] == pytest.approx([0.4])
    after = ex.output.outputs[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]["x"]
    assert before != after  # the displayed output was replaced, not appended
    assert len(ex.output.outputs) == 1
    ex.controls["utilization"].value = 1.0
    assert _xs(ex)["llama"] == pytest.approx([0.2])


def test_metric_and_subset_change_quality() -> None:
    ex = _explorer()
    ys = {t.name: list(t.y) for t in ex.figure.data if t.legendgroup == "family"}
    assert ex.controls["metric"].value == "chrf"
    assert ys["llama"] == pytest.approx([41.8])  # mean of 40.3..43.3
    ex.controls["metric"].value = "rougeL"
    ys = {t.name: list(t.y) for t in ex.figure.data if t.legendgroup == "family"}
    assert ys["llama"] == pytest.approx([0.3])
    assert ex.figure.layout.yaxis.title.text == "rougeL"
    ex.controls["metric"].value = "chrf"
    ex.controls["subset"].value = "b"  # items i2, i3 only
    ys = {t.name: list(t.y) for t in ex.figure.data if t.legendgroup == "family"}
    assert ys["llama"] == pytest.approx([42.8])


def test_variant_picker_and_traffic_summary() -> None:
    ex = _explorer(hourly_usd=0.36, utilization=0.5, requests_per_month=1000)
    assert set(_xs(ex)) == {"llama", "gemma3"}
    ex.controls["variants"].value = ("gemma",)
    assert set(_xs(ex)) == {"gemma3"}
    assert "gemma" in ex.summary.value and "1 server(s)" in ex.summary.value
    # 1,000 req/mo on GPT-4 at $0.02 = $20/month
    assert "$20.00/month on GPT-4" in ex.summary.value
    ex.controls["requests_per_month"].value = 1e7
    assert "$200,000.00/month on GPT-4" in ex.summary.value
    ex.controls["variants"].value = ()
    assert ex.error == "pick at least one variant"
    assert "Cannot draw" in ex.summary.value


def test_break_even_mode_marks_traffic() -> None:
    ex = _explorer(chart="break_even", requests_per_month=5000)
    assert ex.figure.layout.xaxis.title.text == "traffic (requests per month)"
    assert ex.figure.layout.shapes[0].x0 == 5000
    ex.controls["requests_per_month"].value = 50_000
    assert ex.figure.layout.shapes[0].x0 == pytest.approx(50_000, rel=1e-6)


def test_selection_explorer_delta_gamma() -> None:
    # smol conforms on 19/20 items, gemma on 12/20.
    conform = pd.DataFrame(
        {"variant": ["smol"] * 20 + ["gemma"] * 20, "item_id": list(range(20)) * 2,
         "conform": [1] * 19 + [0] + [1] * 12 + [0] * 8}
    )  # fmt: skip
    costs = {"smol": 0.002, "gemma": 0.001}
    ex = widgets.SelectionExplorer(conform, costs, reference_cost=0.02, delta=0.3, gamma=0.9)
    assert "smol" in ex.summary.value and "10.00x" in ex.summary.value
    # tight budget: no variant qualifies -> reference, saving 1x
    ex.controls["delta"].value = 0.05
    assert "the reference" in ex.summary.value
    marker = ex.figure.data[-1]
    assert list(marker.x) == [0.05] and list(marker.y) == [1.0]
    # loose budget: gemma's lower bound at gamma=0.5 is ~0.59 >= 0.55 -> the cheaper gemma
    ex.controls["delta"].value = 0.45
    ex.controls["gamma"].value = 0.5
    assert "<b>gemma</b>" in ex.summary.value and "20.00x" in ex.summary.value


def test_clopper_pearson_lower_by_hand() -> None:
    # all successes: lower bound = (1-gamma)^(1/n)
    assert widgets.clopper_pearson_lower(10, 10, 0.95) == pytest.approx(0.05 ** (1 / 10))
    assert widgets.clopper_pearson_lower(0, 10, 0.95) == 0.0


def test_self_hosted_cost_formula() -> None:
    assert cost.self_hosted_usd_per_request(0.36, 1.0, 0.5) == pytest.approx(0.0002)
    with pytest.raises(Exception, match="utilization"):
        cost.self_hosted_usd_per_request(1.0, 1.0, 0.0)


def test_smart_selector_runs_profiling() -> None:
    conform = pd.DataFrame(
        {"variant": ["smol"] * 40 + ["gemma"] * 40, "item_id": list(range(40)) * 2,
         "conform": [1] * 39 + [0] + [1] * 25 + [0] * 15}
    )  # fmt: skip
    costs = {"smol": 0.002, "gemma": 0.001}
    select = widgets.smart_selector(0.02, method="smart")
    loose = select(conform, costs, 0.3, 0.9)
    assert loose["choice"] == "smol (100%)" and loose["saving"] > 1.5
    assert "With confidence 0.9" in loose["guarantee"]
    tight = select(conform, costs, 0.02, 0.9)
    assert tight["choice"] is None and tight["saving"] < 1.0  # profiling cost, no saving
    ex = widgets.SelectionExplorer(
        conform, costs, 0.02, delta=0.3, gamma=0.9, select=select, method_label="SMART"
    )
    assert ex.figure.data[0].name == "SMART"
    assert "smol (100%)" in ex.summary.value


def test_short_lived_store_releases_the_lock(tmp_path: Path) -> None:
    from slamkit.store import Store, readers

    path = tmp_path / "s.duckdb"
    Store(path).close()
    sls = Store(path, short_lived=True)
    assert sls.insert("tasks", {"task_id": "t", "template": "{x}"})
    with Store(path) as writer:  # a second writer can open between calls
        writer.insert("tasks", {"task_id": "u", "template": "{x}"})
    assert sls.count("tasks") == 2
    assert sls.scalar("SELECT template FROM tasks WHERE task_id = ?", ["u"]) == "{x}"
    assert list(sls.df("SELECT task_id FROM tasks ORDER BY 1")["task_id"]) == ["t", "u"]
    assert readers.runs(sls).empty
    with pytest.raises(Exception, match="short-lived"):
        sls.db  # noqa: B018 - no connection is held between calls
