"""Bad metric inputs are refused before anything is scored; empty texts score 0, flagged.

* Metric specs (``max_sentences:abc``, ``word_limit:x-y``, an unknown name, a text file as
  embedder), ``--json-schema`` files (missing, not JSON, not a schema): one line naming the
  spec or file and the fix, exit 2, and the ``scores`` table as it was — even when the bad
  spec follows good ones.
* An embedder that is not a GGUF is refused from its header, before llama.cpp is called.
* An empty (or whitespace-only) output or reference scores 0.0 on every reference metric
  with the details flagging it (never embedded as ``" "``, which scored ~0.86).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TENSORS, add_synthetic, write_gguf

from slamkit.cli import main
from slamkit.errors import GGUFError, ModelNotFoundError, SlamkitError
from slamkit.metrics import (
    get_metric,
    load_json_schema,
    load_scores,
    parse_metric_spec,
    score_generations,
    summarize_scores,
)
from slamkit.store import Store


@pytest.fixture()
def no_llama(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """llama.cpp's loader replaced by one that records the call and fails the test."""
    import llama_cpp

    calls: list[tuple] = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"llama.cpp was asked to load {args}")

    monkeypatch.setattr(llama_cpp, "Llama", refuse)
    return calls


@pytest.fixture()
def scored_db(tmp_path: Path) -> Path:
    """A store with the synthetic task, references, generations and exact_match scores."""
    db = tmp_path / "s.duckdb"
    with Store(db) as st:
        add_synthetic(st)
        assert score_generations(st, ["exact_match"], progress=False).by_label == {"exact_match": 4}
    return db


def score_rows(db: Path) -> list[tuple]:
    with Store(db) as st:
        return sorted(st.rows("SELECT gen_key, metric, metric_version, value FROM scores"))


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("slamkit: error: ")
    assert "Traceback" not in cap.err and "computed:" not in cap.out
    return lines[0]


BAD_SPECS = [
    ("max_sentences:abc", "metric 'max_sentences:abc': the sentence limit must be a whole "
     "number >= 1, e.g. max_sentences:4"),
    ("max_sentences:0", "must be a whole number >= 1"),
    ("word_limit:x-y", "metric 'word_limit:x-y': 'x-y' is not a word limit; write "
     "word_limit:50 (at most 50 words), word_limit:20-50"),
    ("word_limit:50-20", "the low limit 50 is above the high 20; write word_limit:50"),
    ("word_limit", "metric 'word_limit' needs an argument: write word_limit:50"),
    ("rougel", "Unknown metric 'rougel'. Did you mean 'rougeL'? Known metrics: banned_phrases"),
    ("bleu:4", "metric 'bleu:4': bleu takes no argument; write plain bleu"),
    ("regex_must:(", "metric 'regex_must:(': '(' is not a valid regular expression"),
    ("banned_phrases:a||b", "an empty phrase would match every text"),
    ("embed_cosine:{tmp}/notes.txt", "metric 'embed_cosine:{tmp}/notes.txt': {tmp}/notes.txt "
     "is not a GGUF model file (it is a text file starting with 'these are my notes'): pass "
     "an embedding GGUF"),
    ("embed_cosine:{tmp}/missing.gguf", "no such embedder file {tmp}/missing.gguf; pass an "
     "embedding GGUF"),
    ("embed_cosine:{tmp}/cut.gguf", "{tmp}/cut.gguf: truncated"),
    ("json_schema:{tmp}/bad.json", "{tmp}/bad.json: not valid JSON (Expecting ',' delimiter "
     "at line 3 column 1)"),
]  # fmt: skip


