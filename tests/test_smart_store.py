"""SMART on stored generations: reads the store, chooses, writes ``selections``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slamkit.errors import SlamkitError
from slamkit.smart.equivalence import ExtractedLabel, JudgeVerdict, Normalized
from slamkit.smart.stored import conformity_frame, smart_from_store
from slamkit.store import Store

RATES = {"good-7b.Q4_K_M": 0.99, "weak-1b.Q2_K": 0.6}


N_ITEMS = 240


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic store per module (row-by-row inserts are slow); tests copy it."""
    path = tmp_path_factory.mktemp("smart") / "template.duckdb"
    with Store(path) as st:
        fill(st, N_ITEMS)
    return path


@pytest.fixture()
def filled(template: Path, tmp_path: Path):
    path = tmp_path / "store.duckdb"
    shutil.copy(template, path)
    st = Store(path)
    yield st
    st.close()


def fill(store, n_items: int = N_ITEMS, seed: int = 0, with_usage: bool = True) -> None:
    rng = np.random.default_rng(seed)
    store.insert("tasks", {"task_id": "sst", "template": "{text}"})
    labels = rng.choice(["positive", "negative"], n_items)
    store.insert_many(
        "items",
        [
            {"task_id": "sst", "item_id": f"i{i}", "position": i, "fields": {"text": f"t{i}"},
             "prompt": f"Classify the sentiment of review number {i}: positive or negative?"}
            for i in range(n_items)
        ],
    )  # fmt: skip
    store.insert_many(
        "reference_outputs",
        [
            {"ref_id": f"r{i}", "task_id": "sst", "item_id": f"i{i}", "source_model": "gpt-4",
             "sample_index": 0, "text": f"Sentiment: {labels[i]}",
             "prompt_tokens": 20 if with_usage else None,
             "completion_tokens": 4 if with_usage else None}
            for i in range(n_items)
        ],
    )  # fmt: skip
    rows, models = [], []
    for m, (name, rate) in enumerate(RATES.items()):
        mid = f"sha{m}"
        models.append({"model_id": mid, "name": name, "path": f"/models/{name}.gguf"})
        agree = rng.random(n_items) < rate
        for i in range(n_items):
            lab = labels[i] if agree[i] else ("negative" if labels[i] == "positive" else "positive")
            rows.append(
                {"gen_key": f"g{m}-{i}", "run_id": "run1", "model_id": mid, "task_id": "sst",
                 "item_id": f"i{i}", "sample_index": 0, "seed": 0, "sampling": {"t": 0},
                 "text": f"{lab.upper()}!", "latency_s": 0.5 + 0.5 * m, "error": None}
            )  # fmt: skip
    store.insert_many("models", models)
    store.insert_many("generations", rows)


def test_smart_from_store_chooses_records_and_is_idempotent(filled) -> None:
    store = filled
    eq = ExtractedLabel(r"(positive|negative)")
    cost = {"gpt-4": 0.03, "good-7b.Q4_K_M": 0.002, "weak-1b.Q2_K": 0.001}
    sel = smart_from_store(store, "sst", "gpt-4", eq, delta=0.08, gamma=0.95,
                           cost_per_item=cost, method="smart")  # fmt: skip
    assert sel.choice == {"good-7b.Q4_K_M": 1.0}
    assert sel.n_items == N_ITEMS and sel.n_profiled < N_ITEMS
    assert f"With confidence 0.95, at least 92.0% of the {N_ITEMS} outputs" in sel.guarantee
    assert sel.expected_cost < sel.reference_cost == pytest.approx(N_ITEMS * 0.03)
    row = store.df("SELECT * FROM selections").iloc[0]
    assert row["method"] == "smart" and row["task_id"] == "sst"
    assert json.loads(row["choice"]) == {"good-7b.Q4_K_M": 1.0}
    assert row["guarantee"] == sel.guarantee
    assert json.loads(row["equivalence"])["name"] == "extracted-label"
    details = json.loads(row["details"])
    assert {m["model"] for m in details["models"]} == set(RATES)
    smart_from_store(store, "sst", "gpt-4", eq, delta=0.08, gamma=0.95, cost_per_item=cost,
                     method="smart")  # fmt: skip
    assert store.count("selections") == 1  # same inputs, same id, nothing new
    smart_from_store(store, "sst", "gpt-4", eq, delta=0.08, gamma=0.95, cost_per_item=cost,
                     method="anytime")  # fmt: skip
    assert store.count("selections") == 2


