"""Cost model (METHOD.md section 4): one formula, every input visible.

API:          cost/request = (tokens_in * price_in + tokens_out * price_out) / 1000
              with prices per 1K tokens from the dated table ``data/prices.csv``.
Self-hosted:  cost/request = hourly_usd / (requests_per_hour * utilization),
              requests_per_hour = the capacity a load test measured at the latency target
              (``slamkit load``: requests/hour one server sustains while meeting it), or,
              without a load test, 3600 * concurrency / latency_s (one request at a time,
              measured). Every table says which (``throughput_basis``).

:func:`cost_table` returns, per model, every input next to $/request, $/1M output tokens,
the monthly cost at a traffic level (pay-per-use, and with always-on instances), the
API/self-hosted ratio (per request and per output token, next to the share of truncated
outputs) and the break-even traffic (requests/month at which one always-on instance costs
as much as the API). Token counts for GPT-4 come from the stored usage or, when missing,
from the offline cl100k tokenizer (:func:`count_tokens`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slamkit.errors import SlamkitError
from slamkit.tokens import count_tokens

PRICES_CSV = Path(__file__).resolve().parent.parent / "data" / "prices.csv"
PRICE_COLUMNS = [
    "kind", "name", "input_per_1k_usd", "output_per_1k_usd", "hourly_usd", "hardware", "date",
    "source", "notes",
]  # fmt: skip
HOURS_PER_MONTH = 730.0  # 365 * 24 / 12
#: how a self-hosted row's requests/hour were found when no load test prices it
SEQUENTIAL_BASIS = "sequential: one request at a time (3600 s / mean latency)"


def load_prices(path: str | Path | None = None) -> pd.DataFrame:
    """Read the dated price table (edit the CSV to add rows; the newest row <= a date wins)."""
    p = Path(path) if path else PRICES_CSV
    if not p.exists():
        raise SlamkitError(
            f"Price table {p} not found. Copy data/prices.csv from the slamkit repository or "
            "pass path=... to a CSV with columns " + ", ".join(PRICE_COLUMNS) + "."
        )
    df = pd.read_csv(p)
    missing = [c for c in PRICE_COLUMNS if c not in df.columns]
    if missing:
        raise SlamkitError(f"{p} lacks column(s) {missing}; expected {PRICE_COLUMNS}.")
    df["date"] = pd.to_datetime(df["date"])
    no_price = df[["input_per_1k_usd", "output_per_1k_usd"]].isna().any(axis=1)
    bad = df[(df["kind"] == "api") & no_price]
    if len(bad):
        raise SlamkitError(f"{p} row(s) {list(bad.index + 2)}: api rows need both token prices.")
    bad = df[(df["kind"] == "instance") & df["hourly_usd"].isna()]
    if len(bad):
        raise SlamkitError(f"{p} row(s) {list(bad.index + 2)}: instance rows need hourly_usd.")
    return df


def _lookup(prices: pd.DataFrame, kind: str, name: str, as_of: str | None) -> pd.Series:
    rows = prices[(prices["kind"] == kind) & (prices["name"] == name)]
    if as_of is not None:
        rows = rows[rows["date"] <= pd.Timestamp(as_of)]
    if rows.empty:
        known = sorted(prices.loc[prices["kind"] == kind, "name"].unique())
        when = f" dated on or before {as_of}" if as_of else ""
        raise SlamkitError(
            f"No {kind} price for {name!r}{when} in the price table. Known: {', '.join(known)}. "
            "Add a row to data/prices.csv."
        )
    return rows.sort_values("date").iloc[-1]


def api_price(prices: pd.DataFrame, name: str, as_of: str | None = None) -> pd.Series:
    """The newest API price row for ``name`` dated on or before ``as_of``."""
    return _lookup(prices, "api", name, as_of)


def instance_price(prices: pd.DataFrame, name: str, as_of: str | None = None) -> pd.Series:
    return _lookup(prices, "instance", name, as_of)


def price_name_for(reference_model: str) -> str:
    """Map a reference source name to a price row, e.g. gpt4_1106_preview -> gpt-4-1106-preview."""
    s = reference_model.lower().replace("_", "-")
    if s.startswith("gpt4"):
        s = "gpt-4" + s[4:]
    return s


def api_cost_per_request(
    tokens_in: float, tokens_out: float, input_per_1k: float, output_per_1k: float
) -> float:
    """(tokens_in * price_in + tokens_out * price_out) / 1000."""
    return (tokens_in * input_per_1k + tokens_out * output_per_1k) / 1000.0


def _missing(x: object) -> bool:
    """None or NaN: a value the caller did not set."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def check_utilization(utilization: object, where: str = "") -> float:
    """``utilization`` as a float in (0, 1], or a SlamkitError naming ``where`` and the value."""
    try:
        u = float(utilization)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        u = math.nan
    if not 0.0 < u <= 1.0:  # False for NaN too
        at = f"{where}: " if where else ""
        raise SlamkitError(
            f"{at}utilization must be a share of capacity in (0, 1] (e.g. 0.5 for half "
            f"busy); got {utilization!r}."
        )
    return u


