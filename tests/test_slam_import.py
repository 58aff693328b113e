"""Import of SLaM tool files (METHOD.md appendix A): use cases, runs, human evaluations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import USECASE, write_json

from slamkit.errors import ReferenceImportError
from slamkit.slam_import import (
    import_slam,
    import_slam_human_eval,
    import_slam_run,
    import_slam_usecase,
)


def test_usecase_import(store, slam_dir: Path) -> None:
    counts = import_slam_usecase(store, slam_dir / "data" / "peptalk.json")
    assert counts == {"items": 1, "reference_outputs": 2, "generations": 3}
    item = store.df("SELECT * FROM items").iloc[0]
    assert (item.task_id, item.item_id, item.prompt) == ("slam", "peptalk", USECASE["prompt"])
    assert json.loads(item.fields)["prompt_disc"].startswith("## Daily")
    refs = store.df("SELECT * FROM reference_outputs ORDER BY sample_index")
    assert refs.text.tolist() == ["You can do it!", "Go get them!"]
    assert set(refs.source_model) == {"gpt-4"}
    gens = store.df("SELECT * FROM generations ORDER BY model_id, sample_index")
    assert gens.model_id.tolist() == ["slam:mistral-7b-q4_0"] * 2 + ["slam:zephyr-7b-q2_K"]
    assert set(gens.seed) == {-1} and gens.error.isna().all()
    assert store.count("models") == 2
    # importing again writes nothing
    again = import_slam_usecase(store, slam_dir / "data" / "peptalk.json")
    assert again == {"items": 0, "reference_outputs": 0, "generations": 0}


def test_folder_import_with_human_eval_and_runs(store, slam_dir: Path) -> None:
    counts = import_slam(store, slam_dir)
    assert counts["files"] == 3 and counts["human_judgments"] == 3
    assert counts["generations"] == 5  # 3 from the use case + 2 from the run file
    run = store.df("SELECT * FROM generations WHERE latency_s IS NOT NULL ORDER BY sample_index")
    assert run.latency_s.tolist() == [1.5, 0.5] and set(run.item_id) == {"peptalk"}

    hj = store.df("SELECT * FROM human_judgments ORDER BY judgment_seq")
    assert hj[["criterion", "choice"]].values.tolist() == [
        ["overall", "left"],
        ["clarity", "tie"],
        ["overall", "right"],
    ]
    first = hj.iloc[0]
    gen = store.df("SELECT gen_key FROM generations WHERE text = 'Finish the report, then gym.'")
    ref = store.df("SELECT ref_id FROM reference_outputs WHERE text = 'You can do it!'")
    assert (first.left_kind, first.left_id) == ("generation", gen.gen_key[0])
    assert (first.right_kind, first.right_id) == ("reference", ref.ref_id[0])
    assert first.annotator == "w1" and first.reason == "A is concrete"
    assert first.source == "slam-import:w1_set0.json"
    assert str(first.created_at) == "2023-11-14 22:14:10"
    # response 99 is not in responses.json: kept, with the SLaM id
    assert (hj.iloc[2].right_kind, hj.iloc[2].right_id) == ("slam_response", "gpt-4/99")
    # a second import adds nothing (append-only table, deduplicated on import)
    assert import_slam(store, slam_dir)["human_judgments"] == 0
    assert store.count("human_judgments") == 3


def test_bad_files_name_file_and_field(store, tmp_path: Path) -> None:
    bad = write_json(tmp_path / "u.json", {"prompt": "p", "outputs": {"m": ["ok", 5]}})
    with pytest.raises(ReferenceImportError, match=r"u\.json: field 'outputs\.m\[1\]' must be"):
        import_slam_usecase(store, bad)
    bad = write_json(tmp_path / "v.json", {"outputs": {}})
    with pytest.raises(ReferenceImportError, match=r"v\.json: missing field 'prompt'"):
        import_slam_usecase(store, bad)
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(ReferenceImportError, match=r"broken\.json: not valid JSON"):
        import_slam(store, tmp_path / "broken.json")
    ev = write_json(tmp_path / "h.json", {"worker_id": "w", "evals": [
        {"result": {"overall": "Left one"}, "question": ["p", {"a": 1, "b": 2}]}]})  # fmt: skip
    with pytest.raises(ReferenceImportError, match=r"evals\[0\]\.result\.overall' is 'Left one'"):
        import_slam_human_eval(store, ev)
    run = write_json(tmp_path / "r.json", {"model_name": "m", "full_prompt": "x", "outputs": [{}]})
    with pytest.raises(ReferenceImportError, match=r"missing field 'outputs\[0\]\.response'"):
        import_slam_run(store, run)
    other = write_json(tmp_path / "o.json", {"hello": 1})
    with pytest.raises(ReferenceImportError, match="not a SLaM use-case"):
        import_slam(store, other)
    for table in ("generations", "human_judgments", "models", "runs", "items"):
        assert store.count(table) == 0, table  # nothing half-imported