def test_costs_from_the_cost_model_when_not_given(filled) -> None:
    """Reference priced from the price table (tokens counted offline: no usage stored),
    candidates from measured latency on a CPU instance."""
    store = filled
    store.db.execute("UPDATE reference_outputs SET prompt_tokens = NULL, completion_tokens = NULL")
    sel = smart_from_store(store, "sst", "gpt-4", ExtractedLabel(r"(positive|negative)"),
                           delta=0.1, method="smart-mix")  # fmt: skip
    costs = sel.details["costs"]
    assert costs["reference"]["price_name"] == "gpt-4"
    assert costs["reference"]["input_per_1k_usd"] == 0.03
    assert costs["reference"]["mean_tokens_out"] == pytest.approx(3, abs=1)  # "Sentiment: x"
    good = costs["good-7b.Q4_K_M"]
    assert good["instance"] == "aws-c7i.large" and good["mean_latency_s"] == pytest.approx(0.5)
    u_good = good["hourly_usd"] * 0.5 / (3600 * 0.5)
    stats = {m["model"]: m for m in sel.details["models"]}
    assert stats["good-7b.Q4_K_M"]["unit_cost"] == pytest.approx(u_good)
    assert sel.saving > 1


def test_missing_generations_count_as_not_conforming_and_errors_are_clear(filled) -> None:
    store = filled
    store.db.execute("UPDATE generations SET text = NULL, error = 'timeout' WHERE gen_key = 'g0-3'")
    store.db.execute("DELETE FROM generations WHERE gen_key IN ('g0-1', 'g0-2')")
    eq = ExtractedLabel(r"(positive|negative)")
    _, df = conformity_frame(store, "sst", "gpt-4", eq)
    good = df[df["model"] == "good-7b.Q4_K_M"].set_index("item_id")["conforms"]
    assert len(good) == N_ITEMS
    assert not good[["i1", "i2", "i3"]].any() and good.mean() > 0.95
    sel = smart_from_store(store, "sst", "gpt-4", Normalized(), delta=0.1,
                           cost_per_item={"gpt-4": 1, "good-7b.Q4_K_M": 0.1,
                                          "weak-1b.Q2_K": 0.05}, save=False)  # fmt: skip
    assert sel.details["conformity_all_items"]["good-7b.Q4_K_M"] == 0.0  # upper vs lower case
    # no candidate conforms: the mix may only give the cheapest one the share it can afford
    # to get wrong (accuracy 0, a bound that always holds); the rest stays with the reference
    assert "good-7b.Q4_K_M" not in sel.choice
    assert sel.choice["gpt-4"] >= 0.85 and sel.choice.get("weak-1b.Q2_K", 0) <= 0.15
    assert store.count("selections") == 0
    with pytest.raises(SlamkitError, match="No reference outputs for task 'sst' from 'gpt-5'"):
        smart_from_store(store, "sst", "gpt-5", Normalized(), delta=0.1)
    with pytest.raises(SlamkitError, match="judge_outcome|judgments"):
        smart_from_store(
            store,
            "sst",
            "gpt-4",
            JudgeVerdict(),
            delta=0.1,
            cost_per_item={"gpt-4": 1, "good-7b.Q4_K_M": 0.1, "weak-1b.Q2_K": 0.05},
        )


def test_cli_smart_on_embedding_scores(template: Path, tmp_path: Path, capsys) -> None:
    """`slamkit smart` with embedding similarity read from stored scores (embed_cosine:<label>)."""
    from slamkit.cli import main

    path = tmp_path / "cli.duckdb"
    shutil.copy(template, path)
    with Store(path) as st:
        gens = st.df("SELECT gen_key, model_id, item_id FROM generations")
        rng = np.random.default_rng(3)
        sim = np.where(gens["model_id"] == "sha0", rng.uniform(0.85, 1.0, len(gens)),
                       rng.uniform(0.3, 0.9, len(gens)))  # fmt: skip
        st.db.register("gens_sim", gens.assign(sim=sim))
        st.db.execute(
            "INSERT INTO scores (gen_key, metric, metric_version, value) "
            "SELECT gen_key, 'embed_cosine:SmolLM2', '1', sim FROM gens_sim"
        )
    rc = main(["--store", str(path), "smart", "--task", "sst", "--reference", "gpt-4",
               "--equivalence", "embedding", "--tau", "0.8", "--delta", "0.08",
               "--method", "smart", "--cost", "gpt-4=0.03", "--cost", "good-7b.Q4_K_M=0.002",
               "--cost", "weak-1b.Q2_K=0.001"])  # fmt: skip
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0, captured.err
    assert "choice: good-7b.Q4_K_M 100.0%" in out and "With confidence 0.95" in out
    with Store(path) as st:
        row = st.df("SELECT equivalence, method FROM selections").iloc[0]
    assert json.loads(row["equivalence"]) == {"name": "embedding-similarity",
                                              "tau": 0.8, "column": "embed_cosine"}  # fmt: skip
    assert main(["--store", str(path), "smart", "--task", "sst", "--cost", "x"]) == 2


