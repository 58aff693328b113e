"""Plotly charts: pure functions, DataFrame in, ``plotly.graph_objects.Figure`` out.

Each function documents the columns it expects. No function reads the store or the
network; widgets and notebooks compose them. Text that may come from a model (variant
names, generations) is HTML-escaped before it reaches hover labels.

>>> import pandas as pd
>>> df = pd.DataFrame({"variant": ["a"], "family": ["f"], "quant": ["Q4_0"],
...                    "quality": [0.5], "cost_per_1k": [0.2], "p95_latency_s": [1.0]})
>>> pareto_scatter(df).data[0].name
'f'
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from slamkit import pareto
from slamkit.errors import SlamkitError
from slamkit.gguf import quant_bits

__all__ = [
    "pareto_scatter",
    "latency_distribution",
    "quality_ci",
    "winrate_heatmap",
    "bt_ratings",
    "quant_ladder",
    "cost_breakdown",
    "break_even",
    "smart_savings",
    "load_latency",
    "load_throughput",
    "load_distribution",
    "frontier_mask",
    "quant_bits",
]

#: Qualitative palette (Plotly's default, colour-blind friendlier than most).
PALETTE = [
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A",
    "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52",
]  # fmt: skip
SYMBOLS = [
    "circle", "square", "diamond", "triangle-up", "cross", "x",
    "triangle-down", "pentagon", "hexagon", "star-square",
]  # fmt: skip
REFERENCE_COLOR = "#222222"


#: Approximate bits per weight of llama.cpp quantization types (for the ladder x axis).
# -- helpers -------------------------------------------------------------------
def _need(df: pd.DataFrame, cols: Iterable[str], chart: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SlamkitError(
            f"{chart}: the input DataFrame lacks column(s) {missing}; it has "
            f"{list(df.columns)}. See the docstring of slamkit.charts.{chart}."
        )


def _title(title: str, subtitle: str | None) -> dict[str, Any]:
    text = f"<b>{title}</b>"
    if subtitle:
        text += f"<br><sup>{subtitle}</sup>"
    return {"text": text, "x": 0.01, "xanchor": "left"}


def _esc(values: Iterable[Any]) -> list[str]:
    return [html.escape(str(v)) for v in values]


def _color_map(keys: Iterable[Any]) -> dict[Any, str]:
    """Colours by sorted key, so one family has the same colour in every chart."""
    ordered = sorted(dict.fromkeys(keys), key=str)
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(ordered)}


def _fmt(x: Any, spec: str = ".3g") -> str:
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(xf) else format(xf, spec)


def _base_layout(fig: go.Figure, title: str, subtitle: str | None, **kw: Any) -> go.Figure:
    layout: dict[str, Any] = {
        "title": _title(title, subtitle),
        "template": "plotly_white",
        "margin": {"t": 90, "l": 70, "r": 30, "b": 60},
        "hoverlabel": {"align": "left"},
    }
    fig.update_layout(**(layout | kw))
    return fig


def frontier_mask(df: pd.DataFrame) -> np.ndarray:
    """Variants on the Pareto frontier over quality (max), cost and p95 latency (min).

    One implementation, :func:`slamkit.pareto.pareto_mask`: a missing quality or cost keeps
    a variant off the frontier; a missing p95 latency is unknown and drops nobody by itself.
    """
    return pareto.pareto_mask(
        df, ["quality"], ["cost_per_1k", "p95_latency_s"], optional=["p95_latency_s"]
    )


def _log_ticks(values: Iterable[Any], steps: Sequence[float] = (1, 2, 5)) -> list[float]:
    """Readable log-axis tick positions (1-2-5 per decade) covering ``values``."""
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").astype(float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.empty:
        return []
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    ticks = [s * 10.0**e for e in range(lo - 1, hi + 1) for s in steps]
    below = [t for t in ticks if t <= v.min()]
    above = [t for t in ticks if t >= v.max()]
    first = below[-1] if below else ticks[0]
    last = above[0] if above else ticks[-1]
    return [float(f"{t:.12g}") for t in ticks if first <= t <= last]


def _usd(x: float) -> str:
    """A dollar amount for an axis label: $0.002, $0.05, $1, $20, $1,000."""
    return f"${x:,.0f}" if x >= 1 else "$" + f"{x:.6f}".rstrip("0").rstrip(".")


def _log_axis(
    values: Iterable[Any], title: str, label: Any = None, steps: Sequence[float] = (1, 2, 5)
) -> dict[str, Any]:
    """A log axis whose ticks read as numbers (plotly labels 20 and 30 as '2', '3' otherwise).

    Ticks sit at 1-2-5 steps per decade over ``values``; ``label(x)`` writes each one.
    """
    ticks = _log_ticks(values, steps)
    fmt = label or (lambda t: format(t, ",.6g"))
    axis: dict[str, Any] = {"title": title, "type": "log", "tickformat": ",.6~g"}
    if ticks:
        axis.update({"tickmode": "array", "tickvals": ticks, "ticktext": [fmt(t) for t in ticks]})
    return axis


def _sizes(values: pd.Series, lo: float = 9.0, hi: float = 30.0) -> list[float]:
    v = pd.to_numeric(values, errors="coerce").astype(float)
    finite = v[np.isfinite(v)]
    if finite.empty or finite.max() == finite.min():
        return [float((lo + hi) / 2)] * len(v)
    scaled = lo + (v - finite.min()) / (finite.max() - finite.min()) * (hi - lo)
    return [float(s) if np.isfinite(s) else lo for s in scaled]


# -- trade-offs ------------------------------------------------------------------
def pareto_scatter(
    df: pd.DataFrame,
    reference: dict[str, Any] | None = None,
    quality_label: str = "quality",
    log_cost: bool = True,
) -> go.Figure:
    """Quality vs cost per 1K requests, one marker per variant, with the Pareto frontier.

    ``df`` columns: ``variant`` (name), ``family``, ``quant``, ``quality`` (higher is
    better), ``cost_per_1k`` (USD per 1,000 requests), ``p95_latency_s`` (seconds).
    Optional: ``quality_lo``/``quality_hi`` (CI, drawn as error bars), ``on_frontier``
    (bool; computed over quality, cost and p95 latency when absent, by
    :func:`frontier_mask`).
    ``reference``: ``{"name", "quality", "cost_per_1k", "p95_latency_s"}`` of the API
    model (e.g. GPT-4), drawn as a black star. Marker size grows with p95 latency;
    colour is the family, symbol the quantization. The frontier line joins, in cost
    order, the variants that no other variant beats on quality and cost (and p95), and
    rings them (so a frontier of one variant is visible too). The log cost axis is
    labelled in dollars at 1-2-5 steps.
    """
    _need(df, ["variant", "family", "quant", "quality", "cost_per_1k", "p95_latency_s"],
          "pareto_scatter")  # fmt: skip
    d = df.reset_index(drop=True).copy()
    if "on_frontier" not in d:
        d["on_frontier"] = frontier_mask(d)
    d["_size"] = _sizes(d["p95_latency_s"])
    colors = _color_map(d["family"])
    symbols = {q: SYMBOLS[i % len(SYMBOLS)] for i, q in enumerate(dict.fromkeys(d["quant"]))}
    has_ci = {"quality_lo", "quality_hi"} <= set(d.columns)
    fig = go.Figure()
    for fam, g in d.groupby("family", sort=False):
        custom = np.stack(
            [
                _esc(g["variant"]),
                _esc(g["quant"]),
                [_fmt(v, ".4f") for v in g["cost_per_1k"]],
                [_fmt(v, ".2f") for v in g["p95_latency_s"]],
                [_fmt(v) for v in g["quality"]],
                [
                    f" [{_fmt(lo)}, {_fmt(hi)}]" if has_ci else ""
                    for lo, hi in zip(
                        g.get("quality_lo", g["quality"]),
                        g.get("quality_hi", g["quality"]),
                        strict=True,
                    )
                ],
            ],
            axis=-1,
        )
        err = None
        if has_ci:
            err = {
                "type": "data",
                "array": (g["quality_hi"] - g["quality"]).clip(lower=0).tolist(),
                "arrayminus": (g["quality"] - g["quality_lo"]).clip(lower=0).tolist(),
                "thickness": 1,
                "width": 0,
                "color": colors[fam],
            }
        fig.add_trace(
            go.Scatter(
                x=g["cost_per_1k"].tolist(),
                y=g["quality"].tolist(),
                mode="markers",
                name=html.escape(str(fam)),
                legendgroup="family",
                legendgrouptitle_text="family",
                marker={
                    "color": colors[fam],
                    "size": g["_size"].tolist(),
                    "symbol": [symbols[q] for q in g["quant"]],
                    "line": {"width": 1, "color": "white"},
                    "opacity": 0.85,
                },
                error_y=err,
                customdata=custom,
                hovertemplate=(
                    "<b>%{customdata[0]}</b> (%{customdata[1]})<br>"
                    f"{html.escape(quality_label)}: %{{customdata[4]}}%{{customdata[5]}}<br>"
                    "cost: $%{customdata[2]} per 1K requests<br>"
                    "p95 latency: %{customdata[3]} s<extra></extra>"
                ),
            )
        )
    for q, sym in symbols.items():  # legend entries for the symbols
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=html.escape(str(q)),
                legendgroup="quant",
                legendgrouptitle_text="quantization",
                marker={"symbol": sym, "color": "#888888", "size": 10},
                hoverinfo="skip",
            )
        )
    front = d[d["on_frontier"].astype(bool)].sort_values("cost_per_1k")
    if len(front):
        fig.add_trace(
            go.Scatter(
                x=front["cost_per_1k"].tolist(),
                y=front["quality"].tolist(),
                mode="lines+markers",  # one frontier point still shows (a line needs two)
                name="Pareto frontier",
                line={"color": "#555555", "dash": "dot", "width": 1.5},
                marker={"symbol": "circle-open", "size": 22, "color": "#555555",
                        "line": {"width": 1.5}},
                customdata=_esc(front["variant"]),
                hovertemplate="<b>%{customdata}</b> is on the Pareto frontier<extra></extra>",
            )
        )  # fmt: skip
    if reference:
        fig.add_trace(
            go.Scatter(
                x=[reference["cost_per_1k"]],
                y=[reference.get("quality", 1.0)],
                mode="markers+text",
                name=html.escape(str(reference.get("name", "reference"))),
                text=[html.escape(str(reference.get("name", "reference")))],
                textposition="top center",
                marker={"symbol": "star", "size": 18, "color": REFERENCE_COLOR},
                hovertemplate=(
                    f"<b>{html.escape(str(reference.get('name', 'reference')))}</b> "
                    "(reference API)<br>"
                    f"{html.escape(quality_label)}: {_fmt(reference.get('quality', 1.0))}<br>"
                    f"cost: ${_fmt(reference['cost_per_1k'], '.4f')} per 1K requests<br>"
                    f"p95 latency: {_fmt(reference.get('p95_latency_s'), '.2f')} s"
                    "<extra></extra>"
                ),
            )
        )
    costs = list(d["cost_per_1k"]) + ([reference["cost_per_1k"]] if reference else [])
    xaxis = (
        _log_axis(costs, "cost (USD per 1,000 requests)", _usd)
        if log_cost
        else {"title": "cost (USD per 1,000 requests)", "tickprefix": "$"}
    )
    return _base_layout(
        fig,
        "Quality vs cost: which variants are worth hosting?",
        "Up and left is better. Marker size = p95 latency, colour = family, "
        "symbol = quantization; dotted line and rings = Pareto frontier.",
        xaxis=xaxis,
        yaxis={"title": html.escape(quality_label)},
        legend={"groupclick": "toggleitem"},
    )


# -- performance -----------------------------------------------------------------
def latency_distribution(
    df: pd.DataFrame,
    metric: str = "latency_s",
    kind: str = "violin",
    metric_label: str | None = None,
) -> go.Figure:
    """Distribution of one latency measure per variant, beside the reference API.

    ``df`` columns: ``variant``, the ``metric`` column (one row per request, seconds,
    e.g. ``latency_s`` or ``ttft_s``), optional ``is_reference`` (bool; reference API
    rows are drawn in black and listed first). ``kind``: ``"violin"`` (box + points
    inside) or ``"ecdf"`` (cumulative share of requests finished within x seconds).
    """
    _need(df, ["variant", metric], "latency_distribution")
    if kind not in ("violin", "ecdf"):
        raise SlamkitError(f"latency_distribution: kind={kind!r}; use 'violin' or 'ecdf'.")
    d = df[["variant", metric] + (["is_reference"] if "is_reference" in df else [])].copy()
    d = d[pd.to_numeric(d[metric], errors="coerce").notna()]
    d["is_reference"] = d.get("is_reference", False)
    d["is_reference"] = d["is_reference"].fillna(False).astype(bool)
    order = list(dict.fromkeys(d.sort_values("is_reference", ascending=False)["variant"]))
    colors = _color_map([v for v in order if not d[d.variant == v].is_reference.any()])
    label = metric_label or metric.replace("_s", " (s)").replace("_", " ")
    fig = go.Figure()
    for v in order:
        g = d[d.variant == v]
        vals = g[metric].astype(float).to_numpy()
        is_ref = bool(g.is_reference.any())
        color = REFERENCE_COLOR if is_ref else colors[v]
        name = html.escape(str(v)) + (" (reference API)" if is_ref else "")
        p50, p95 = np.percentile(vals, [50, 95]) if len(vals) else (np.nan, np.nan)
        if kind == "violin":
            fig.add_trace(
                go.Violin(
                    x=[name] * len(vals),
                    y=vals.tolist(),
                    name=name,
                    line_color=color,
                    box_visible=True,
                    meanline_visible=True,
                    points="all",
                    pointpos=0,
                    jitter=0.3,
                    hoveron="points+kde",
                    hovertemplate=(
                        f"<b>{name}</b><br>{label}: %{{y:.3f}}<br>"
                        f"p50 {_fmt(p50)} s, p95 {_fmt(p95)} s, n={len(vals)}<extra></extra>"
                    ),
                )
            )
        else:
            xs = np.sort(vals)
            ys = np.arange(1, len(xs) + 1) / max(len(xs), 1)
            fig.add_trace(
                go.Scatter(
                    x=xs.tolist(),
                    y=ys.tolist(),
                    mode="lines",
                    line={"shape": "hv", "color": color, "width": 3 if is_ref else 2},
                    name=name,
                    hovertemplate=(
                        f"<b>{name}</b><br>%{{y:.0%}} of requests within %{{x:.3f}} s<br>"
                        f"p50 {_fmt(p50)} s, p95 {_fmt(p95)} s, n={len(vals)}<extra></extra>"
                    ),
                )
            )
    if kind == "violin":
        return _base_layout(
            fig,
            f"Latency consistency: {label}",
            "Each violin is one variant's requests; box = quartiles, dashed line = mean. "
            "Narrow and low is better.",
            yaxis={"title": label, "rangemode": "tozero"},
            xaxis={"title": "variant"},
            showlegend=False,
        )
    return _base_layout(
        fig,
        f"Latency consistency: {label} (ECDF)",
        "Share of requests finished within x seconds. A steep curve far left is fast "
        "and consistent.",
        xaxis={"title": label},
        yaxis={"title": "share of requests", "tickformat": ".0%", "range": [0, 1.02]},
    )


# -- quality ---------------------------------------------------------------------
def quality_ci(
    df: pd.DataFrame,
    metric_label: str = "quality",
    reference_value: float | None = None,
) -> go.Figure:
    """Mean quality per variant with its confidence interval, best at the top.

    ``df`` columns: ``variant``, ``mean``, ``lo``, ``hi`` (CI bounds, same units as
    ``mean``), optional ``n`` (items), ``family`` (colour), ``level`` (e.g. 0.95).
    ``reference_value`` draws a vertical line (e.g. the reference's own score).
    """
    _need(df, ["variant", "mean", "lo", "hi"], "quality_ci")
    d = df.sort_values("mean").reset_index(drop=True)
    fams = d["family"] if "family" in d else pd.Series(["variant"] * len(d))
    colors = _color_map(fams)
    level = float(d["level"].iloc[0]) if "level" in d and len(d) else 0.95
    n = d["n"] if "n" in d else pd.Series([np.nan] * len(d))
    fig = go.Figure(
        go.Scatter(
            x=d["mean"].tolist(),
            y=_esc(d["variant"]),
            mode="markers",
            marker={"size": 11, "color": [colors[f] for f in fams]},
            error_x={
                "type": "data",
                "array": (d["hi"] - d["mean"]).clip(lower=0).tolist(),
                "arrayminus": (d["mean"] - d["lo"]).clip(lower=0).tolist(),
                "thickness": 2,
            },
            customdata=np.stack(
                [[_fmt(x) for x in d["lo"]], [_fmt(x) for x in d["hi"]], [_fmt(x) for x in n]],
                axis=-1,
            ),
            hovertemplate=(
                f"<b>%{{y}}</b><br>{html.escape(metric_label)}: %{{x:.3g}}<br>"
                f"{level:.0%} CI [%{{customdata[0]}}, %{{customdata[1]}}]<br>"
                "n = %{customdata[2]} items<extra></extra>"
            ),
            name=html.escape(metric_label),
        )
    )
    if reference_value is not None:
        fig.add_vline(
            x=reference_value,
            line_dash="dash",
            line_color=REFERENCE_COLOR,
            annotation_text="reference",
        )
    return _base_layout(
        fig,
        f"{html.escape(metric_label)} by variant, with {level:.0%} confidence intervals",
        "Overlapping intervals mean the data cannot tell the variants apart.",
        xaxis={"title": html.escape(metric_label)},
        yaxis={"title": ""},
        height=max(300, 60 + 40 * len(d)),
    )


def winrate_heatmap(df: pd.DataFrame) -> go.Figure:
    """Pairwise win rates: cell (row a, column b) = share of comparisons a wins over b.

    ``df`` columns: ``model_a``, ``model_b``, ``win_rate`` (0..1, ties counted as half),
    optional ``n`` (comparisons). Missing pairs stay blank; the diagonal is blank.
    """
    _need(df, ["model_a", "model_b", "win_rate"], "winrate_heatmap")
    names = list(dict.fromkeys(list(df["model_a"]) + list(df["model_b"])))
    idx = {m: i for i, m in enumerate(names)}
    z = np.full((len(names), len(names)), np.nan)
    cnt = np.full_like(z, np.nan)
    for r in df.itertuples(index=False):
        z[idx[r.model_a], idx[r.model_b]] = float(r.win_rate)
        cnt[idx[r.model_a], idx[r.model_b]] = float(getattr(r, "n", np.nan))
    text = [["" if np.isnan(v) else f"{v:.0%}" for v in row] for row in z]
    labels = _esc(names)
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=labels,
            y=labels,
            text=text,
            texttemplate="%{text}",
            customdata=cnt.tolist(),
            colorscale="RdBu",
            zmin=0,
            zmax=1,
            zmid=0.5,
            colorbar={"title": "win rate", "tickformat": ".0%"},
            hovertemplate=(
                "<b>%{y}</b> vs <b>%{x}</b><br>win rate %{z:.1%}<br>"
                "n = %{customdata} comparisons<extra></extra>"
            ),
        )
    )
    return _base_layout(
        fig,
        "Pairwise win rates (row beats column)",
        "Ties count as half a win. Blue: the row model wins more often than it loses.",
        xaxis={"title": "opponent", "side": "bottom"},
        yaxis={"title": "model", "autorange": "reversed"},
    )


def bt_ratings(df: pd.DataFrame, source: str | None = None) -> go.Figure:
    """Bradley-Terry ratings with bootstrap confidence intervals, best at the top.

    ``df`` columns: ``model``, ``rating`` (log-strength or Elo-like scale), ``lo``,
    ``hi``, optional ``is_reference`` (bool, drawn in black), ``level``. ``source`` says
    where the verdicts came from (a subtitle). Fewer than two models: an empty chart that
    says so.
    """
    _need(df, ["model", "rating", "lo", "hi"], "bt_ratings")
    if df["model"].nunique() < 2:
        fig = go.Figure()
        fig.update_layout(title=_title("Bradley-Terry ratings", f"verdicts: {source}"))
        fig.add_annotation(text="Bradley-Terry needs verdicts between two models or more",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")  # fmt: skip
        return fig
    d = df.sort_values("rating").reset_index(drop=True)
    is_ref = d["is_reference"].astype(bool) if "is_reference" in d else pd.Series([False] * len(d))
    level = float(d["level"].iloc[0]) if "level" in d and len(d) else 0.95
    fig = go.Figure(
        go.Scatter(
            x=d["rating"].tolist(),
            y=_esc(d["model"]),
            mode="markers",
            marker={
                "size": 12,
                "color": [REFERENCE_COLOR if r else PALETTE[0] for r in is_ref],
                "symbol": ["star" if r else "circle" for r in is_ref],
            },
            error_x={
                "type": "data",
                "array": (d["hi"] - d["rating"]).clip(lower=0).tolist(),
                "arrayminus": (d["rating"] - d["lo"]).clip(lower=0).tolist(),
            },
            customdata=np.stack([d["lo"].astype(float), d["hi"].astype(float)], axis=-1),
            hovertemplate=(
                "<b>%{y}</b><br>rating %{x:.2f}<br>"
                f"{level:.0%} CI [%{{customdata[0]:.2f}}, %{{customdata[1]:.2f}}]"
                "<extra></extra>"
            ),
            name="Bradley-Terry rating",
        )
    )
    fig = _base_layout(
        fig,
        "Bradley-Terry ratings from pairwise verdicts",
        f"Higher is stronger; bars are {level:.0%} bootstrap intervals. "
        "A difference of 1 means odds of winning of e:1.",
        xaxis={"title": "rating (log-strength)"},
        yaxis={"title": ""},
        height=max(300, 60 + 40 * len(d)),
    )
    if source:
        fig.update_layout(
            title_text=fig.layout.title.text + f"<br><sup>verdicts: {html.escape(source)}</sup>"
        )
    return fig


def quant_ladder(df: pd.DataFrame, quality_label: str = "quality") -> go.Figure:
    """Per family: quality and decode speed against bits per weight (the variant ladder).

    ``df`` columns: ``family``, ``quant``, ``quality``, ``decode_tps`` (tokens/s),
    optional ``bits`` (bits per weight; looked up from ``quant`` when absent),
    ``quality_lo``/``quality_hi``, ``variant``.
    """
    _need(df, ["family", "quant", "quality", "decode_tps"], "quant_ladder")
    d = df.copy()
    if "bits" not in d:
        d["bits"] = [quant_bits(q) for q in d["quant"]]
    d = d.sort_values(["family", "bits"])
    colors = _color_map(d["family"])
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(f"{html.escape(quality_label)} vs bits", "decode speed vs bits"),
        horizontal_spacing=0.12,
    )
    has_ci = {"quality_lo", "quality_hi"} <= set(d.columns)
    for fam, g in d.groupby("family", sort=False):
        quants = _esc(g["quant"])
        err = None
        if has_ci:
            err = {
                "type": "data",
                "array": (g["quality_hi"] - g["quality"]).clip(lower=0).tolist(),
                "arrayminus": (g["quality"] - g["quality_lo"]).clip(lower=0).tolist(),
            }
        fig.add_trace(
            go.Scatter(
                x=g["bits"].tolist(),
                y=g["quality"].tolist(),
                mode="lines+markers+text",
                text=quants,
                textposition="top center",
                name=html.escape(str(fam)),
                legendgroup=str(fam),
                line={"color": colors[fam]},
                error_y=err,
                hovertemplate=(
                    f"<b>{html.escape(str(fam))}</b> %{{text}}<br>%{{x:.2f}} bits/weight<br>"
                    f"{html.escape(quality_label)}: %{{y:.3g}}<extra></extra>"
                ),
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=g["bits"].tolist(),
                y=g["decode_tps"].tolist(),
                mode="lines+markers",
                text=quants,
                name=html.escape(str(fam)),
                legendgroup=str(fam),
                showlegend=False,
                line={"color": colors[fam], "dash": "dash"},
                hovertemplate=(
                    f"<b>{html.escape(str(fam))}</b> %{{text}}<br>%{{x:.2f}} bits/weight<br>"
                    "decode: %{y:.1f} tokens/s<extra></extra>"
                ),
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="bits per weight")
    fig.update_yaxes(title_text=html.escape(quality_label), row=1, col=1)
    fig.update_yaxes(title_text="decode speed (tokens/s)", row=1, col=2)
    return _base_layout(
        fig,
        "Quantization ladder per family",
        "Fewer bits: smaller and usually faster, at some cost in quality. "
        "Look for the knee where quality starts to drop.",
    )


# -- cost ------------------------------------------------------------------------
def cost_breakdown(df: pd.DataFrame) -> go.Figure:
    """Stacked cost per 1,000 requests by component (API input/output tokens, hardware).

    ``df`` columns (long format): ``variant``, ``component`` (e.g. ``"input tokens"``,
    ``"output tokens"``, ``"hardware"``), ``usd_per_1k`` (USD per 1,000 requests).
    """
    _need(df, ["variant", "component", "usd_per_1k"], "cost_breakdown")
    totals = df.groupby("variant", sort=False)["usd_per_1k"].sum().sort_values()
    order = list(totals.index)
    colors = _color_map(df["component"])
    fig = go.Figure()
    for comp, g in df.groupby("component", sort=False):
        g = g.set_index("variant").reindex(order)
        fig.add_trace(
            go.Bar(
                x=_esc(order),
                y=g["usd_per_1k"].fillna(0).tolist(),
                name=html.escape(str(comp)),
                marker_color=colors[comp],
                customdata=[_fmt(totals[v], ".4f") for v in order],
                hovertemplate=(
                    f"<b>%{{x}}</b><br>{html.escape(str(comp))}: $%{{y:.4f}} per 1K requests"
                    "<br>total: $%{customdata} per 1K requests<extra></extra>"
                ),
            )
        )
    return _base_layout(
        fig,
        "What a request costs, by component",
        "USD per 1,000 requests. API cost = tokens x price; self-hosted cost = "
        "hourly price / requests served per hour.",
        barmode="stack",
        xaxis={"title": "variant"},
        yaxis={"title": "cost (USD per 1,000 requests)"},
    )


def break_even(
    df: pd.DataFrame, max_requests_per_month: float | None = None, n_points: int = 200
) -> go.Figure:
    """Monthly cost against traffic: pay-per-token APIs vs always-on self-hosted servers.

    ``df`` columns: ``variant``, ``kind`` (``"api"`` or ``"self-hosted"``), and
    ``usd_per_request`` (API) or ``monthly_fixed_usd`` (self-hosted: hourly price x
    730 h) with ``capacity_per_month`` (requests one server sustains at its
    utilization; servers are added in steps when traffic exceeds it).
    Break-even traffic of each self-hosted variant against each API is marked.
    """
    _need(df, ["variant", "kind"], "break_even")
    api = df[df["kind"] == "api"]
    hosted = df[df["kind"] != "api"]
    if len(api):
        _need(api, ["usd_per_request"], "break_even")
    if len(hosted):
        _need(hosted, ["monthly_fixed_usd", "capacity_per_month"], "break_even")
    be: list[tuple[str, str, float, float]] = []
    for a in api.itertuples(index=False):
        for h in hosted.itertuples(index=False):
            if a.usd_per_request > 0:
                t = h.monthly_fixed_usd / a.usd_per_request
                if t <= h.capacity_per_month:
                    be.append((str(h.variant), str(a.variant), t, h.monthly_fixed_usd))
    top = max_requests_per_month or (max([b[2] for b in be] + [1000.0]) * 3 if be else 1e6)
    x = np.linspace(0, top, n_points)
    colors = _color_map(df["variant"])
    fig = go.Figure()
    for a in api.itertuples(index=False):
        fig.add_trace(
            go.Scatter(
                x=x.tolist(),
                y=(x * a.usd_per_request).tolist(),
                mode="lines",
                name=f"{html.escape(str(a.variant))} (API)",
                line={"color": REFERENCE_COLOR if len(api) == 1 else colors[a.variant]},
                hovertemplate=(
                    f"<b>{html.escape(str(a.variant))}</b> (API, "
                    f"${_fmt(a.usd_per_request, '.5f')}/request)<br>"
                    "%{x:,.0f} requests/month: $%{y:,.2f}/month<extra></extra>"
                ),
            )
        )
    for h in hosted.itertuples(index=False):
        basis = getattr(h, "throughput_basis", None)
        basis_note = f"<br>capacity: {html.escape(str(basis))}" if basis else ""
        servers = np.maximum(1, np.ceil(x / max(float(h.capacity_per_month), 1e-9)))
        fig.add_trace(
            go.Scatter(
                x=x.tolist(),
                y=(servers * h.monthly_fixed_usd).tolist(),
                mode="lines",
                line={"shape": "hv", "color": colors[h.variant], "dash": "dash"},
                name=f"{html.escape(str(h.variant))} (self-hosted)",
                customdata=servers.tolist(),
                hovertemplate=(
                    f"<b>{html.escape(str(h.variant))}</b> (self-hosted, "
                    f"{_fmt(h.capacity_per_month, ',.0f')} requests/month per server)<br>"
                    "%{x:,.0f} requests/month: $%{y:,.2f}/month "
                    f"(%{{customdata}} server(s)){basis_note}<extra></extra>"
                ),
            )
        )
    for hv, av, t, cost in be:
        fig.add_trace(
            go.Scatter(
                x=[t],
                y=[cost],
                mode="markers",
                marker={"symbol": "x", "size": 12, "color": colors[hv]},
                name=f"break-even {html.escape(hv)} vs {html.escape(av)}",
                showlegend=False,
                hovertemplate=(
                    f"<b>break-even</b> {html.escape(hv)} vs {html.escape(av)}<br>"
                    "%{x:,.0f} requests/month ($%{y:,.2f}/month)<extra></extra>"
                ),
            )
        )
    sub = (
        "Solid: pay per token. Dashed: always-on servers (a step per added server). "
        "Right of the x marker, self-hosting is cheaper."
    )
    if "throughput_basis" in hosted and len(hosted):
        load = hosted["throughput_basis"].astype(str).str.startswith("load test")
        sub += (
            " Server capacity: "
            + ("measured by a load test at the latency target" if load.all() else
               "one request at a time (no load test)" if not load.any() else
               "a load test's capacity where one exists, else one request at a time")
            + "."
        )  # fmt: skip
    return _base_layout(
        fig,
        "Break-even traffic: API vs self-hosted",
        sub,
        xaxis={"title": "traffic (requests per month)"},
        yaxis={"title": "cost (USD per month)", "rangemode": "tozero"},
    )


# -- selection -------------------------------------------------------------------
def smart_savings(
    df: pd.DataFrame, gamma: float | None = None, source: str | None = None
) -> go.Figure:
    """SMART cost savings against always using the reference, per error budget delta.

    ``df`` columns: ``delta`` (allowed share of outputs that differ from the reference),
    ``savings`` (reference cost / method cost, e.g. 12.5 for 12.5x), ``method``;
    optional ``violation_rate`` (share of simulated runs that broke the guarantee).
    ``gamma`` is shown in the subtitle. ``source`` (default ``df.attrs["source"]``, set by
    :func:`slamkit.smart.display.simulation_long`) says where the numbers come from, e.g. that
    they are a simulation and not the user's data; it opens the subtitle and the title.
    """
    _need(df, ["delta", "savings", "method"], "smart_savings")
    source = source if source is not None else df.attrs.get("source")
    colors = _color_map(df["method"])
    fig = go.Figure()
    for m, g in df.sort_values("delta").groupby("method", sort=False):
        viol = (
            [_fmt(v, ".1%") for v in g["violation_rate"]]
            if "violation_rate" in g
            else ["n/a"] * len(g)
        )
        fig.add_trace(
            go.Scatter(
                x=g["delta"].tolist(),
                y=g["savings"].tolist(),
                mode="lines+markers",
                name=html.escape(str(m)),
                line={"color": colors[m]},
                customdata=viol,
                hovertemplate=(
                    f"<b>{html.escape(str(m))}</b><br>delta = %{{x:.2f}}<br>"
                    "saving: %{y:.2f}x cheaper than the reference<br>"
                    "guarantee violated in %{customdata} of runs<extra></extra>"
                ),
            )
        )
    # The line is a shape (data units), the label an annotation: on a log axis plotly reads
    # an annotation's y as log10(value), so "no saving" at 1x goes at y = log10(1) = 0.
    fig.add_hline(y=1, line_dash="dot", line_color=REFERENCE_COLOR)
    fig.add_annotation(
        x=1, xref="x domain", xanchor="right", y=math.log10(1), yref="y", yanchor="bottom",
        text="no saving (1x)", showarrow=False, font={"color": REFERENCE_COLOR},
    )  # fmt: skip
    sub = "Looser error budget (larger delta) -> cheaper models qualify."
    if gamma is not None:
        sub += f" Confidence gamma = {gamma:g}."
    title = "SMART: cost saving vs allowed error rate"
    if source:
        sub = f"<b>{html.escape(source)}</b><br>{sub}"
        if "simulat" in source.lower():
            title = "SMART (simulation): cost saving vs allowed error rate"
    savings = pd.to_numeric(df["savings"], errors="coerce").tolist() + [1.0]
    return _base_layout(
        fig,
        title,
        sub,
        xaxis={"title": "delta (max share of outputs differing from the reference)"},
        yaxis=_log_axis(savings, "saving (x cheaper than the reference)", lambda t: f"{t:,.6g}x"),
        margin={"t": 110 if source else 90, "l": 70, "r": 30, "b": 60},
    )


# -- serving load tests ------------------------------------------------------------
def _first(values: pd.Series) -> float | None:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(v.iloc[0]) if len(v) else None


def _empty(title: str, why: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return _base_layout(fig, title, None, xaxis={"visible": False}, yaxis={"visible": False})


def _load_label(df: pd.DataFrame) -> list[str]:
    return [
        f"c={int(c)}" if m == "closed" else f"{r:g} req/s offered"
        for m, c, r in zip(df["mode"], df["concurrency"], df["rate_rps"], strict=True)
    ]


def load_latency(df: pd.DataFrame, target_ttft_s: float | None = None,
                 target_e2e_s: float | None = None) -> go.Figure:  # fmt: skip
    """Latency percentiles against load: where the knee is.

    ``df``: :func:`slamkit.serving.load_table` rows (``mode, concurrency, rate_rps,
    throughput_rps`` and ``e2e_p50_s/_lo/_hi``, ``e2e_p95_s``, ``e2e_p99_s``,
    ``ttft_p50_s``, ``ttft_p95_s``, ..., ``knee``). Two panels (end-to-end, time to first
    token); x is the throughput each point achieved (requests/s), so closed-loop levels
    (lines, labelled c=N) and Poisson points (diamonds, labelled by offered rate) share one
    axis; p50 / p95 / p99 with 95 % CIs as error bars (none where a point has too few
    requests for a bound), the target as a dashed line, the knee circled.
    """
    _need(df, ["mode", "concurrency", "rate_rps", "throughput_rps", "e2e_p50_s", "ttft_p50_s"],
          "load_latency")  # fmt: skip
    if df.empty:
        return _empty("Latency against load", "No load test stored yet: run "
                      "`slamkit load` (or 05_performance).")  # fmt: skip
    if target_ttft_s is None and "target_ttft_s" in df:
        target_ttft_s = _first(df["target_ttft_s"])
    if target_e2e_s is None and "target_e2e_s" in df:
        target_e2e_s = _first(df["target_e2e_s"])
    d = df.sort_values(["mode", "concurrency", "rate_rps"]).reset_index(drop=True)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("end-to-end latency (s)",
                                                        "time to first token (s)"))  # fmt: skip
    dash = {"p50": "solid", "p95": "dash", "p99": "dot"}
    for col, (metric, target) in enumerate((("e2e", target_e2e_s), ("ttft", target_ttft_s)), 1):
        for q, color in zip(("p50", "p95", "p99"), PALETTE, strict=False):
            for mode, g in d.groupby("mode", sort=True):
                y = g[f"{metric}_{q}_s"].astype(float)
                lo = g.get(f"{metric}_{q}_lo", y).astype(float)
                hi = g.get(f"{metric}_{q}_hi", y).astype(float)
                closed = mode == "closed"
                fig.add_trace(
                    go.Scatter(
                        x=g["throughput_rps"].astype(float).tolist(), y=y.tolist(),
                        mode="lines+markers" if closed else "markers",
                        name=q if closed else f"{q} (Poisson)", legendgroup=q,
                        showlegend=col == 1,
                        line={"color": color, "dash": dash[q]},
                        marker={"symbol": "circle" if closed else "diamond", "size": 8},
                        error_y={"type": "data", "symmetric": False,
                                 "array": (hi - y).clip(lower=0).tolist(),
                                 "arrayminus": (y - lo).clip(lower=0).tolist(),
                                 "thickness": 1},
                        text=_load_label(g),
                        customdata=np.stack([lo.to_numpy(), hi.to_numpy(),
                                             g["sent"].to_numpy(float)], axis=-1),
                        hovertemplate=(f"%{{text}}: {q} %{{y:.3g}} s [%{{customdata[0]:.3g}}, "
                                       "%{customdata[1]:.3g}]<br>%{x:.3g} req/s answered, "
                                       "n=%{customdata[2]:.0f}<extra></extra>"),
                    ),
                    row=1, col=col,
                )  # fmt: skip
        if target is not None and target == target:
            fig.add_hline(y=float(target), line_dash="dash", line_color=REFERENCE_COLOR,
                          annotation_text="target", row=1, col=col)  # fmt: skip
        if "knee" in d and d["knee"].any():
            k = d.index[d["knee"].astype(bool)][0]
            fig.add_trace(
                go.Scatter(x=[float(d.loc[k, "throughput_rps"])],
                           y=[float(d.loc[k, f"{metric}_p50_s"])], mode="markers",
                           marker={"size": 18, "symbol": "circle-open", "color": "#d62728",
                                   "line": {"width": 2}},
                           name="knee", legendgroup="knee", showlegend=col == 1,
                           hovertemplate="the knee: throughput stops rising after this "
                           "level<extra></extra>"),
                row=1, col=col,
            )  # fmt: skip
        fig.update_xaxes(title_text="throughput (answered requests/s)", rangemode="tozero",
                         row=1, col=col)  # fmt: skip
        fig.update_yaxes(rangemode="tozero", row=1, col=col)
    return _base_layout(
        fig,
        "Latency against load",
        "Each marker is one load point (hover: its level). Past the knee, more requests in "
        "flight add waiting but no throughput: the curve turns upward.",
    )


def load_throughput(df: pd.DataFrame, capacity_rps: float | None = None) -> go.Figure:
    """Throughput and goodput against offered load.

    ``df``: :func:`slamkit.serving.load_table` rows (``throughput_rps``, ``goodput_rps``,
    ``output_tps``, ``error_rate``, ``meets_target``). Bars: answered requests/s; inside
    them, the share that met the latency target (goodput); the capacity at the target as
    a dashed line.
    """
    _need(df, ["mode", "concurrency", "rate_rps", "throughput_rps", "goodput_rps"],
          "load_throughput")  # fmt: skip
    if df.empty:
        return _empty("Throughput and goodput against offered load", "No load test stored "
                      "yet: run `slamkit load` (or 05_performance).")  # fmt: skip
    if capacity_rps is None and "capacity_rps" in df:
        capacity_rps = _first(df["capacity_rps"])
    d = df.sort_values(["mode", "concurrency", "rate_rps"]).reset_index(drop=True)
    labels = [
        f"c={int(c)}" if m == "closed" else f"{r:g} req/s"
        for m, c, r in zip(d["mode"], d["concurrency"], d["rate_rps"], strict=True)
    ]
    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=labels, y=d["throughput_rps"].tolist(), name="throughput (answered req/s)",
        marker_color=PALETTE[0], opacity=0.45,
        customdata=np.stack([d["output_tps"].to_numpy(float),
                             d["error_rate"].to_numpy(float)], axis=-1),
        hovertemplate=("%{x}: %{y:.3g} req/s, %{customdata[0]:.3g} output tok/s, "
                       "errors %{customdata[1]:.0%}<extra></extra>"),
    ))  # fmt: skip
    fig.add_trace(go.Bar(
        x=labels, y=d["goodput_rps"].tolist(), name="goodput (met the target, req/s)",
        marker_color=[PALETTE[2] if m else PALETTE[1] for m in d["meets_target"]],
        hovertemplate="%{x}: %{y:.3g} req/s met the target<extra></extra>",
    ))  # fmt: skip
    if capacity_rps is not None and capacity_rps == capacity_rps:
        fig.add_hline(y=capacity_rps, line_dash="dash", line_color=REFERENCE_COLOR,
                      annotation_text=f"capacity at the target {capacity_rps:.3g} req/s "
                      f"= {capacity_rps * 3600:,.0f}/hour")  # fmt: skip
    return _base_layout(
        fig,
        "Throughput and goodput against offered load",
        "Goodput bars are green where the point meets the target (enough of its requests "
        "within the latency limits), red where it does not.",
        barmode="overlay",
        yaxis={"title": "requests per second", "rangemode": "tozero"},
        xaxis={"title": "offered load"},
    )


def load_distribution(df: pd.DataFrame, metric: str = "end-to-end (s)") -> go.Figure:
    """The self-hosted latency distribution at each load beside the reference API's.

    ``df``: :func:`slamkit.serving.latency_by_source` rows (``source, load, metric,
    value``): one box per (source, load); reference API rows (captured with ``slamkit
    refs capture``, at the concurrency they were captured with) in black.
    """
    _need(df, ["source", "load", "metric", "value"], "load_distribution")
    d = df[df["metric"] == metric]
    if d.empty:
        return _empty(f"Latency under load: {metric}", "No load test stored yet: run "
                      "`slamkit load` (or 05_performance).")  # fmt: skip
    fig = go.Figure()
    sources = list(dict.fromkeys(d["source"]))
    colors = _color_map(sources)
    for src in sources:
        g = d[d["source"] == src]
        ref = "reference API" in str(src)
        fig.add_trace(go.Box(
            x=_esc(g["load"]), y=g["value"].astype(float).tolist(), name=html.escape(str(src)),
            marker_color=REFERENCE_COLOR if ref else colors[src], boxpoints="all",
            jitter=0.3, pointpos=0,
        ))  # fmt: skip
    return _base_layout(
        fig,
        f"Latency under load: {metric}",
        "One box per load level (c = requests in flight). The reference API's requests "
        "are shown at the concurrency they were captured with.",
        boxmode="group",
        yaxis={"title": metric, "rangemode": "tozero"},
        xaxis={"title": "load"},
    )


# -- the variant matrix ------------------------------------------------------------------
def _drift_hover(r: pd.Series, q: str) -> str:
    base = r.get("drift base")
    vs = html.escape(str(base)) if pd.notna(base) else "itself"
    return (
        f"<b>{html.escape(str(r['variant']))}</b><br>KLD vs {vs}: {_fmt(r['kld'], '.4f')} "
        f"[{_fmt(r.get('KLD lo'), '.4f')}, {_fmt(r.get('KLD hi'), '.4f')}]<br>same top-1: "
        f"{_fmt(r.get('same top-1 (%)'), '.1f')}%<br>{html.escape(q)}: {_fmt(r[q])}<br>"
        f"tg: {_fmt(r['tg tok/s'], '.1f')} tok/s"
    )


def drift_quality(df: pd.DataFrame, quality_label: str = "quality") -> go.Figure:
    """Quality vs quantization drift, one marker per variant (size = generation tokens/s,
    colour = family): a variant far right drifted far from its parent; one low drifted in
    quality too. Bases of a drift measurement sit at KLD 0 (a model against itself);
    variants with neither a drift figure nor a role as a base are listed in the subtitle.

    ``df``: :func:`slamkit.frames.variant_matrix` (``variant``, ``family``, ``quant``,
    ``KLD vs parent``, ``KLD lo``/``KLD hi``, ``same top-1 (%)``, ``drift base``,
    ``tg tok/s``, and the quality columns named ``quality_label``, ``<label> lo``/``hi``).
    """
    q, lo, hi = quality_label, f"{quality_label} lo", f"{quality_label} hi"
    _need(df, ["variant", "family", "KLD vs parent", "drift base", "tg tok/s", q], "drift_quality")
    d = df.copy()
    bases = set(d["drift base"].dropna())
    d["kld"] = [
        k if pd.notna(k) else (0.0 if v in bases else np.nan)
        for v, k in zip(d["variant"], d["KLD vs parent"], strict=True)
    ]
    left_out = d.loc[d["kld"].isna(), "variant"].tolist()
    d = d[d["kld"].notna()]
    colors = _color_map(df["family"].fillna("?"))
    fig = go.Figure()
    sizes = _sizes(d["tg tok/s"]) if len(d) else []
    d = d.assign(_size=sizes)
    for fam, g in d.groupby(d["family"].fillna("?"), sort=True):
        err = None
        if {lo, hi} <= set(g.columns):
            err = {
                "type": "data",
                "array": (g[hi] - g[q]).clip(lower=0).fillna(0).tolist(),
                "arrayminus": (g[q] - g[lo]).clip(lower=0).fillna(0).tolist(),
            }
        hover = [_drift_hover(r, q) for _, r in g.iterrows()]
        fig.add_trace(
            go.Scatter(
                x=g["kld"].tolist(),
                y=g[q].tolist(),
                mode="markers+text",
                text=_esc(g.get("quant", g["variant"])),
                textposition="top center",
                name=html.escape(str(fam)),
                marker={"size": g["_size"].tolist(), "color": colors[fam], "opacity": 0.85},
                error_y=err,
                hovertext=hover,
                hoverinfo="text",
            )
        )
    sub = "marker size = generation tokens/s (llama-bench tg); bases at KLD 0"
    if left_out:
        sub += "; no drift measured: " + html.escape(", ".join(map(str, left_out)))
    return _base_layout(
        fig, f"{html.escape(q)} vs quantization drift", sub,
        xaxis={"title": "mean KL divergence vs parent (nats)", "rangemode": "tozero"},
        yaxis={"title": html.escape(q)}, legend={"title": "family"},
    )  # fmt: skip