def self_hosted_cost_per_request(
    hourly_usd: float, latency_s: float, utilization: float = 1.0, concurrency: float = 1.0
) -> float:
    """hourly / (3600 * concurrency / latency_s * utilization)."""
    check_utilization(utilization)
    if not (latency_s > 0 and concurrency > 0 and math.isfinite(concurrency)):
        raise SlamkitError(
            f"latency_s ({latency_s}) and concurrency ({concurrency}) must be > 0 for the "
            "self-hosted cost."
        )
    return hourly_usd / (3600.0 * concurrency / latency_s * utilization)


def _explicit_price(value: object, name: str) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v >= 0):
        raise SlamkitError(f"{name} must be a price in USD per 1K tokens (>= 0); got {value!r}.")
    return v


def cost_table(
    usage: pd.DataFrame,
    prices: pd.DataFrame | None = None,
    reference: str = "gpt-4",
    instance: str = "aws-c7i.large",
    utilization: float = 0.5,
    concurrency: float = 1.0,
    monthly_requests: float = 100_000,
    as_of: str | None = None,
    hours_per_month: float = HOURS_PER_MONTH,
    price_in_per_1k: float | None = None,
    price_out_per_1k: float | None = None,
) -> pd.DataFrame:
    """Per-model cost with every input shown.

    ``usage`` has one row per model: ``model``, ``kind`` ('api' | 'self-hosted'),
    ``tokens_in``, ``tokens_out`` (mean per request), ``latency_s`` (mean per request; needed
    for self-hosted), optional ``price_name`` (api rows; default: the model name),
    ``input_per_1k_usd``/``output_per_1k_usd`` (api rows: explicit prices instead of the
    price table), ``instance``, ``hourly_usd``, ``utilization``, ``concurrency`` (override
    the defaults; None/NaN in a row means "use the default"), ``truncated_share``, and
    ``capacity_rph`` / ``throughput_basis`` (a load test's capacity at the latency target,
    requests/hour per server: then the row is priced from it, not from its latency).
    ``price_in_per_1k``/``price_out_per_1k`` (USD per 1K tokens, both or neither) price the
    ``reference`` API explicitly instead of its row in the price table. ``utilization`` must
    be in (0, 1]. The row whose model is ``reference`` (an API row) prices the comparison;
    if absent it is priced from the first self-hosted row's tokens.

    Columns beside the inputs: ``price_source`` ('price table' | 'explicit'),
    ``throughput_basis`` (what ``requests_per_hour`` comes from: a load test's capacity or
    sequential speed), ``cost_per_request``, ``cost_per_1m_output_tokens``,
    ``monthly_cost`` (pay-per-use),
    ``instances_always_on``, ``monthly_cost_always_on``, ``reference_cost_per_request``,
    ``api_to_self_ratio`` (reference $/request / this row's $/request),
    ``ratio_per_output_token`` (reference $/1M output tokens / this row's $/1M output
    tokens: fairer when the models write answers of different length, e.g. small models cut
    off at ``max_tokens``), ``truncated_share`` (share of this row's outputs that stopped at
    the token limit, ``finish_reason == 'length'``; NaN when unknown: a high share makes
    the per-request ratio flatter the short outputs) and ``break_even_requests_per_month``
    (inf when one instance cannot serve that much traffic; NaN when a cost is unknown).
    """
    prices = load_prices() if prices is None else prices
    need = {"model", "kind", "tokens_in", "tokens_out"}
    if not need <= set(usage.columns):
        raise SlamkitError(f"cost_table needs columns {sorted(need)}; got {list(usage.columns)}.")
    if (price_in_per_1k is None) != (price_out_per_1k is None):
        raise SlamkitError(
            "cost_table: pass both price_in_per_1k and price_out_per_1k (USD per 1K tokens) "
            "or neither (then the price table prices the reference API)."
        )
    explicit = None
    if price_in_per_1k is not None:
        explicit = (
            _explicit_price(price_in_per_1k, "price_in_per_1k"),
            _explicit_price(price_out_per_1k, "price_out_per_1k"),
        )
    default_util = utilization
    rows = []
    for r in usage.to_dict("records"):
        kind = r["kind"]
        tin, tout = float(r["tokens_in"]), float(r["tokens_out"])
        lat_in = r.get("latency_s")
        trunc = r.get("truncated_share")
        out = {
            "model": r["model"], "kind": kind, "tokens_in": tin, "tokens_out": tout,
            "truncated_share": np.nan if _missing(trunc) else float(trunc),
            "price_name": None, "price_date": None, "price_source": None,
            "input_per_1k_usd": np.nan, "output_per_1k_usd": np.nan, "instance": None,
            "hourly_usd": np.nan,
            "latency_s": np.nan if _missing(lat_in) else float(lat_in),
            "concurrency": np.nan, "utilization": np.nan, "requests_per_hour": np.nan,
            "throughput_basis": None,
        }  # fmt: skip
        if kind == "api":
            name = r.get("price_name") or r["model"]
            row_in, row_out = r.get("input_per_1k_usd"), r.get("output_per_1k_usd")
            if not (_missing(row_in) and _missing(row_out)):
                where = f"Model {r['model']!r}"
                p_in = _explicit_price(row_in, f"{where}: input_per_1k_usd")
                p_out = _explicit_price(row_out, f"{where}: output_per_1k_usd")
                date, source = None, "explicit"
            elif explicit is not None and r["model"] == reference:
                (p_in, p_out), date, source = explicit, None, "explicit"
            else:
                pr = api_price(prices, name, as_of)
                p_in, p_out = float(pr["input_per_1k_usd"]), float(pr["output_per_1k_usd"])
                date, source = pr["date"].date().isoformat(), "price table"
            out.update(price_name=name, price_date=date, price_source=source,
                       input_per_1k_usd=p_in, output_per_1k_usd=p_out)  # fmt: skip
            out["cost_per_request"] = api_cost_per_request(tin, tout, p_in, p_out)
        elif kind == "self-hosted":
            inst = r.get("instance") or instance
            hourly = r.get("hourly_usd")
            if _missing(hourly):
                ip = instance_price(prices, inst, as_of)
                hourly = float(ip["hourly_usd"])
                out["price_date"] = ip["date"].date().isoformat()
                out["price_source"] = "price table"
            else:
                out["price_source"] = "explicit"
            row_util = r.get("utilization")
            if _missing(row_util):
                util = check_utilization(default_util, f"Model {r['model']!r} (utilization=)")
            else:
                util = check_utilization(row_util, f"Model {r['model']!r} (its usage row)")
            row_conc = r.get("concurrency")
            conc = float(concurrency if _missing(row_conc) else row_conc)
            if not (conc > 0 and math.isfinite(conc)):
                raise SlamkitError(
                    f"Model {r['model']!r}: concurrency (parallel requests one instance "
                    f"serves) must be a number > 0; got {conc!r}."
                )
            lat = out["latency_s"]
            cap_rph = r.get("capacity_rph")
            if not _missing(cap_rph) and float(cap_rph) > 0:
                rph = float(cap_rph)
                out.update(instance=inst, hourly_usd=float(hourly), concurrency=np.nan,
                           utilization=util, requests_per_hour=rph,
                           throughput_basis=r.get("throughput_basis") or "load test")  # fmt: skip
                out["cost_per_request"] = float(hourly) / (rph * util)
                rows.append(out)
                continue
            if not lat > 0:
                raise SlamkitError(
                    f"Model {r['model']!r}: a self-hosted cost needs the measured mean "
                    "latency_s per request: run generations first, or — when every request "
                    "was timed under load (executor server/concurrent/ray) — rerun them "
                    "with the sequential executor or use timings='all'."
                )
            out.update(instance=inst, hourly_usd=float(hourly), concurrency=conc,
                       utilization=util, requests_per_hour=3600.0 * conc / lat,
                       throughput_basis=SEQUENTIAL_BASIS if conc == 1 else
                       f"{conc:g} requests at a time, each at the mean latency")  # fmt: skip
            out["cost_per_request"] = self_hosted_cost_per_request(float(hourly), lat, util, conc)
        else:
            raise SlamkitError(f"Model {r['model']!r}: kind must be 'api' or 'self-hosted'.")
        rows.append(out)
    df = pd.DataFrame(rows)
    # the API reference the ratios are computed against
    ref = df[(df["model"] == reference) & (df["kind"] == "api")]
    if len(ref):
        ref_cost = float(ref["cost_per_request"].iloc[0])
        ref_tokens_out = float(ref["tokens_out"].iloc[0])
    else:
        if explicit is not None:
            p_in, p_out = explicit
        else:
            pr = api_price(prices, reference, as_of)
            p_in, p_out = float(pr["input_per_1k_usd"]), float(pr["output_per_1k_usd"])
        base = df.iloc[0]
        ref_tokens_out = float(base["tokens_out"])
        ref_cost = api_cost_per_request(base["tokens_in"], ref_tokens_out, p_in, p_out)
    df["cost_per_1m_output_tokens"] = df["cost_per_request"] / df["tokens_out"] * 1e6
    df["monthly_requests"] = float(monthly_requests)
    df["monthly_cost"] = df["cost_per_request"] * monthly_requests
    cap = df["requests_per_hour"] * df["utilization"] * hours_per_month  # requests / instance-month
    instances = np.ceil(monthly_requests / cap)
    df["hours_per_month"] = hours_per_month
    df["instances_always_on"] = instances
    df["monthly_cost_always_on"] = instances * df["hourly_usd"] * hours_per_month
    df["reference"] = reference
    df["reference_cost_per_request"] = ref_cost
    df["api_to_self_ratio"] = ref_cost / df["cost_per_request"]
    ref_per_1m_out = ref_cost / ref_tokens_out * 1e6 if ref_tokens_out > 0 else np.nan
    df["ratio_per_output_token"] = ref_per_1m_out / df["cost_per_1m_output_tokens"]
    be = df["hourly_usd"] * hours_per_month / ref_cost
    df["break_even_requests_per_month"] = np.where(
        (df["kind"] == "self-hosted") & be.notna(), np.where(be <= cap, be, np.inf), np.nan
    )
    return df


