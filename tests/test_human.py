"""Human A/B widget driven by button clicks, and agreement statistics vs hand values."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import add_synthetic

from slamkit.errors import SlamkitError
from slamkit.human import (
    ABWidget,
    annotator_agreement,
    build_ab_queue,
    cohen_kappa,
    fleiss_kappa,
    human_outcomes,
    judge_human_agreement,
    load_human_judgments,
)

GENS = {("m1", f"i{k}"): f"answer {k}" for k in range(6)}
REFS = {f"i{k}": f"reference {k}" for k in range(6)}


@pytest.fixture()
def queue(store) -> pd.DataFrame:
    add_synthetic(store, gens=GENS, refs=REFS)
    return build_ab_queue(store, seed=1)


def test_queue_sides_are_seeded_and_mixed(store, queue) -> None:
    assert len(queue) == 6
    assert queue.equals(build_ab_queue(store, seed=1))  # same seed, same sides
    left_gen = (queue.left_kind == "generation").tolist()
    assert 0 < sum(left_gen) < 6  # both sides occur
    others = [(build_ab_queue(store, seed=s).left_kind == "generation").tolist() for s in (0, 3)]
    assert all(o != left_gen for o in others)  # another seed, other sides


def test_widget_buttons_append_and_resume(store, queue) -> None:
    w = ABWidget(store, queue, annotator="", criteria=["clarity", "overall2"])
    w.left_button.click()  # no annotator yet: nothing stored, message shown
    assert store.count("human_judgments") == 0 and "annotator name" in w.status.value

    w.annotator.value = "ana"
    first = queue.iloc[0]
    assert "answer 0" in (w.left_html.value + w.right_html.value)
    w.criterion_toggles["clarity"].value = "right"
    w.reason.value = "left is <b>clearer</b>"
    w.left_button.click()
    w.tie_button.click()
    w.key_box.value = "b"  # keyboard path: 'b' + Enter = right
    assert w.key_box.value == ""
    assert w.key("x") is False
    rows = load_human_judgments(store)
    assert rows[["criterion", "choice"]].values.tolist() == [
        ["overall", "left"], ["clarity", "right"], ["overall", "tie"], ["overall", "right"],
    ]  # fmt: skip
    r0 = rows.iloc[0]
    assert (r0.annotator, r0.item_id, r0.left_id, r0.right_id, r0.source) == (
        "ana", first.item_id, first.left_id, first.right_id, "widget",
    )  # fmt: skip
    assert r0.reason == "left is <b>clearer</b>" and pd.isna(rows.iloc[2].reason)
    assert w.reason.value == "" and w.criterion_toggles["clarity"].value == ""
    assert w.progress.value.startswith("<b>3 / 6</b>")

    # a new widget (new session) resumes at the 4th pair; another annotator starts at 1
    w2 = ABWidget(store, queue, annotator="ana")
    assert w2.position == 3
    w3 = ABWidget(store, queue, annotator="bo")
    assert w3.position == 0
    for _ in range(6):
        w3.right_button.click()
    assert w3.position is None and w3.left_button.disabled
    assert w3.choose("left") is False
    assert store.count("human_judgments", "annotator = 'bo'") == 6
    assert store.count("human_judgments") == 10  # appended, never overwritten


def test_widget_escapes_model_output_html(store) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)> & done'
    add_synthetic(store, gens={("m1", "i0"): evil}, refs={"i0": "a <b>bold</b> reference"})
    w = ABWidget(store, build_ab_queue(store, seed=1), annotator="ana")
    shown = w.left_html.value + w.right_html.value
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in shown
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; done" in shown
    assert "a &lt;b&gt;bold&lt;/b&gt; reference" in shown
    assert "<script" not in shown and "<img" not in shown and "<b>bold" not in shown


def test_record_rejects_bad_choice(store, queue) -> None:
    from slamkit.human import record_choice

    with pytest.raises(SlamkitError, match="must be one of"):
        record_choice(store, "ana", queue.iloc[0].to_dict(), "maybe")


def test_cohen_kappa_hand_computed() -> None:
    # 50 items: both yes 20, both no 15, A yes/B no 5, A no/B yes 10
    a = ["y"] * 20 + ["n"] * 15 + ["y"] * 5 + ["n"] * 10
    b = ["y"] * 20 + ["n"] * 15 + ["n"] * 5 + ["y"] * 10
    # po = 35/50 = .7; pe = .5*.6 + .5*.4 = .5; kappa = .2/.5
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["x", "y"], ["x", "y"]) == 1.0
    with pytest.raises(SlamkitError):
        cohen_kappa(["x"], [])


def test_fleiss_kappa_hand_computed() -> None:
    # Fleiss (1971) worked example as in Wikipedia: 10 items, 14 raters, kappa = 0.210
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-5)
    with pytest.raises(SlamkitError, match="same number"):
        fleiss_kappa([[1, 1], [2, 1]])


def _h(ann: str, gen: str, choice: str, gen_left: bool = True) -> dict:
    g, r = ("generation", gen), ("reference", "r-" + gen)
    left, right = (g, r) if gen_left else (r, g)
    return {"annotator": ann, "task_id": "t", "item_id": gen, "criterion": "overall",
            "left_kind": left[0], "left_id": left[1], "right_kind": right[0],
            "right_id": right[1], "choice": choice}  # fmt: skip


def test_outcomes_and_agreement() -> None:
    human = pd.DataFrame(
        [
            # ana sees the generation on the left, bo on the right: same opinions
            _h("ana", "g1", "left"), _h("bo", "g1", "right", gen_left=False),
            _h("ana", "g2", "right"), _h("bo", "g2", "left", gen_left=False),
            _h("ana", "g3", "tie"), _h("bo", "g3", "left", gen_left=False),
            _h("ana", "g4", "left"), _h("bo", "g4", "right", gen_left=False),
        ]
    )  # fmt: skip
    out = human_outcomes(human)
    assert out.query("annotator == 'bo'").outcome.tolist() == [
        "candidate", "other", "other", "candidate",
    ]  # fmt: skip
    agree = annotator_agreement(out).set_index("statistic")
    # ana: c,o,t,c  bo: c,o,o,c -> po = 3/4; pe = (2/4*2/4) + (1/4*2/4) + 0 = 3/8
    assert agree.loc["cohen", "agreement"] == 0.75
    assert agree.loc["cohen", "kappa"] == pytest.approx((0.75 - 3 / 8) / (1 - 3 / 8))
    assert agree.loc["fleiss", "n"] == 4

    judge = pd.DataFrame(
        {"judge_model": "j", "criterion": "overall", "candidate_kind": "generation",
         "candidate_id": ["g1", "g2", "g3", "g4"], "other_kind": "reference",
         "other_id": ["r-g1", "r-g2", "r-g3", "r-g4"],
         "outcome": ["candidate", "candidate", "other", None]}
    )  # fmt: skip
    jh = judge_human_agreement(judge, out).set_index("annotator")
    # vs ana on g1..g3: (c,c) (c,o) (o,t) -> po 1/3; pe = (2/3)(1/3) + (1/3)(1/3) = 1/3 -> 0
    assert jh.loc["ana", "n"] == 3 and jh.loc["ana", "kappa"] == pytest.approx(0.0)
    # majority: g1 c, g2 o, g3 tie (ana tie vs bo other) -> same as ana here
    assert jh.loc["majority", "agreement"] == pytest.approx(1 / 3)
    assert jh.loc["bo", "agreement"] == pytest.approx(2 / 3)