def _inputs(tmp: Path) -> None:
    (tmp / "notes.txt").write_text("these are my notes\nnot a model\n")
    (tmp / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (tmp / "bad.json").write_text('{"type": "object",\n "required": ["a"]\n')


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS, ids=[s for s, _ in BAD_SPECS])
def test_bad_metric_spec_cli_exit_2_nothing_written(
    spec: str, message: str, tmp_path: Path, scored_db: Path, no_llama: list, capsys
) -> None:
    _inputs(tmp_path)
    spec, message = spec.format(tmp=tmp_path), message.format(tmp=tmp_path)
    before = score_rows(scored_db)
    # the bad spec comes after good ones: still nothing is scored
    argv = ["--store", str(scored_db), "score", "--metrics", "rougeL", "length_ratio", spec]
    assert main([*argv, "--quiet"]) == 2
    line = one_error_line(capsys)
    assert message in line, line
    assert score_rows(scored_db) == before
    assert no_llama == []


def test_bad_spec_creates_no_store(tmp_path: Path, capsys) -> None:
    db = tmp_path / "new.duckdb"
    assert main(["--store", str(db), "score", "--metrics", "word_limit:x-y", "--quiet"]) == 2
    assert "metric 'word_limit:x-y'" in one_error_line(capsys)
    assert not db.exists()


def test_bad_spec_through_the_api_writes_nothing(store) -> None:
    add_synthetic(store)
    for specs in (["rougeL", "max_sentences:abc"], "max_sentences:abc", ["rougeL", 5]):
        with pytest.raises(SlamkitError) as err:
            score_generations(store, specs, progress=False)
        assert "max_sentences:abc" in str(err.value) or "metric 5 is a int" in str(err.value)
        assert store.count("scores") == 0
    # a single string is one spec, not a list of characters
    assert score_generations(store, "rougeL", progress=False).by_label == {"rougeL": 4}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "{f}: no such file; pass a JSON Schema document"),
        ('{"type": "object",\n  "properties": {}\n  "required": []}',
         "{f}: not valid JSON (Expecting ',' delimiter at line 3 column 3)"),
        ("", "{f}: not valid JSON (Expecting value at line 1 column 1)"),
        ('{"type": "nope"}', "{f}: not a valid JSON Schema ('nope' is not valid under any of "
         "the given schemas, at /type; checked as Draft202012); fix that keyword"),
        ('{"properties": {"a": {"minimum": "ten"}}}',
         "{f}: not a valid JSON Schema ('ten' is not of type 'number', at "
         "/properties/a/minimum"),
        ("[1, 2]", "{f}: a JSON Schema is a JSON object (or true/false), this file holds a list"),
        (b"\xff\xfe{}", "{f}: not UTF-8 text"),
    ],
    ids=["missing", "syntax", "empty", "bad-type", "nested", "list", "not-utf8"],
)  # fmt: skip
def test_json_schema_file_errors_cli(
    content: str | bytes | None, message: str, tmp_path: Path, scored_db: Path, capsys
) -> None:
    f = tmp_path / "schema.json"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    before = score_rows(scored_db)
    argv = ["--store", str(scored_db), "score", "--metrics", "rougeL", "--quiet"]
    assert main([*argv, "--json-schema", str(f)]) == 2
    line = one_error_line(capsys)
    assert f"slamkit: error: --json-schema {message.format(f=f)}" in line, line
    assert score_rows(scored_db) == before


def test_json_schema_file_accepted_and_as_spec(tmp_path: Path, scored_db: Path, capsys) -> None:
    f = tmp_path / "schema.json"
    f.write_text(json.dumps({"type": "object", "required": ["a"]}))
    assert load_json_schema(f) == {"type": "object", "required": ["a"]}
    argv = ["--store", str(scored_db), "score", "--metrics", "json_valid", "--quiet"]
    assert main([*argv, "--json-schema", str(f)]) == 0
    assert "json_schema:" in capsys.readouterr().out
    # the same file as a spec (what the notebooks' `metrics` parameter can name)
    name, kwargs = parse_metric_spec(f"json_schema:{f}")
    assert (name, kwargs) == ("json_schema", {"schema": {"type": "object", "required": ["a"]}})
    with pytest.raises(SlamkitError, match=f"metric 'json_schema:{f}x': {f}x: no such file"):
        parse_metric_spec(f"json_schema:{f}x")


