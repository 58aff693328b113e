"""Latency consistency (SLaM's "consistency" claim, made measurable).

Per model and metric (time to first token ``ttft_s``, end-to-end ``latency_s``, decode
tokens/s ``decode_tps``): p50 / p90 / p95 / p99, mean, standard deviation, coefficient of
variation (std / mean) and tail ratio (p99 / p50), each with a seeded percentile bootstrap
CI. Works on generations rows and, side by side, on the reference API's latencies stored
in ``reference_outputs`` (:func:`with_reference`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from slamkit.errors import SlamkitError

METRICS = ("ttft_s", "latency_s", "decode_tps")
STATS = ("p50", "p90", "p95", "p99", "mean", "std", "cv", "tail_ratio")
_Q = np.array([0.5, 0.9, 0.95, 0.99])


def _stats(x: np.ndarray) -> np.ndarray:
    """Rows of samples (..., n) -> (..., 8) statistics in STATS order."""
    q = np.quantile(x, _Q, axis=-1)  # (4, ...)
    mean = x.mean(axis=-1)
    std = x.std(axis=-1, ddof=1) if x.shape[-1] > 1 else np.full(mean.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = std / mean
        tail = q[3] / q[0]
    return np.stack([q[0], q[1], q[2], q[3], mean, std, cv, tail], axis=-1)


def summarize(
    values: Sequence[float] | np.ndarray, n_boot: int = 1000, conf: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """One metric's statistics with percentile-bootstrap CIs (NaNs dropped)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return pd.DataFrame({"stat": STATS, "value": np.nan, "ci_lo": np.nan, "ci_hi": np.nan})
    point = _stats(x)
    rng = np.random.default_rng(seed)
    chunk = max(1, int(2e7 // len(x)))
    boots = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(x), size=(min(chunk, n_boot - start), len(x)))
        boots.append(_stats(x[idx]))
    b = np.concatenate(boots)
    a = (1 - conf) / 2
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanquantile(b, [a, 1 - a], axis=0) if len(x) > 1 else (point, point)
    return pd.DataFrame({"stat": STATS, "value": point, "ci_lo": lo, "ci_hi": hi})


def latency_summary(
    df: pd.DataFrame,
    metrics: Sequence[str] = METRICS,
    by: str = "model",
    n_boot: int = 1000,
    conf: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Long table: one row per (group, metric, stat) with n, value, ci_lo, ci_hi.

    Rows with an ``error`` are ignored; metrics missing from ``df`` are skipped, so the same
    call works on generations and on reference rows (which have no decode_tps).
    """
    if by not in df.columns:
        raise SlamkitError(f"Group column {by!r} not in the data ({', '.join(df.columns)}).")
    d = df[df["error"].isna()] if "error" in df.columns else df
    present = [m for m in metrics if m in d.columns]
    if not present:
        raise SlamkitError(f"None of the latency columns {list(metrics)} is in the data.")
    parts = []
    extra = [c for c in ("source",) if c in d.columns and c != by]
    for key, g in d.groupby(by, sort=True):
        for m in present:
            x = pd.to_numeric(g[m], errors="coerce").to_numpy(float)
            n = int(np.isfinite(x).sum())
            if n == 0:
                continue
            s = summarize(x, n_boot, conf, seed)
            s.insert(0, "n", n)
            s.insert(0, "metric", m)
            s.insert(0, by, key)
            for c in extra:
                s[c] = g[c].iloc[0]
            parts.append(s)
    if not parts:
        return pd.DataFrame(columns=[by, "metric", "n", "stat", "value", "ci_lo", "ci_hi"])
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update({"n_boot": n_boot, "conf": conf, "seed": seed})
    return out


def wide(summary: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """One row per (group, metric); columns p50, p50_lo, p50_hi, ..., tail_ratio_hi."""
    idx = [by, "metric", "n"] + (["source"] if "source" in summary.columns else [])
    w = summary.pivot_table(index=idx, columns="stat", values=["value", "ci_lo", "ci_hi"])
    cols = {}
    for s in STATS:
        if ("value", s) in w.columns:
            cols[s] = w[("value", s)]
            cols[f"{s}_lo"] = w[("ci_lo", s)]
            cols[f"{s}_hi"] = w[("ci_hi", s)]
    return pd.DataFrame(cols).reset_index()


def with_reference(
    generations: pd.DataFrame,
    references: pd.DataFrame,
    model_col: str = "model",
    reference_col: str = "source_model",
) -> pd.DataFrame:
    """Stack generation rows (source 'self-hosted') and reference_outputs rows (source
    'reference API', model = their source_model) so one summary shows both side by side."""
    g = generations.assign(source="self-hosted")
    r = references.rename(columns={reference_col: model_col}).assign(source="reference API")
    keep = [model_col, "source", "error", *METRICS]
    g = g[[c for c in keep if c in g.columns]]
    r = r[[c for c in keep if c in r.columns]]
    r = r.dropna(subset=[c for c in ("latency_s", "ttft_s") if c in r.columns], how="all")
    return pd.concat([g, r], ignore_index=True)