def truncated_share(generations: pd.DataFrame) -> float:
    """Share of ``generations`` cut off at the token limit.

    ``finish_reason == 'length'`` where that column is present (rows without a
    finish_reason are left out); otherwise ``completion_tokens >= max_tokens`` with
    ``max_tokens`` from the ``sampling`` column (JSON text or dict). NaN when neither is
    known.
    """
    g = generations
    if "finish_reason" in g.columns and g["finish_reason"].notna().any():
        fr = g["finish_reason"].dropna()
        return float((fr == "length").mean())
    if "sampling" in g.columns and "completion_tokens" in g.columns and len(g):

        def limit(sampling: object) -> float:
            if isinstance(sampling, str):
                try:
                    sampling = json.loads(sampling)
                except ValueError:
                    return math.nan
            mt = sampling.get("max_tokens") if isinstance(sampling, dict) else None
            return float(mt) if isinstance(mt, int | float) else math.nan

        lim = g["sampling"].map(limit).astype(float)
        known = lim.notna() & g["completion_tokens"].notna()
        if known.any():
            return float((g.loc[known, "completion_tokens"] >= lim[known]).mean())
    return math.nan


def usage_frame(
    generations: pd.DataFrame,
    references: pd.DataFrame | None = None,
    reference_price: str = "gpt-4",
    model_col: str = "model",
    price_in_per_1k: float | None = None,
    price_out_per_1k: float | None = None,
) -> pd.DataFrame:
    """The ``usage`` input of :func:`cost_table` from stored rows.

    ``generations``: rows of the generations table (``model_col``, prompt_tokens,
    completion_tokens, latency_s; failed rows with ``error`` set are ignored) -> one
    self-hosted row per model, with its ``truncated_share`` (:func:`truncated_share`).
    ``references``: reference_outputs rows -> one API row priced as ``reference_price``, or
    at ``price_in_per_1k``/``price_out_per_1k`` (USD per 1K tokens) when given; missing
    completion token counts are counted offline from ``text`` (cl100k), missing prompt
    counts from ``prompt`` when present.
    """
    if (price_in_per_1k is None) != (price_out_per_1k is None):
        raise SlamkitError(
            "usage_frame: pass both price_in_per_1k and price_out_per_1k or neither."
        )
    g = generations
    if "error" in g.columns:
        g = g[g["error"].isna()]
    rows = []
    for model, d in g.groupby(model_col):
        rows.append(
            {"model": model, "kind": "self-hosted", "tokens_in": d["prompt_tokens"].mean(),
             "tokens_out": d["completion_tokens"].mean(), "latency_s": d["latency_s"].mean(),
             "n_requests": len(d), "truncated_share": truncated_share(d)}
        )  # fmt: skip
    if references is not None and len(references):
        r = references
        tout = r["completion_tokens"].astype(float)
        if tout.isna().any() and "text" in r.columns:
            counted = pd.Series(count_tokens(r["text"]), index=r.index, dtype=float)
            tout = tout.fillna(counted)
        tin = r["prompt_tokens"].astype(float)
        if tin.isna().any() and "prompt" in r.columns:
            counted = pd.Series(count_tokens(r["prompt"]), index=r.index, dtype=float) + 7
            tin = tin.fillna(counted)
        api = {
            "model": reference_price, "kind": "api", "tokens_in": tin.mean(),
            "tokens_out": tout.mean(),
            "latency_s": r["latency_s"].mean() if "latency_s" in r.columns else np.nan,
            "n_requests": len(r), "truncated_share": truncated_share(r),
        }  # fmt: skip
        if price_in_per_1k is not None:
            api["input_per_1k_usd"] = _explicit_price(price_in_per_1k, "price_in_per_1k")
            api["output_per_1k_usd"] = _explicit_price(price_out_per_1k, "price_out_per_1k")
        rows.append(api)
    return pd.DataFrame(rows)