def test_text_file_embedder_refused_before_llama_loads(tmp_path: Path, no_llama: list) -> None:
    notes = tmp_path / "notes.gguf"  # the name does not matter, the magic bytes do
    notes.write_text("hello\n")
    with pytest.raises(GGUFError, match=r"notes.gguf is not a GGUF model file \(it is a text"):
        get_metric(f"embed_cosine:{notes}")
    with pytest.raises(GGUFError, match="embed_cosine model_path: .*notes.gguf is not a GGUF"):
        get_metric("embed_cosine", model_path=notes)
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x00\x01\x02\x03" * 8)
    with pytest.raises(GGUFError, match=r"first 4 bytes are b'\\x00\\x01\\x02\\x03'"):
        get_metric(f"embed_cosine:{binary}")
    with pytest.raises(GGUFError, match="is a directory"):
        get_metric(f"embed_cosine:{tmp_path}")
    with pytest.raises(ModelNotFoundError, match="no such embedder file"):
        get_metric("embed_cosine", model_path=tmp_path / "nope.gguf")
    assert no_llama == []
    # a real GGUF header passes the check; llama.cpp is only called when embedding
    good = write_gguf(tmp_path / "tiny.gguf", [("general.architecture", 8, "llama")], TENSORS)
    m = get_metric(f"embed_cosine:{good}")
    assert m.metric_name == "embed_cosine:tiny" and no_llama == []
    with pytest.raises(AssertionError, match="llama.cpp was asked to load"):
        m.compute(predictions=["a"], references=["b"])
    assert len(no_llama) == 1


def test_constructor_arguments_checked() -> None:
    with pytest.raises(SlamkitError, match=r"whole number >= 1 \(got 'abc'\)"):
        get_metric("max_sentences", n="abc")
    with pytest.raises(SlamkitError, match="min_words=50 is above max_words=20"):
        get_metric("word_limit", min_words=50, max_words=20)
    with pytest.raises(
        SlamkitError, match=r"max_words must be a whole number >= 0 or None \(got -1\)"
    ):
        get_metric("word_limit", max_words=-1)
    with pytest.raises(SlamkitError, match="an empty phrase would match every output"):
        get_metric("banned_phrases", phrases=["ok", ""])
    with pytest.raises(SlamkitError, match="schema must be a JSON object"):
        get_metric("json_schema", schema=[1])
    assert get_metric("word_limit", max_words=0).metric_name == "word_limit:-0"


def test_word_limit_forms() -> None:
    assert parse_metric_spec("word_limit:50") == (
        "word_limit",
        {"min_words": None, "max_words": 50},
    )
    assert parse_metric_spec("word_limit:20-50")[1] == {"min_words": 20, "max_words": 50}
    assert parse_metric_spec("word_limit:20-")[1] == {"min_words": 20, "max_words": None}
    assert parse_metric_spec("word_limit:-50")[1] == {"min_words": None, "max_words": 50}
    assert get_metric("word_limit:50").metric_name == "word_limit:-50"  # "50" = at most 50
    out = get_metric("word_limit:3").compute(predictions=["a b c", "a b c d"])["scores"]
    assert out == [1.0, 0.0]


# -- empty texts ----------------------------------------------------------------------------

REFERENCE_METRICS = ["rougeL", "bleu", "chrf", "exact_match", "normalized_match"]


@pytest.mark.parametrize("spec", [*REFERENCE_METRICS, "length_ratio"])
def test_empty_output_or_reference_scores_zero_flagged(spec: str) -> None:
    preds = ["", "  \n\t", "the cat sat", "", "the cat sat"]
    refs = ["the cat sat", "the cat sat", "", "", "the cat sat"]
    out = get_metric(spec).compute(predictions=preds, references=refs)
    scores, details = out["scores"], out["details"]
    assert details[0]["empty_output"] is True and details[1]["empty_output"] is True
    assert details[2]["empty_reference"] is True and "empty_output" not in details[2]
    assert details[3]["empty_output"] is True and details[3]["empty_reference"] is True
    if spec == "length_ratio":  # a ratio to an empty reference is undefined
        assert scores[:4] == [0.0, 0.0, None, None]
    else:
        assert scores[:4] == [0.0, 0.0, 0.0, 0.0]  # even empty vs empty: not a match
    assert scores[4] > 0.0 and not (details[4] or {}).get("empty_output")


