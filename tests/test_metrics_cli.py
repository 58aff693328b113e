"""CLI: slamkit import-slam, slamkit score and slamkit judge, end to end on a store file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="slamkit-hf-"))

from test_judge import FakeServer  # noqa: E402
from test_slam_import import slam_dir  # noqa: E402, F401  (fixture)

from slamkit.cli import main  # noqa: E402
from slamkit.store import Store  # noqa: E402


def test_import_score_judge_cli(tmp_path: Path, slam_dir: Path, capsys) -> None:  # noqa: F811
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
                   "--quiet", "--limit", "2"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "planned=4, skipped=0, judged=4, failed=0" in out and "flip_rate" in out
    with Store(db) as st:
        assert st.count("judgments", "verdict = 'B'") == 4

    assert main(["--store", db, "import-slam", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err
