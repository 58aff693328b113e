"""Reference metrics reproduce hand-computed values; the driver scores only what is new."""

from __future__ import annotations

import json
import warnings

import pytest
from helpers import TASK, add_synthetic

from slamkit.errors import SlamkitError
from slamkit.metrics import get_metric, load_scores, score_generations
from slamkit.metrics.match import normalize_text


def one(spec: str, pred: str, ref: str) -> tuple[float, dict | None]:
    out = get_metric(spec).compute(predictions=[pred], references=[ref])
    return out["scores"][0], out["details"][0]


def test_rouge_l_hand_computed() -> None:
    # LCS of "the cat sat on the mat" / "the cat is on the mat" = 5 of 6 tokens each side
    v, d = one("rougeL", "the cat sat on the mat", "the cat is on the mat")
    assert v == pytest.approx(5 / 6) and d["recall"] == pytest.approx(5 / 6)
    # the Porter stemmer maps cats->cat, running/runs->run
    assert one("rougeL", "cats running", "cat runs")[0] == pytest.approx(1.0)


def test_bleu_hand_computed() -> None:
    # p1..p4 = 4/5, 3/4, 2/3, 1/2; equal lengths so BP = 1; BLEU = (0.2) ** (1/4)
    v, d = one("bleu", "a b c d e", "a b c d f")
    assert v == pytest.approx(100 * 0.2**0.25)
    assert d["bp"] == 1.0


def test_chrf_hand_computed() -> None:
    # "ab" vs "abc": order 1 P=1 R=2/3, order 2 P=1 R=1/2 (higher orders absent in the
    # hypothesis); avg P=1, R=7/12; F_beta=2 = 5PR/(4P+R) = 35/55
    assert one("chrf", "ab", "abc")[0] == pytest.approx(100 * 35 / 55)


def test_match_metrics() -> None:
    assert one("exact_match", " Hello\n", "Hello")[0] == 1.0
    assert one("exact_match", "hello", "Hello")[0] == 0.0
    assert normalize_text("The  Cat, sat!") == "cat sat"
    assert one("normalized_match", "The Cat!", "a cat")[0] == 1.0
    assert one("normalized_match", "dog", "cat")[0] == 0.0


def test_length_ratio() -> None:
    v, d = one("length_ratio", "a b c", "a b c d e f")
    assert v == pytest.approx(0.5)
    assert d["char_ratio"] == pytest.approx(5 / 11)
    assert one("length_ratio", "a", "")[0] is None


def test_metric_identity_and_errors() -> None:
    m = get_metric("max_sentences:3")
    assert (m.metric_name, m.version) == ("max_sentences:3", "2")
    assert get_metric("word_limit:-50").metric_name == "word_limit:-50"
    with pytest.raises(SlamkitError, match="Unknown metric 'nope'"):
        get_metric("nope")
    with pytest.raises(SlamkitError, match="takes no argument"):
        get_metric("bleu:4")


def test_score_generations_stores_and_resumes(store) -> None:
    keys = add_synthetic(store)
    # an errored and an empty-text generation must not be scored
    store.insert_many(
        "generations",
        [
            {"gen_key": "g-err", "run_id": "run", "model_id": "m1", "task_id": TASK,
             "item_id": "i1", "sample_index": 1, "seed": 0, "sampling": {}, "text": None,
             "error": "boom"},
        ],
    )  # fmt: skip
    specs = ["rougeL", "bleu", "exact_match", "length_ratio", "max_sentences:4"]
    counts = score_generations(store, specs, task_id=TASK, progress=False)
    assert counts.by_label == {s: 4 for s in specs}
    assert store.count("scores") == 20
    assert score_generations(store, specs, progress=False).by_label == {s: 0 for s in specs}
    assert store.count("scores") == 20

    df = load_scores(store)
    row = df[(df.gen_key == keys[("m1", "i1")]) & (df.metric == "rougeL")].iloc[0]
    assert row.value == pytest.approx(5 / 6) and row.ref_id == "r-i1"
    assert row.model == "model-m1"
    ms = df[(df.gen_key == keys[("m2", "i2")]) & (df.metric == "max_sentences:4")].iloc[0]
    assert ms.value == 0.0 and json.loads(ms.details)["sentences"] == 5

    # a new metric version is computed again, the old rows stay
    m = get_metric("exact_match")
    m.version = str(int(m.version) + 1)
    assert score_generations(store, [m], progress=False).by_label == {"exact_match": 4}
    assert store.count("scores", "metric = 'exact_match'") == 8


def test_score_without_reference_warns_and_skips(store) -> None:
    add_synthetic(store, refs={"i1": "x"}, gens={("m1", "i1"): "x", ("m1", "i2"): "y"})
    with pytest.warns(UserWarning, match="1 generations have no reference"):
        counts = score_generations(store, ["exact_match", "max_sentences"], progress=False)
    assert counts.by_label == {"exact_match": 1, "max_sentences:4": 2}