# -- per-variant pricing (the frames of the cost and trade-off charts) -------------------
def instance_hourly(instance: str, as_of: str | None = None) -> float:
    """Hourly USD price of ``instance`` from the dated price table (data/prices.csv)."""
    return float(instance_price(load_prices(), instance, as_of)["hourly_usd"])


def self_hosted_usd_per_request(
    hourly_usd: float,
    mean_latency_s: float,
    utilization: float,
    requests_per_hour: float | None = None,
) -> float:
    """Hourly price / requests served per hour, at ``utilization`` of capacity.

    ``requests_per_hour``: a load test's capacity at the target (see
    :func:`hosting_throughput`); without it one request at a time (METHOD.md section 4:
    cost/request = hourly price / (3600 / latency x utilization)). NaN when unknown.

    >>> round(self_hosted_usd_per_request(0.36, 1.0, 0.5), 6)
    0.0002
    >>> round(self_hosted_usd_per_request(0.36, 1.0, 0.5, requests_per_hour=7200.0), 6)
    0.0001
    """
    check_utilization(utilization)
    if requests_per_hour is not None and requests_per_hour == requests_per_hour:
        if requests_per_hour > 0:
            return float(hourly_usd) / (float(requests_per_hour) * utilization)
    if not mean_latency_s or not np.isfinite(mean_latency_s):
        return float("nan")
    return self_hosted_cost_per_request(hourly_usd, mean_latency_s, utilization)


