"""Pure frames: DataFrame in, DataFrame out — what the charts, widgets and tables draw.

Nothing here reads the store or prices anything by itself: the inputs come from
:mod:`slamkit.store.aggregates` (per-variant summaries, per-item means), the prices from
:mod:`slamkit.cost`. :class:`slamkit.study.Study` wires them together for the notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from slamkit import cost
from slamkit.stats import mean_ci

#: headline column: share of generations that stopped at max_tokens, in percent
TRUNCATED_COL = "truncated at max_tokens (%)"


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

    ``scores`` columns: ``variant``, ``item_id``, ``metric``, ``value`` — per generation or
    already per item (:func:`slamkit.store.aggregates.item_means`; averaging is then a no-op).
    Returns ``variant, mean, lo, hi, n, level`` (the input of ``charts.quality_ci``).
    """
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


def tradeoff_frame(
    perf: pd.DataFrame,
    quality: pd.DataFrame,
    hourly_usd: float,
    utilization: float,
    variants: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Join performance and quality per variant and price it: the Pareto chart's input.

    ``perf``: :func:`slamkit.store.aggregates.variant_summary` rows (with ``bits``);
    ``quality``: :func:`quality_summary` output.
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
    d = cost.hosting_throughput(d)
    d["usd_per_request"] = [
        cost.self_hosted_usd_per_request(hourly_usd, lat, utilization, rph)
        for lat, rph in zip(d["mean_latency_s"], d["requests_per_hour"], strict=True)
    ]
    d["cost_per_1k"] = d["usd_per_request"] * 1000
    return d.reset_index(drop=True)


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


def conformity(scores: pd.DataFrame, metric: str, tau: float) -> pd.DataFrame:
    """``variant, item_id, conform``: 1 when the item's ``metric`` >= ``tau`` (sample 0)."""
    d = scores[(scores["metric"] == metric)]
    if "sample_index" in d:
        d = d[d["sample_index"] == 0]
    out = d[["variant", "item_id"]].copy()
    out["conform"] = (d["value"].astype(float) >= tau).astype(int).to_numpy()
    return out.reset_index(drop=True)


def bt_frame(bt: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """:func:`slamkit.stats.bradley_terry` output -> the columns of ``charts.bt_ratings``."""
    out = bt.rename(columns={"theta": "rating", "ci_lo": "lo", "ci_hi": "hi"})
    out["is_reference"] = out["model"] == reference if reference else False
    out["level"] = bt.attrs.get("conf", 0.95)
    return out


def _priced_from(basis: object) -> str:
    """The headline's short form of a ``throughput_basis``."""
    if cost.is_capacity_basis(basis):
        return "load test capacity"
    if isinstance(basis, str) and "NOT at the latency target" in basis:
        return "one at a time (load test: target missed)"
    return "one at a time"


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
            "priced from": _priced_from(getattr(r, "throughput_basis", None)),
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
                "priced from": "API prices",
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


def reference_table(refs: pd.DataFrame, subsets: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The first ``n`` references with their subset, length in characters and the first 160
    characters of the text (``refs``: reference rows with text; ``subsets``:
    ``item_id, subset``)."""
    t = refs.merge(subsets, on="item_id").head(n)
    t = t.assign(chars=t["text"].str.len(), text=t["text"].str.slice(0, 160))
    return t[["item_id", "subset", "source_model", "chars", "completion_tokens", "latency_s",
              "text"]]  # fmt: skip


# -- the variant matrix ------------------------------------------------------------------
#: the matrix's columns, in order (``{metric}`` is the quality metric's name)
MATRIX_COLUMNS = (
    "variant", "family", "quant", "bits per weight", "size (MB)", "license",
    "{metric}", "{metric} lo", "{metric} hi", "KLD vs parent", "KLD lo", "KLD hi",
    "same top-1 (%)", "drift base", "drift text", "drift n_ctx", "drift chunks",
    "drift tokens", "pp tok/s", "pp sd", "tg tok/s", "tg sd", "pp", "tg", "speed threads",
    "p95 latency (s)", "TTFT p50 (s)", "decode tok/s", "load (s)",
    "process peak RSS (MB)", "RSS growth at load (MB)",
    "reproducible greedy (%)", "reproducible sampled (%)", "re-runs",
)  # fmt: skip


def reproducibility(repro: pd.DataFrame) -> pd.DataFrame:
    """Per model_id (and variant): greedy / sampled cells re-run, the share of them whose
    every re-run equalled the stored text (in %), and the re-runs counted. Failed re-runs
    (``error`` set) are left out; a cell with none left is not counted.

    ``repro``: :func:`slamkit.store.readers.repro_results` rows (model_id, variant, gen_key,
    greedy, same, error).

    >>> r = pd.DataFrame({"model_id": ["m"] * 3, "variant": ["v"] * 3, "gen_key": ["a", "a", "b"],
    ...                   "greedy": [True] * 3, "same": [True, True, False], "error": [None] * 3})
    >>> reproducibility(r)[["greedy_cells", "greedy_pct", "reruns"]].iloc[0].tolist()
    [2.0, 50.0, 3.0]
    """
    cols = ["model_id", "variant", "greedy_cells", "greedy_pct", "sampled_cells",
            "sampled_pct", "reruns", "greedy_drifted"]  # fmt: skip
    if repro.empty:
        return pd.DataFrame(columns=cols)
    ok = repro[repro["error"].isna()] if "error" in repro else repro
    if ok.empty:
        return pd.DataFrame(columns=cols)
    cell = ok.groupby(
        ["model_id", "variant", "gen_key", "greedy"], as_index=False, dropna=False
    ).agg(same=("same", "all"), reruns=("same", "size"))
    rows = []
    for (mid, var), g in cell.groupby(["model_id", "variant"], dropna=False):
        gr, sa = g[g["greedy"].astype(bool)], g[~g["greedy"].astype(bool)]
        rows.append({
            "model_id": mid, "variant": var, "greedy_cells": len(gr),
            "greedy_pct": 100.0 * gr["same"].mean() if len(gr) else float("nan"),
            "sampled_cells": len(sa),
            "sampled_pct": 100.0 * sa["same"].mean() if len(sa) else float("nan"),
            "reruns": int(g["reruns"].sum()), "greedy_drifted": int((~gr["same"]).sum()),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def repro_note(repro: pd.DataFrame) -> str:
    """One line on determinism for the report: a WARNING naming the variants whose greedy
    cells drifted, or counting the re-runs that failed (their errors are in the ``repro``
    table), else how many reproduced.

    >>> repro_note(pd.DataFrame())
    'Determinism: no stored cell was re-run yet (slamkit repro).'
    """
    failed = int(repro["error"].notna().sum()) if "error" in repro and len(repro) else 0
    fail_note = (
        f"WARNING: {failed} re-run{'s' if failed != 1 else ''} failed (see the repro table's "
        "error column; run slamkit repro again to retry them)"
        if failed else ""
    )  # fmt: skip
    per = reproducibility(repro)
    if per.empty:
        if failed:
            return f"{fail_note}; no re-run completed, so determinism is unknown."
        return "Determinism: no stored cell was re-run yet (slamkit repro)."
    g, s = int(per["greedy_cells"].sum()), int(per["sampled_cells"].sum())
    bad = per[per["greedy_drifted"] > 0]
    if len(bad):
        names = ", ".join(f"{v} ({n} of {c})" for v, n, c in zip(
            bad["variant"], bad["greedy_drifted"], bad["greedy_cells"], strict=True))  # fmt: skip
        return (
            f"WARNING: greedy output is not reproducible for {names}: re-running the same cell "
            "(same model, prompt, seed) gave different text — compare thread counts and "
            "executors in the repro table before trusting single-run comparisons."
            + (f" Also {fail_note[9:]}." if failed else "")
        )
    same_sampled = float((per["sampled_pct"].fillna(0.0) * per["sampled_cells"]).sum()) / 100.0
    sampled = (
        f"; sampled cells reproduced with the same seed: {same_sampled:.0f} of {s} "
        f"({100.0 * same_sampled / s:.0f}%)"
        if s else "; no sampled cell was re-run"
    )  # fmt: skip
    head = f"{fail_note}. Of the completed re-runs: " if failed else "Determinism: all "
    return (
        f"{head}{'all ' if failed else ''}{g} greedy cells re-run ({int(per['reruns'].sum())} "
        f"re-runs across thread counts / executors) reproduced byte for byte{sampled}."
    )


def _newest(df: pd.DataFrame, key: str = "model_id") -> pd.DataFrame:
    if df.empty:
        return df
    return df.sort_values("created_at", ascending=False).drop_duplicates(key)


def variant_matrix(
    models: pd.DataFrame,
    quality: pd.DataFrame,
    perf: pd.DataFrame,
    drift: pd.DataFrame,
    speed: pd.DataFrame,
    repro: pd.DataFrame,
    metric: str = "quality",
    variants: Sequence[str] | None = None,
    *,
    drift_n_ctx: int = 128,
    drift_chunks: int | None = 4,
    drift_text_sha256: str | None = None,
    speed_pp: int = 64,
    speed_tg: int = 32,
    speed_threads: int | None = None,
) -> pd.DataFrame:
    """One row per variant: catalog facts, quality vs the reference with its CI, drift vs
    the parent, raw speed beside the real prompts' p95 latency, TTFT and decode rate, memory
    and reproducibility (:data:`MATRIX_COLUMNS`).

    ``models``: :func:`slamkit.store.readers.matrix_model_facts`; ``quality``:
    :func:`quality_summary` (variant, mean, lo, hi); ``perf``:
    :func:`slamkit.store.aggregates.variant_summary` (variant, p95_latency_s, ttft_p50_s,
    decode_tps); ``drift``,
    ``speed``, ``repro``: the readers of those tables. Rows: ``variants``, else every
    variant with quality or timings.

    Only rows measured with the given settings count — drift: ``drift_n_ctx``,
    ``drift_chunks`` (as asked: None = every window) and the text set
    ``drift_text_sha256`` (None: any); speed: ``speed_pp``, ``speed_tg`` and
    ``speed_threads`` (None: any) — and the matrix shows them (``drift text``, ``drift
    n_ctx``, ``drift chunks``, ``drift tokens``, ``pp``, ``tg``, ``speed threads``). Drift
    is the newest such row against the variant's parent (else against another base, named
    in ``drift base``; a model against itself never counts); speed the newest such row.
    The RSS columns are the measuring process's high-water mark after loading the model
    (order-dependent: it never falls) and its growth over the RSS before the load.
    Missing figures are NaN (shown as —).
    """
    cols = [c.format(metric=metric) for c in MATRIX_COLUMNS]
    names = list(variants) if variants else list(
        dict.fromkeys([*quality.get("variant", []), *perf.get("variant", [])])
    )  # fmt: skip
    facts = models.set_index("variant") if len(models) else pd.DataFrame()
    q = quality.set_index("variant") if len(quality) else pd.DataFrame()
    p = perf.set_index("variant") if len(perf) else pd.DataFrame()
    dr = drift.copy()
    if len(dr):
        asked = dr["chunks_asked"] if "chunks_asked" in dr else pd.Series(None, index=dr.index)
        keep = (dr["model_id"] != dr["base_model_id"]) & (dr["n_ctx"] == drift_n_ctx)
        keep &= asked.isna() if drift_chunks is None else (asked == drift_chunks)
        if drift_text_sha256 is not None:
            keep &= dr["text_sha256"] == drift_text_sha256
        dr = dr[keep]
    if len(dr):
        parent = dict(zip(models["model_id"], models["parent_model_id"], strict=True))
        dr["_parent"] = [parent.get(m) == b for m, b in zip(dr["model_id"], dr["base_model_id"],
                                                             strict=True)]  # fmt: skip
        dr = dr.sort_values(["_parent", "created_at"], ascending=False).drop_duplicates("model_id")
        dr = dr.set_index("model_id")
    if len(speed):
        keep = (speed["n_prompt"] == speed_pp) & (speed["n_gen"] == speed_tg)
        if speed_threads is not None:
            keep &= speed["n_threads"] == speed_threads
        speed = speed[keep]
    sp = _newest(speed)
    sp = sp.set_index("model_id") if len(sp) else sp
    rp = reproducibility(repro).set_index("model_id")

    def get(frame: pd.DataFrame, idx: Any, col: str) -> Any:
        if idx is None or not len(frame) or idx not in frame.index or col not in frame:
            return float("nan")
        v = frame.at[idx, col]
        return float("nan") if v is None else v

    rows = []
    for name in names:
        mid = get(facts, name, "model_id")
        mid = None if not isinstance(mid, str) else mid
        size, n_params = get(facts, name, "size_bytes"), get(facts, name, "n_params")
        bits = (
            8.0 * float(size) / float(n_params)
            if pd.notna(size) and pd.notna(n_params) and float(n_params) > 0 else float("nan")
        )  # fmt: skip
        rows.append([
            name, get(facts, name, "family"), get(facts, name, "quant"), bits,
            float(size) / 1e6 if pd.notna(size) else float("nan"), get(facts, name, "license"),
            get(q, name, "mean"), get(q, name, "lo"), get(q, name, "hi"),
            get(dr, mid, "kld_mean"), get(dr, mid, "kld_lo"), get(dr, mid, "kld_hi"),
            100.0 * get(dr, mid, "same_top1"), get(dr, mid, "base"),
            get(dr, mid, "text_set"), get(dr, mid, "n_ctx"), get(dr, mid, "n_chunks"),
            get(dr, mid, "n_tokens"),
            get(sp, mid, "pp_tps_mean"), get(sp, mid, "pp_tps_sd"),
            get(sp, mid, "tg_tps_mean"), get(sp, mid, "tg_tps_sd"),
            get(sp, mid, "n_prompt"), get(sp, mid, "n_gen"), get(sp, mid, "n_threads"),
            get(p, name, "p95_latency_s"), get(p, name, "ttft_p50_s"), get(p, name, "decode_tps"),
            get(sp, mid, "load_time_s"),
            get(sp, mid, "peak_rss_mb"), get(sp, mid, "model_mem_mb"),
            get(rp, mid, "greedy_pct"), get(rp, mid, "sampled_pct"), get(rp, mid, "reruns"),
        ])  # fmt: skip
    out = pd.DataFrame(rows, columns=cols)
    for c in cols:
        if c not in ("variant", "family", "quant", "license", "drift base", "drift text"):
            out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    return out
