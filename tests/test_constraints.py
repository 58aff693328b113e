"""Constraint checks: hand-checked pass/fail on small texts, and pass rates per model."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import add_synthetic

from slamkit.errors import SlamkitError
from slamkit.metrics import get_metric, pass_rates, split_sentences


def check(spec: str, text: str, **kw) -> tuple[float, dict]:
    out = get_metric(spec, **kw).compute(predictions=[text])
    return out["scores"][0], out["details"][0]


def test_split_sentences() -> None:
    assert split_sentences("Hi Dr. Smith! It is 3.5 km. Go") == [
        "Hi Dr. Smith!",
        "It is 3.5 km.",
        "Go",
    ]
    assert split_sentences("Plan:\n- wake up\n- run\n\nDone?! Yes...") == [
        "Plan:",
        "- wake up",
        "- run",
        "Done?!",
        "Yes...",
    ]
    assert split_sentences("  \n * \n") == []


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1. Buy milk\n2. Call mom", ["1. Buy milk", "2. Call mom"]),
        ("The U.S. is big. It is old.", ["The U.S. is big.", "It is old."]),
        ("We toured the U.S. Army base. It was big.", ["We toured the U.S. Army base.",
                                                        "It was big."]),
        ("Ask Mr. Lee or Dr. Wu, i.e. the leads. Then wait.",
         ["Ask Mr. Lee or Dr. Wu, i.e. the leads.", "Then wait."]),
        ("Fruit, e.g. apples, etc. are sweet. Buy pears, etc. Then eat.",
         ["Fruit, e.g. apples, etc. are sweet.", "Buy pears, etc.", "Then eat."]),
        ("Pi is 3.14. It never ends.", ["Pi is 3.14.", "It never ends."]),
        ("2) Preheat the oven. Then wait.\n3) Bake", ["2) Preheat the oven.", "Then wait.",
                                                      "3) Bake"]),
        ("I was thinking... maybe not. Well\u2026 Fine!",
         ["I was thinking... maybe not.", "Well\u2026", "Fine!"]),
        ("Really?! Yes. Wow!", ["Really?!", "Yes.", "Wow!"]),
    ],
)  # fmt: skip
def test_split_sentences_lists_abbreviations_decimals(text: str, want: list[str]) -> None:
    assert split_sentences(text) == want


def test_sentence_counts_of_realistic_model_outputs() -> None:
    def n(text: str) -> int:
        return check("max_sentences", text)[1]["sentences"]

    numbered = (
        "Sure! Here are three tips:\n\n1. Drink water.\n2. Sleep 8 hours\n"
        "3. Walk daily. It helps.\n\nHope this helps!"
    )
    # Sure! | Here are three tips: | 1 | 2 (no period: one unit) | 3 + It helps. | Hope
    assert n(numbered) == 7
    bullets = "## Packing list\n\n- **Passport**: keep it dry\n* Charger\n+ Snacks\n---\n"
    assert n(bullets) == 4  # the heading and three bullets; the rule is dropped
    code = "Run this:\n```python\nprint('hi. there')\n```\nDone."
    assert n(code) == 3  # the fence lines are not sentences
    assert n("The U.S. economy grew 2.5 percent in Q3. Analysts, e.g. at the Fed, agree.") == 2
    assert n("Hmm... I'm not sure. Maybe? Let me check!") == 4


def test_max_sentences_slam_limit() -> None:
    four = "Good morning! You have 3 tasks. Start with the report. You got this."
    assert check("max_sentences", four) == (1.0, {"sentences": 4, "max": 4})
    assert check("max_sentences", four + " Really.")[0] == 0.0
    assert check("max_sentences:2", "One. Two. Three.")[1]["sentences"] == 3


def test_word_limit() -> None:
    assert check("word_limit:2-3", "one two")[0] == 1.0
    assert check("word_limit:2-3", "one")[0] == 0.0
    assert check("word_limit:-3", "a b c d") == (
        0.0,
        {"words": 4, "min_words": None, "max_words": 3},
    )
    with pytest.raises(SlamkitError, match="needs an argument: write word_limit:50"):
        get_metric("word_limit")


def test_regex_must_and_must_not() -> None:
    assert check("regex_must", "Call 555-1234", pattern=r"\d{3}-\d{4}")[0] == 1.0
    assert check("regex_must", "no number", pattern=r"\d{3}-\d{4}")[0] == 0.0
    v, d = check("regex_must_not", "As an AI model, I", pattern=r"as an ai", ignore_case=True)
    assert v == 0.0 and d["match"] == "As an AI"
    assert get_metric("regex_must_not:x", label="no_x").metric_name == "regex_must_not:no_x"
    with pytest.raises(SlamkitError, match="not a valid regular expression"):
        get_metric("regex_must:(")


def test_banned_phrases() -> None:
    v, d = check("banned_phrases:as an ai|sorry", "Sorry, AS AN AI I cannot.")
    assert v == 0.0 and d["found"] == ["as an ai", "sorry"]
    assert check("banned_phrases:sorry", "Fine.")[0] == 1.0


def test_json_valid_and_schema() -> None:
    assert check("json_valid", '{"a": 1}')[0] == 1.0
    assert check("json_valid", '```json\n{"a": 1}\n```')[0] == 1.0
    assert check("json_valid", '```json\n{"a": 1}\n```', allow_fence=False)[0] == 0.0
    v, d = check("json_valid", "{'a': 1}")
    assert v == 0.0 and "line 1 column 2" in d["error"]

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "n": {"type": "integer", "minimum": 0}},
        "required": ["name"],
    }
    assert check("json_schema", '{"name": "x", "n": 2}', schema=schema)[0] == 1.0
    v, d = check("json_schema", '{"n": -1}', schema=schema)
    assert v == 0.0
    assert "'name' is a required property" in d["error"] and "n: -1 is less" in d["error"]
    assert check("json_schema", "nope", schema=schema)[1]["error"].startswith("not JSON")
    with pytest.raises(SlamkitError, match="not a valid JSON Schema"):
        get_metric("json_schema", schema={"type": 5})


def test_pass_rates_per_model() -> None:
    df = pd.DataFrame(
        {
            "model": ["a", "a", "a", "b", "b", "a"],
            "metric": ["max_sentences:4"] * 5 + ["rougeL"],
            "value": [1.0, 0.0, 1.0, 1.0, None, 0.3],
        }
    )
    out = pass_rates(df)
    assert out.to_dict("records") == [
        {"model": "a", "metric": "max_sentences:4", "n": 3, "passed": 2, "pass_rate": 2 / 3},
        {"model": "b", "metric": "max_sentences:4", "n": 1, "passed": 1, "pass_rate": 1.0},
    ]
    assert pass_rates(df.iloc[:0]).empty


def test_constraints_scored_in_store(store) -> None:
    from slamkit.metrics import load_scores, score_generations

    add_synthetic(store)
    score_generations(store, ["max_sentences:4", "word_limit:-5"], progress=False)
    rates = pass_rates(load_scores(store)).set_index(["model", "metric"])["pass_rate"]
    assert rates[("model-m2", "max_sentences:4")] == 0.5  # "One. Two. Three. Four. Five."
    assert rates[("model-m1", "word_limit:-5")] == 0.5  # 6 words vs 5 words
