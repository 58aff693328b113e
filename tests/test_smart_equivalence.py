"""Conformity functions and their own error against human labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from slamkit.errors import SlamkitError
from slamkit.smart.equivalence import (
    EmbeddingSimilarity,
    Exact,
    ExtractedLabel,
    JudgeVerdict,
    Normalized,
    equivalence_error,
    get_equivalence,
)


def test_pairwise_functions() -> None:
    assert Exact()("Positive", "Positive") and not Exact()("positive", "Positive")
    assert Normalized()("  Positive!! ", "positive") and not Normalized()("neg", "positive")
    assert not Normalized()(None, "x")
    lab = ExtractedLabel(r"label:\s*(\w+)", labels=["spam", "ham"])
    assert lab("Sure. Label: SPAM.", "label: spam")
    assert not lab("Label: maybe", "label: maybe")  # not an allowed label
    assert not lab("no label here", "label: spam")
    emb = EmbeddingSimilarity(tau=0.9, embed=lambda s: [len(s), 1.0])
    assert emb("abcd", "abce") and not emb("a", "abcdefghij")
    judge = JudgeVerdict(judge=lambda c, r: "tie" if c == r else "loss")
    assert judge("x", "x") and not judge("x", "y")


def test_frame_uses_stored_columns_and_names_missing_ones() -> None:
    df = pd.DataFrame(
        {"text": ["a", "b", None], "ref_text": ["a", "c", "x"], "sim": [0.95, 0.5, np.nan]}
    )
    assert list(EmbeddingSimilarity(0.9, column="sim").frame(df)) == [True, False, False]
    with pytest.raises(SlamkitError, match="judge_outcome"):
        JudgeVerdict().frame(df)
    df["judge_outcome"] = ["win", "loss", "tie"]
    assert list(JudgeVerdict().frame(df)) == [True, False, True]


def test_spec_is_stable_json_and_lookup_by_name() -> None:
    assert get_equivalence("normalized").spec() == '{"name": "normalized"}'
    assert '"tau": 0.7' in get_equivalence("embedding", tau=0.7).spec()
    with pytest.raises(SlamkitError, match="Unknown equivalence"):
        get_equivalence("fuzzy")


def test_equivalence_error_against_human_labels() -> None:
    df = pd.DataFrame(
        {
            "text": ["yes", "Yes.", "no", "nope", "yes"],
            "ref_text": ["yes", "yes", "yes", "no", "yes"],
            "human_equivalent": [True, True, False, True, False],
        }
    )
    err = equivalence_error(Normalized(), df).set_index("rate")
    # predictions: T T F F T ; truth: T T F T F
    assert err.loc["agreement", "k"] == 3 and err.loc["agreement", "n"] == 5
    assert err.loc["false_accept", "k"] == 1 and err.loc["false_accept", "n"] == 2
    assert err.loc["false_reject", "k"] == 1 and err.loc["false_reject", "n"] == 3
    assert (err["ci_lo"] <= err["estimate"]).all() and (err["estimate"] <= err["ci_hi"]).all()