def test_judge_verdicts_both_orders_combined(filled) -> None:
    """A judge that prefers the good model in both orders -> win; one that always says 'A'
    (pure position bias) -> tie; a pair judged in one order only -> no outcome (not conforming)."""
    store = filled
    rows = []
    for i in range(N_ITEMS):
        for m, verdicts in (("0", ("A", "B")), ("1", ("A", "A"))):
            if m == "1" and i == 0:
                verdicts = ("A", None)  # only one order judged
            for swapped, v in zip((False, True), verdicts, strict=True):
                if v is None:
                    continue
                gen, ref = ("generation", f"g{m}-{i}"), ("reference", f"r{i}")
                a, b = (ref, gen) if swapped else (gen, ref)
                rows.append(
                    {"judgment_id": f"j{m}-{i}-{int(swapped)}", "judge_model": "judge-x",
                     "mode": "pairwise", "criterion": None, "task_id": "sst", "item_id": f"i{i}",
                     "a_kind": a[0], "a_id": a[1], "b_kind": b[0], "b_id": b[1],
                     "order_swapped": swapped, "verdict": v}
                )  # fmt: skip
    store.insert_many("judgments", rows)
    eq = JudgeVerdict(accept=("win",))
    _, df = conformity_frame(store, "sst", "gpt-4", eq)
    good = df[df["model"] == "good-7b.Q4_K_M"]
    weak = df[df["model"] == "weak-1b.Q2_K"].set_index("item_id")
    assert (good["judge_outcome"] == "win").all() and good["conforms"].all()
    assert weak.loc["i0", "judge_outcome"] is None or pd.isna(weak.loc["i0", "judge_outcome"])
    assert (weak.drop(index="i0")["judge_outcome"] == "tie").all() and not weak["conforms"].any()
    _, df = conformity_frame(store, "sst", "gpt-4", JudgeVerdict(accept=("win", "tie")))
    assert df[df["model"] == "weak-1b.Q2_K"]["conforms"].sum() == N_ITEMS - 1


def test_items_without_any_generation_are_left_out_unless_asked(filled) -> None:
    store = filled
    store.db.execute("DELETE FROM generations WHERE item_id IN ('i0', 'i1', 'i2')")
    cost = {"gpt-4": 0.03, "good-7b.Q4_K_M": 0.002, "weak-1b.Q2_K": 0.001}
    eq = ExtractedLabel(r"(positive|negative)")
    sel = smart_from_store(store, "sst", "gpt-4", eq, 0.08, cost_per_item=cost, save=False)
    assert sel.n_items == N_ITEMS - 3
    sel = smart_from_store(store, "sst", "gpt-4", eq, 0.08, cost_per_item=cost, save=False,
                           all_items=True)  # fmt: skip
    assert sel.n_items == N_ITEMS


def test_a_candidate_that_never_agreed_is_not_recommended(tmp_path: Path) -> None:
    """The default report's shape: 10 items, delta 0.1. After 9 profiled items the
    reference's own outputs alone reach 90% of 10, so a candidate that never agreed is
    "satisfied" - the selection keeps the reference and claims no saving."""
    with Store(tmp_path / "tiny.duckdb") as store:
        fill(store, 10)
        store.db.execute("UPDATE generations SET text = 'NEUTRAL!'")  # no label: never agrees
        cost = {"gpt-4": 0.03, "good-7b.Q4_K_M": 0.002, "weak-1b.Q2_K": 0.001}
        sel = smart_from_store(store, "sst", "gpt-4", ExtractedLabel(r"(positive|negative)"),
                               delta=0.1, gamma=0.95, cost_per_item=cost,
                               method="anytime")  # fmt: skip
        states = {m["model"]: (m["k"], m["state"]) for m in sel.details["models"]}
        assert sel.n_profiled == 9 and (0, "satisfied") in states.values()
        assert sel.choice == {"gpt-4": 1.0}
        assert "no candidate qualified on its own evidence" in sel.guarantee
        assert sel.saving < 1
