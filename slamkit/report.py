"""Frames for the charts: read the store once, then pure transforms the widgets reuse.

``load_*`` functions take an open :class:`~slamkit.store.Store` and return DataFrames;
everything else is pure (DataFrame in, DataFrame out). Notebooks call these, then a
function of :mod:`slamkit.charts` or :mod:`slamkit.widgets`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from slamkit.charts import quant_bits
from slamkit.cost import (
    api_cost_per_request,
    check_utilization,
    count_tokens,
    instance_price,
    load_prices,
    self_hosted_cost_per_request,
    truncated_share,
)
from slamkit.errors import SlamkitError

HOURS_PER_MONTH = 730.0

#: headline column: share of generations that stopped at max_tokens, in percent
TRUNCATED_COL = "truncated at max_tokens (%)"

#: how missing values are shown in report tables (the DataFrames keep NaN/<NA>)
MISSING = "\u2014"

#: GPT-4 (8K) list prices of Dec 2023, USD per 1K tokens (METHOD.md section 4).
GPT4_DEC2023 = {"price_in_per_1k": 0.03, "price_out_per_1k": 0.06}


# -- loading (I/O) -----------------------------------------------------------------
def load_generations(store: Any, task_id: str | None = None) -> pd.DataFrame:
    """Generations joined with their model rows (variant name, family, quant)."""
    where, params = ("WHERE g.task_id = ?", [task_id]) if task_id else ("", [])
    return store.df(
        f"""
        SELECT g.gen_key, g.model_id, m.name AS variant, coalesce(m.family, m.architecture,
               m.name) AS family, coalesce(m.quant, '?') AS quant, m.n_params, m.size_bytes,
               g.task_id, g.item_id, g.sample_index, g.text, g.error, g.prompt_tokens,
               g.completion_tokens, g.ttft_s, g.prefill_tps, g.decode_tps, g.latency_s,
               g.load_time_s, g.peak_rss_mb, g.finish_reason
        FROM generations g LEFT JOIN models m USING (model_id) {where}
        ORDER BY variant, g.item_id, g.sample_index
        """,
        params,
    )


def load_references(
    store: Any, task_id: str | None = None, source_model: str | None = None
) -> pd.DataFrame:
    """Reference outputs (e.g. GPT-4) with usage and latency when they were captured."""
    clauses, params = [], []
    if task_id:
        clauses.append("task_id = ?")
        params.append(task_id)
    if source_model:
        clauses.append("source_model = ?")
        params.append(source_model)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return store.df(
        f"SELECT r.ref_id, r.task_id, r.item_id, r.source_model, r.sample_index, r.text, "
        f"r.prompt_tokens, r.completion_tokens, r.latency_s, r.ttft_s, i.prompt "
        f"FROM reference_outputs r LEFT JOIN items i USING (task_id, item_id) "
        f"{where.replace('task_id', 'r.task_id').replace('source_model', 'r.source_model')} "
        f"ORDER BY r.item_id, r.sample_index",
        params,
    )


def load_item_scores(store: Any, task_id: str | None = None) -> pd.DataFrame:
    """Per-generation metric values: variant, item_id, metric, value (errors excluded)."""
    where, params = ("AND g.task_id = ?", [task_id]) if task_id else ("", [])
    return store.df(
        f"""
        SELECT s.gen_key, m.name AS variant, g.model_id, g.item_id, g.sample_index, s.metric,
               s.metric_version, s.value
        FROM scores s JOIN generations g USING (gen_key) LEFT JOIN models m USING (model_id)
        WHERE s.value IS NOT NULL AND g.error IS NULL {where}
        """,
        params,
    )


def load_item_subsets(store: Any, task_id: str, field: str = "dataset") -> pd.DataFrame:
    """item_id -> subset (an item field such as AlpacaEval's ``dataset``; 'all' when absent)."""
    items = store.df(
        "SELECT item_id, position, fields FROM items WHERE task_id = ? ORDER BY position",
        [task_id],
    )

    def pick(js: str) -> str:
        try:
            return str(json.loads(js).get(field, "all"))
        except (ValueError, AttributeError):
            return "all"

    items["subset"] = [pick(f) for f in items["fields"]]
    return items[["item_id", "position", "subset"]]


# -- pure transforms -------------------------------------------------------------------
def quality_summary(
    scores: pd.DataFrame,
    metric: str,
    items: Sequence[str] | None = None,
    level: float = 0.95,
    seed: int = 0,
    method: str = "bca",
) -> pd.DataFrame:
    """Per variant: mean of ``metric`` over items (samples averaged per item first), CI, n.

    The interval is :func:`slamkit.stats.mean_ci` (seeded bootstrap, BCa by default).

    ``scores`` columns: ``variant``, ``item_id``, ``metric``, ``value``.
    Returns ``variant, mean, lo, hi, n, level`` (the input of ``charts.quality_ci``).
    """
    from slamkit.stats import mean_ci

    cols = ["variant", "mean", "lo", "hi", "n", "level"]
    d = scores[scores["metric"] == metric]
    if items is not None:
        d = d[d["item_id"].isin(list(items))]
    if d.empty:
        return pd.DataFrame(columns=cols)
    per_item = d.groupby(["variant", "item_id"], as_index=False)["value"].mean()
    ci = mean_ci(per_item, "value", by="variant", conf=level, seed=seed, method=method)
    out = ci.rename(columns={"estimate": "mean", "ci_lo": "lo", "ci_hi": "hi"})
    return out.assign(level=level)[cols]


def performance_summary(gens: pd.DataFrame) -> pd.DataFrame:
    """Per variant latency/throughput summary from ``load_generations`` rows (errors out)."""
    ok = gens[gens["error"].isna()] if "error" in gens else gens
    rows = []
    for v, g in ok.groupby("variant", sort=True):
        lat = g["latency_s"].astype(float).dropna()
        rows.append(
            {
                "variant": v,
                "family": g["family"].iloc[0],
                "quant": g["quant"].iloc[0],
                "bits": quant_bits(g["quant"].iloc[0]),
                "n": len(g),
                "mean_latency_s": lat.mean(),
                "p50_latency_s": lat.quantile(0.5),
                "p95_latency_s": lat.quantile(0.95),
                "ttft_p50_s": g["ttft_s"].astype(float).median(),
                "decode_tps": g["decode_tps"].astype(float).mean(),
                "prompt_tokens": g["prompt_tokens"].astype(float).mean(),
                "completion_tokens": g["completion_tokens"].astype(float).mean(),
                "truncated_share": truncated_share(g),
            }
        )
    return pd.DataFrame(rows)


def self_hosted_usd_per_request(
    hourly_usd: float, mean_latency_s: float, utilization: float
) -> float:
    """Hourly price / requests served per hour (one stream, at ``utilization`` of capacity).

    METHOD.md section 4: cost/request = hourly price / (3600 / latency x utilization).
    """
    check_utilization(utilization)
    if not mean_latency_s or not np.isfinite(mean_latency_s):
        return float("nan")
    return self_hosted_cost_per_request(hourly_usd, mean_latency_s, utilization)


def reference_point(
    refs: pd.DataFrame,
    price_in_per_1k: float = GPT4_DEC2023["price_in_per_1k"],
    price_out_per_1k: float = GPT4_DEC2023["price_out_per_1k"],
    name: str = "GPT-4",
    quality: float = 1.0,
    prompt_tokens: float | None = None,
) -> dict[str, Any]:
    """The reference API as a point for ``charts.pareto_scatter`` (cost from token usage).

    Missing token counts are counted offline with the cl100k tokenizer (``bpe-openai``)
    from the stored text and prompt; ``prompt_tokens`` overrides the prompt side.
    """
    comp = refs["completion_tokens"].astype(float)
    if comp.isna().any():
        comp = comp.fillna(pd.Series(_count_tokens(refs["text"]), index=refs.index))
    ptok = prompt_tokens
    if ptok is None:
        p = refs["prompt_tokens"].astype(float)
        if p.isna().any() and "prompt" in refs:  # + 7 tokens of chat framing, as slamkit.cost
            counted = pd.Series(_count_tokens(refs["prompt"].fillna("")), index=refs.index)
            p = p.fillna(counted + 7)
        ptok = float(p.mean()) if p.notna().any() else 0.0
    per_req = api_cost_per_request(ptok, float(comp.mean()), price_in_per_1k, price_out_per_1k)
    lat = refs["latency_s"].astype(float).dropna()
    return {
        "name": name,
        "quality": quality,
        "cost_per_1k": per_req * 1000,
        "usd_per_request": per_req,
        "p95_latency_s": float(lat.quantile(0.95)) if len(lat) else float("nan"),
        "prompt_tokens": ptok,
        "completion_tokens": float(comp.mean()),
    }


def _count_tokens(texts: pd.Series) -> list[float]:
    return [float(n) for n in count_tokens(list(texts))]


def tradeoff_frame(
    perf: pd.DataFrame,
    quality: pd.DataFrame,
    hourly_usd: float,
    utilization: float,
    variants: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Join performance and quality per variant and price it: the Pareto chart's input.

    ``perf``: ``performance_summary`` output; ``quality``: ``quality_summary`` output.
    Adds ``cost_per_1k`` (USD per 1,000 requests) and ``usd_per_request``.
    """
    d = perf.merge(
        quality.rename(columns={"mean": "quality", "lo": "quality_lo", "hi": "quality_hi",
                                "n": "n_items"}),
        on="variant",
        how="inner",
    )  # fmt: skip
    if variants is not None:
        d = d[d["variant"].isin(list(variants))]
    d = d.copy()
    d["usd_per_request"] = [
        self_hosted_usd_per_request(hourly_usd, lat, utilization) for lat in d["mean_latency_s"]
    ]
    d["cost_per_1k"] = d["usd_per_request"] * 1000
    return d.reset_index(drop=True)


def break_even_frame(
    perf: pd.DataFrame, reference: dict[str, Any], hourly_usd: float, utilization: float
) -> pd.DataFrame:
    """Rows for ``charts.break_even``: the API and each self-hosted variant."""
    rows: list[dict[str, Any]] = [
        {
            "variant": reference["name"],
            "kind": "api",
            "usd_per_request": reference["usd_per_request"],
            "monthly_fixed_usd": np.nan,
            "capacity_per_month": np.nan,
        }
    ]
    for r in perf.itertuples(index=False):
        cap = 3600.0 / r.mean_latency_s * utilization * HOURS_PER_MONTH
        rows.append(
            {
                "variant": r.variant,
                "kind": "self-hosted",
                "usd_per_request": np.nan,
                "monthly_fixed_usd": hourly_usd * HOURS_PER_MONTH,
                "capacity_per_month": cap,
            }
        )
    return pd.DataFrame(rows)


def cost_components(
    perf: pd.DataFrame, reference: dict[str, Any], hourly_usd: float, utilization: float
) -> pd.DataFrame:
    """Long rows for ``charts.cost_breakdown`` (USD per 1,000 requests by component)."""
    pin = reference.get("price_in_per_1k", GPT4_DEC2023["price_in_per_1k"])
    pout = reference.get("price_out_per_1k", GPT4_DEC2023["price_out_per_1k"])
    rows = [
        {"variant": reference["name"], "component": "API input tokens",
         "usd_per_1k": reference["prompt_tokens"] * pin},
        {"variant": reference["name"], "component": "API output tokens",
         "usd_per_1k": reference["completion_tokens"] * pout},
    ]  # fmt: skip
    for r in perf.itertuples(index=False):
        usd = self_hosted_usd_per_request(hourly_usd, r.mean_latency_s, utilization)
        rows.append({"variant": r.variant, "component": "hardware (self-hosted)",
                     "usd_per_1k": usd * 1000})  # fmt: skip
    return pd.DataFrame(rows)


def samples_table(gens: pd.DataFrame, refs: pd.DataFrame, n: int = 3, width: int = 300) -> str:
    """An HTML table of a few outputs beside the reference, every text HTML-escaped."""

    def cell(t: Any) -> str:
        s = "" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t)
        s = s if len(s) <= width else s[:width] + " ..."
        return html.escape(s).replace("\n", "<br>")

    items = list(dict.fromkeys(gens["item_id"]))[:n]
    ref_by_item = refs.drop_duplicates("item_id").set_index("item_id")["text"].to_dict()
    variants = sorted(gens["variant"].dropna().unique())
    head = "".join(f"<th>{html.escape(str(v))}</th>" for v in ["item", "reference", *variants])
    body = []
    for it in items:
        g = gens[(gens["item_id"] == it) & (gens["sample_index"] == 0)].set_index("variant")
        cells = [cell(it), cell(ref_by_item.get(it))] + [
            cell(g["text"].get(v) if v in g.index else None) for v in variants
        ]
        body.append(
            "<tr>"
            + "".join(f"<td style='vertical-align:top;text-align:left'>{c}</td>" for c in cells)
            + "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# -- one call per notebook cell ----------------------------------------------------------
class StoreData:
    """Everything the analysis notebooks show, read once (the store is closed after)."""

    def __init__(self, **frames: pd.DataFrame) -> None:
        self.gens: pd.DataFrame = frames["gens"]
        self.refs: pd.DataFrame = frames["refs"]
        self.scores: pd.DataFrame = frames["scores"]
        self.subsets: pd.DataFrame = frames["subsets"]
        self.runs: pd.DataFrame = frames["runs"]

    @property
    def perf(self) -> pd.DataFrame:
        return performance_summary(self.gens)

    @property
    def metrics(self) -> list[str]:
        return sorted(self.scores["metric"].unique()) if len(self.scores) else []

    def __repr__(self) -> str:
        return (
            f"<StoreData: {self.gens['variant'].nunique()} variants, "
            f"{self.gens['item_id'].nunique()} items, {len(self.gens)} generations, "
            f"{len(self.refs)} references, {len(self.scores)} scores>"
        )


def _sampling_matches(js: Any, temperature: float | None, max_tokens: int | None) -> bool:
    try:
        s = json.loads(js) if isinstance(js, str) else dict(js)
    except (TypeError, ValueError):
        return True
    if temperature is not None and float(s.get("temperature", temperature)) != float(temperature):
        return False
    return max_tokens is None or int(s.get("max_tokens", max_tokens)) == int(max_tokens)


def load(
    store_path: str,
    task_id: str = "alpaca_eval",
    models: Sequence[str] | None = None,
    n_items: int | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    reference_model: str | None = None,
) -> StoreData:
    """Open the store, read what the notebooks show, close it (DuckDB allows one writer).

    Filters: ``models`` (variant names; empty = all), the first ``n_items`` items of the
    task, and generations made with ``temperature``/``max_tokens``.
    """
    from slamkit.store import open_store

    with open_store(store_path) as st:
        gens = load_generations(st, task_id)
        gens = gens.merge(
            st.df("SELECT gen_key, sampling FROM generations WHERE task_id = ?", [task_id]),
            on="gen_key",
            how="left",
        )
        refs = load_references(st, task_id, reference_model)
        scores = load_item_scores(st, task_id)
        subsets = load_item_subsets(st, task_id)
        runs = st.df("SELECT * FROM runs ORDER BY started_at")
    if n_items:
        keep = set(subsets.sort_values("position")["item_id"].head(int(n_items)))
        gens, refs = gens[gens["item_id"].isin(keep)], refs[refs["item_id"].isin(keep)]
        subsets = subsets[subsets["item_id"].isin(keep)]
    if models:
        unknown = sorted(set(models) - set(gens["variant"]))
        if unknown:
            raise SlamkitError(
                f"No generations for model(s) {unknown} in {store_path} (task {task_id!r}); "
                f"stored: {sorted(gens['variant'].dropna().unique())}. Run 03_generate first."
            )
        gens = gens[gens["variant"].isin(list(models))]
    if temperature is not None or max_tokens is not None:
        ok = [_sampling_matches(s, temperature, max_tokens) for s in gens["sampling"]]
        gens = gens[ok]
    scores = scores[scores["gen_key"].isin(set(gens["gen_key"]))] if len(scores) else scores
    return StoreData(
        gens=gens.reset_index(drop=True), refs=refs.reset_index(drop=True),
        scores=scores.reset_index(drop=True), subsets=subsets.reset_index(drop=True), runs=runs,
    )  # fmt: skip


def latency_frame(gens: pd.DataFrame, refs: pd.DataFrame, reference_name: str) -> pd.DataFrame:
    """Per-request latency rows (``variant, latency_s, ttft_s, is_reference``) incl. the API."""
    own = gens[gens["error"].isna()][["variant", "latency_s", "ttft_s"]].assign(is_reference=False)
    api = refs.dropna(subset=["latency_s"])[["latency_s", "ttft_s"]].assign(
        variant=reference_name, is_reference=True
    )
    return pd.concat([api, own], ignore_index=True)[["variant", "latency_s", "ttft_s",
                                                     "is_reference"]]  # fmt: skip


def winrates_from_scores(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Pairwise win rates from per-item scores (higher score wins; equal = tie = half).

    A stand-in for judge or human verdicts when none are stored. Returns
    ``model_a, model_b, win_rate, n`` for every ordered pair.
    """
    d = scores[scores["metric"] == metric]
    wide = d.groupby(["item_id", "variant"])["value"].mean().unstack("variant")
    rows = []
    for a in wide.columns:
        for b in wide.columns:
            if a == b:
                continue
            both = wide[[a, b]].dropna()
            if both.empty:
                continue
            wins = (both[a] > both[b]).sum() + 0.5 * (both[a] == both[b]).sum()
            rows.append({"model_a": a, "model_b": b, "win_rate": wins / len(both), "n": len(both)})
    return pd.DataFrame(rows, columns=["model_a", "model_b", "win_rate", "n"])


def conformity(scores: pd.DataFrame, metric: str, tau: float) -> pd.DataFrame:
    """``variant, item_id, conform``: 1 when the item's ``metric`` >= ``tau`` (sample 0)."""
    d = scores[(scores["metric"] == metric)]
    if "sample_index" in d:
        d = d[d["sample_index"] == 0]
    out = d[["variant", "item_id"]].copy()
    out["conform"] = (d["value"].astype(float) >= tau).astype(int).to_numpy()
    return out.reset_index(drop=True)


def headline(
    perf: pd.DataFrame,
    quality: pd.DataFrame,
    reference: dict[str, Any] | None,
    hourly_usd: float,
    utilization: float,
    metric: str,
) -> pd.DataFrame:
    """The one-table summary: quality (CI), latency, speed and cost per variant + the API.

    Missing values stay NaN/<NA> (numeric columns); show it with :func:`display_table`.
    ``truncated at max_tokens (%)`` is the share of a variant's generations that hit the
    token limit: their cost per request is that of a cut-off answer.
    """
    d = tradeoff_frame(perf, quality, hourly_usd, utilization)
    rows = [
        {
            "variant": r.variant,
            metric: f"{r.quality:.3g} [{r.quality_lo:.3g}, {r.quality_hi:.3g}]",
            "items": int(r.n_items),
            "p50 latency (s)": round(float(r.p50_latency_s), 2),
            "p95 latency (s)": round(float(r.p95_latency_s), 2),
            "decode (tok/s)": round(float(r.decode_tps), 1),
            "USD / 1K requests": round(float(r.cost_per_1k), 4),
            TRUNCATED_COL: round(100 * float(getattr(r, "truncated_share", np.nan)), 1),
        }
        for r in d.itertuples(index=False)
    ]
    if reference:
        rows.append(
            {
                "variant": f"{reference['name']} (API reference)",
                metric: "reference",
                "items": pd.NA,
                "p50 latency (s)": None,
                "p95 latency (s)": round(reference["p95_latency_s"], 2)
                if np.isfinite(reference["p95_latency_s"])
                else None,
                "decode (tok/s)": None,
                "USD / 1K requests": round(reference["cost_per_1k"], 4),
                TRUNCATED_COL: None,
            }
        )
    out = pd.DataFrame(rows)
    out[TRUNCATED_COL] = out[TRUNCATED_COL].astype(float)
    out["items"] = out["items"].astype("Int64")
    return out


def provenance(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table trimmed to what a reader needs to reproduce the numbers."""
    cols = ["run_id", "kind", "started_at", "slamkit_version", "llama_cpp_python_version",
            "n_threads", "n_threads_batch", "n_gpu_layers", "seed", "git_revision"]  # fmt: skip
    return runs[[c for c in cols if c in runs.columns]].set_index("run_id")


class Table:
    """A DataFrame shown with missing values as an em dash (display only).

    ``frame`` is the untouched DataFrame (numeric NaN/<NA>, for code and tests); the
    notebook shows the HTML (escaped) or text rendering with ``MISSING`` in the gaps.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def _shown(self) -> pd.DataFrame:
        d = self.frame.copy()
        for c in d.columns:  # pandas prints <NA>/None whatever na_rep says, unless NaN
            col = d[c]
            textual = pd.api.types.is_object_dtype(col.dtype) or isinstance(
                col.dtype, pd.api.extensions.ExtensionDtype
            )
            if textual and col.isna().any():
                d[c] = col.astype(object).where(col.notna(), np.nan)
        return d

    def _repr_html_(self) -> str:
        return self._shown().to_html(na_rep=MISSING, escape=True)

    def __repr__(self) -> str:
        return self._shown().to_string(na_rep=MISSING)


def display_table(df: pd.DataFrame) -> Table:
    """``df`` for a notebook cell, with NaN/<NA>/None/NaT shown as an em dash."""
    return Table(df)


def selection_table(selection: Any) -> pd.DataFrame:
    """Per candidate of a SMART selection: conformity, its Clopper-Pearson interval, verdict.

    ``selection``: a :class:`slamkit.smart.Selection`, or a ``selections`` row (dict or
    Series; ``details`` may be JSON text). Read from ``details["models"]`` (what profiling
    stored: k conforming of n profiled, the method's own bounds and state). Returns one
    row per model: ``model, conforming, profiled, conformity, cp_lo, cp_hi`` (two-sided
    Clopper-Pearson at confidence gamma), ``bound_lo, bound_hi`` (the bounds the method
    decided with, e.g. the anytime-valid confidence sequence), ``target`` (1 - delta) and
    ``verdict``: *invalid* (upper bound < target), *satisfied* (lower bound >= target) or
    *unknown* (the interval contains the target, or the model was not profiled).
    """
    from slamkit.smart.bounds import clopper_pearson

    row = _selection_row(selection)
    details = row["details"]
    if isinstance(details, str):
        details = json.loads(details)
    gamma, delta = float(row["gamma"]), float(row["delta"])
    cols = ["model", "conforming", "profiled", "conformity", "cp_lo", "cp_hi", "bound_lo",
            "bound_hi", "target", "verdict"]  # fmt: skip
    rows = []
    for m in (details or {}).get("models", []):
        k, n = int(m.get("k") or 0), int(m.get("n") or 0)
        lo, hi = clopper_pearson(k, n, gamma) if n else (np.nan, np.nan)
        rows.append(
            {"model": m["model"], "conforming": k, "profiled": n,
             "conformity": k / n if n else np.nan, "cp_lo": float(lo), "cp_hi": float(hi),
             "bound_lo": m.get("lower") if n else np.nan,
             "bound_hi": m.get("upper") if n else np.nan,
             "target": 1 - delta, "verdict": m.get("state") or "unknown"}
        )  # fmt: skip
    out = pd.DataFrame(rows, columns=cols)
    for c in ("bound_lo", "bound_hi"):
        out[c] = out[c].astype(float)
    return out


def _selection_row(selection: Any) -> Any:
    if isinstance(selection, (dict, pd.Series)):
        return selection
    return {k: getattr(selection, k) for k in ("details", "gamma", "delta")}


def selection_display(selection: Any) -> Table:
    """:func:`selection_table` as the report shows it: counts, intervals, verdict vs target."""
    t = selection_table(selection)
    gamma = float(_selection_row(selection)["gamma"])

    def iv(lo: float, hi: float) -> str | None:
        return None if pd.isna(lo) else f"[{lo:.3f}, {hi:.3f}]"

    shown = pd.DataFrame(
        {
            "model": t["model"],
            "conforming / profiled": [f"{k}/{n}" for k, n in zip(t["conforming"],
                                                                  t["profiled"], strict=True)],
            "conformity": t["conformity"].round(3),
            f"Clopper-Pearson {gamma:.0%} CI": [
                iv(a, b) for a, b in zip(t["cp_lo"], t["cp_hi"], strict=True)
            ],
            "bounds used by the method": [
                iv(a, b) for a, b in zip(t["bound_lo"], t["bound_hi"], strict=True)
            ],
            "target (1 - delta)": t["target"].round(3),
            "verdict (method's bounds)": t["verdict"],
        }
    )  # fmt: skip
    return Table(shown.set_index("model"))


def verdicts_from_scores(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Pairwise verdicts (``model_a, model_b, winner`` a|b|tie) from per-item scores.

    For :func:`slamkit.stats.bradley_terry` when no judge or human verdicts are stored:
    on each item, the variant with the higher ``metric`` wins (equal = tie).
    """
    d = scores[scores["metric"] == metric]
    wide = d.groupby(["item_id", "variant"])["value"].mean().unstack("variant")
    names = list(wide.columns)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = wide[[a, b]].dropna()
            for va, vb in zip(both[a], both[b], strict=True):
                w = "a" if va > vb else "b" if vb > va else "tie"
                rows.append({"model_a": a, "model_b": b, "winner": w})
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def bt_frame(bt: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """:func:`slamkit.stats.bradley_terry` output -> the columns of ``charts.bt_ratings``."""
    out = bt.rename(columns={"theta": "rating", "ci_lo": "lo", "ci_hi": "hi"})
    out["is_reference"] = out["model"] == reference if reference else False
    out["level"] = bt.attrs.get("conf", 0.95)
    return out


class _Result:
    """A fetched DuckDB result that outlives its connection (fetchone/fetchall/df)."""

    def __init__(self, rows: list[tuple[Any, ...]], frame: pd.DataFrame | None = None) -> None:
        self.rows, self.frame = rows, frame

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)


class _ShortDB:
    def __init__(self, path: str) -> None:
        self.path = path

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Result:
        from slamkit.store import open_store

        with open_store(self.path) as st:
            return _Result(st.db.execute(sql, params or []).fetchall())


class ShortLivedStore:
    """Store look-alike that opens the DuckDB file for each call and closes it at once.

    For widgets that live for hours in a notebook (the human A/B widget): the store is
    never held open between clicks, so other notebooks and ``slamkit`` commands can write.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.db = _ShortDB(self.path)

    def _call(self, name: str, *args: Any, **kw: Any) -> Any:
        from slamkit.store import open_store

        with open_store(self.path) as st:
            return getattr(st, name)(*args, **kw)

    def df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        return self._call("df", sql, params)

    def insert(self, table: str, row: dict[str, Any], on_conflict: str = "DO NOTHING") -> bool:
        return self._call("insert", table, row, on_conflict)

    def insert_many(self, table: str, rows: Any, on_conflict: str = "DO NOTHING") -> int:
        return self._call("insert_many", table, list(rows), on_conflict)

    def count(self, table: str, where: str = "", params: Sequence[Any] | None = None) -> int:
        return self._call("count", table, where, params)

    def existing(self, table: str, key: str, keys: Any) -> set[str]:
        return self._call("existing", table, key, list(keys))

    def close(self) -> None:
        """Nothing is held open."""


def instance_hourly(instance: str) -> float:
    """Hourly USD price of ``instance`` from the dated price table (data/prices.csv)."""
    return float(instance_price(load_prices(), instance)["hourly_usd"])


def simulation_long(path: str | None = None, setting: str = "IMDB") -> pd.DataFrame:
    """SMART simulation results (data/simulation_results.csv) for ``charts.smart_savings``."""
    from pathlib import Path

    p = (
        Path(path)
        if path
        else Path(__file__).resolve().parent.parent / "data" / ("simulation_results.csv")
    )
    if not p.exists():
        raise SlamkitError(f"{p} is missing: run `slamkit simulate` to produce it.")
    w = pd.read_csv(p)
    if setting not in set(w["setting"]):
        raise SlamkitError(f"{p} has no setting {setting!r}; it has {sorted(set(w['setting']))}.")
    w = w[w["setting"] == setting]
    names = {"smart": "SMART", "mix": "SMART-ModelMix", "anytime": "anytime-valid (slamkit)"}
    rows = []
    for r in w.to_dict("records"):
        for m, label in names.items():
            if f"saving_{m}" in r:
                rows.append({"delta": r["delta"], "method": label, "savings": r[f"saving_{m}"],
                             "violation_rate": r.get(f"violation_{m}")})  # fmt: skip
    out = pd.DataFrame(rows)
    out.attrs["source"] = simulation_source(setting, _simulation_seeds(p))
    return out


def simulation_source(setting: str, seeds: int | None = None) -> str:
    """The label every chart of simulated SMART results carries (it is not the user's data)."""
    runs = f", {seeds} seeds" if seeds else ""
    return f"Simulated: {setting} setting of Jo & Trummer (SMART){runs} \u2014 not your data"


def _simulation_seeds(csv: Any) -> int | None:
    """Seeds per cell, from the header the simulator writes beside the CSV (``.md``)."""
    import re
    from pathlib import Path

    md = Path(csv).with_suffix(".md")
    if not md.exists():
        return None
    m = re.search(r"([\d,]+) seeds per cell", md.read_text(encoding="utf-8")[:2000])
    return int(m.group(1).replace(",", "")) if m else None


def pairwise_verdicts(
    store_path: str, scores: pd.DataFrame, metric: str, task_id: str,
    judge_model: str | None = None,
) -> tuple[pd.DataFrame, str]:  # fmt: skip
    """Verdicts for Bradley-Terry: the LLM judge's when stored, else per-item ``metric``.

    Returns ``(verdicts, source)``; ``source`` says where they came from (for the title).
    """
    if judge_model:
        from slamkit.stats import verdicts_from_store
        from slamkit.store import open_store

        with open_store(store_path) as st:
            v = verdicts_from_store(st, "judge", task_id, judge_model=judge_model)
        if len(v):
            return v, f"judge {judge_model}"
    return verdicts_from_scores(scores, metric), f"per-item {metric} (no judge verdicts)"
