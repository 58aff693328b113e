"""Latency consistency statistics with CIs, side by side with the reference API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from slamkit.errors import SlamkitError
from slamkit.latency import latency_summary, summarize, wide, with_reference


def test_summary_values_match_numpy_and_cis_bracket_them() -> None:
    rng = np.random.default_rng(0)
    x = rng.lognormal(0, 0.5, 400)
    s = summarize(x, n_boot=300).set_index("stat")
    assert s.loc["p50", "value"] == pytest.approx(np.median(x))
    assert s.loc["p99", "value"] == pytest.approx(np.quantile(x, 0.99))
    assert s.loc["cv", "value"] == pytest.approx(x.std(ddof=1) / x.mean())
    assert s.loc["tail_ratio", "value"] == pytest.approx(np.quantile(x, 0.99) / np.median(x))
    assert (s["ci_lo"] <= s["value"]).all() and (s["value"] <= s["ci_hi"]).all()
    # lognormal(0, 0.5): median 1, cv = sqrt(exp(0.25) - 1) = 0.533
    assert s.loc["p50", "ci_lo"] < 1.0 < s.loc["p50", "ci_hi"]
    assert s.loc["cv", "ci_lo"] < 0.533 < s.loc["cv", "ci_hi"]


def test_consistent_model_has_lower_cv_and_tail_ratio_than_the_api() -> None:
    rng = np.random.default_rng(1)
    gens = pd.DataFrame(
        {"model": "smol", "latency_s": rng.normal(2.0, 0.1, 200), "ttft_s": 0.05,
         "decode_tps": rng.normal(50, 2, 200), "error": None}
    )  # fmt: skip
    gens.loc[0, "error"] = "timeout"
    gens.loc[0, "latency_s"] = 999.0  # a failed call must not count
    refs = pd.DataFrame(
        {"source_model": "gpt-4", "latency_s": rng.lognormal(1.5, 0.6, 150),
         "ttft_s": rng.lognormal(-0.5, 0.7, 150)}
    )  # fmt: skip
    both = with_reference(gens, refs)
    out = latency_summary(both, n_boot=200)
    w = wide(out).set_index(["model", "metric"])
    assert w.loc[("smol", "latency_s"), "n"] == 199
    assert w.loc[("smol", "latency_s"), "p99"] < 3
    assert w.loc[("smol", "latency_s"), "cv_hi"] < w.loc[("gpt-4", "latency_s"), "cv_lo"]
    assert w.loc[("gpt-4", "latency_s"), "tail_ratio"] > 2
    assert ("gpt-4", "decode_tps") not in w.index  # the API has no decode rate
    assert set(out["source"]) == {"self-hosted", "reference API"}
    assert out.attrs["n_boot"] == 200


def test_errors_name_columns() -> None:
    with pytest.raises(SlamkitError, match="model_id"):
        latency_summary(pd.DataFrame({"latency_s": [1.0]}), by="model_id")
    with pytest.raises(SlamkitError, match="None of the latency columns"):
        latency_summary(pd.DataFrame({"model": ["a"], "x": [1.0]}))
