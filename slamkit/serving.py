"""Serving analysis of load tests (:mod:`slamkit.load`): per load point, the latency
percentiles with CIs, throughput, errors, goodput under a latency target, the knee of the
concurrency sweep and the **capacity** — the highest request rate whose requests meet the
target — which the cost model prices self-hosting from (:func:`capacity_frame`).

Definitions (per point; a point is one offered load: ``concurrency`` requests kept in
flight, or Poisson arrivals at ``rate_rps``):

* ``ttft_s`` time to first token; ``tpot_s`` time per output token after the first,
  (e2e - ttft) / (tokens - 1); ``itl_s`` the gaps between streamed tokens (pooled over the
  point's requests); ``e2e_s`` end to end. Each with p50 / p90 / p95 / p99 and a 95 % CI:
  distribution-free order-statistic intervals for the per-request metrics (NaN upper
  bound when the point has too few requests for one), a bootstrap over requests for the
  pooled inter-token gaps (gaps of one request are not independent).
* ``throughput_rps`` answered requests / the point's duration (first send to last
  answer); ``output_tps`` their output tokens / duration; ``error_rate`` and
  ``timeout_rate`` over the requests sent.
* ``attainment``: the share of requests sent that were answered and met the target
  (TTFT <= a and e2e <= b); ``goodput_rps`` those requests / duration; the point
  **meets** the target when attainment >= the target's share (default 0.95).
* ``capacity_rps``: the highest ``throughput_rps`` of a point that meets the target.
* ``knee``: the last closed-loop level whose throughput the next level did not raise by
  10 % — where adding concurrency starts to buy latency instead of throughput.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from slamkit.errors import SlamkitError
from slamkit.store import Store, readers

QUANTILES = (0.5, 0.9, 0.95, 0.99)
METRICS = ("ttft_s", "tpot_s", "itl_s", "e2e_s")
#: throughput must rise by this factor with the next level, or the sweep is past the knee
KNEE_GAIN = 1.10
#: the sweep stops when errors + timeouts reach this share of a point's requests
MAX_ERROR_RATE = 0.10
#: the columns of :func:`load_table` (the first ones; percentile columns follow)
TABLE_COLUMNS = [
    "load_id", "model", "point", "mode", "concurrency", "rate_rps", "sent", "ok", "errors",
    "timeouts", "duration_s", "error_rate", "throughput_rps", "output_tps", "attainment",
    "goodput_rps", "meets_target", "knee", "target_ttft_s", "target_e2e_s", "capacity_rps",
    *[f"{m.removesuffix('_s')}_p{round(q * 100)}_{k}" for m in METRICS for q in QUANTILES
      for k in ("s", "lo", "hi")],
]  # fmt: skip


def quantile_ci(
    values: Sequence[float] | np.ndarray, q: float, conf: float = 0.95
) -> tuple[float, float, float]:
    """(estimate, lo, hi) of the ``q`` quantile: the order-statistic interval, exact for
    independent draws of any continuous distribution (ranks from the binomial). ``hi``
    is NaN when there are too few values for a bound (e.g. a p99 from 20 requests).

    >>> est, lo, hi = quantile_ci(np.arange(1, 101), 0.5)
    >>> est, lo, hi
    (50.5, 40.0, 61.0)
    >>> math.isnan(quantile_ci([1.0, 2.0, 3.0], 0.99)[2])
    True
    """
    from scipy.stats import binom

    x = np.sort(np.asarray(values, dtype=float))
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    est = float(np.quantile(x, q))
    a = (1 - conf) / 2
    lo_rank = int(binom.ppf(a, n, q))  # number of values below the lower bound
    hi_rank = int(binom.ppf(1 - a, n, q)) + 1
    lo = float(x[lo_rank - 1]) if lo_rank >= 1 else math.nan
    hi = float(x[hi_rank - 1]) if hi_rank <= n else math.nan
    return (est, lo, hi)


def _pooled_ci(
    groups: list[np.ndarray], q: float, conf: float = 0.95, n_boot: int = 200, seed: int = 0
) -> tuple[float, float, float]:
    """Quantile of values pooled over requests, CI by resampling whole requests."""
    groups = [g for g in groups if len(g)]
    if not groups:
        return (math.nan, math.nan, math.nan)
    est = float(np.quantile(np.concatenate(groups), q))
    if len(groups) < 2:
        return (est, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, len(groups), len(groups))
        boots[b] = np.quantile(np.concatenate([groups[i] for i in pick]), q)
    a = (1 - conf) / 2
    return (est, float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)))


def _meets(df: pd.DataFrame, ttft_s: float | None, e2e_s: float | None) -> pd.Series:
    ok = df["status"] == "ok"
    if ttft_s is not None:
        ok &= df["ttft_s"].astype(float) <= ttft_s
    if e2e_s is not None:
        ok &= df["e2e_s"].astype(float) <= e2e_s
    return ok


def point_summary(
    requests: pd.DataFrame | Sequence[Any],
    point: Any,
    target: Any,
    conf: float = 0.95,
) -> dict[str, Any]:
    """One point's row (see the module docstring). ``requests``: its ``load_requests``
    rows (or :class:`~slamkit.loadgen.Record` objects); ``point``: its ``load_points``
    row (or :class:`~slamkit.loadgen.PointInfo`); ``target``: an object with
    ``ttft_s``, ``e2e_s``, ``attainment`` (a :class:`~slamkit.load.LoadTarget` or a
    ``load_runs`` row)."""
    df = _frame(requests)
    p = point if isinstance(point, dict) else (
        point._asdict() if hasattr(point, "_asdict") else vars(point))  # fmt: skip
    get = (lambda k: target.get(k)) if isinstance(target, dict) else (
        lambda k: getattr(target, k, None))  # fmt: skip
    t_ttft, t_e2e = _num(get("ttft_s") or get("target_ttft_s")), _num(
        get("e2e_s") or get("target_e2e_s"))  # fmt: skip
    share = _num(get("attainment")) or 0.95
    df = df[df["status"] != "cancelled"]
    n = len(df)
    ok = df[df["status"] == "ok"]
    dur = float(p.get("duration_s") or 0.0)
    row: dict[str, Any] = {
        "point": int(p["point"]), "mode": p["mode"],
        "concurrency": p.get("concurrency"), "rate_rps": p.get("rate_rps"),
        "sent": n, "ok": len(ok),
        "errors": int((df["status"] == "error").sum()),
        "timeouts": int((df["status"] == "timeout").sum()),
        "duration_s": dur, "status": p.get("status"),
        "lag_p99_s": p.get("lag_p99_s"),
    }  # fmt: skip
    row["error_rate"] = (row["errors"] + row["timeouts"]) / n if n else math.nan
    row["timeout_rate"] = row["timeouts"] / n if n else math.nan
    row["throughput_rps"] = len(ok) / dur if dur > 0 else math.nan
    tokens = pd.to_numeric(ok["completion_tokens"], errors="coerce").fillna(0).sum()
    row["output_tps"] = float(tokens) / dur if dur > 0 else math.nan
    met = int(_meets(df, t_ttft, t_e2e).sum()) if (t_ttft or t_e2e) else len(ok)
    row["attainment"] = met / n if n else math.nan
    row["attainment_lo"] = _wilson_lo(met, n)
    row["goodput_rps"] = met / dur if dur > 0 else math.nan
    row["meets_target"] = bool(n and row["attainment"] >= share)
    row["in_flight_max"] = int(df["in_flight"].max()) if n and "in_flight" in df else None
    for m in METRICS:
        for q in QUANTILES:
            name = f"{m.removesuffix('_s')}_p{round(q * 100)}"
            if m == "itl_s":
                est, lo, hi = _pooled_ci([np.asarray(v, float) for v in ok["itl_s"]], q, conf)
            else:
                est, lo, hi = quantile_ci(pd.to_numeric(ok[m], errors="coerce"), q, conf)
            row[f"{name}_s"], row[f"{name}_lo"], row[f"{name}_hi"] = est, lo, hi
    return row


def _wilson_lo(k: int, n: int, z: float = 1.959964) -> float:
    """The 95 % Wilson lower bound of a share k/n (NaN for n = 0): how sure a point's
    attainment is — 4 of 4 requests on target is only >= 0.51.

    >>> round(_wilson_lo(4, 4), 2), round(_wilson_lo(95, 100), 3)
    (0.51, 0.888)
    """
    if n <= 0:
        return math.nan
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _frame(requests: pd.DataFrame | Sequence[Any]) -> pd.DataFrame:
    if isinstance(requests, pd.DataFrame):
        df = requests.copy()
    else:
        df = pd.DataFrame(
            [{"status": r.status, "ttft_s": r.ttft_s, "e2e_s": r.e2e_s, "tpot_s": r.tpot_s,
              "itl_s": r.itl_s, "completion_tokens": r.completion_tokens,
              "in_flight": r.max_in_flight} for r in requests],
            columns=["status", "ttft_s", "e2e_s", "tpot_s", "itl_s", "completion_tokens",
                     "in_flight"],
        )  # fmt: skip
    if "itl_s" in df:
        df["itl_s"] = [json.loads(v) if isinstance(v, str) else (v or []) for v in df["itl_s"]]
    else:
        df["itl_s"] = [[] for _ in range(len(df))]
    return df


def past_knee(history: list[dict[str, Any]], auto: bool = True) -> str:
    """Why a closed-loop sweep should stop after its last point ('' = go on): errors
    climbed past :data:`MAX_ERROR_RATE`; or (``auto`` levels) throughput rose less than
    :data:`KNEE_GAIN` while the median latency rose."""
    last = history[-1]
    err = last["error_rate"]
    if err == err and err >= MAX_ERROR_RATE:
        return (
            f"errors and timeouts reached {err:.0%} of requests at concurrency "
            f"{last['concurrency']}: past the knee"
        )
    if auto and len(history) >= 2:
        best = max(h["throughput_rps"] for h in history[:-1])
        prev = history[-2]
        if last["throughput_rps"] < KNEE_GAIN * best and last["e2e_p50_s"] > prev["e2e_p50_s"]:
            return (
                f"throughput stopped rising ({best:.3g} -> {last['throughput_rps']:.3g} req/s) "
                f"while median latency rose ({prev['e2e_p50_s']:.3g} -> "
                f"{last['e2e_p50_s']:.3g} s) at concurrency {last['concurrency']}: past the knee"
            )
    return ""


def load_table(store: Store, load_id: str | None) -> pd.DataFrame:
    """One row per point of a stored load run (see :func:`point_summary`), with ``knee``
    marking the closed-loop level where throughput stopped scaling, the run's
    ``target_ttft_s`` / ``target_e2e_s`` and its ``capacity_rps`` (:func:`capacity`).
    ``load_id=None``: an empty table with these columns (no load test yet)."""
    if load_id is None:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    runs = readers.load_runs(store)
    run = runs[runs["load_id"] == load_id]
    if run.empty:
        known = ", ".join(runs["load_id"].head(5)) or "none"
        raise SlamkitError(
            f"No load run {load_id!r} in {store.path} (newest: {known}); run `slamkit load`."
        )
    target = run.iloc[0].to_dict()
    points = readers.load_points(store, [load_id])
    reqs = readers.load_requests(store, [load_id])
    rows = [
        point_summary(reqs[reqs["point"] == p["point"]], p, target)
        for p in points.to_dict("records")
    ]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["knee"] = False
    closed = df[(df["mode"] == "closed") & (df["status"] != "interrupted")].sort_values(
        "concurrency"
    )
    thr = closed["throughput_rps"].to_numpy()
    for i in range(len(closed)):
        if i + 1 < len(closed) and thr[i + 1] < KNEE_GAIN * thr[: i + 1].max():
            df.loc[closed.index[i], "knee"] = True
            break
    df.insert(0, "load_id", load_id)
    df.insert(1, "model", target.get("model"))
    df["target_ttft_s"] = target.get("target_ttft_s")
    df["target_e2e_s"] = target.get("target_e2e_s")
    df["capacity_rps"] = capacity(df)["capacity_rps"]
    df.attrs["target"] = _target_label(target)
    return df


def _target_label(run: dict[str, Any]) -> str:
    parts = []
    if _num(run.get("target_ttft_s")) is not None:
        parts.append(f"TTFT <= {float(run['target_ttft_s']):.3g} s")
    if _num(run.get("target_e2e_s")) is not None:
        parts.append(f"end-to-end <= {float(run['target_e2e_s']):.3g} s")
    share = _num(run.get("attainment")) or 0.95
    return f"{' and '.join(parts)} for {share:.0%} of requests ({run.get('target_source')})"


def capacity(table: pd.DataFrame) -> dict[str, Any]:
    """The capacity at the target from :func:`load_table`: ``capacity_rps`` (NaN when
    no point met it), ``at`` (the point's offered load), ``note``."""
    whole = table[table["status"] != "interrupted"] if len(table) else table
    met = whole[whole["meets_target"].astype(bool)] if len(whole) else whole
    if met.empty:
        c1 = bool(((whole["mode"] == "closed") & (whole["concurrency"] == 1)).any())
        note = "no load point met the target" + (
            " (not even one request at a time)" if c1 else "")  # fmt: skip
        return {"capacity_rps": math.nan, "at": None, "note": note, "lower_bound": False}
    best = met.loc[met["throughput_rps"].idxmax()]
    at = (f"concurrency {int(best['concurrency'])}" if best["mode"] == "closed"
          else f"{best['rate_rps']:g} req/s offered")  # fmt: skip
    closed = whole[whole["mode"] == "closed"]
    # the highest level met the target and nothing showed the knee: more may be possible
    lower = bool(best["mode"] == "closed" and len(closed)
                 and best["concurrency"] == closed["concurrency"].max()
                 and not bool(closed.get("knee", pd.Series(False)).any()))  # fmt: skip
    note = f"{best['throughput_rps']:.3g} req/s at {at}" + (
        " — at least: the highest level run still met the target" if lower else ""
    )
    return {"capacity_rps": float(best["throughput_rps"]), "at": at, "note": note,
            "lower_bound": lower, "n": int(best["sent"]),
            "attainment_lo": float(best.get("attainment_lo", math.nan))}  # fmt: skip


def text_changes(store: Store, load_ids: Sequence[str]) -> pd.DataFrame:
    """Greedy (and sampled) answers under load vs the same cells in isolation, per run:
    ``load_id, greedy, compared, differ, share_differ``."""
    df = readers.load_text_changes(store, list(load_ids))
    if df.empty:
        return pd.DataFrame(columns=["load_id", "greedy", "compared", "differ", "share_differ"])
    out = df.groupby(["load_id", "greedy"], as_index=False)[["compared", "differ"]].sum()
    out["share_differ"] = out["differ"] / out["compared"]
    return out


def load_report(store: Store, load_id: str) -> str:
    """The knee table (p95s with their 95 % CIs), the capacity at the target, the
    failures and the greedy-text check, as text."""
    t = load_table(store, load_id)
    if t.empty:
        return "(no load points stored)"

    def ci(est: float, lo: float, hi: float) -> str:
        if est != est:
            return "-"
        bound = lambda v: f"{v:.3g}" if v == v else "?"  # noqa: E731
        return f"{est:.3g} [{bound(lo)}, {bound(hi)}]"

    show = t.assign(
        load=[f"c={int(c)}" if m == "closed" else f"{r:g}/s"
              for m, c, r in zip(t["mode"], t["concurrency"], t["rate_rps"], strict=True)],
        err=[f"{e:.0%}" for e in t["error_rate"]],
        attain=[f"{a:.0%} (>={lo:.0%})" if a == a else "-"
                for a, lo in zip(t["attainment"], t["attainment_lo"], strict=True)],
        ttft95=[ci(*v) for v in t[["ttft_p95_s", "ttft_p95_lo", "ttft_p95_hi"]].to_numpy()],
        e2e95=[ci(*v) for v in t[["e2e_p95_s", "e2e_p95_lo", "e2e_p95_hi"]].to_numpy()],
        meets=["yes" if m else "no" for m in t["meets_target"]],
        knee=["<- knee" if k else ("(interrupted)" if st == "interrupted" else "")
              for k, st in zip(t["knee"], t["status"], strict=True)],
    )  # fmt: skip
    cols = {"load": "load", "sent": "sent", "err": "err", "throughput_rps": "req/s",
            "output_tps": "tok/s", "goodput_rps": "goodput", "attain": "attain (95% lo)",
            "ttft_p50_s": "ttft p50", "ttft95": "ttft p95 [95% CI]", "e2e_p50_s": "e2e p50",
            "e2e95": "e2e p95 [95% CI]", "tpot_p50_s": "tpot p50", "meets": "meets",
            "knee": ""}  # fmt: skip
    text = (
        show[list(cols)]
        .rename(columns=cols)
        .to_string(index=False, float_format=lambda v: f"{v:.3g}")
    )
    cap = capacity(t)
    lines = [f"target: {t.attrs.get('target')}", text]
    if cap["capacity_rps"] == cap["capacity_rps"]:
        least = "at least " if cap["lower_bound"] else ""
        lines.append(
            f"capacity at the target: {least}{cap['capacity_rps']:.3g} req/s = "
            f"{cap['capacity_rps'] * 3600:,.0f} requests/hour per server ({cap['at']}; "
            f"{cap['n']} requests, attainment >= {cap['attainment_lo']:.0%} at 95 % confidence"
            + ("; the highest level run still met the target" if cap["lower_bound"] else "")
            + ")"
        )
    else:
        lines.append(f"capacity at the target: none — {cap['note']}")
    reqs = readers.load_requests(store, [load_id], itl=False)
    bad = reqs[reqs["status"] != "ok"]
    if len(bad):
        top = bad.groupby(["status", "error"], dropna=False).size().sort_values(ascending=False)
        lines.append(f"{len(bad)} of {len(reqs)} requests failed; most frequent:")
        lines += [f"  {n} x {st}: {err}" for (st, err), n in top.head(3).items()]
    ch = text_changes(store, [load_id])
    g = ch[ch["greedy"]]
    if len(g):
        r = g.iloc[0]
        lines.append(
            f"greedy answers under load that differ from the isolated run: "
            f"{int(r['differ'])} of {int(r['compared'])} ({r['share_differ']:.0%})"
        )
    elif len(reqs) and (reqs["status"] == "ok").any():
        lines.append(
            "greedy answers under load vs isolated: nothing to compare (no stored answer of "
            "the same cells generated in isolation: run the sweep with the same settings)"
        )
    return "\n".join(lines)


def _sampling_of(run: Any) -> dict[str, Any]:
    try:
        value = json.loads(run["sampling"]) if isinstance(run["sampling"], str) else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def capacity_frame(
    store: Store,
    task_id: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> pd.DataFrame:
    """Per model: the capacity at the target of its newest finished load test with the
    study's sampling (``temperature`` / ``max_tokens``; None: any) — ``model, model_id,
    load_id, capacity_rps, requests_per_hour, meets_target, at, target, basis`` — what the
    cost model prices self-hosting from (:func:`slamkit.cost.hosting_throughput`). A
    model whose load test met the target at no load has ``meets_target`` False and a NaN
    capacity (its basis says so; it is never priced as if it had met it)."""
    runs = readers.load_runs(store, task_id)
    cols = ["model", "model_id", "load_id", "capacity_rps", "requests_per_hour",
            "meets_target", "at", "target", "basis"]  # fmt: skip
    runs = runs[runs["status"].isin(["complete", "interrupted"])] if len(runs) else runs
    rows = []
    for model, g in runs.groupby("model", sort=True):
        keep = []
        for r in g.to_dict("records"):
            sp = _sampling_of(r)
            if temperature is not None and float(sp.get("temperature", 0.0)) != temperature:
                continue
            if max_tokens is not None and int(sp.get("max_tokens", -1)) != max_tokens:
                continue
            keep.append(r)
        if not keep:
            continue
        run = keep[0]  # newest first
        t = load_table(store, run["load_id"])
        if t.empty:
            continue
        cap = capacity(t)
        rps = cap["capacity_rps"]
        sp = _sampling_of(run)
        how = f"t={float(sp.get('temperature', 0.0)):g}, max {sp.get('max_tokens')} tokens"
        basis = (
            f"load test {run['load_id']} ({how}): capacity at the target ({cap['at']})"
            if rps == rps
            else f"load test {run['load_id']} ({how}): {cap['note']}"
        )
        rows.append({
            "model": model, "model_id": run["model_id"], "load_id": run["load_id"],
            "capacity_rps": rps, "requests_per_hour": rps * 3600.0, "meets_target": rps == rps,
            "at": cap["at"], "target": t.attrs.get("target"), "basis": basis,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def latency_by_source(
    store: Store, load_ids: Sequence[str], references: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Long rows ``source, load, metric, value`` for a distribution chart: each point's
    end-to-end and TTFT latencies under load, beside the reference API's captured ones
    (``references``: rows with ``source_model, latency_s, ttft_s, in_flight``)."""
    req = readers.load_requests(store, list(load_ids), itl=False)
    pts = readers.load_points(store, list(load_ids))
    runs = readers.load_runs(store)
    req = req[req["status"] == "ok"].merge(pts[["load_id", "point", "mode", "concurrency",
                                                 "rate_rps"]], on=["load_id", "point"])  # fmt: skip
    req = req.merge(runs[["load_id", "model"]], on="load_id")
    req["load"] = [f"c={int(c)}" if m == "closed" else f"{r:g} req/s"
                   for m, c, r in zip(req["mode"], req["concurrency"], req["rate_rps"],
                                      strict=True)]  # fmt: skip
    parts = []
    for metric, col in (("end-to-end (s)", "e2e_s"), ("time to first token (s)", "ttft_s")):
        parts.append(pd.DataFrame({"source": req["model"] + " (self-hosted)",
                                   "load": req["load"], "metric": metric,
                                   "value": req[col].astype(float)}))  # fmt: skip
    if references is not None and len(references):
        r = references.dropna(subset=["latency_s"])
        for metric, col in (("end-to-end (s)", "latency_s"), ("time to first token (s)", "ttft_s")):
            parts.append(pd.DataFrame({
                "source": r["source_model"] + " (reference API)",
                "load": [f"c={int(c)}" for c in r["in_flight"].fillna(1)],
                "metric": metric, "value": r[col].astype(float),
            }))  # fmt: skip
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["source", "load", "metric", "value"])  # fmt: skip
    return out.dropna(subset=["value"]).reset_index(drop=True)
