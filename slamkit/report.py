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
from slamkit.errors import SlamkitError

HOURS_PER_MONTH = 730.0

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
               g.load_time_s, g.peak_rss_mb
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
        f"SELECT ref_id, task_id, item_id, source_model, sample_index, text, prompt_tokens, "
        f"completion_tokens, latency_s, ttft_s FROM reference_outputs {where} "
        f"ORDER BY item_id, sample_index",
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
def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI (seeded). Uses slamkit.stats when it offers one."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return (float("nan"),) * 3
    if len(x) == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(x.mean()), float(lo), float(hi)


def quality_summary(
    scores: pd.DataFrame,
    metric: str,
    items: Sequence[str] | None = None,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per variant: mean of ``metric`` over items (samples averaged per item first), CI, n.

    ``scores`` columns: ``variant``, ``item_id``, ``metric``, ``value``.
    Returns ``variant, mean, lo, hi, n, level`` (the input of ``charts.quality_ci``).
    """
    d = scores[scores["metric"] == metric]
    if items is not None:
        d = d[d["item_id"].isin(list(items))]
    per_item = d.groupby(["variant", "item_id"], as_index=False)["value"].mean()
    rows = []
    for v, g in per_item.groupby("variant", sort=True):
        m, lo, hi = bootstrap_ci(g["value"].to_numpy(), level=level, seed=seed)
        rows.append({"variant": v, "mean": m, "lo": lo, "hi": hi, "n": len(g), "level": level})
    return pd.DataFrame(rows, columns=["variant", "mean", "lo", "hi", "n", "level"])


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
            }
        )
    return pd.DataFrame(rows)


def self_hosted_usd_per_request(
    hourly_usd: float, mean_latency_s: float, utilization: float
) -> float:
    """Hourly price / requests served per hour (one stream, at ``utilization`` of capacity).

    METHOD.md section 4: cost/request = hourly price / (3600 / latency x utilization).
    """
    if not 0 < utilization <= 1:
        raise SlamkitError(f"utilization={utilization}: use a fraction in (0, 1].")
    if not mean_latency_s or not np.isfinite(mean_latency_s):
        return float("nan")
    return hourly_usd / (3600.0 / mean_latency_s * utilization)


def api_usd_per_request(
    prompt_tokens: float, completion_tokens: float, price_in_per_1k: float, price_out_per_1k: float
) -> float:
    """tokens_in x price_in + tokens_out x price_out, prices per 1K tokens."""
    return prompt_tokens * price_in_per_1k / 1000 + completion_tokens * price_out_per_1k / 1000


def reference_point(
    refs: pd.DataFrame,
    price_in_per_1k: float = GPT4_DEC2023["price_in_per_1k"],
    price_out_per_1k: float = GPT4_DEC2023["price_out_per_1k"],
    name: str = "GPT-4",
    quality: float = 1.0,
    prompt_tokens: float | None = None,
) -> dict[str, Any]:
    """The reference API as a point for ``charts.pareto_scatter`` (cost from token usage).

    Missing completion-token counts are counted offline with the cl100k tokenizer
    (``bpe-openai``) from the stored text; ``prompt_tokens`` overrides the prompt side.
    """
    comp = refs["completion_tokens"].astype(float)
    if comp.isna().any():
        comp = comp.fillna(pd.Series(_count_tokens(refs["text"]), index=refs.index))
    ptok = prompt_tokens
    if ptok is None:
        p = refs["prompt_tokens"].astype(float)
        ptok = float(p.mean()) if p.notna().any() else 0.0
    per_req = api_usd_per_request(ptok, float(comp.mean()), price_in_per_1k, price_out_per_1k)
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
    try:
        import bpe_openai

        enc = bpe_openai.get_encoding("cl100k_base")
        return [float(len(enc.encode(t or ""))) for t in texts]
    except Exception:  # pragma: no cover - bpe-openai is a core dependency
        return [len(str(t or "")) / 4.0 for t in texts]


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
    """The one-table summary: quality (CI), latency, speed and cost per variant + the API."""
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
            }
        )
    out = pd.DataFrame(rows)
    out["items"] = out["items"].astype("Int64")
    return out


def provenance(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table trimmed to what a reader needs to reproduce the numbers."""
    cols = ["run_id", "kind", "started_at", "slamkit_version", "llama_cpp_python_version",
            "n_threads", "n_threads_batch", "n_gpu_layers", "seed", "git_revision"]  # fmt: skip
    return runs[[c for c in cols if c in runs.columns]].set_index("run_id")