def reference_point(
    refs: pd.DataFrame,
    price_name: str = "gpt-4",
    as_of: str | None = None,
    name: str = "GPT-4",
    quality: float = 1.0,
    prompt_tokens: float | None = None,
    prices: pd.DataFrame | None = None,
    price_in_per_1k: float | None = None,
    price_out_per_1k: float | None = None,
) -> dict[str, Any]:
    """The reference API as a point for ``charts.pareto_scatter`` (cost from token usage).

    Priced from the row ``price_name`` of the dated price table (the newest dated on or
    before ``as_of``), or at explicit ``price_in_per_1k``/``price_out_per_1k`` (both or
    neither). ``refs``: reference rows with ``completion_tokens``, ``prompt_tokens``,
    ``latency_s`` and — only where token counts are missing — ``text`` / ``prompt``, which
    are then counted offline with the cl100k tokenizer (``bpe-openai``; + 7 tokens of chat
    framing on the prompt side). ``prompt_tokens`` overrides the prompt side.
    """
    if (price_in_per_1k is None) != (price_out_per_1k is None):
        raise SlamkitError("reference_point: pass both price_in_per_1k and price_out_per_1k.")
    if price_in_per_1k is not None:
        p_in = _explicit_price(price_in_per_1k, "price_in_per_1k")
        p_out = _explicit_price(price_out_per_1k, "price_out_per_1k")
        date, source = None, "explicit"
    else:
        row = api_price(load_prices() if prices is None else prices, price_name, as_of)
        p_in, p_out = float(row["input_per_1k_usd"]), float(row["output_per_1k_usd"])
        date, source = row["date"].date().isoformat(), "price table"
    comp = refs["completion_tokens"].astype(float)
    if comp.isna().any() and "completion_tokens_counted" in refs:  # counted at import
        comp = comp.fillna(refs["completion_tokens_counted"].astype(float))
    if comp.isna().any() and "text" in refs:
        comp = comp.fillna(pd.Series(count_tokens(list(refs["text"])), index=refs.index))
    ptok = prompt_tokens
    if ptok is None:
        p = refs["prompt_tokens"].astype(float)
        if p.isna().any() and "prompt_tokens_counted" in refs:  # counted at import (+ framing)
            p = p.fillna(refs["prompt_tokens_counted"].astype(float) + 7)
        if p.isna().any() and "prompt" in refs:
            counted = pd.Series(count_tokens(list(refs["prompt"].fillna(""))), index=refs.index)
            p = p.fillna(counted + 7)
        ptok = float(p.mean()) if p.notna().any() else 0.0
    per_req = api_cost_per_request(ptok, float(comp.mean()), p_in, p_out)
    lat = refs["latency_s"].astype(float).dropna()
    return {
        "name": name,
        "quality": quality,
        "cost_per_1k": per_req * 1000,
        "usd_per_request": per_req,
        "p95_latency_s": float(lat.quantile(0.95)) if len(lat) else float("nan"),
        "prompt_tokens": ptok,
        "completion_tokens": float(comp.mean()),
        "price_name": None if source == "explicit" else price_name,
        "price_date": date,
        "price_source": source,
        "price_in_per_1k": p_in,
        "price_out_per_1k": p_out,
    }


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
    for r in hosting_throughput(perf).itertuples(index=False):
        cap = r.requests_per_hour * utilization * HOURS_PER_MONTH
        rows.append(
            {
                "variant": r.variant,
                "kind": "self-hosted",
                "usd_per_request": np.nan,
                "monthly_fixed_usd": hourly_usd * HOURS_PER_MONTH,
                "capacity_per_month": cap,
                "throughput_basis": r.throughput_basis,
            }
        )
    return pd.DataFrame(rows)


