"""Importing pairwise human preferences (slamkit.preferences): every file shape round-trips,
texts link to stored outputs, labels map, errors name file/record/field, nothing is lost."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import GENS, REFS, add_synthetic

from slamkit.cli import main
from slamkit.errors import PreferenceImportError
from slamkit.preferences import DEFAULT_LABELS, import_preferences, normalize_choice
from slamkit.store import Store, readers

#: a hand-made export: one record per judged pair, fields named as some other tool names them
RECORDS = [
    {"worker": "ann", "question": "Name a fruit.", "model_1": "alpha", "model_2": "beta",
     "response_1": "Apple.", "response_2": "A banana is a fruit.", "preference": "1",
     "helpful": "2", "secs": 12.5},
    {"worker": "ann", "question": "Name a colour.", "model_1": "beta", "model_2": "gamma",
     "response_1": "Blue.", "response_2": "Red, green.", "preference": "About the same",
     "helpful": "", "secs": 3},
    {"worker": "bob", "question": "Name a fruit.", "model_1": "alpha", "model_2": "beta",
     "response_1": "Apple.", "response_2": "A banana is a fruit.", "preference": "2 is better",
     "helpful": "B", "secs": 7},
    {"worker": "bob", "question": "Say hi.", "model_1": "gamma", "model_2": "alpha",
     "response_1": "Hi!", "response_2": "Hello there, friend.", "preference": "tie",
     "helpful": "A", "secs": None},
]  # fmt: skip
COLUMNS = {"annotator": "worker", "prompt": "question", "model_a": "model_1",
           "model_b": "model_2", "text_a": "response_1", "text_b": "response_2",
           "choice": "preference", "time_spent": "secs"}  # fmt: skip
CRITERIA = {"helpfulness": "helpful"}
#: (annotator, prompt, model A, model B, text A, text B, criterion, choice, seconds)
FRUIT = ("Name a fruit.", "alpha", "beta", "Apple.", "A banana is a fruit.")
HI = ("Say hi.", "gamma", "alpha", "Hi!", "Hello there, friend.")
EXPECTED = {
    ("ann", *FRUIT, "overall", "left", 12.5), ("ann", *FRUIT, "helpfulness", "right", 12.5),
    ("ann", "Name a colour.", "beta", "gamma", "Blue.", "Red, green.", "overall", "tie", 3.0),
    ("bob", *FRUIT, "overall", "right", 7.0), ("bob", *FRUIT, "helpfulness", "right", 7.0),
    ("bob", *HI, "overall", "tie", None), ("bob", *HI, "helpfulness", "left", None),
}  # fmt: skip


def _without_worker(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "worker"}


def _by_worker() -> dict[str, list]:
    groups: dict[str, list] = {}
    for r in RECORDS:
        groups.setdefault(r["worker"], []).append(_without_worker(r))
    return groups


NO_ANNOTATOR = {k: v for k, v in COLUMNS.items() if k != "annotator"}


def _write(path: Path, shape: str) -> dict:
    """Write RECORDS in ``shape``; return the extra import arguments that shape needs."""
    if shape == "json":
        path.write_text(json.dumps(RECORDS))
    elif shape == "json-object":
        path.write_text(json.dumps({"meta": {"tool": "x"}, "rows": RECORDS}))
        return {"records_key": "rows"}
    elif shape == "json-by-annotator":
        path.write_text(json.dumps(_by_worker()))
        return {"columns": NO_ANNOTATOR}
    elif shape == "json-annotator-objects":  # {annotator: {.., "judgments": [records]}}
        groups = {w: {"team": "t1", "judgments": recs} for w, recs in _by_worker().items()}
        path.write_text(json.dumps(groups))
        return {"columns": NO_ANNOTATOR, "grouped": True, "nested": "judgments"}
    elif shape == "json-dotted-records-key":
        path.write_text(json.dumps({"export": {"v": 2, "annotators": _by_worker()}}))
        return {"columns": NO_ANNOTATOR, "records_key": "export.annotators"}
    elif shape == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    elif shape == "jsonl-nested":
        lines = [
            {"worker": w, "judgments": [_without_worker(r) for r in RECORDS if r["worker"] == w]}
            for w in ("ann", "bob")
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in lines))
        return {"nested": "judgments"}
    elif shape == "csv":
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(RECORDS[0]))
            w.writeheader()
            w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in RECORDS])
    elif shape == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(RECORDS), path)
    return {}


SHAPES = {
    "json": "json", "json-object": "json", "json-by-annotator": "json",
    "json-annotator-objects": "json", "json-dotted-records-key": "json", "jsonl": "jsonl",
    "jsonl-nested": "jsonl", "csv": "csv", "parquet": "parquet",
}  # fmt: skip


def stored(store: Store) -> set[tuple]:
    h = readers.human_judgments(store)
    out = set()
    for r in h.itertuples(index=False):
        ta = readers.texts(store, r.left_kind, [r.left_id])[r.left_id]
        tb = readers.texts(store, r.right_kind, [r.right_id])[r.right_id]
        prompt = readers.item_prompt(store, r.task_id, r.item_id)
        secs = None if r.time_spent_s != r.time_spent_s else float(r.time_spent_s)
        out.add((r.annotator, prompt, r.left_model, r.right_model, ta, tb, r.criterion,
                 r.choice, secs))  # fmt: skip
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_round_trips(store, tmp_path: Path, shape: str) -> None:
    path = tmp_path / f"prefs.{SHAPES[shape]}"
    extra = {"columns": COLUMNS, **_write(path, shape)}
    res = import_preferences(store, path, "prefs", criteria=CRITERIA, **extra)
    assert (res.records, res.judgments_added, res.annotators) == (4, 7, ["ann", "bob"])
    assert stored(store) == EXPECTED
    # two annotators judged the same fruit pair: the same sides (same text ids) and item
    h = readers.human_judgments(store, criterion="overall")
    fruit = h[h["left_model"].eq("alpha") & h["right_model"].eq("beta")]
    assert fruit[["item_id", "left_id", "right_id"]].drop_duplicates().shape[0] == 1
    assert set(h["source"]) == {f"preference-import:{path.name}"}
    # the items are the three prompts, unmatched texts are kept once each
    assert store.count("items", "task_id = 'prefs'") == 3 == res.items_added
    assert res.texts_added == 6 and store.count("pair_texts") == 6
    # importing the same file again writes nothing
    again = import_preferences(store, path, "prefs", criteria=CRITERIA, **extra)
    assert (again.judgments_added, again.items_added, again.texts_added) == (0, 0, 0)
    assert len(readers.human_judgments(store)) == 7


def test_texts_link_to_stored_generations_and_references(store, tmp_path: Path) -> None:
    keys = add_synthetic(store)
    path = tmp_path / "linked.jsonl"
    recs = [
        # by item id: a generation vs the reference of i1, no model names in the file
        {"annotator": "ann", "item_id": "i1", "text_a": GENS[("m1", "i1")],
         "text_b": REFS["i1"], "choice": "B"},
        # by prompt text (item i2's prompt is 'i2'); a text that is stored nowhere
        {"annotator": "ann", "prompt": "i2", "text_a": GENS[("m2", "i2")],
         "text_b": "not stored anywhere", "model_b": "other", "choice": "A is better"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = import_preferences(store, path, "t")
    assert (res.matched_sides, res.unmatched_sides, res.items_added) == (3, 1, 0)
    h = readers.human_judgments(store).set_index("item_id")
    assert (h.loc["i1", "left_kind"], h.loc["i1", "left_id"]) == ("generation", keys[("m1", "i1")])
    assert (h.loc["i1", "right_kind"], h.loc["i1", "right_id"]) == ("reference", "r-i1")
    assert (h.loc["i1", "left_model"], h.loc["i1", "right_model"]) == ("model-m1", "gpt-4")
    assert h.loc["i1", "choice"] == "right"
    assert (h.loc["i2", "left_kind"], h.loc["i2", "left_id"]) == ("generation", keys[("m2", "i2")])
    assert h.loc["i2", "right_kind"] == "text" and h.loc["i2", "right_model"] == "other"
    assert readers.texts(store, "text", [h.loc["i2", "right_id"]]) == {
        h.loc["i2", "right_id"]: "not stored anywhere"
    }
    # a stored text of another item is not linked when the item is known
    path2 = tmp_path / "other-item.jsonl"
    path2.write_text(json.dumps({"annotator": "ann", "item_id": "i2", "choice": "1",
                                 "text_a": GENS[("m1", "i1")], "text_b": REFS["i2"]}))  # fmt: skip
    import_preferences(store, path2, "t")
    row = readers.human_judgments(store).iloc[-1]
    assert (row.left_kind, row.right_kind, row.right_id) == ("text", "reference", "r-i2")


def test_label_mapping_defaults_custom_and_model_names(store, tmp_path: Path) -> None:
    for raw, side in [("1", "left"), (2, "right"), ("A", "left"), ("b", "right"),
                      ("About the same", "tie"), ("TIE", "tie"), ("1 is better", "left"),
                      ("2 is better", "right"), ("Response A", "left"), (1.0, "left")]:  # fmt: skip
        assert normalize_choice(raw) == side, raw
    assert normalize_choice("gpt-x", model_a="llama", model_b="GPT-X") == "right"
    assert normalize_choice("left-ish") is None
    assert {"left", "right", "tie"} == set(DEFAULT_LABELS.values())
    path = tmp_path / "custom.csv"
    path.write_text("who,q,ma,mb,x,y,verdict\nann,q1,m,n,t1,t2,first wins\n"
                    "ann,q2,gpt,llama,t3,t4,llama\n")  # fmt: skip
    import_preferences(
        store, path, "c", labels={"first wins": "left"},
        columns={"annotator": "who", "prompt": "q", "text_a": "x", "text_b": "y",
                 "choice": "verdict", "model_a": "ma", "model_b": "mb"},
    )  # fmt: skip
    got = readers.human_judgments(store, task_id="c")["choice"].tolist()
    assert got == ["left", "right"]  # 'llama' is model B of its record
    # without the model names 'llama' is neither a label nor a model name: refused
    with pytest.raises(PreferenceImportError, match=r"record 2 \(line 3\).*'verdict'.*'llama'"):
        import_preferences(store, path, "c2", labels={"first wins": "left"},
                           columns={"annotator": "who", "text_a": "x", "text_b": "y",
                                    "choice": "verdict"})  # fmt: skip
    path.write_text("who,q,x,y,verdict\nann,q1,t1,t2,first wins\nann,q3,t5,t6,1\n")
    import_preferences(
        store, path, "c3", labels={"first wins": "left", "1": "right"},
        columns={"annotator": "who", "text_a": "x", "text_b": "y", "choice": "verdict"},
    )  # fmt: skip
    got = readers.human_judgments(store, task_id="c3")["choice"].tolist()
    assert got == ["left", "right"]  # the custom label overrides the default '1' = left


def _fill(store: Store, tmp_path: Path) -> tuple[int, int, int, int]:
    add_synthetic(store)
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    import_preferences(store, good, "prefs", columns=COLUMNS)
    return (len(readers.human_judgments(store)), store.count("items"), store.count("pair_texts"),
            store.count("tasks"))  # fmt: skip


BAD = [  # (file name, content, mapping, what the message must say)
    ("missing.jsonl", None, {}, r"missing\.jsonl does not exist"),
    ("broken.json", '[{"text_a": "x",', {}, r"broken\.json: is not valid JSON: .* line 1"),
    ("broken.jsonl", json.dumps(RECORDS[0]) + "\n{oops\n", COLUMNS,
     r"broken\.jsonl: row 2 \(line 2\) is not valid JSON"),
    ("no-text.jsonl",
     json.dumps(RECORDS[0]) + "\n" + json.dumps({**RECORDS[1], "response_2": None}), COLUMNS,
     r"record 2 \(line 2\) of .*no-text\.jsonl has an empty \(null\) value in field "
     r"'response_2' \(mapped to text_b\)"),
    ("no-field.jsonl", json.dumps(RECORDS[0]) + "\n" + json.dumps(_without_worker(RECORDS[1])),
     COLUMNS, r"record 2 \(line 2\) of .* has no field 'worker' \(mapped to annotator\)"),
    ("bad-choice.json", json.dumps([RECORDS[0], {**RECORDS[1], "preference": "maybe"}]), COLUMNS,
     r"record 2 of .*bad-choice\.json: field 'preference' \(choice\) holds 'maybe'.*--label"),
    ("bad-time.json", json.dumps([{**RECORDS[0], "secs": "soon"}]), COLUMNS,
     r"record 1 of .*: field 'secs' \(mapped to time_spent\) holds 'soon'"),
    ("not-object.json", json.dumps([RECORDS[0], "just text"]), COLUMNS,
     r"record 2 of .* is a str, not an object"),
    ("by-annotator.json", json.dumps({"ann": [RECORDS[0]], "bob": {"x": 1}}),
     {**COLUMNS, "@grouped": True},
     r"by-annotator\.json: .*under 'bob' is a dict, not a list"),
    ("nested.jsonl", json.dumps({"worker": "w", "items": []}), {**COLUMNS, "@nested": "judgments"},
     r"record 1 \(line 1\) of .* has no field 'judgments' \(nested"),
    ("objects-no-nested.json", json.dumps({"ann": {"judgments": [RECORDS[0]]}}),
     {**COLUMNS, "@grouped": True},
     r"objects-no-nested\.json: .*under 'ann' is a dict, not a list.*--nested FIELD"),
    ("objects-wrong-nested.json",
     json.dumps({"ann": {"judgments": [RECORDS[0]]}, "bob": {"items": [RECORDS[2]]}}),
     {**COLUMNS, "@grouped": True, "@nested": "judgments"},
     r"the object under 'bob' of .*objects-wrong-nested\.json has no field 'judgments' "
     r"\(nested.*Fields in this record: items\b"),
    ("dotted-key.json", json.dumps({"export": {"v": 2, "rows": [RECORDS[0]]}}),
     {**COLUMNS, "@records_key": "export.annotators"},
     r"dotted-key\.json: has no key 'annotators' under 'export' \(records_key "
     r"'export\.annotators'; keys: v, rows\)"),
    ("dotted-key-top.json", json.dumps({"rows": [RECORDS[0]]}),
     {**COLUMNS, "@records_key": "export.annotators"},
     r"has no key 'export' \(records_key 'export\.annotators'; keys: rows\)"),
    ("plain-key.json", json.dumps({"rows": [RECORDS[0]]}), {**COLUMNS, "@records_key": "data"},
     r"plain-key\.json: has no key 'data' \(keys: rows\)\. Pass the key"),
    ("no-annotator.jsonl", json.dumps(_without_worker(RECORDS[0])),
     {k: v for k, v in COLUMNS.items() if k != "annotator"}, r"record 1 .* names no annotator"),
    ("roles.jsonl", json.dumps(RECORDS[0]), {"winner": "preference"}, r"Unknown column role"),
    ("empty.json", "[]", COLUMNS, r"empty\.json holds no records"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "mapping", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_record_or_field_is_named_and_nothing_is_lost(
    store, tmp_path: Path, name: str, content: str | None, mapping: dict, message: str
) -> None:
    before = _fill(store, tmp_path)
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    mapping = dict(mapping)
    nested, grouped = mapping.pop("@nested", None), mapping.pop("@grouped", None)
    records_key = mapping.pop("@records_key", None)
    with pytest.raises(PreferenceImportError, match=message):
        import_preferences(store, path, "prefs", columns=mapping, nested=nested, grouped=grouped,
                           records_key=records_key)  # fmt: skip
    assert _fill_counts(store) == before


def test_one_annotator_object_is_grouped_and_a_container_key_is_not(store, tmp_path: Path) -> None:
    """``{"dave": [records]}`` reads as dave's judgments (the same as the flat file with
    --annotator dave); ``{"rows": [records]}`` reads the records, and when they name no
    annotator the error says --grouped would read the key as one."""
    anns = [r for r in RECORDS if r["worker"] == "ann"]
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps([_without_worker(r) for r in anns]))
    res = import_preferences(store, flat, "prefs", columns=NO_ANNOTATOR, criteria=CRITERIA,
                             annotator="dave")  # fmt: skip
    want = stored(store)
    assert res.judgments_added == 3 and {r[0] for r in want} == {"dave"}
    assert want == {("dave", *r[1:]) for r in EXPECTED if r[0] == "ann"}
    one = tmp_path / "v.json"
    one.write_text(json.dumps({"dave": [_without_worker(r) for r in anns]}))
    again = import_preferences(store, one, "prefs", columns=NO_ANNOTATOR, criteria=CRITERIA)
    assert (again.records, again.judgments_added, again.annotators) == (2, 0, ["dave"])
    assert stored(store) == want
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"rows": [_without_worker(r) for r in anns]}))
    hint = (r"record 1 of .*rows\.json names no annotator .*--annotator\), or, if the "
            r"keys of the JSON object are annotators, read it as grouped \(grouped=True / "
            r"--grouped\)\.")  # fmt: skip
    with pytest.raises(PreferenceImportError, match=hint):
        import_preferences(store, rows, "prefs", columns=NO_ANNOTATOR, criteria=CRITERIA)
    grouped = import_preferences(store, rows, "prefs", columns=NO_ANNOTATOR, criteria=CRITERIA,
                                 grouped=True)  # fmt: skip
    assert (grouped.judgments_added, grouped.annotators) == (3, ["rows"])
    # a JSON array or JSONL file names no JSON object: no --grouped hint
    lines = tmp_path / "x.jsonl"
    lines.write_text(json.dumps(_without_worker(anns[0])) + "\n")
    with pytest.raises(PreferenceImportError, match="names no annotator") as err:
        import_preferences(store, lines, "prefs", columns=NO_ANNOTATOR)
    assert "grouped" not in str(err.value)


def test_cli_reads_grouped_annotator_objects_and_a_dotted_records_key(
    tmp_path: Path, capsys
) -> None:
    for shape in ("json-annotator-objects", "json-dotted-records-key"):
        db = str(tmp_path / f"{shape}.duckdb")
        path = tmp_path / f"{shape}.json"
        extra = _write(path, shape)
        argv = ["--store", db, "human", "import", str(path), "--task", "p",
                "--criterion", "helpfulness=helpful"]  # fmt: skip
        argv += [x for role, col in NO_ANNOTATOR.items() for x in ("--map", f"{role}={col}")]
        if "nested" in extra:
            argv += ["--grouped", "--nested", extra["nested"]]
        else:
            argv += ["--records-key", extra["records_key"]]
        assert main(argv) == 0
        assert "4 records" in capsys.readouterr().out
        with Store(db) as st:
            assert stored(st) == EXPECTED


def _fill_counts(store: Store) -> tuple[int, int, int, int]:
    return (len(readers.human_judgments(store)), store.count("items"), store.count("pair_texts"),
            store.count("tasks"))  # fmt: skip


def test_a_write_that_fails_midway_rolls_back(store, tmp_path: Path, monkeypatch) -> None:
    before = _fill(store, tmp_path)
    path = tmp_path / "new.jsonl"
    path.write_text("".join(json.dumps({**r, "question": r["question"] + " (v2)"}) + "\n"
                            for r in RECORDS))  # fmt: skip
    from slamkit.store import jobs

    real = jobs._insert

    def failing(db, table, rows, types=None):  # items and texts are written, then it fails
        if table == "human_judgments":
            raise RuntimeError("disk gone")
        return real(db, table, rows, types)

    monkeypatch.setattr(jobs, "_insert", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        import_preferences(store, path, "prefs", columns=COLUMNS)
    assert _fill_counts(store) == before
    monkeypatch.setattr(jobs, "_insert", real)
    assert import_preferences(store, path, "prefs", columns=COLUMNS).judgments_added == 4


def test_cli_import_with_a_mapping(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "s.duckdb")
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    maps = [x for role, col in COLUMNS.items() for x in ("--map", f"{role}={col}")]
    argv = ["--store", db, "human", "import", str(path), "--task", "p", *maps,
            "--criterion", "helpfulness=helpful", "--label", "About the same=tie"]  # fmt: skip
    assert main(argv) == 0
    assert "4 records" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 judgments" in capsys.readouterr().out
    with Store(db) as st:
        assert stored(st) == EXPECTED
    assert main(["--store", db, "human", "import", str(path), "--task", "p", "--map", "x"]) == 2
    assert "--map 'x': write NAME=VALUE" in capsys.readouterr().err
    assert main(["--store", db, "human", "import", str(path), "--task", "p"]) == 2
    assert "record 1 (line 1)" in capsys.readouterr().err  # the default fields are absent


def test_zero_one_coded_choices_are_refused_until_both_codes_are_mapped(
    store, tmp_path: Path, capsys
) -> None:
    """A file coding 0 = first response, 1 = second would land as tie / left under the
    defaults: 0 has no default meaning, and a field of only 0 / 1 needs both mapped."""
    path = tmp_path / "coded.csv"
    path.write_text("who,x,y,pick\nann,t1,t2,0\nann,t3,t4,1\nann,t5,t6,0\n")
    cols = {"annotator": "who", "text_a": "x", "text_b": "y", "choice": "pick"}
    with pytest.raises(PreferenceImportError, match=r"record 1 .*coded.csv.*'pick'.*holds 0"):
        import_preferences(store, path, "z", columns=cols)
    # mapping 0 alone would leave 1 at its default (left): both sides left - refused
    with pytest.raises(PreferenceImportError, match=r"coded.csv: field 'pick' holds only"):
        import_preferences(store, path, "z", columns=cols, labels={"0": "left"})
    assert readers.human_judgments(store, task_id="z").empty  # nothing written
    db = str(tmp_path / "s.duckdb")
    argv = ["--store", db, "human", "import", str(path), "--task", "z",
            *[x for r, c in cols.items() for x in ("--map", f"{r}={c}")]]  # fmt: skip
    assert main(argv) == 2
    assert "--label 0=left --label 1=right" in capsys.readouterr().err
    assert main([*argv, "--label", "0=left", "--label", "1=right"]) == 0
    with Store(db) as st:
        got = readers.human_judgments(st, task_id="z")["choice"].tolist()
    assert got == ["left", "right", "left"]
    # 1 / 2 codes (no 0) keep their defaults
    path.write_text("who,x,y,pick\nann,t1,t2,1\nann,t3,t4,2\n")
    import_preferences(store, path, "y", columns=cols)
    assert readers.human_judgments(store, task_id="y")["choice"].tolist() == ["left", "right"]


def test_the_same_judgments_in_another_file_form_are_not_stored_twice(
    store, tmp_path: Path
) -> None:
    """The example export imported as JSON, then the same judgments flattened into a CSV
    (other field names, numbers as text): keyed on content, the CSV adds nothing."""
    example = (
        Path(__file__).resolve().parents[1] / "data" / "examples" / "pairwise_preferences.json"
    )
    cols = {"prompt": "instruction", "model_a": "generator_1", "model_b": "generator_2",
            "text_a": "output_1", "text_b": "output_2", "choice": "preference",
            "time_spent": "time_spent_s"}  # fmt: skip
    first = import_preferences(store, example, "demo", columns=cols,
                               criteria={"correctness": "per_criterion.correctness"})  # fmt: skip
    assert (first.records, first.judgments_added) == (30, 60)
    before = stored(store)
    flat = tmp_path / "same.csv"
    with open(flat, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rater", "q", "m1", "m2", "r1", "r2", "pick", "correct", "secs"])
        for ann, recs in json.loads(example.read_text()).items():
            for r in recs:
                w.writerow([ann, r["instruction"], r["generator_1"], r["generator_2"],
                            r["output_1"], r["output_2"], r["preference"],
                            r["per_criterion"]["correctness"], str(r["time_spent_s"])])  # fmt: skip
    again = import_preferences(
        store, flat, "demo",
        columns={"annotator": "rater", "prompt": "q", "model_a": "m1", "model_b": "m2",
                 "text_a": "r1", "text_b": "r2", "choice": "pick", "time_spent": "secs"},
        criteria={"correctness": "correct"},
    )  # fmt: skip
    assert (again.records, again.judgments_added) == (30, 0)
    assert stored(store) == before and len(readers.human_judgments(store)) == 60
    # a changed choice is a different judgment: stored beside the first
    text = flat.read_text().replace("About the same", "2 is better", 1)
    flat.write_text(text)
    changed = import_preferences(
        store, flat, "demo",
        columns={"annotator": "rater", "prompt": "q", "model_a": "m1", "model_b": "m2",
                 "text_a": "r1", "text_b": "r2", "choice": "pick", "time_spent": "secs"},
        criteria={"correctness": "correct"},
    )  # fmt: skip
    assert changed.judgments_added == 1
