"""The cost model reproduces a hand-worked example exactly, with every input visible."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from slamkit.cost import (
    api_cost_per_request,
    api_price,
    cost_table,
    count_tokens,
    load_prices,
    price_name_for,
    self_hosted_cost_per_request,
    usage_frame,
)
from slamkit.errors import SlamkitError

EXACT = 1e-12


def test_hand_worked_example() -> None:
    """GPT-4 (Dec 2023: $0.03 / 1K input, $0.06 / 1K output) vs a self-hosted model.

    Request: 500 input tokens, 200 output tokens.
      API:    500 * 0.03 / 1000 + 200 * 0.06 / 1000 = 0.015 + 0.012 = $0.027 per request
              $/1M output tokens = 0.027 / 200 * 1e6 = $135
    Self-hosted on a $0.90/hour instance, 4.0 s per request, one stream, 50% utilized:
      requests/hour = 3600 * 1 / 4.0 = 900; at 50% utilization 450 served per hour
      cost/request  = 0.90 / 450 = $0.002;  $/1M output tokens = 0.002 / 200 * 1e6 = $10
    Ratio API / self-hosted = 0.027 / 0.002 = 13.5
    Monthly at 100,000 requests: API 100,000 * 0.027 = $2,700; self-hosted 100,000 * 0.002 =
      $200 pay-per-use; always-on: capacity 450 * 730 = 328,500 requests/month >= 100,000 ->
      one instance, 0.90 * 730 = $657
    Break-even: one always-on instance ($657/month) = API bill at 657 / 0.027 = 24,333.33
      requests/month (within its capacity of 328,500).
    """
    usage = pd.DataFrame(
        [
            {"model": "gpt-4", "kind": "api", "tokens_in": 500, "tokens_out": 200},
            {"model": "my-7b.Q4_K_M", "kind": "self-hosted", "tokens_in": 500,
             "tokens_out": 200, "latency_s": 4.0, "hourly_usd": 0.90, "instance": "my-box"},
        ]
    )  # fmt: skip
    t = cost_table(usage, reference="gpt-4", utilization=0.5, monthly_requests=100_000,
                   as_of="2023-12-31").set_index("model")  # fmt: skip
    api, me = t.loc["gpt-4"], t.loc["my-7b.Q4_K_M"]
    # every input is in the output
    assert (api["input_per_1k_usd"], api["output_per_1k_usd"]) == (0.03, 0.06)
    assert api["price_date"] == "2023-12-01"
    assert (me["hourly_usd"], me["latency_s"], me["utilization"], me["concurrency"]) == (
        0.90, 4.0, 0.5, 1.0)  # fmt: skip
    expected = {
        ("gpt-4", "cost_per_request"): 0.027,
        ("gpt-4", "cost_per_1m_output_tokens"): 135.0,
        ("gpt-4", "monthly_cost"): 2700.0,
        ("my-7b.Q4_K_M", "requests_per_hour"): 900.0,
        ("my-7b.Q4_K_M", "cost_per_request"): 0.002,
        ("my-7b.Q4_K_M", "cost_per_1m_output_tokens"): 10.0,
        ("my-7b.Q4_K_M", "api_to_self_ratio"): 13.5,
        ("my-7b.Q4_K_M", "monthly_cost"): 200.0,
        ("my-7b.Q4_K_M", "instances_always_on"): 1.0,
        ("my-7b.Q4_K_M", "monthly_cost_always_on"): 657.0,
        ("my-7b.Q4_K_M", "break_even_requests_per_month"): 657 / 0.027,
        ("my-7b.Q4_K_M", "reference_cost_per_request"): 0.027,
    }
    for (model, col), value in expected.items():
        assert math.isclose(t.loc[model, col], value, rel_tol=EXACT), (model, col)
    assert t.loc["my-7b.Q4_K_M", "break_even_requests_per_month"] == pytest.approx(24333.3333)
    assert math.isnan(api["break_even_requests_per_month"])


def test_formulas_directly() -> None:
    assert math.isclose(api_cost_per_request(500, 200, 0.03, 0.06), 0.027, rel_tol=EXACT)
    assert math.isclose(self_hosted_cost_per_request(0.9, 4.0, 0.5), 0.002, rel_tol=EXACT)
    assert math.isclose(self_hosted_cost_per_request(0.9, 4.0, 0.5, 4), 0.0005, rel_tol=EXACT)
    with pytest.raises(SlamkitError, match="utilization"):
        self_hosted_cost_per_request(0.9, 4.0, 0.0)


def test_price_table_is_dated_and_complete() -> None:
    p = load_prices()
    gpt4 = api_price(p, "gpt-4")
    assert (gpt4["input_per_1k_usd"], gpt4["output_per_1k_usd"]) == (0.03, 0.06)
    for name in ["gpt-4-1106-preview", "gpt-4-turbo", "gpt-4o", "gpt-3.5-turbo-1106",
                 "gpt-3.5-turbo-instruct", "davinci-002", "babbage-002"]:  # fmt: skip
        assert api_price(p, name)["source"].startswith("http")
    # the newest row on or before a date wins
    assert api_price(p, "gpt-4o", as_of="2024-06-01")["input_per_1k_usd"] == 0.005
    assert api_price(p, "gpt-4o")["input_per_1k_usd"] == 0.0025
    assert (p["kind"] == "instance").sum() >= 4 and p["date"].notna().all()
    with pytest.raises(SlamkitError, match="Add a row to data/prices.csv"):
        api_price(p, "gpt-4o", as_of="2020-01-01")
    assert price_name_for("gpt4_1106_preview") == "gpt-4-1106-preview"


def test_price_table_errors_name_the_row(tmp_path) -> None:
    bad = tmp_path / "p.csv"
    bad.write_text(
        "kind,name,input_per_1k_usd,output_per_1k_usd,hourly_usd,hardware,date,source,notes\n"
        "api,x,0.1,,,,2024-01-01,s,\n"
    )
    with pytest.raises(SlamkitError, match=r"row\(s\) \[2\]"):
        load_prices(bad)


def test_offline_gpt4_token_counts() -> None:
    assert count_tokens(["hello world", None]) == [2, 0]
    assert count_tokens(["Write a four-sentence pep talk."])[0] > 5


def test_self_hosted_without_latency_is_an_error() -> None:
    usage = pd.DataFrame([{"model": "m", "kind": "self-hosted", "tokens_in": 1, "tokens_out": 1}])
    with pytest.raises(SlamkitError, match="latency_s"):
        cost_table(usage)


def test_usage_from_stored_rows_feeds_the_cost_table() -> None:
    gens = pd.DataFrame(
        {"model": ["a", "a", "a"], "prompt_tokens": [10, 20, 99], "completion_tokens": [30, 50, 9],
         "latency_s": [1.0, 3.0, 60.0], "error": [None, None, "timeout"]}
    )  # fmt: skip
    refs = pd.DataFrame({"text": ["hello world", "hello"], "completion_tokens": [None, None],
                         "prompt_tokens": [15, 25], "latency_s": [2.0, 4.0]})  # fmt: skip
    u = usage_frame(gens, refs).set_index("model")
    assert u.loc["a", "tokens_in"] == 15 and u.loc["a", "latency_s"] == 2.0
    assert u.loc["gpt-4", "tokens_out"] == 1.5 and u.loc["gpt-4", "kind"] == "api"
    t = cost_table(u.reset_index(), instance="aws-c7i.large", utilization=1.0).set_index("model")
    hourly = t.loc["a", "hourly_usd"]
    assert t.loc["a", "instance"] == "aws-c7i.large" and hourly == 0.08925
    assert math.isclose(t.loc["a", "cost_per_request"], hourly / 1800, rel_tol=EXACT)
    ref = (20 * 0.03 + 1.5 * 0.06) / 1000
    assert math.isclose(t.loc["a", "api_to_self_ratio"], ref / (hourly / 1800), rel_tol=EXACT)


def _usage(**self_hosted: object) -> pd.DataFrame:
    me = {"model": "me", "kind": "self-hosted", "tokens_in": 500, "tokens_out": 200,
          "latency_s": 4.0, "hourly_usd": 0.90} | self_hosted  # fmt: skip
    return pd.DataFrame([{"model": "gpt-4", "kind": "api", "tokens_in": 500, "tokens_out": 200},
                         me])  # fmt: skip


@pytest.mark.parametrize("bad", [math.nan, 0.0, 0, -0.5, 1.5, 2.0, None, "half"])
def test_utilization_outside_0_1_is_an_error_naming_model_and_value(bad: object) -> None:
    with pytest.raises(SlamkitError, match=r"'me'.*utilization must be .*\(0, 1\]") as ei:
        cost_table(_usage(), utilization=bad, as_of="2023-12-31")  # type: ignore[arg-type]
    assert repr(bad) in str(ei.value)
    # a row value that is set but invalid is an error too, not the default (None/NaN in a
    # row mean "not set": a usage frame with the column for some rows only has NaN elsewhere)
    if not (bad is None or bad != bad):
        with pytest.raises(SlamkitError, match=r"'me' \(its usage row\).*utilization"):
            cost_table(_usage(utilization=bad), as_of="2023-12-31")
    with pytest.raises(SlamkitError, match="utilization"):
        self_hosted_cost_per_request(0.9, 4.0, bad)  # type: ignore[arg-type]


def test_row_utilization_zero_is_not_replaced_by_the_default() -> None:
    with pytest.raises(SlamkitError, match=r"got 0\b"):
        cost_table(_usage(utilization=0), utilization=0.5, as_of="2023-12-31")
    t = cost_table(_usage(utilization=1.0), utilization=0.5, as_of="2023-12-31")
    assert t.set_index("model").loc["me", "utilization"] == 1.0  # the row wins over 0.5
    with pytest.raises(SlamkitError, match="concurrency"):
        cost_table(_usage(concurrency=0), as_of="2023-12-31")


def test_unknown_reference_cost_gives_nan_break_even_not_inf() -> None:
    usage = _usage()
    usage.loc[0, "tokens_out"] = math.nan  # the API's usage is unknown
    t = cost_table(usage, utilization=0.5, as_of="2023-12-31").set_index("model")
    assert math.isnan(t.loc["me", "break_even_requests_per_month"])
    # a finite cost that one instance cannot match still reads "never" (inf)
    slow = cost_table(_usage(latency_s=4000.0), utilization=0.5, as_of="2023-12-31")
    assert slow.set_index("model").loc["me", "break_even_requests_per_month"] == math.inf


def test_explicit_api_prices_override_the_price_table() -> None:
    """The notebook's price parameters reach the table: 500 in, 200 out at $0.01/$0.02 per 1K
    = 0.005 + 0.004 = $0.009 per request (the table's gpt-4 row would give $0.027)."""
    t = cost_table(_usage(), utilization=0.5, price_in_per_1k=0.01, price_out_per_1k=0.02)
    t = t.set_index("model")
    api = t.loc["gpt-4"]
    assert (api["input_per_1k_usd"], api["output_per_1k_usd"]) == (0.01, 0.02)
    assert api["price_source"] == "explicit" and api["price_date"] is None
    assert math.isclose(api["cost_per_request"], 0.009, rel_tol=EXACT)
    assert math.isclose(t.loc["me", "api_to_self_ratio"], 0.009 / 0.002, rel_tol=EXACT)
    # the same prices through usage_frame (a row with its own prices)
    gens = pd.DataFrame({"model": ["me"], "prompt_tokens": [500], "completion_tokens": [200],
                         "latency_s": [4.0]})  # fmt: skip
    refs = pd.DataFrame({"completion_tokens": [200], "prompt_tokens": [500]})
    u = usage_frame(gens, refs, price_in_per_1k=0.01, price_out_per_1k=0.02).assign(hourly_usd=0.9)
    t2 = cost_table(u, utilization=0.5).set_index("model")
    assert math.isclose(t2.loc["gpt-4", "cost_per_request"], 0.009, rel_tol=EXACT)
    with pytest.raises(SlamkitError, match="both price_in_per_1k and price_out_per_1k"):
        cost_table(_usage(), price_in_per_1k=0.01)
    with pytest.raises(SlamkitError, match="price_out_per_1k must be a price"):
        cost_table(_usage(), price_in_per_1k=0.01, price_out_per_1k=math.nan)


def test_ratio_per_output_token_and_truncated_share() -> None:
    """API: 500 in + 600 out at $0.03/$0.06 = 0.015 + 0.036 = $0.051/request,
    $85 per 1M output tokens. Self-hosted: 128 tokens out, $0.002/request -> $15.625 per 1M
    output tokens. Per request the API costs 25.5x; per output token only 85 / 15.625 = 5.44x.
    3 of 4 generations stopped at the limit (finish_reason 'length')."""
    gens = pd.DataFrame(
        {"model": ["me"] * 4, "prompt_tokens": [500] * 4, "completion_tokens": [128] * 4,
         "latency_s": [4.0] * 4, "finish_reason": ["length", "length", "stop", "length"]}
    )  # fmt: skip
    refs = pd.DataFrame({"completion_tokens": [600, 600], "prompt_tokens": [500, 500]})
    u = usage_frame(gens, refs).assign(hourly_usd=0.9)
    t = cost_table(u, utilization=0.5, as_of="2023-12-31").set_index("model")
    me = t.loc["me"]
    assert me["truncated_share"] == 0.75 and math.isnan(t.loc["gpt-4", "truncated_share"])
    assert math.isclose(me["api_to_self_ratio"], 0.051 / 0.002, rel_tol=EXACT)
    assert math.isclose(me["cost_per_1m_output_tokens"], 15.625, rel_tol=EXACT)
    assert math.isclose(me["ratio_per_output_token"], 85 / 15.625, rel_tol=EXACT)
    assert t.loc["gpt-4", "ratio_per_output_token"] == pytest.approx(1.0)
    # without finish_reason: completion_tokens >= max_tokens from the sampling JSON
    fallback = gens.drop(columns="finish_reason").assign(
        sampling='{"max_tokens": 128, "temperature": 0.0}',
        completion_tokens=[128, 100, 128, 5],
    )
    assert usage_frame(fallback)["truncated_share"].iloc[0] == 0.5
