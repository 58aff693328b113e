"""Interactive explorers (ipywidgets): controls that redraw charts in place.

A :class:`LinkedFigure` ties a set of controls to a pure render function
``render(**values) -> plotly Figure``; when a control changes, the figure is recomputed
and the output area it lives in is replaced in place (no cell re-runs). The explorers
below are such links over the frames of :mod:`slamkit.frames` and :mod:`slamkit.cost`:

* :class:`TradeoffExplorer` — variant picker, metric selector, item-subset filter and cost
  sliders (hourly price, utilization, traffic) over the Pareto and break-even charts.
* :class:`SelectionExplorer` — delta / gamma sliders over the SMART-style selection.

``explorer.figure`` is always the figure currently shown, so tests (and the report) can
read it without a browser.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from slamkit import charts, cost, frames
from slamkit.errors import MissingDependencyError, SlamkitError


def _ipywidgets() -> Any:
    try:
        import ipywidgets
    except ImportError as exc:  # pragma: no cover - core dependency
        raise MissingDependencyError(
            "ipywidgets is needed for the explorers. Install it with: pip install ipywidgets"
        ) from exc
    return ipywidgets


def figure_bundle(fig: go.Figure) -> dict[str, Any]:
    """The display bundle of a figure for JupyterLab's plotly renderer (no plotly.js inside)."""
    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())
    bundle["text/plain"] = f"<plotly figure: {len(fig.data)} traces>"
    return bundle