def cost_components(
    perf: pd.DataFrame, reference: dict[str, Any], hourly_usd: float, utilization: float
) -> pd.DataFrame:
    """Long rows for ``charts.cost_breakdown`` (USD per 1,000 requests by component).

    ``reference``: :func:`reference_point` (its token counts and prices)."""
    pin, pout = reference["price_in_per_1k"], reference["price_out_per_1k"]
    rows = [
        {"variant": reference["name"], "component": "API input tokens",
         "usd_per_1k": reference["prompt_tokens"] * pin},
        {"variant": reference["name"], "component": "API output tokens",
         "usd_per_1k": reference["completion_tokens"] * pout},
    ]  # fmt: skip
    for r in hosting_throughput(perf).itertuples(index=False):
        usd = self_hosted_usd_per_request(
            hourly_usd, r.mean_latency_s, utilization, r.requests_per_hour
        )
        rows.append({"variant": r.variant, "component": "hardware (self-hosted)",
                     "usd_per_1k": usd * 1000})  # fmt: skip
    return pd.DataFrame(rows)


def usage_from_summary(
    perf: pd.DataFrame, reference: dict[str, Any], hourly_usd: float | None = None
) -> pd.DataFrame:
    """The ``usage`` input of :func:`cost_table` from per-variant aggregates.

    ``perf``: :func:`slamkit.store.aggregates.variant_summary` rows (mean tokens and
    latency per variant, computed in the database); ``reference``: :func:`reference_point`
    — its row is priced from the same price-table row (or its explicit prices).
    """
    explicit = reference.get("price_source") == "explicit"
    rows = [
        {"model": r.variant, "kind": "self-hosted", "tokens_in": r.prompt_tokens,
         "tokens_out": r.completion_tokens, "latency_s": r.mean_latency_s,
         "n_requests": r.n, "truncated_share": r.truncated_share,
         "input_per_1k_usd": np.nan, "output_per_1k_usd": np.nan,
         "capacity_rph": r.requests_per_hour if is_capacity_basis(r.throughput_basis)
         else np.nan, "throughput_basis": r.throughput_basis}
        for r in hosting_throughput(perf).itertuples(index=False)
    ]  # fmt: skip
    rows.append(
        {"model": reference.get("price_name") or reference["name"], "kind": "api",
         "tokens_in": reference["prompt_tokens"], "tokens_out": reference["completion_tokens"],
         "latency_s": np.nan, "n_requests": np.nan, "truncated_share": np.nan,
         "input_per_1k_usd": reference["price_in_per_1k"] if explicit else np.nan,
         "output_per_1k_usd": reference["price_out_per_1k"] if explicit else np.nan,
         "capacity_rph": np.nan, "throughput_basis": None}
    )  # fmt: skip
    out = pd.DataFrame(rows)
    if hourly_usd is not None:
        out["hourly_usd"] = [hourly_usd if k == "self-hosted" else np.nan for k in out["kind"]]
    return out


