"""Store -> chart frames: filters, pairwise verdicts, conformity, reference pricing, escaping."""

from __future__ import annotations

import pandas as pd
import pytest

from slamkit import report
from slamkit.store import Store


def _fill(st: Store) -> None:
    st.insert("tasks", {"task_id": "t", "template": "{instruction}"})
    st.insert_many(
        "items",
        [{"task_id": "t", "item_id": f"i{i}", "position": i,
          "fields": {"instruction": "Say hi", "dataset": "koala" if i < 2 else "oasst"},
          "prompt": "Say hi"} for i in range(3)],
    )  # fmt: skip
    st.insert_many(
        "reference_outputs",
        [{"ref_id": f"r{i}", "task_id": "t", "item_id": f"i{i}", "source_model": "gpt",
          "text": "Hello there", "completion_tokens": None, "prompt_tokens": None}
         for i in range(3)],
    )  # fmt: skip
    st.insert_many(
        "models",
        [{"model_id": m, "name": m, "path": f"{m}.gguf", "family": "f", "quant": "Q4_0"}
         for m in ("a", "b")],
    )  # fmt: skip
    gens, scores = [], []
    for m, base in (("a", 0.5), ("b", 0.3)):
        for i in range(3):
            for mt in (16, 32):
                key = f"{m}{i}{mt}"
                gens.append(
                    {"gen_key": key, "run_id": "r", "model_id": m, "task_id": "t",
                     "item_id": f"i{i}", "sample_index": 0, "seed": 0,
                     "sampling": {"temperature": 0.0, "max_tokens": mt},
                     "text": "<b>hi</b>" if m == "a" else "hi", "latency_s": 1.0 + i,
                     "completion_tokens": 3, "prompt_tokens": 5, "decode_tps": 10.0}
                )  # fmt: skip
                value = base if i != 2 else 0.4
                scores.append({"gen_key": key, "metric": "rougeL", "metric_version": "1",
                               "value": value})  # fmt: skip
    st.insert_many("generations", gens)
    st.insert_many("scores", scores)


def test_load_filters_items_models_and_sampling(store: Store) -> None:
    _fill(store)
    path = store.path
    store.close()
    data = report.load(path, "t", models=["a"], n_items=2, max_tokens=16)
    assert set(data.gens["variant"]) == {"a"} and len(data.gens) == 2
    assert set(data.scores["item_id"]) == {"i0", "i1"} and len(data.scores) == 2
    assert list(data.subsets["subset"]) == ["koala", "koala"]
    assert len(data.refs) == 2 and (data.refs["prompt"] == "Say hi").all()
    with pytest.raises(Exception, match=r"No generations for model\(s\) \['zzz'\]"):
        report.load(path, "t", models=["zzz"])


def test_pairwise_and_conformity_by_hand(store: Store) -> None:
    _fill(store)
    path = store.path
    store.close()
    s = report.load(path, "t", max_tokens=16).scores
    v = report.verdicts_from_scores(s, "rougeL")
    # items 0, 1: a (0.5) beats b (0.3); item 2: both 0.4 -> tie
    assert sorted(v["winner"]) == ["a", "a", "tie"]
    w = report.winrates_from_scores(s, "rougeL").set_index(["model_a", "model_b"])
    assert w.loc[("a", "b"), "win_rate"] == pytest.approx(2.5 / 3)
    assert w.loc[("b", "a"), "win_rate"] == pytest.approx(0.5 / 3)
    c = report.conformity(s, "rougeL", 0.4).groupby("variant")["conform"].sum()
    assert c.to_dict() == {"a": 3, "b": 1}
    q = report.quality_summary(s, "rougeL").set_index("variant")
    assert q.loc["a", "mean"] == pytest.approx(1.4 / 3) and q.loc["a", "n"] == 3
    assert q.loc["a", "lo"] <= q.loc["a", "mean"] <= q.loc["a", "hi"]


def test_reference_point_counts_missing_tokens(store: Store) -> None:
    _fill(store)
    refs = report.load_references(store, "t")
    ref = report.reference_point(refs, 0.03, 0.06)
    # "Hello there" = 2 cl100k tokens; "Say hi" = 2 tokens + 7 of chat framing
    assert ref["completion_tokens"] == 2 and ref["prompt_tokens"] == 9
    assert ref["usd_per_request"] == pytest.approx((9 * 0.03 + 2 * 0.06) / 1000)
    assert ref["cost_per_1k"] == pytest.approx(ref["usd_per_request"] * 1000)