class LinkedFigure:
    """Controls + a figure recomputed from their values whenever one changes.

    ``controls``: name -> ipywidget (anything with ``.value`` and ``.observe``).
    ``render``: called as ``render(**{name: widget.value})``; returns a Figure, or a
    ``(Figure, summary_html)`` pair whose summary is shown under the chart.
    """

    def __init__(
        self,
        controls: Mapping[str, Any],
        render: Callable[..., go.Figure | tuple[go.Figure, str]],
        layout_columns: int = 2,
    ) -> None:
        w = _ipywidgets()
        self.controls = dict(controls)
        self._render = render
        self.output = w.Output()
        self.summary = w.HTML()
        self.figure: go.Figure = go.Figure()
        self.error: str | None = None
        self.renders = 0
        for c in self.controls.values():
            c.observe(self._on_change, names="value")
        rows = list(self.controls.values())
        grid = [w.HBox(rows[i : i + layout_columns]) for i in range(0, len(rows), layout_columns)]
        self.ui = w.VBox([*grid, self.output, self.summary])
        self.refresh()

    @property
    def values(self) -> dict[str, Any]:
        return {k: c.value for k, c in self.controls.items()}

    def _on_change(self, _change: Mapping[str, Any]) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Recompute the figure from the current control values and show it in place."""
        try:
            out = self._render(**self.values)
            fig, summary = out if isinstance(out, tuple) else (out, "")
            self.error = None
        except SlamkitError as exc:  # show the researcher the message, keep the widget alive
            fig, summary = go.Figure(), ""
            self.error = str(exc)
            summary = f"<b>Cannot draw this selection:</b> {html.escape(str(exc))}"
        self.figure = fig
        self.renders += 1
        bundle = figure_bundle(fig)
        self.output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)
        self.summary.value = summary

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.ui._repr_mimebundle_(**kwargs)


def _fmt_usd(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


class TradeoffExplorer(LinkedFigure):
    """Pareto explorer over variants: quality vs cost per 1K requests, p95 latency as size.

    ``perf``: :func:`slamkit.store.aggregates.variant_summary` rows; ``scores``: item
    scores (``variant, item_id, metric, value``, e.g. :attr:`slamkit.Study.scores`);
    ``reference``: :func:`slamkit.cost.reference_point`;
    ``subsets``: ``item_id, subset`` (optional item grouping, e.g. AlpacaEval's source).
    The summary line names the cheapest variant on the frontier and the API/self-hosted
    cost ratio at the chosen traffic.
    """

    def __init__(
        self,
        perf: pd.DataFrame,
        scores: pd.DataFrame,
        reference: dict[str, Any] | None = None,
        subsets: pd.DataFrame | None = None,
        hourly_usd: float = 0.10,
        utilization: float = 0.5,
        requests_per_month: float = 100_000,
        metrics: Sequence[str] | None = None,
        chart: str = "pareto",
        metric: str | None = None,
    ) -> None:
        w = _ipywidgets()
        if perf.empty:
            raise SlamkitError(
                "TradeoffExplorer: no generations to explore; run notebook 03_generate (or "
                "`slamkit batch`) first."
            )
        self.perf, self.scores, self.reference = perf, scores, reference
        self.subsets = subsets
        metric_opts = list(metrics or sorted(scores["metric"].unique()))
        if not metric_opts:
            raise SlamkitError(
                "TradeoffExplorer: no quality scores stored; run notebook 04_quality first."
            )
        names = list(perf["variant"])
        subset_opts = ["all"]
        if subsets is not None and len(subsets):
            subset_opts += sorted(set(subsets["subset"]) - {"all"})
        style = {"description_width": "120px"}
        wide = w.Layout(width="420px")
        controls = {
            "variants": w.SelectMultiple(options=names, value=tuple(names), rows=min(6, len(names)),
                                         description="variants", style=style, layout=wide),
            "metric": w.Dropdown(options=metric_opts,
                                 value=metric if metric in metric_opts else metric_opts[0],
                                 description="quality metric", style=style, layout=wide),
            "subset": w.Dropdown(options=subset_opts, value="all", description="item subset",
                                 style=style, layout=wide),
            "hourly_usd": w.FloatSlider(value=hourly_usd, min=0.01, max=max(10.0, hourly_usd),
                                        step=0.01, description="price ($/hour)", style=style,
                                        layout=wide, readout_format=".2f"),
            "utilization": w.FloatSlider(value=utilization, min=0.05, max=1.0, step=0.05,
                                         description="utilization", style=style, layout=wide),
            "requests_per_month": w.FloatLogSlider(value=requests_per_month, base=10, min=2,
                                                   max=9, step=0.1, description="traffic (req/mo)",
                                                   style=style, layout=wide, readout_format=".3s"),
        }  # fmt: skip
        self.chart = chart
        super().__init__(controls, self._draw)

    @classmethod
    def for_study(cls, study: Any, metric: str | None = None, **kw: Any) -> TradeoffExplorer:
        """The explorer over a :class:`slamkit.Study` (its aggregates, prices and subsets),
        starting on ``metric`` when it is stored (else the first stored metric)."""
        return cls(
            study.perf, study.scores, reference=study.reference, subsets=study.subsets,
            hourly_usd=study.hourly_usd, utilization=study.utilization,
            requests_per_month=study.requests_per_month, metric=metric, **kw,
        )  # fmt: skip

    def frame(
        self, variants: Sequence[str], metric: str, subset: str, hourly_usd: float,
        utilization: float, **_: Any,
    ) -> pd.DataFrame:  # fmt: skip
        """The trade-off rows for these settings (what the chart shows)."""
        items = None
        if subset != "all" and self.subsets is not None:
            items = list(self.subsets.loc[self.subsets["subset"] == subset, "item_id"])
        q = frames.quality_summary(self.scores, metric, items=items)
        return frames.tradeoff_frame(self.perf, q, hourly_usd, utilization, variants=variants)

    def _draw(self, **v: Any) -> tuple[go.Figure, str]:
        if not v["variants"]:
            raise SlamkitError("pick at least one variant")
        d = self.frame(**v)
        if d.empty:
            raise SlamkitError(f"no scores for metric {v['metric']!r} on subset {v['subset']!r}")
        fig = charts.pareto_scatter(d, reference=self._ref(v), quality_label=v["metric"])
        if self.chart == "break_even" and self.reference:
            perf = self.perf[self.perf["variant"].isin(v["variants"])]
            fig = charts.break_even(
                cost.break_even_frame(perf, self.reference, v["hourly_usd"], v["utilization"])
            )
            fig.add_vline(x=v["requests_per_month"], line_dash="dot")
        front = d[charts.frontier_mask(d)]
        best = front.sort_values("cost_per_1k").iloc[0]
        traffic = v["requests_per_month"]
        rph = best.get("requests_per_hour")
        servers = cost.servers_needed(traffic, best["mean_latency_s"], v["utilization"], rph)
        monthly = cost.monthly_self_hosted(
            traffic, best["mean_latency_s"], v["hourly_usd"], v["utilization"], rph
        )
        text = (
            f"Cheapest variant on the frontier: <b>{html.escape(str(best['variant']))}</b>, "
            f"{_fmt_usd(best['cost_per_1k'])} per 1K requests, {v['metric']} "
            f"{best['quality']:.3g}; at {traffic:,.0f} requests/month it needs "
            f"{servers} server(s): {_fmt_usd(monthly)}/month"
        )
        if self.reference:
            api = self.reference["usd_per_request"] * traffic
            text += f" vs {_fmt_usd(api)}/month on {html.escape(self.reference['name'])}."
        return fig, text

    def _ref(self, v: Mapping[str, Any]) -> dict[str, Any] | None:
        return dict(self.reference) if self.reference else None


def clopper_pearson_lower(k: int, n: int, gamma: float) -> float:
    """One-sided lower confidence bound of a binomial rate at confidence ``gamma``."""
    from slamkit.smart.bounds import clopper_pearson

    return float(clopper_pearson(k, n, gamma, sided="lower")[0])


def select_cheapest(
    conform: pd.DataFrame, unit_cost: Mapping[str, float], delta: float, gamma: float
) -> dict[str, Any]:
    """Cheapest variant whose conformity lower bound (Clopper-Pearson, gamma) >= 1 - delta.

    A one-shot (non-sequential) rule over already-stored generations; ``conform``
    columns: ``variant``, ``item_id``, ``conform`` (0/1). Returns the choice, the bounds
    and a guarantee statement. For sequential profiling use :mod:`slamkit.smart`.
    """
    rows = []
    for var, g in conform.groupby("variant"):
        k, n = int(g["conform"].sum()), len(g)
        rows.append(
            {"variant": var, "k": k, "n": n, "rate": k / n if n else float("nan"),
             "lower": clopper_pearson_lower(k, n, gamma),
             "usd_per_request": float(unit_cost.get(var, float("nan")))}
        )  # fmt: skip
    tab = pd.DataFrame(rows).sort_values("usd_per_request")
    ok = tab[tab["lower"] >= 1 - delta]
    choice = None if ok.empty else ok.iloc[0]
    if choice is None:
        statement = (
            f"No variant reaches {1 - delta:.0%} conformity with confidence {gamma:.0%}: "
            "keep the reference."
        )
    else:
        statement = (
            f"With confidence {gamma:.0%}, {choice['variant']} matches the reference on at "
            f"least {choice['lower']:.1%} of items (>= {1 - delta:.0%} required; "
            f"{choice['k']}/{choice['n']} conformed)."
        )
    return {
        "choice": None if choice is None else str(choice["variant"]),
        "usd_per_request": None if choice is None else float(choice["usd_per_request"]),
        "table": tab,
        "guarantee": statement,
    }


def smart_selector(
    reference_cost: float, method: str = "anytime", seed: int = 0, batch: int = 10
) -> Callable[..., dict[str, Any]]:
    """A ``select`` for :class:`SelectionExplorer` that runs :mod:`slamkit.smart` profiling.

    The stored conformity of every (variant, item) answers the profiler's questions in a
    seeded random item order, so the choice, the saving (profiling cost included) and the
    guarantee are SMART's own (``method``: smart | smart-mix | anytime).
    """
    import random

    from slamkit.smart.profile import profile
    from slamkit.smart.select import choose, profile_options

    def select(
        conform: pd.DataFrame, unit_cost: Mapping[str, float], delta: float, gamma: float
    ) -> dict[str, Any]:
        items = sorted(conform["item_id"].unique())
        random.Random(seed).shuffle(items)
        cands = sorted(conform["variant"].unique())
        table = {
            (r.variant, r.item_id): (bool(r.conform), float(unit_cost[r.variant]))
            for r in conform.itertuples(index=False)
        }
        res = profile(
            items, cands, {m: float(unit_cost[m]) for m in cands},
            lambda i: float(reference_cost),
            lambda m, i: table.get((m, i), (False, float(unit_cost[m]))),
            delta, batch=batch,
            **profile_options(method, gamma, len(cands), delta, len(items), batch),
        )  # fmt: skip
        sel = choose(res, method, gamma)
        used = {m: r for m, r in sel.choice.items() if r > 0}
        name = " + ".join(f"{m} ({r:.0%})" for m, r in used.items()) if used else None
        if name == "reference (100%)":
            name = None
        return {
            "choice": name,
            "usd_per_request": sel.expected_cost / max(sel.n_items, 1),
            "saving": sel.saving,
            "guarantee": sel.guarantee,
            "selection": sel,
        }

    return select


class SelectionExplorer(LinkedFigure):
    """Delta / gamma sliders over model selection with a guarantee.

    ``conform``: ``variant, item_id, conform`` (0/1 equivalence with the reference);
    ``unit_cost``: variant -> USD per request; ``reference_cost``: USD per request of the
    reference. ``select(conform, unit_cost, delta, gamma) -> dict(choice,
    usd_per_request, guarantee[, saving])`` defaults to :func:`select_cheapest`;
    :func:`smart_selector` runs SMART's profiling instead. The chart is the
    saving against always using the reference over a grid of deltas, marked at the
    chosen delta.
    """

    def __init__(
        self,
        conform: pd.DataFrame,
        unit_cost: Mapping[str, float],
        reference_cost: float,
        delta: float = 0.1,
        gamma: float = 0.95,
        select: Callable[..., dict[str, Any]] | None = None,
        deltas: Sequence[float] = tuple(np.round(np.arange(0.02, 0.42, 0.02), 2)),
        method_label: str = "cheapest qualifying variant",
    ) -> None:
        w = _ipywidgets()
        self.conform, self.unit_cost, self.reference_cost = conform, dict(unit_cost), reference_cost
        self.select = select or select_cheapest
        self.method_label = method_label
        self.deltas = list(deltas)
        style = {"description_width": "120px"}
        controls = {
            "delta": w.FloatSlider(value=delta, min=0.01, max=0.5, step=0.01,
                                   description="delta (max error)", style=style),
            "gamma": w.FloatSlider(value=gamma, min=0.5, max=0.99, step=0.01,
                                   description="gamma (confidence)", style=style),
        }  # fmt: skip
        super().__init__(controls, self._draw)

    @classmethod
    def for_study(
        cls, study: Any, delta: float = 0.1, gamma: float = 0.95, method: str = "anytime"
    ) -> SelectionExplorer:
        """SMART (``method``) over a :class:`slamkit.Study`'s conformity and unit costs."""
        ref_cost = float(study.reference["usd_per_request"])
        return cls(
            study.conformity(), study.unit_costs, reference_cost=ref_cost, delta=delta,
            gamma=gamma, select=smart_selector(ref_cost, method=method),
            method_label=f"SMART ({method})",
        )  # fmt: skip

    def _saving(self, r: Mapping[str, Any]) -> float:
        if r.get("saving") is not None:
            return float(r["saving"])
        cost = r["usd_per_request"] if r["choice"] else self.reference_cost
        return self.reference_cost / cost if cost else float("nan")

    def curve(self, gamma: float) -> pd.DataFrame:
        rows = []
        for d in self.deltas:
            r = self.select(self.conform, self.unit_cost, d, gamma)
            rows.append({"delta": d, "method": self.method_label, "savings": self._saving(r),
                         "choice": r["choice"] or "reference"})  # fmt: skip
        return pd.DataFrame(rows)

    def _draw(self, delta: float, gamma: float) -> tuple[go.Figure, str]:
        fig = charts.smart_savings(self.curve(gamma), gamma=gamma)
        r = self.select(self.conform, self.unit_cost, delta, gamma)
        saving = self._saving(r)
        fig.add_trace(
            go.Scatter(x=[delta], y=[saving], mode="markers", name="chosen delta",
                       marker={"size": 14, "symbol": "diamond-open", "color": "black"},
                       hovertemplate="delta %{x:.2f}: %{y:.2f}x<extra></extra>")
        )  # fmt: skip
        choice = html.escape(r["choice"] or "the reference")
        text = f"Choice: <b>{choice}</b> ({saving:.2f}x cheaper). {html.escape(r['guarantee'])}"
        return fig, text