def servers_needed(
    requests_per_month: float,
    latency_s: float,
    utilization: float,
    requests_per_hour: float | None = None,
) -> int:
    """Always-on instances (at least one) that serve ``requests_per_month`` at
    ``utilization`` of capacity: ``requests_per_hour`` per server (a load test's capacity)
    or, without it, one request at a time at ``latency_s``.

    >>> servers_needed(100_000, 2.0, 0.5)
    1
    >>> servers_needed(1_000_000, 2.0, 0.5, requests_per_hour=1000.0)
    3
    """
    check_utilization(utilization)
    rph = requests_per_hour if requests_per_hour and requests_per_hour > 0 else 3600.0 / latency_s
    capacity = rph * utilization * HOURS_PER_MONTH
    return max(1, int(math.ceil(requests_per_month / capacity)))


def monthly_self_hosted(requests_per_month: float, latency_s: float, hourly_usd: float,
                        utilization: float,
                        requests_per_hour: float | None = None) -> float:  # fmt: skip
    """USD per month of the always-on instances :func:`servers_needed` counts."""
    n = servers_needed(requests_per_month, latency_s, utilization, requests_per_hour)
    return n * hourly_usd * HOURS_PER_MONTH


def hosting_throughput(perf: pd.DataFrame, capacity: pd.DataFrame | None = None) -> pd.DataFrame:
    """``perf`` with ``requests_per_hour`` (one server) and ``throughput_basis`` per variant:
    the capacity at the latency target of its newest load test where ``capacity``
    (:func:`slamkit.serving.capacity_frame`: ``model, requests_per_hour, basis``) has one,
    else one request at a time at the measured mean latency. Columns already there are
    kept (so priced frames can be passed again).

    >>> p = pd.DataFrame({"variant": ["a", "b"], "mean_latency_s": [2.0, 4.0]})
    >>> cap = pd.DataFrame({"model": ["b"], "requests_per_hour": [5000.0], "basis": ["load"]})
    >>> hosting_throughput(p, cap)[["variant", "requests_per_hour"]]
      variant  requests_per_hour
    0       a             1800.0
    1       b             5000.0
    >>> list(hosting_throughput(p, cap)["throughput_basis"]) == [SEQUENTIAL_BASIS, "load"]
    True
    """
    out = perf.copy()
    if "requests_per_hour" in out.columns and "throughput_basis" in out.columns:
        return out
    lat = pd.to_numeric(out["mean_latency_s"], errors="coerce") if len(out) else pd.Series(
        dtype=float)  # fmt: skip
    out["requests_per_hour"] = np.where(lat > 0, 3600.0 / lat, np.nan) if len(out) else []
    out["throughput_basis"] = SEQUENTIAL_BASIS
    if capacity is not None and len(capacity) and len(out):
        cap = capacity.set_index("model")
        for i, v in zip(out.index, out["variant"], strict=True):
            if v not in cap.index:
                continue
            rph = float(cap.loc[v, "requests_per_hour"])
            if rph > 0:
                out.loc[i, "requests_per_hour"] = rph
                out.loc[i, "throughput_basis"] = str(cap.loc[v, "basis"])
            else:  # its load test met the target at no load: say so, beside the price
                out.loc[i, "throughput_basis"] = (
                    f"{SEQUENTIAL_BASIS}; NOT at the latency target: {cap.loc[v, 'basis']}"
                )
    return out


def is_capacity_basis(basis: object) -> bool:
    """True when a ``throughput_basis`` is a load test's capacity at the target."""
    return isinstance(basis, str) and basis.startswith("load test")