def test_normalized_match_of_texts_that_normalize_to_nothing() -> None:
    out = get_metric("normalized_match").compute(predictions=["The."], references=["A!"])
    assert out["scores"] == [0.0]
    assert out["details"] == [{"empty_after_normalization": True}]


def test_constraints_flag_an_empty_output() -> None:
    out = get_metric("max_sentences:4").compute(predictions=["", "One. Two."])
    assert out["scores"] == [1.0, 1.0]  # at most 4 sentences: true of an empty text
    assert out["details"][0] == {"sentences": 0, "max": 4, "empty_output": True}
    assert "empty_output" not in out["details"][1]


def test_empty_generation_scored_and_flagged_in_store(store) -> None:
    gens = {("m1", "i1"): "", ("m1", "i2"): "a b c d e", ("m2", "i1"): "   "}
    add_synthetic(store, gens=gens)
    specs = ["rougeL", "chrf", "exact_match", "max_sentences:4"]
    assert score_generations(store, specs, progress=False).by_label == {s: 3 for s in specs}
    df = load_scores(store)
    empty = df[df.gen_key.isin(["g-m1-i1", "g-m2-i1"])]
    assert len(empty) == 8
    assert all(json.loads(d)["empty_output"] is True for d in empty.details)
    assert (empty[empty.metric != "max_sentences:4"].value == 0.0).all()


def test_bumped_version_replaces_old_values_in_summaries(store) -> None:
    """exact_match v1 called an empty output equal to an empty reference (1.0); v2 says 0.0,
    is computed anew for stores holding v1 rows, and summaries read only the newest."""
    add_synthetic(store, refs={"i1": ""}, gens={("m1", "i1"): ""})
    store.insert_many(
        "scores",
        [{"gen_key": "g-m1-i1", "metric": "exact_match", "metric_version": "1",
          "ref_id": "r-i1", "value": 1.0}],
    )  # fmt: skip
    assert get_metric("exact_match").version == "2"
    assert score_generations(store, ["exact_match"], progress=False).by_label == {"exact_match": 1}
    df = load_scores(store)
    assert sorted(df.metric_version) == ["1", "2"]
    summary = summarize_scores(df)
    assert summary[["n", "mean"]].values.tolist() == [[1, 0.0]]


@pytest.mark.slow
def test_embed_cosine_empty_output_scores_zero(smollm2: Path, monkeypatch) -> None:
    m = get_metric("embed_cosine", model_path=smollm2)
    assert m.version == "2"
    llm = m._model()
    seen: list[str] = []
    real_embed = llm.embed
    monkeypatch.setattr(llm, "embed", lambda t, **kw: seen.append(t) or real_embed(t, **kw))
    ref = "Paris is the capital of France."
    preds = ["", " \n ", "The capital of France is Paris.", "Quarterly tax filing rules."]
    out = m.compute(predictions=[*preds, "Paris."], references=[ref] * 4 + [""])
    scores, details = out["scores"], out["details"]
    assert scores[:2] == [0.0, 0.0]  # version 1 gave ~0.86 (" " embedded)
    assert details[0] == {"empty_output": True} and details[1] == {"empty_output": True}
    assert scores[2] > scores[3] > 0.0  # real answers score above an empty one
    assert scores[4] == 0.0 and details[4] == {"empty_reference": True}
    assert all(t.strip() for t in seen) and len(seen) == 3  # nothing empty was embedded
    assert m.embed(["  "]) == [[0.0] * 576]
    m.close()