def test_samples_table_escapes_model_output() -> None:
    gens = pd.DataFrame(
        {"item_id": ["i0"], "variant": ["<i>m</i>"], "sample_index": [0],
         "text": ["<script>alert(1)</script>"]}
    )  # fmt: skip
    refs = pd.DataFrame({"item_id": ["i0"], "text": ["<img src=x onerror=alert(2)>"]})
    html = report.samples_table(gens, refs)
    assert "<script>" not in html and "<img" not in html and "<i>m" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _perf_quality() -> tuple[pd.DataFrame, pd.DataFrame]:
    gens = pd.DataFrame(
        {"variant": ["a"] * 4 + ["b"] * 2, "family": "f", "quant": "Q4_0", "error": None,
         "latency_s": 1.0, "ttft_s": 0.1, "decode_tps": 10.0, "prompt_tokens": 5,
         "completion_tokens": 16, "finish_reason": ["length", "length", "length", "stop",
                                                    None, None]}
    )  # fmt: skip
    q = pd.DataFrame({"variant": ["a", "b"], "mean": [0.5, 0.4], "lo": [0.4, 0.3],
                      "hi": [0.6, 0.5], "n": [4, 2], "level": 0.95})  # fmt: skip
    return report.performance_summary(gens), q


def test_headline_truncation_share_and_dash_for_missing() -> None:
    perf, q = _perf_quality()
    # b has no recorded finish reason: unknown, not 0%
    assert perf.set_index("variant")["truncated_share"].fillna(-1).to_dict() == {"a": 0.75, "b": -1}
    ref = {"name": "GPT-4", "p95_latency_s": float("nan"), "cost_per_1k": 30.0}
    h = report.headline(perf, q, ref, hourly_usd=1.0, utilization=0.5, metric="rougeL")
    h = h.set_index("variant")
    assert h.loc["a", report.TRUNCATED_COL] == 75.0
    # the frame stays numeric (NaN / <NA>) ...
    assert pd.isna(h.loc["GPT-4 (API reference)", "p95 latency (s)"])
    assert pd.isna(h.loc["GPT-4 (API reference)", "items"])
    assert h[report.TRUNCATED_COL].dtype == float
    # ... and the report shows an em dash instead of NaN, <NA> or None
    shown = report.display_table(h)
    page, text = shown._repr_html_(), repr(shown)
    for bad in ("NaN", "&lt;NA&gt;", "<NA>", "None", "nan"):
        assert bad not in page and bad not in text, bad
    assert (
        page.count(report.MISSING) == 6
    )  # GPT-4: items, p50, p95, decode, truncated; b: truncated
    assert shown.frame is h


def test_provenance_shows_dash_for_missing(store: Store) -> None:
    store.insert("runs", {"run_id": "imp", "kind": "import"})
    store.insert("runs", {"run_id": "gen", "kind": "generate", "n_threads": 1, "seed": 0})
    prov = report.provenance(store.df("SELECT * FROM runs ORDER BY run_id"))
    assert pd.isna(prov.loc["imp", "n_threads"])
    page = report.display_table(prov)._repr_html_()
    assert "&lt;NA&gt;" not in page and "NaN" not in page and "None" not in page
    assert report.MISSING in page


def test_selection_table_per_model_and_equivalence_label(store: Store) -> None:
    """SMART on the stored scores: per-model conformity, CP interval at gamma, verdict; the
    stored equivalence is named by the metric actually used, not 'embedding-similarity'."""
    import json

    from slamkit import smart

    _fill(store)
    eq = smart.EmbeddingSimilarity(tau=0.4, column="rougeL")
    sel = smart.smart_from_store(store, "t", "gpt", eq, delta=0.1, gamma=0.9,
                                 cost_per_item={"a": 0.001, "b": 0.0005, "gpt": 0.03})  # fmt: skip
    stored = store.df("SELECT * FROM selections").iloc[0]
    assert json.loads(stored["equivalence"])["name"] == "score>=tau:rougeL>=0.4"
    for src in (sel, stored):  # the Selection object or its stored row
        t = report.selection_table(src).set_index("model")
        # rougeL >= 0.4: a conforms on all 3 items (0.5, 0.5, 0.4), b on 1 (item 2)
        assert t.loc["a", "conforming"] == 3 and t.loc["a", "profiled"] == 3
        assert t.loc["b", "conforming"] == 1 and t.loc["b", "profiled"] == 3
        lo, hi = smart.clopper_pearson(1, 3, 0.9)
        assert t.loc["b", "cp_lo"] == pytest.approx(float(lo))
        assert t.loc["b", "cp_hi"] == pytest.approx(float(hi))
        assert t.loc["a", "cp_hi"] == 1.0 and t.loc["a", "target"] == pytest.approx(0.9)
        assert set(t["verdict"]) <= {"invalid", "satisfied", "unknown"}
        # the verdict is the method's (anytime-valid bounds, wider than one-look CP): CP
        # alone would call b invalid, the confidence sequence cannot tell yet
        assert t.loc["b", "cp_hi"] < 0.9 <= t.loc["b", "bound_hi"]
        assert t.loc["b", "verdict"] == "unknown"
    page = report.selection_display(stored)._repr_html_()
    assert "1/3" in page and "Clopper-Pearson 90% CI" in page and "unknown" in page
