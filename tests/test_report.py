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
