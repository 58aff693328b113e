"""Bootstrap coverage, paired tests, corrections and Bradley-Terry recovery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from slamkit.errors import SlamkitError
from slamkit.stats import (
    benjamini_hochberg,
    bootstrap_ci,
    bradley_terry,
    compare_to_reference,
    holm,
    mcnemar,
    mean_ci,
    paired_bootstrap,
    pairwise_comparisons,
    pass_rate_ci,
    sign_test,
    win_rate_ci,
)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_coverage_near_nominal_on_known_mean(method: str) -> None:
    """Exponential data (skewed, mean 1), n = 60: the 90% CI covers 1 about 90% of the time."""
    rng = np.random.default_rng(0)
    reps, hits = 300, 0
    for r in range(reps):
        x = rng.exponential(1.0, 60)
        ci = bootstrap_ci(x, n_boot=1000, conf=0.9, method=method, seed=r)
        hits += ci.lo <= 1.0 <= ci.hi
    assert 0.83 <= hits / reps <= 0.96


def test_bootstrap_is_seeded_and_handles_generic_statistics() -> None:
    x = np.arange(20.0)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    med = bootstrap_ci(x, np.median, n_boot=300, method="bca", seed=1)
    assert med.estimate == 9.5 and med.lo < 9.5 < med.hi
    assert bootstrap_ci([5.0]).lo == 5.0
    with pytest.raises(SlamkitError, match="percentile"):
        bootstrap_ci(x, method="normal")


def test_per_model_tables() -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {"model": np.repeat(["a", "b"], 200), "score": np.r_[rng.normal(0.7, 0.1, 200),
         rng.normal(0.5, 0.1, 200)], "ok": np.r_[rng.random(200) < 0.9, rng.random(200) < 0.5]}
    )  # fmt: skip
    m = mean_ci(df, "score", n_boot=500).set_index("model")
    assert m.loc["a", "ci_lo"] < 0.7 < m.loc["a", "ci_hi"] and m.loc["a", "n"] == 200
    p = pass_rate_ci(df, "ok", n_boot=500).set_index("model")
    assert p.loc["b", "ci_lo"] < 0.5 < p.loc["b", "ci_hi"]
    out = pd.DataFrame(
        {
            "model": ["x"] * 40 + ["y"] * 40,
            "outcome": ["win", "loss"] * 20 + ["win"] * 36 + ["tie"] * 4,
        }
    )
    w = win_rate_ci(out, n_boot=500).set_index("model")
    assert w.loc["x", "estimate"] == 0.5 and w.loc["x", "indistinguishable_from_reference"]
    assert w.loc["y", "estimate"] == pytest.approx(0.95)
    assert not w.loc["y", "indistinguishable_from_reference"]


def _paired_frame(n: int = 150, shift: float = 0.05, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.6, 0.2, n)
    rows = []
    for mname, s in [("ref", 0.0), ("same", 0.0), ("worse", -shift), ("bad", -0.3)]:
        noise = rng.normal(0, 0.03, n)
        rows += [{"model": mname, "item_id": i, "score": base[i] + s + noise[i]} for i in range(n)]
    return pd.DataFrame(rows)


def test_paired_bootstrap_uses_the_pairing() -> None:
    df = _paired_frame()
    r = paired_bootstrap(df, "score", "worse", "ref", n_boot=1000)
    # item variance (0.2) dwarfs the shift, but pairing removes it: clearly detected
    assert r["n"] == 150 and r["ci_hi"] < 0 and r["p_value"] < 0.01
    assert r["ci_lo"] < -0.05 < r["ci_hi"]
    r = paired_bootstrap(df, "score", "same", "ref", n_boot=1000)
    assert r["ci_lo"] < 0 < r["ci_hi"] and r["p_value"] > 0.05
    with pytest.raises(SlamkitError, match="share no items"):
        paired_bootstrap(df, "score", "same", "nobody")


def test_mcnemar_sign_and_corrections() -> None:
    a = np.array([True] * 30 + [False] * 5 + [True] * 50)
    b = np.array([False] * 30 + [True] * 5 + [True] * 50)
    r = mcnemar(a, b)
    assert (r["a_only"], r["b_only"]) == (30, 5) and r["p_value"] < 0.001
    assert mcnemar(a, a)["p_value"] == 1.0
    s = sign_test(np.r_[np.ones(9), -np.ones(1), np.zeros(5)])
    assert s["positive"] == 9 and s["p_value"] == pytest.approx(0.021484375)
    p = np.array([0.01, 0.04, 0.03, 0.005])
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_pairwise_and_reference_flags() -> None:
    df = _paired_frame()
    pw = pairwise_comparisons(df, "score", n_boot=500)
    assert len(pw) == 6 and (pw["p_adjusted"] >= pw["p_value"]).all()
    ref = compare_to_reference(df, "score", "ref", n_boot=500).set_index("model")
    assert bool(ref.loc["same", "indistinguishable"])
    assert not ref.loc["worse", "indistinguishable"] and not ref.loc["bad", "indistinguishable"]
    df["pass"] = (df["score"] > 0.5).astype(float)
    mc = compare_to_reference(df, "pass", "ref", test="mcnemar").set_index("model")
    assert mc.loc["bad", "p_adjusted"] < 0.001


def test_compare_to_reference_with_only_the_reference_is_a_clear_error() -> None:
    df = _paired_frame()
    only_ref = df[df["model"] == "ref"]
    with pytest.raises(SlamkitError, match="no other model to compare"):
        compare_to_reference(only_ref, "score", "ref", n_boot=50)


def _simulate_verdicts(theta: dict[str, float], nu: float, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = list(theta)
    rows = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        pi, pj = np.exp(theta[names[i]]), np.exp(theta[names[j]])
        tie = nu * np.sqrt(pi * pj)
        u = rng.random() * (pi + pj + tie)
        w = "a" if u < pi else ("b" if u < pi + pj else "tie")
        rows.append({"model_a": names[i], "model_b": names[j], "winner": w})
    return pd.DataFrame(rows)


def test_bradley_terry_recovers_known_strengths_with_ties() -> None:
    truth = {"gpt-4": 0.0, "mistral-q4": -0.3, "mistral-q2": -0.8, "phi-q4": 0.4}
    v = _simulate_verdicts(truth, nu=0.6, n=3000, seed=5)
    bt = bradley_terry(v, ties="davidson", reference="gpt-4", n_boot=100).set_index("model")
    for mname, t in truth.items():
        assert bt.loc[mname, "theta"] == pytest.approx(t, abs=0.15)
        assert bt.loc[mname, "ci_lo"] - 0.05 <= t <= bt.loc[mname, "ci_hi"] + 0.05
    assert bt.attrs["nu"] == pytest.approx(0.6, abs=0.1)
    assert list(bt.sort_values("theta").index) == ["mistral-q2", "mistral-q4", "gpt-4", "phi-q4"]
    assert not bt.loc["mistral-q2", "indistinguishable_from_reference"]
    assert int(bt["comparisons"].sum()) == 2 * len(v)
    half = bradley_terry(v, ties="half", n_boot=20)
    assert list(half["model"]) == ["phi-q4", "gpt-4", "mistral-q4", "mistral-q2"]
    assert half["theta"].mean() == pytest.approx(0.0, abs=1e-9)


def test_bradley_terry_stays_finite_when_a_model_never_loses() -> None:
    v = pd.DataFrame({"model_a": ["x"] * 10, "model_b": ["y"] * 10, "winner": ["x"] * 10})
    bt = bradley_terry(v, n_boot=20, ties="half")
    assert np.isfinite(bt["theta"]).all() and bt.iloc[0]["model"] == "x"
    with pytest.raises(SlamkitError, match="winner"):
        bradley_terry(v.assign(winner="maybe"), n_boot=5)


def test_verdicts_from_store_feed_bradley_terry(store) -> None:
    from slamkit.stats import verdicts_from_store

    store.insert_many("models", [{"model_id": "s1", "name": "m1", "path": "/m1.gguf"}])
    store.insert_many(
        "generations",
        [{"gen_key": f"g{i}", "run_id": "r", "model_id": "s1", "task_id": "t", "item_id": f"i{i}",
          "sample_index": 0, "seed": 0, "sampling": {}, "text": "x"} for i in range(3)],
    )  # fmt: skip
    store.insert_many(
        "reference_outputs",
        [{"ref_id": f"r{i}", "task_id": "t", "item_id": f"i{i}", "source_model": "gpt-4",
          "text": "y"} for i in range(3)],
    )  # fmt: skip
    # item 0: the model wins in both orders; item 1: position bias -> tie; item 2: one order only
    plan = {0: ("A", "B"), 1: ("A", "A"), 2: ("B", None)}
    rows = []
    for i, (v1, v2) in plan.items():
        for swapped, v in ((False, v1), (True, v2)):
            if v is None:
                continue
            gen, ref = ("generation", f"g{i}"), ("reference", f"r{i}")
            a, b = (ref, gen) if swapped else (gen, ref)
            rows.append(
                {"judgment_id": f"j{i}{swapped}", "judge_model": "j", "mode": "pairwise",
                 "task_id": "t", "item_id": f"i{i}", "a_kind": a[0], "a_id": a[1],
                 "b_kind": b[0], "b_id": b[1], "order_swapped": swapped, "verdict": v}
            )  # fmt: skip
    store.insert_many("judgments", rows)
    v = verdicts_from_store(store, "judge").set_index("item_id")
    assert list(v.index) == ["i0", "i1"]
    assert (v.loc["i0", "model_a"], v.loc["i0", "model_b"], v.loc["i0", "winner"]) == (
        "m1", "gpt-4", "a")  # fmt: skip
    assert v.loc["i1", "winner"] == "tie"
    store.insert_many(
        "human_judgments",
        [{"annotator": "ann", "task_id": "t", "item_id": "i0", "left_kind": "reference",
          "left_id": "r0", "right_kind": "generation", "right_id": "g0", "criterion": "overall",
          "choice": "left"}],
    )  # fmt: skip
    h = verdicts_from_store(store, "human")
    assert h.iloc[0][["model_a", "model_b", "winner"]].tolist() == ["gpt-4", "m1", "a"]
    bt = bradley_terry(pd.concat([v.reset_index(), h]), n_boot=10, reference="gpt-4")
    assert set(bt["model"]) == {"gpt-4", "m1"}
