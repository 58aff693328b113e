"""Store -> Study -> chart frames: filters in the database, aggregates that match a pandas
computation, pairwise verdicts, conformity, reference pricing, escaping."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from slamkit import Study, cost, display, frames
from slamkit.smart.display import selection_display, selection_table
from slamkit.store import Selection, Store, aggregates, readers


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
    study = Study(path, "t", models=["a"], n_items=2, max_tokens=16, reference_model="gpt")
    assert list(study.perf["variant"]) == ["a"] and study.perf["n"].tolist() == [2]
    assert set(study.scores["item_id"]) == {"i0", "i1"} and len(study.scores) == 2
    assert list(study.subsets["subset"]) == ["koala", "koala"]
    assert len(study.refs) == 2 and (study.refs["prompt"] == "Say hi").all()
    with Store(path, read_only=True) as st:
        gens = readers.generations(st, study.selection)
    assert set(gens["variant"]) == {"a"} and len(gens) == 2 and "text" not in gens
    with pytest.raises(Exception, match=r"No generations for model\(s\) \['zzz'\]"):
        Study(path, "t", models=["zzz"])


def test_pairwise_and_conformity_by_hand(store: Store) -> None:
    _fill(store)
    path = store.path
    store.close()
    s = Study(path, "t", max_tokens=16, reference_model="gpt").scores
    v = frames.verdicts_from_scores(s, "rougeL")
    # items 0, 1: a (0.5) beats b (0.3); item 2: both 0.4 -> tie
    assert sorted(v["winner"]) == ["a", "a", "tie"]
    w = frames.winrates_from_scores(s, "rougeL").set_index(["model_a", "model_b"])
    assert w.loc[("a", "b"), "win_rate"] == pytest.approx(2.5 / 3)
    assert w.loc[("b", "a"), "win_rate"] == pytest.approx(0.5 / 3)
    c = frames.conformity(s, "rougeL", 0.4).groupby("variant")["conform"].sum()
    assert c.to_dict() == {"a": 3, "b": 1}
    with Store(path, read_only=True) as st:  # the same computed by DuckDB
        c2 = aggregates.conformity(st, Selection("t", max_tokens=16), "rougeL", 0.4)
    assert c2.groupby("variant")["conform"].sum().to_dict() == {"a": 3, "b": 1}
    q = frames.quality_summary(s, "rougeL").set_index("variant")
    assert q.loc["a", "mean"] == pytest.approx(1.4 / 3) and q.loc["a", "n"] == 3
    assert q.loc["a", "lo"] <= q.loc["a", "mean"] <= q.loc["a", "hi"]


def test_reference_point_counts_missing_tokens(store: Store) -> None:
    _fill(store)
    refs = readers.references(store, "t")
    ref = cost.reference_point(refs, "gpt-4")  # 0.03 / 0.06 per 1K tokens, Dec 2023
    assert ref["price_source"] == "price table" and ref["price_date"] == "2023-12-01"
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
    html = display.samples_table(gens, refs)
    assert "<script>" not in html and "<img" not in html and "<i>m" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _perf_quality(store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    store.insert_many(
        "models",
        [{"model_id": m, "name": m, "path": f"{m}.gguf", "family": "f", "quant": "Q4_0"}
         for m in ("a", "b")],
    )  # fmt: skip
    reasons = ["length", "length", "length", "stop", None, None]
    store.insert_many(
        "generations",
        [{"gen_key": f"g{i}", "run_id": "r", "model_id": "a" if i < 4 else "b",
          "task_id": "t", "item_id": f"i{i}", "sample_index": 0, "seed": 0,
          "sampling": {"temperature": 0.0}, "text": "x", "latency_s": 1.0, "ttft_s": 0.1,
          "decode_tps": 10.0, "prompt_tokens": 5, "completion_tokens": 16,
          "finish_reason": r} for i, r in enumerate(reasons)],
    )  # fmt: skip
    q = pd.DataFrame({"variant": ["a", "b"], "mean": [0.5, 0.4], "lo": [0.4, 0.3],
                      "hi": [0.6, 0.5], "n": [4, 2], "level": 0.95})  # fmt: skip
    return aggregates.variant_summary(store, Selection("t")), q


def test_headline_truncation_share_and_dash_for_missing(store: Store) -> None:
    perf, q = _perf_quality(store)
    # b has no recorded finish reason: unknown, not 0%
    assert perf.set_index("variant")["truncated_share"].fillna(-1).to_dict() == {"a": 0.75, "b": -1}
    ref = {"name": "GPT-4", "p95_latency_s": float("nan"), "cost_per_1k": 30.0}
    h = frames.headline(perf, q, ref, hourly_usd=1.0, utilization=0.5, metric="rougeL")
    h = h.set_index("variant")
    assert h.loc["a", frames.TRUNCATED_COL] == 75.0
    # the frame stays numeric (NaN / <NA>) ...
    assert pd.isna(h.loc["GPT-4 (API reference)", "p95 latency (s)"])
    assert pd.isna(h.loc["GPT-4 (API reference)", "items"])
    assert h[frames.TRUNCATED_COL].dtype == float
    # ... and the report shows an em dash instead of NaN, <NA> or None
    shown = display.display_table(h)
    page, text = shown._repr_html_(), repr(shown)
    for bad in ("NaN", "&lt;NA&gt;", "<NA>", "None", "nan"):
        assert bad not in page and bad not in text, bad
    assert (
        page.count(display.MISSING) == 6
    )  # GPT-4: items, p50, p95, decode, truncated; b: truncated
    assert shown.frame is h


def test_provenance_shows_dash_for_missing(store: Store) -> None:
    store.insert("runs", {"run_id": "imp", "kind": "import"})
    store.insert("runs", {"run_id": "gen", "kind": "generate", "n_threads": 1, "seed": 0})
    prov = frames.provenance(readers.runs(store).sort_values("run_id"))
    assert pd.isna(prov.loc["imp", "n_threads"])
    page = display.display_table(prov)._repr_html_()
    assert "&lt;NA&gt;" not in page and "NaN" not in page and "None" not in page
    assert display.MISSING in page


def test_selection_table_per_model_and_equivalence_label(store: Store) -> None:
    """SMART on the stored scores: per-model conformity, CP interval at gamma, verdict; the
    stored equivalence is named by the metric actually used, not 'embedding-similarity'."""
    from slamkit import smart

    _fill(store)
    eq = smart.EmbeddingSimilarity(tau=0.4, column="rougeL")
    sel = smart.smart_from_store(store, "t", "gpt", eq, delta=0.1, gamma=0.9,
                                 cost_per_item={"a": 0.001, "b": 0.0005, "gpt": 0.03})  # fmt: skip
    stored = readers.selections(store).iloc[0]
    assert json.loads(stored["equivalence"])["name"] == "score>=tau:rougeL>=0.4"
    for src in (sel, stored):  # the Selection object or its stored row
        t = selection_table(src).set_index("model")
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
    page = selection_display(stored)._repr_html_()
    assert "1/3" in page and "Clopper-Pearson 90% CI" in page and "unknown" in page


def _random_store(st: Store, seed: int = 0) -> pd.DataFrame:
    """3 models x 12 items x 3 samples x 2 sampling settings, some failed rows, missing
    latencies and finish reasons; returns the generations as written (plus variant)."""
    rng = np.random.default_rng(seed)
    st.insert("tasks", {"task_id": "t", "template": "{x}"})
    st.insert_many("items", [{"task_id": "t", "item_id": f"i{i:02d}", "position": 11 - i,
                              "fields": {"x": "q"}, "prompt": "q"} for i in range(12)])  # fmt: skip
    st.insert_many("models", [{"model_id": f"m{k}", "name": f"v{k}", "path": f"v{k}.gguf",
                               "family": "fam", "quant": "Q4_0"} for k in range(3)])  # fmt: skip
    rows, scores = [], []
    for k in range(3):
        for i in range(12):
            for s in range(3):
                for temp, mt in ((0.0, 16), (0.7, 32)):
                    key = f"m{k}-{i}-{s}-{temp}"
                    failed = rng.random() < 0.1
                    rows.append(
                        {"gen_key": key, "run_id": "r", "model_id": f"m{k}", "task_id": "t",
                         "item_id": f"i{i:02d}", "sample_index": s, "seed": s,
                         "sampling": {"temperature": temp, "max_tokens": mt},
                         "text": None if failed else "out", "error": "boom" if failed else None,
                         "latency_s": None if rng.random() < 0.1 else float(rng.gamma(2.0)),
                         "ttft_s": float(rng.random()), "decode_tps": float(rng.normal(50, 5)),
                         "prefill_tps": float(rng.normal(500, 50)),
                         "prompt_tokens": int(rng.integers(5, 50)),
                         "completion_tokens": min(int(rng.integers(1, 2 * mt)), mt),
                         "finish_reason": None if k == 2 else str(rng.choice(["stop", "length"]))}
                    )  # fmt: skip
                    for metric in ("rougeL", "chrf"):
                        scores.append({"gen_key": key, "metric": metric, "metric_version": "1",
                                       "value": float(rng.random())})  # fmt: skip
    st.insert_many("generations", rows)
    st.insert_many("scores", scores)
    g = pd.DataFrame(rows)
    g["variant"] = "v" + g["model_id"].str[1]
    g["temperature"] = [s["temperature"] for s in g["sampling"]]
    g["max_tokens"] = [s["max_tokens"] for s in g["sampling"]]
    return g.assign(scores=[None] * len(g)), pd.DataFrame(scores)


def test_aggregates_match_a_pandas_computation(store: Store) -> None:
    """The per-variant summary computed by DuckDB equals the same table computed row by row
    in pandas (the way the report used to): counts, percentiles, rates, token means and the
    truncated share (finish_reason where recorded, else completion_tokens >= max_tokens)."""
    g, sc = _random_store(store)
    first8 = [f"i{i:02d}" for i in range(11, 3, -1)]  # positions 0..7 = items i11..i04
    sel = Selection("t", models=("v0", "v2"), n_items=8, temperature=0.7)
    got = aggregates.variant_summary(store, sel).set_index("variant")
    d = g[g["variant"].isin(["v0", "v2"]) & g["item_id"].isin(first8) & (g["temperature"] == 0.7)]
    d = d[d["error"].isna()]
    assert list(got.index) == ["v0", "v2"]
    for v, x in d.groupby("variant"):
        lat = x["latency_s"].dropna()
        fr = x["finish_reason"].dropna()
        trunc = (fr == "length").mean() if len(fr) else (x["completion_tokens"] >= 32).mean()
        want = {
            "n": len(x),
            "mean_latency_s": lat.mean(),
            "p50_latency_s": lat.quantile(0.5),
            "p95_latency_s": lat.quantile(0.95),
            "p99_latency_s": lat.quantile(0.99),
            "ttft_p50_s": x["ttft_s"].median(),
            "decode_tps": x["decode_tps"].mean(),
            "prefill_tps": x["prefill_tps"].mean(),
            "prompt_tokens": x["prompt_tokens"].mean(),
            "completion_tokens": x["completion_tokens"].mean(),
            "truncated_share": trunc,
        }
        for col, value in want.items():
            assert got.loc[v, col] == pytest.approx(value, rel=1e-12), (v, col)
    # v2 records no finish reason: its share comes from max_tokens, and is not trivially 0/1
    assert 0 < got.loc["v2", "truncated_share"] < 1
    # per-item means: failed samples left out, averaged over the rest
    means = aggregates.item_means(store, sel, ["rougeL"])
    j = sc.merge(d[["gen_key", "variant", "item_id"]], on="gen_key")
    want_means = j[j["metric"] == "rougeL"].groupby(["variant", "item_id"])["value"].mean()
    got_means = means.set_index(["variant", "item_id"])["value"]
    pd.testing.assert_series_equal(got_means.sort_index(), want_means.sort_index(),
                                   check_names=False, rtol=1e-12)  # fmt: skip
    assert set(means["metric"]) == {"rougeL"}


def test_study_reads_no_text_but_the_samples(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Summaries, charts' frames and the selection never select generations.text; only the
    sample table does."""
    _fill(store)
    path = store.path
    store.close()
    import contextlib

    sql: list[str] = []
    real = Store.connection

    class Spy:
        def __init__(self, db: object) -> None:
            self._db = db

        def execute(self, q: str, *a: object) -> object:
            sql.append(q)
            return self._db.execute(q, *a)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self._db, name)

    @contextlib.contextmanager
    def spying(self: Store):  # type: ignore[no-untyped-def]
        with real(self) as db:
            yield Spy(db)

    monkeypatch.setattr(Store, "connection", spying)
    study = Study(path, "t", max_tokens=16, reference_model="gpt", hourly_usd=1.0)
    for frame in (study.perf, study.scores, study.headline("rougeL"),
                  study.tradeoffs("rougeL"), study.latencies(), study.conformity(),
                  study.cost_table(), study.ratings("rougeL")[0]):  # fmt: skip
        assert len(frame)
    gen_text = [q for q in sql if "g.text" in q or ("text" in q and "FROM generations" in q)]
    assert sql and not gen_text
    html = study.samples(2)._repr_html_()
    assert "&lt;b&gt;hi&lt;/b&gt;" in html  # a's output, escaped
    assert study.unit_costs["gpt"] == pytest.approx(study.reference["usd_per_request"])
    assert set(study.unit_costs) == {"a", "b", "gpt"}
    assert "Study of" in repr(study)


