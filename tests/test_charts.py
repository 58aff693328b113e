"""Charts: traces, values, axis titles and hover text from small hand-made DataFrames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest

from slamkit import charts
from slamkit.errors import SlamkitError
from slamkit.pareto import pareto_frontier
from slamkit.smart.display import simulation_long


def _variants() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "variant": ["smol-q4", "smol-q8", "gemma-q4", "bad"],
            "family": ["smol", "smol", "gemma", "gemma"],
            "quant": ["Q4_0", "Q8_0", "Q4_0", "Q8_0"],
            "quality": [0.40, 0.50, 0.45, 0.30],
            "quality_lo": [0.35, 0.44, 0.40, 0.20],
            "quality_hi": [0.45, 0.56, 0.50, 0.40],
            "cost_per_1k": [0.10, 0.20, 0.15, 0.30],
            "p95_latency_s": [1.0, 2.0, 1.5, 3.0],
        }
    )


def test_frontier_is_slamkit_pareto_with_one_nan_rule() -> None:
    """The chart uses slamkit.pareto (no second implementation that disagrees on NaN)."""
    assert not hasattr(charts, "pareto_mask")
    d = pd.DataFrame({"quality": [0.1, 0.5, 0.4], "cost_per_1k": [1.0, 1.0, 2.0],
                      "p95_latency_s": [1.0, 1.0, np.nan]})  # fmt: skip
    assert charts.frontier_mask(d).tolist() == [False, True, False]
    # a variant whose latency is unknown stays on the frontier when nothing beats it
    d.loc[2, "quality"] = 0.9
    assert charts.frontier_mask(d).tolist() == [False, True, True]
    same = pareto_frontier(d.assign(i=range(3)), cost="cost_per_1k").sort_values("i")
    assert same["on_frontier"].tolist() == [False, True, True]
    fig = charts.pareto_scatter(d.assign(variant=list("abc"), family="f", quant="Q4_0"))
    front = next(t for t in fig.data if t.name == "Pareto frontier")
    assert list(front.customdata) == ["b", "c"]
    # b dominates d (better quality, cheaper); a, b, c trade off.
    v = _variants()
    assert charts.frontier_mask(v).tolist() == [True, True, True, False]


def test_single_point_frontier_is_drawn() -> None:
    one = _variants().iloc[[1]]
    fig = charts.pareto_scatter(one)
    front = next(t for t in fig.data if t.name == "Pareto frontier")
    assert list(front.x) == [0.20] and "markers" in front.mode  # a lone point still shows


def test_log_axes_read_as_numbers() -> None:
    """Plotly labels 20 and 30 on a log axis as '2', '3' unless told otherwise."""
    ref = {"name": "gpt-4", "quality": 1.0, "cost_per_1k": 32.9, "p95_latency_s": 9.0}
    x = charts.pareto_scatter(_variants(), reference=ref).layout.xaxis
    assert x.type == "log"
    assert list(x.ticktext) == ["$0.1", "$0.2", "$0.5", "$1", "$2", "$5", "$10", "$20", "$50"]
    assert list(x.tickvals) == [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
    small = _variants().assign(cost_per_1k=[0.0012, 0.004, 0.002, 0.03])
    assert charts.pareto_scatter(small).layout.xaxis.ticktext[0] == "$0.001"
    df = pd.DataFrame({"delta": [0.02, 0.1], "savings": [0.9, 30.0], "method": ["m", "m"]})
    y = charts.smart_savings(df).layout.yaxis
    assert y.type == "log" and "20x" in y.ticktext and "1x" in y.ticktext


def test_pareto_scatter_traces_values_and_reference() -> None:
    ref = {"name": "gpt-4", "quality": 1.0, "cost_per_1k": 25.0, "p95_latency_s": 9.0}
    fig = charts.pareto_scatter(_variants(), reference=ref, quality_label="ROUGE-L")
    fam = {t.name: t for t in fig.data if t.legendgroup == "family"}
    assert set(fam) == {"smol", "gemma"}
    assert list(fam["smol"].x) == [0.10, 0.20] and list(fam["smol"].y) == [0.40, 0.50]
    # symbols follow quantization, colours follow family
    assert list(fam["smol"].marker.symbol) == ["circle", "square"]
    assert fam["smol"].marker.color != fam["gemma"].marker.color
    # marker size grows with p95 latency
    sizes = list(fam["smol"].marker.size) + list(fam["gemma"].marker.size)
    assert sizes[0] < sizes[2] < sizes[1] < sizes[3]
    # CI error bars
    assert fam["smol"].error_y.array[1] == pytest.approx(0.06)
    assert fam["smol"].error_y.arrayminus[0] == pytest.approx(0.05)
    # frontier = non-dominated variants in cost order
    front = next(t for t in fig.data if t.name == "Pareto frontier")
    assert list(front.x) == [0.10, 0.15, 0.20]
    star = next(t for t in fig.data if t.name == "gpt-4")
    assert star.marker.symbol == "star" and list(star.x) == [25.0]
    assert fig.layout.xaxis.title.text == "cost (USD per 1,000 requests)"
    assert fig.layout.xaxis.type == "log"
    assert "p95 latency" in fam["smol"].hovertemplate
    assert "ROUGE-L" in fam["smol"].hovertemplate
    assert "per 1K requests" in fam["smol"].hovertemplate
    assert "Marker size = p95 latency" in fig.layout.title.text


def test_pareto_missing_column_names_it() -> None:
    with pytest.raises(SlamkitError, match="cost_per_1k"):
        charts.pareto_scatter(_variants().drop(columns="cost_per_1k"))


def test_model_text_is_escaped_in_chart_html() -> None:
    df = _variants()
    df.loc[0, "variant"] = "<script>alert('x')</script>"
    fig = charts.pareto_scatter(df)
    html = pio.to_html(fig, include_plotlyjs=False)
    assert "<script>alert" not in html


def test_latency_violin_and_ecdf() -> None:
    df = pd.DataFrame(
        {
            "variant": ["a"] * 4 + ["gpt-4"] * 3,
            "latency_s": [1.0, 2.0, 3.0, 4.0, 5.0, 9.0, 7.0],
            "is_reference": [False] * 4 + [True] * 3,
        }
    )
    v = charts.latency_distribution(df)
    assert [t.type for t in v.data] == ["violin", "violin"]
    assert v.data[0].name == "gpt-4 (reference API)"  # reference first, in black
    assert v.data[0].line.color == charts.REFERENCE_COLOR
    assert sorted(v.data[1].y) == [1.0, 2.0, 3.0, 4.0]
    assert v.layout.yaxis.title.text == "latency (s)"
    e = charts.latency_distribution(df, kind="ecdf")
    ref = e.data[0]
    assert list(ref.x) == [5.0, 7.0, 9.0]
    assert list(ref.y) == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert e.layout.yaxis.tickformat == ".0%"
    with pytest.raises(SlamkitError):
        charts.latency_distribution(df, kind="pie")


def test_quality_ci_error_bars_sorted() -> None:
    df = pd.DataFrame(
        {"variant": ["a", "b"], "mean": [0.6, 0.3], "lo": [0.5, 0.1], "hi": [0.65, 0.4],
         "n": [10, 10]}
    )  # fmt: skip
    fig = charts.quality_ci(df, metric_label="chrF", reference_value=0.9)
    t = fig.data[0]
    assert list(t.y) == ["b", "a"]  # ascending: best at the top of the axis
    assert list(t.error_x.array) == pytest.approx([0.1, 0.05])
    assert list(t.error_x.arrayminus) == pytest.approx([0.2, 0.1])
    assert fig.layout.xaxis.title.text == "chrF"
    assert "95% CI" in t.hovertemplate
    assert any(s.x0 == 0.9 for s in fig.layout.shapes)


def test_winrate_heatmap_matrix() -> None:
    df = pd.DataFrame(
        {"model_a": ["a", "b"], "model_b": ["b", "a"], "win_rate": [0.7, 0.3], "n": [20, 20]}
    )
    fig = charts.winrate_heatmap(df)
    z = np.array(fig.data[0].z, dtype=float)
    assert z[0, 1] == 0.7 and z[1, 0] == 0.3 and np.isnan(z[0, 0])
    assert fig.data[0].text[0][1] == "70%"
    assert fig.data[0].zmid == 0.5


def test_bt_ratings_ci() -> None:
    df = pd.DataFrame(
        {"model": ["gpt-4", "smol"], "rating": [1.0, -0.5], "lo": [0.7, -0.9], "hi": [1.4, -0.1],
         "is_reference": [True, False]}
    )  # fmt: skip
    fig = charts.bt_ratings(df)
    t = fig.data[0]
    assert list(t.y) == ["smol", "gpt-4"]
    assert list(t.marker.symbol) == ["circle", "star"]
    assert list(t.error_x.array) == pytest.approx([0.4, 0.4])
    assert list(t.error_x.arrayminus) == pytest.approx([0.4, 0.3])


def test_quant_ladder_bits_lookup_and_panels() -> None:
    df = pd.DataFrame(
        {"family": ["smol"] * 3, "quant": ["Q8_0", "Q4_0", "Q5_0"],
         "quality": [0.5, 0.4, 0.45], "decode_tps": [40.0, 60.0, 50.0]}
    )  # fmt: skip
    fig = charts.quant_ladder(df)
    q, s = fig.data
    assert list(q.x) == [4.5, 5.5, 8.5]  # sorted by bits per weight
    assert list(q.y) == [0.4, 0.45, 0.5]
    assert list(s.y) == [60.0, 50.0, 40.0]
    assert q.xaxis == "x" and s.xaxis == "x2"
    assert fig.layout.yaxis2.title.text == "decode speed (tokens/s)"
    assert fig.layout.xaxis.title.text == "bits per weight"
    assert np.isnan(charts.quant_bits("nonsense"))


def test_cost_breakdown_stacks_components() -> None:
    df = pd.DataFrame(
        {"variant": ["gpt-4", "gpt-4", "smol"], "component": ["input tokens", "output tokens",
         "hardware"], "usd_per_1k": [3.0, 6.0, 0.2]}
    )  # fmt: skip
    fig = charts.cost_breakdown(df)
    assert fig.layout.barmode == "stack"
    by = {t.name: t for t in fig.data}
    assert list(by["input tokens"].x) == ["smol", "gpt-4"]  # cheapest first
    assert list(by["output tokens"].y) == [0.0, 6.0]
    assert list(by["hardware"].customdata) == ["0.2000", "9.0000"]


def test_break_even_point_by_hand() -> None:
    # API: $0.01/request; server: $730/month fixed, 1M requests/month capacity
    # -> break-even at 73,000 requests/month.
    df = pd.DataFrame(
        {"variant": ["gpt-4", "smol"], "kind": ["api", "self-hosted"],
         "usd_per_request": [0.01, np.nan], "monthly_fixed_usd": [np.nan, 730.0],
         "capacity_per_month": [np.nan, 1e6]}
    )  # fmt: skip
    fig = charts.break_even(df)
    marker = next(t for t in fig.data if t.name.startswith("break-even"))
    assert marker.x[0] == pytest.approx(73_000)
    assert marker.y[0] == pytest.approx(730.0)
    hosted = next(t for t in fig.data if t.name == "smol (self-hosted)")
    assert set(hosted.y) == {730.0}
    api = next(t for t in fig.data if t.name == "gpt-4 (API)")
    assert api.y[-1] == pytest.approx(api.x[-1] * 0.01)
    assert fig.layout.yaxis.title.text == "cost (USD per month)"


def test_smart_savings_lines() -> None:
    df = pd.DataFrame(
        {"delta": [0.1, 0.02, 0.1, 0.02], "savings": [10.0, 2.0, 8.0, 1.5],
         "method": ["smart", "smart", "anytime", "anytime"],
         "violation_rate": [0.01, 0.02, 0.0, 0.0]}
    )  # fmt: skip
    fig = charts.smart_savings(df, gamma=0.95)
    by = {t.name: t for t in fig.data}
    assert list(by["smart"].x) == [0.02, 0.1] and list(by["smart"].y) == [2.0, 10.0]
    assert list(by["smart"].customdata) == ["2.0%", "1.0%"]
    assert fig.layout.yaxis.type == "log"
    assert "gamma = 0.95" in fig.layout.title.text


def test_smart_savings_no_saving_label_sits_on_its_line() -> None:
    """On a log axis an annotation's y is log10: the label for the 1x line goes at y = 0."""
    df = pd.DataFrame({"delta": [0.02, 0.1], "savings": [1.5, 20.0], "method": ["m", "m"]})
    fig = charts.smart_savings(df)
    line = next(s for s in fig.layout.shapes if s.y0 == s.y1)
    assert line.y0 == 1 and line.yref == "y"
    label = next(a for a in fig.layout.annotations if "no saving" in a.text)
    assert label.yref == "y" and label.y == pytest.approx(0.0)


def test_simulated_savings_say_so() -> None:
    sim = simulation_long(setting="IMDB")
    fig = charts.smart_savings(sim, gamma=0.95)
    title = fig.layout.title.text
    assert "Simulated: IMDB setting of Jo &amp; Trummer (SMART), 1000 seeds" in title
    assert "not your data" in title and "SMART (simulation)" in title
    # a curve of the user's own data (no source) carries no such label
    own = pd.DataFrame(sim.to_dict("list"))
    assert "Simulated" not in charts.smart_savings(own).layout.title.text
    assert "your label" in charts.smart_savings(own, source="your label").layout.title.text
    with pytest.raises(SlamkitError, match="no setting"):
        simulation_long(setting="nope")
