"""Per-variant aggregates computed by DuckDB: what the summary tables and widgets show.

Nothing here reads a text. One query per frame, over the :class:`Selection` of a study:

* :func:`variant_summary` — count, latency mean/p50/p90/p95/p99, TTFT p50, decode and
  prefill rates, token counts (for cost) and the share truncated at ``max_tokens``.
* :func:`item_means` — per (variant, item, metric) the mean over samples: the input of
  the bootstrap CIs, paired tests and Bradley-Terry (per-item values, nothing else).
* :func:`latency_values` — per successful generation only ``latency_s``, ``ttft_s`` and
  ``decode_tps``
  (for distributions and percentile CIs).
* :func:`timing_counts` — how the selection's rows were timed (executor, in flight).
* :func:`conformity` — per (variant, item) whether sample 0 reaches a metric threshold.

Percentiles are ``quantile_cont`` (linear interpolation, as pandas' default).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from slamkit.store.db import Store
from slamkit.store.readers import _CURRENT_SCORES, _GEN_EXPR, Scope, Selection, scope

#: the columns of :func:`variant_summary`
SUMMARY_COLUMNS = [
    "variant", "family", "quant", "n_params", "size_bytes", "n", "mean_latency_s",
    "p50_latency_s", "p90_latency_s", "p95_latency_s", "p99_latency_s", "ttft_p50_s",
    "decode_tps", "prefill_tps", "prompt_tokens", "completion_tokens", "truncated_share",
    "n_timed",
]  # fmt: skip


def variant_summary(store: Store, selection: Selection | Scope) -> pd.DataFrame:
    """One row per variant (failed generations left out), ordered by variant.

    ``truncated_share`` is the share of outputs that stopped at the token limit:
    ``finish_reason = 'length'`` among rows that record a finish reason, else
    ``completion_tokens >= max_tokens`` of the row's sampling settings; NaN when neither
    is known.

    Latencies and rates come from the rows the selection's ``timings`` admits (default:
    timed in isolation); ``n_timed`` counts them. ``n``, tokens and the truncated share
    count every successful row.
    """
    v = _GEN_EXPR
    sc = scope(store, selection)
    t = f"FILTER (WHERE {sc.timed})"
    df = sc.query(
        f"""{v["variant"]} AS variant, any_value({v["family"]}) AS family,
            any_value({v["quant"]}) AS quant, any_value(m.n_params) AS n_params,
            any_value(m.size_bytes) AS size_bytes, count(*) AS n,
            avg(g.latency_s) {t} AS mean_latency_s,
            quantile_cont(g.latency_s, 0.5) {t} AS p50_latency_s,
            quantile_cont(g.latency_s, 0.9) {t} AS p90_latency_s,
            quantile_cont(g.latency_s, 0.95) {t} AS p95_latency_s,
            quantile_cont(g.latency_s, 0.99) {t} AS p99_latency_s,
            quantile_cont(g.ttft_s, 0.5) {t} AS ttft_p50_s,
            avg(g.decode_tps) {t} AS decode_tps, avg(g.prefill_tps) {t} AS prefill_tps,
            avg(g.prompt_tokens) AS prompt_tokens, avg(g.completion_tokens) AS completion_tokens,
            CASE WHEN count(g.finish_reason) > 0
                 THEN avg(CASE WHEN g.finish_reason IS NULL THEN NULL
                               WHEN g.finish_reason = 'length' THEN 1.0 ELSE 0.0 END)
                 ELSE avg(CASE WHEN g.completion_tokens IS NULL OR s.max_tokens IS NULL
                               THEN NULL
                               WHEN g.completion_tokens >= s.max_tokens THEN 1.0
                               ELSE 0.0 END) END AS truncated_share,
            count(*) {t} AS n_timed""",
        "GROUP BY 1 ORDER BY 1",
        extra_where="g.error IS NULL",
    )
    for c in SUMMARY_COLUMNS[6:-1]:
        df[c] = df[c].astype(float)
    df["n"] = df["n"].astype(int)
    df["n_timed"] = df["n_timed"].astype(int)
    return df[SUMMARY_COLUMNS]


def item_means(
    store: Store, selection: Selection | Scope, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """``variant, item_id, metric, value, n_samples``: each metric averaged over a
    variant's successful samples of an item (``metrics``: only those; None = all), of each
    metric's newest stored version only.

    Grouped by model id and item before the model names are joined (the join of a million
    scores to a million generations is the cost; everything after it is small)."""
    sc = scope(store, selection)
    only = " AND sc.metric IN (SELECT unnest(?))" if metrics is not None else ""
    gens = sc.generations_in_scope("g.gen_key, g.item_id, g.model_id", "g.error IS NULL")
    sql = f"""
        WITH gg AS ({gens}),
        agg AS (
            SELECT gg.model_id, gg.item_id, sc.metric, sc.metric_version,
                   sum(sc.value) AS total, count(*) AS n
            FROM scores sc JOIN gg ON gg.gen_key = sc.gen_key
            WHERE sc.value IS NOT NULL{only}
            GROUP BY 1, 2, 3, 4
        )
        SELECT coalesce(m.name, a.model_id) AS variant, a.item_id, a.metric,
               a.total / a.n AS value, a.n AS n_samples
        FROM agg a
        JOIN (SELECT metric, max(metric_version) AS v FROM agg GROUP BY 1) lv
          ON lv.metric = a.metric AND lv.v = a.metric_version
        LEFT JOIN models m ON m.model_id = a.model_id
        ORDER BY 1, 3, 2
    """
    params = [*sc.params, *([list(metrics)] if metrics is not None else [])]
    return sc.run(sql, params)


def latency_values(store: Store, selection: Selection | Scope) -> pd.DataFrame:
    """``variant, latency_s, ttft_s, decode_tps, in_flight`` of every successful
    generation the selection's ``timings`` admits (default: timed in isolation)."""
    sc = scope(store, selection)
    return sc.query(
        f"{_GEN_EXPR['variant']} AS variant, g.latency_s, g.ttft_s, g.decode_tps, "
        "coalesce(g.in_flight, 1) AS in_flight",
        "ORDER BY 1",
        extra_where=f"g.error IS NULL AND {sc.timed}",
    )


def timing_counts(store: Store, selection: Selection | Scope) -> pd.DataFrame:
    """``executor, in_flight, n``: the selection's successful generations by how they
    were timed (executor and requests in flight; 1 = in isolation)."""
    return scope(store, selection).query(
        "coalesce(g.executor, 'sequential') AS executor, coalesce(g.in_flight, 1) AS "
        "in_flight, count(*) AS n",
        "GROUP BY 1, 2 ORDER BY 1, 2",
        extra_where="g.error IS NULL",
    )


def conformity(store: Store, selection: Selection | Scope, metric: str, tau: float) -> pd.DataFrame:
    """``variant, item_id, conform``: 1 when sample 0's ``metric`` is >= ``tau``."""
    df = scope(store, selection).query(
        f"{_GEN_EXPR['variant']} AS variant, g.item_id, sc.value",
        "ORDER BY 1, 2",
        extra_where="g.error IS NULL AND sc.value IS NOT NULL AND g.sample_index = 0 "
        "AND sc.metric = ?",
        source=_CURRENT_SCORES,
        extra_params=[metric],
    )
    df["conform"] = (df["value"].astype(float) >= float(tau)).astype(int)
    return df[["variant", "item_id", "conform"]]
