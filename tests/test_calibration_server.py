"""Judge calibration against a real OpenAI-compatible server (python -m llama_cpp.server,
SmolLM2) on an imported preference file, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slamkit.cli import main
from slamkit.store import Store, readers

pytestmark = pytest.mark.slow


def test_calibrate_a_real_judge_on_an_imported_file(tmp_path: Path, llama_server, capsys) -> None:
    export = tmp_path / "export.jsonl"
    pairs = [
        ("What is the capital of France?", "Paris.", "I like trains.", "1"),
        ("Name a primary colour.", "Banana.", "Red is a primary colour.", "2"),
        ("What is 2 + 2?", "4", "2 + 2 = 4.", "About the same"),
    ]
    recs = [
        {"annotator": who, "prompt": q, "model_a": "good", "model_b": "bad" if i != 1 else "ok",
         "text_a": a, "text_b": b, "choice": c if who == "ann" else "1", "seconds": 5 + i}
        for i, (q, a, b, c) in enumerate(pairs) for who in ("ann", "bob")
    ]  # fmt: skip
    export.write_text("".join(json.dumps(r) + "\n" for r in recs))
    db = str(tmp_path / "s.duckdb")
    argv = ["--store", db, "human", "import", str(export), "--task", "qa",
            "--map", "time_spent=seconds"]  # fmt: skip
    assert main(argv) == 0
    judge = ["--store", db, "human", "calibrate", "--base-url", llama_server, "--model",
             "smollm2", "--max-tokens", "48", "--timeout", "120", "--quiet"]  # fmt: skip
    assert main(judge) == 0
    out = capsys.readouterr().out
    assert "judge calls: planned=6, cached=0, done=6, failed=0" in out
    assert "judge-human agreement" in out and "majority" in out
    with Store(db) as st:
        j = readers.judgments(st, "smollm2")
        assert len(j) == 6 and j["error"].isna().all()
        assert (
            set(j["verdict"]) <= {"A", "B", "tie"} and (j["judge_endpoint"] == llama_server).all()
        )
        # the judge saw the imported texts and the prompt of each pair
        raw = json.loads(j.iloc[0]["raw"])
        user = raw["messages"][-1]["content"]
        assert any(q in user for q, *_ in pairs) and any(a in user for _, a, _, _ in pairs)
        from slamkit.calibration import calibration_report

        cal = calibration_report(st, judge_model="smollm2", n_boot=100)
    maj = cal.agreement.set_index("annotator").loc["majority"]
    assert maj.n == 3 and 0 <= maj.agreement <= 1
    assert set(cal.agreement["annotator"]) == {"majority", "ann", "bob"}
    assert cal.annotators.iloc[0].n == 3  # two annotators on every pair
    assert set(cal.win_rates["model_a"]) | set(cal.win_rates["model_b"]) == {"good", "bad", "ok"}
    # resumable: a second run sends nothing
    assert main(judge) == 0
    assert "cached=6, done=0" in capsys.readouterr().out
