"""CLI: slamkit import-slam, slamkit score and slamkit judge, end to end on a store file."""

from __future__ import annotations

from pathlib import Path

from helpers import FakeServer, add_synthetic

from slamkit.cli import main
from slamkit.store import Store


def test_import_score_judge_cli(tmp_path: Path, slam_dir: Path, capsys) -> None:
    db = str(tmp_path / "s.duckdb")
    assert main(["--store", db, "import-slam", str(slam_dir)]) == 0
    assert "human_judgments=3" in capsys.readouterr().out

    argv = ["--store", db, "score", "--metrics", "rougeL", "max_sentences:1", "--quiet",
            "--banned", "gym"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "computed: rougeL=5, max_sentences:1=5, banned_phrases:" in out
    assert "constraint pass rates" in out and "mistral-7b-q4_0" in out
    assert main(argv) == 0
    assert "computed: rougeL=0, max_sentences:1=0, banned_phrases:c344620b=0" in (
        capsys.readouterr().out
    )

    verdict = 'ok:{"reasoning": "r", "verdict": "B"}'
    with FakeServer({"pep talk": [verdict]}) as srv:
        rc = main(["--store", db, "judge", "--base-url", srv.base_url, "--model", "fake",
                   "--quiet", "--limit", "1"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out  # --limit counts items: the one item's 3 pairs x 2 orders
    assert "6 cells: 0 cached, 6 judged, 0 failed" in out and "flip_rate" in out
    with Store(db) as st:
        assert st.count("judgments", "verdict = 'B'") == 6

    assert main(["--store", db, "import-slam", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err


def test_score_cli_prints_plain_decimals(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "s.duckdb")
    with Store(db) as st:
        keys = add_synthetic(st)
        st.insert_many(
            "scores",
            [{"gen_key": k, "metric": "tiny", "metric_version": "1", "value": 1.25e-7}
             for k in keys.values()],
        )  # fmt: skip
    assert main(["--store", db, "score", "--metrics", "exact_match", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "e-0" not in out and "e+0" not in out  # no scientific notation
    lines = {ln.split()[0] + " " + ln.split()[1]: ln.split() for ln in out.splitlines()[2:]}
    assert lines["model-m1 tiny"][3] == "0.000" and lines["model-m2 exact_match"][3] == "0.000"
    assert lines["model-m1 exact_match"][2:4] == ["2", "0.000"]


def test_judge_cli_prints_first_errors_scrubbed(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SLAMKIT_CLI_KEY", "abcd1234SECRETKEYVALUE9876")
    db = str(tmp_path / "s.duckdb")
    with Store(db) as st:
        add_synthetic(st)
    with FakeServer({"i": ["echo401"]}) as srv:
        rc = main(["--store", db, "judge", "--base-url", srv.base_url, "--model", "fake",
                   "--api-key-env", "SLAMKIT_CLI_KEY", "--quiet"])  # fmt: skip
    assert rc == 1
    out = capsys.readouterr().out
    assert "8 cells: 0 cached, 0 judged, 8 failed" in out
    assert "error (8 cells): HTTP 401: " in out and "invalid token ***" in out
    assert "abcd1234SECRETKEYVALUE9876" not in out