def test_choose_reference_by_source_model(store) -> None:
    add_synthetic(store)
    store.insert(
        "reference_outputs",
        {"ref_id": "r-other", "task_id": TASK, "item_id": "i1", "source_model": "aaa",
         "sample_index": 0, "text": "the cat sat on the mat"},
    )  # fmt: skip
    with pytest.warns(UserWarning, match="2 generations have no reference from 'aaa'"):
        score_generations(store, ["exact_match"], source_model="aaa", progress=False)
    df = load_scores(store).set_index("model")
    assert set(df.ref_id) == {"r-other"}  # i2 has no 'aaa' reference and is skipped
    assert df.value.to_dict() == {"model-m1": 1.0, "model-m2": 0.0}


def test_scores_are_keyed_by_reference(store) -> None:
    keys = add_synthetic(store)
    store.insert(
        "reference_outputs",
        {"ref_id": "r-4o", "task_id": TASK, "item_id": "i1", "source_model": "gpt-4o",
         "sample_index": 0, "text": "the cat sat on the mat"},
    )  # fmt: skip
    specs = ["exact_match", "max_sentences:4"]
    assert score_generations(store, specs, source_model="gpt-4", progress=False).by_label == {
        "exact_match": 4, "max_sentences:4": 4,
    }  # fmt: skip
    # another reference: the reference metric is computed again, the reference-free one not
    with pytest.warns(UserWarning, match="2 generations have no reference from 'gpt-4o'"):
        counts = score_generations(store, specs, source_model="gpt-4o", progress=False)
    assert counts.by_label == {"exact_match": 2, "max_sentences:4": 0}
    for src in ("gpt-4", "gpt-4o"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpt-4o still has no reference for i2
            again = score_generations(store, specs, source_model=src, progress=False)
        assert again.by_label == {"exact_match": 0, "max_sentences:4": 0}
    df = load_scores(store, source_model="gpt-4o")
    em = df[df.metric == "exact_match"].set_index("gen_key")
    assert set(em.ref_id) == {"r-4o"} and set(em.source_model) == {"gpt-4o"}
    assert em.loc[keys[("m1", "i1")], "value"] == 1.0  # gen equals the gpt-4o reference
    assert df[df.metric == "max_sentences:4"].ref_id.isna().all()  # kept, no reference
    allrows = load_scores(store)
    assert len(allrows[allrows.metric == "exact_match"]) == 6  # 4 vs gpt-4 + 2 vs gpt-4o


def test_default_reference_is_the_tasks_only_reference_model(store) -> None:
    add_synthetic(store)
    # one reference model ('gpt-4'): used without being named
    assert score_generations(store, ["exact_match"], progress=False).by_label == {"exact_match": 4}
    # a second one sorting first alphabetically: no silent pick, the caller must choose
    store.insert(
        "reference_outputs",
        {"ref_id": "r-a", "task_id": TASK, "item_id": "i1", "source_model": "aaa",
         "sample_index": 0, "text": "x"},
    )  # fmt: skip
    with pytest.raises(SlamkitError, match="from 2 models: 'aaa', 'gpt-4'. Choose") as info:
        score_generations(store, ["exact_match"], progress=False)
    assert f"Task {TASK!r}" in str(info.value) and "--source-model" in str(info.value)
    # metrics without a reference need no choice
    assert score_generations(store, ["max_sentences"], progress=False).by_label == {
        "max_sentences:4": 4
    }
    assert score_generations(
        store, ["exact_match"], source_model="gpt-4", progress=False
    ).by_label == {"exact_match": 0}


def test_cosine_hand_computed() -> None:
    from slamkit.metrics.embedding import cosine

    assert cosine([1.0, 0.0], [1.0, 1.0]) == pytest.approx(2**-0.5)
    assert cosine([1.0, 2.0], [-2.0, 1.0]) == 0.0
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0


@pytest.mark.slow
def test_embedding_cosine_with_llama_cpp(store, smollm2) -> None:
    import llama_cpp

    m = get_metric("embed_cosine", model_path=smollm2)
    assert m.metric_name == "embed_cosine:SmolLM2-135M-Instruct.Q4_1"
    a, b, c = "The cat sat on the mat.", "A cat is sitting on a mat.", "Corporate tax law."
    out = m.compute(predictions=[a, a, c], references=[a, b, b])["scores"]
    assert out[0] == pytest.approx(1.0, abs=1e-6)  # identical text
    assert out[1] > out[2]  # paraphrase closer than an unrelated text

    # the same value computed independently: mean-pooled vectors, cosine by hand
    llm = llama_cpp.Llama(
        str(smollm2), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        n_ctx=512, n_threads=1, n_threads_batch=1, verbose=False,
    )  # fmt: skip
    u, v = llm.embed(a), llm.embed(b)
    llm.close()
    assert len(u) == 576
    dot = sum(x * y for x, y in zip(u, v, strict=True))
    hand = dot / (sum(x * x for x in u) ** 0.5 * sum(y * y for y in v) ** 0.5)
    assert out[1] == pytest.approx(hand, abs=1e-4)

    # through the driver: stored, then nothing recomputed
    add_synthetic(store, gens={("m1", "i1"): "the cat is on the mat"})
    assert score_generations(store, [m], progress=False).by_label == {m.metric_name: 1}
    assert score_generations(store, [m], progress=False).by_label == {m.metric_name: 0}
    row = load_scores(store).iloc[0]
    assert row.value == pytest.approx(1.0, abs=1e-6)
    assert len(json.loads(row.details)["params"]["model_sha256"]) == 64
    m.close()