def test_selection_and_cost_from_the_price_table(store: Store) -> None:
    _fill(store)
    path = store.path
    store.close()
    study = Study(path, "t", max_tokens=16, reference_model="gpt", api_price="gpt-4o")
    assert study.reference["price_in_per_1k"] == 0.0025  # the newest gpt-4o row
    table = study.cost_table().set_index("model")
    assert table.loc["gpt-4o", "price_source"] == "price table"
    assert table.loc["a", "hourly_usd"] == pytest.approx(0.08925)  # aws-c7i.large
    sel = study.select(delta=0.1, gamma=0.9)
    assert sel.details["costs"]["reference"]["cost_per_item"] == pytest.approx(
        study.reference["usd_per_request"]
    )
    with Store(path, read_only=True) as st:
        assert len(readers.selections(st, "t")) == 1


def test_summaries_use_each_metrics_newest_version_only(store: Store) -> None:
    _fill(store)
    # an older version of rougeL stored beside the current one must not be averaged in
    store.insert_many("scores", [{"gen_key": "a016", "metric": "rougeL", "metric_version": "0",
                                  "value": 100.0}])  # fmt: skip
    sel = Selection("t", max_tokens=16)
    means = aggregates.item_means(store, sel, ["rougeL"]).set_index(["variant", "item_id"])
    assert means.loc[("a", "i0"), "value"] == pytest.approx(0.5)
    assert (readers.item_scores(store, sel)["value"] < 1).all()


def test_reference_tokens_counted_once_at_import(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs store cl100k counts of reference texts and prompts; the analysis then prices the
    API from them without loading the tokenizer (same figures as counting on the fly)."""
    from slamkit import references

    _fill(store)
    counted_live = cost.reference_point(readers.references(store, "t"), "gpt-4")
    assert references.count_reference_tokens(store, "t") == 2  # "Hello there", "Say hi"
    assert references.count_reference_tokens(store, "t") == 0  # each text once
    refs = readers.references(store, "t")
    assert refs["completion_tokens_counted"].tolist() == [2, 2, 2]
    assert refs["prompt_tokens_counted"].tolist() == [2, 2, 2]

    def no_tokenizer(*a: object, **k: object) -> list[int]:
        raise AssertionError("the tokenizer was loaded")

    monkeypatch.setattr(cost, "count_tokens", no_tokenizer)
    ref = cost.reference_point(refs, "gpt-4")
    assert ref["usd_per_request"] == pytest.approx(counted_live["usd_per_request"])
    assert ref["prompt_tokens"] == 9 and ref["completion_tokens"] == 2
