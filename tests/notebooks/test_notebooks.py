"""The notebook series: committed clean, and executed for real by papermill (small sizes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from slamkit import batch

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PLANTED = "sk-test-PLANTED-notebooks-0123456789"
EVIL = "<script>alert('from-a-model')</script>"
EXPECTED = [
    "01_models", "02_references", "03_generate", "04_quality", "05_performance",
    "06_cost", "07_tradeoffs", "08_selection", "09_report",
]  # fmt: skip


def test_series_is_complete_and_numbered() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_parameterized(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        assert c.outputs == [], f"{path.name}: a cell has outputs; clear them before committing"
        assert c.execution_count is None, f"{path.name}: execution counts left in"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged"
    assert nb.cells[0].cell_type == "markdown" and len(nb.cells[0].source) > 200
    params = batch.declared_parameters(path)
    assert "store_path" in params or path.stem == "01_models" and "store_path" in params
    # thin notebooks: no cell grows into a program
    assert max(len(c.source.splitlines()) for c in code[1:]) <= 8


def test_default_params_file_matches_notebooks() -> None:
    params = batch.load_params(Path(__file__).parents[2] / "data" / "default_params.yaml")
    declared = {p.stem: batch.declared_parameters(p) for p in NOTEBOOKS}
    batch.check_params(params, declared)  # no unknown names, no secrets
    assert params["n_items"] >= 10 and params["include_defaults"] is True
    assert params["store_path"] == "data/runs/default/slamkit.duckdb"


def _plant_evil_generation(store_path: Path) -> None:
    """A model whose output is an XSS attempt: the report must show it as text."""
    from slamkit.store import open_store

    with open_store(store_path) as st:
        item = st.df("SELECT item_id FROM items ORDER BY position LIMIT 1")["item_id"][0]
        st.insert("models", {"model_id": "evil" * 16, "name": "evil-model", "path": "evil.gguf",
                             "family": "evil", "quant": "Q4_0"})  # fmt: skip
        st.insert(
            "generations",
            {"gen_key": "evil-gen", "run_id": "evil-run", "model_id": "evil" * 16,
             "task_id": "alpaca_eval", "item_id": item, "sample_index": 0, "seed": 0,
             "sampling": json.dumps({"temperature": 0.0, "max_tokens": 16}), "text": EVIL,
             "completion_tokens": 5, "prompt_tokens": 5, "latency_s": 0.5, "ttft_s": 0.1,
             "decode_tps": 10.0},
        )  # fmt: skip


def test_series_smoke_runs_on_the_mock_backend(tmp_path: Path) -> None:
    """The quick loop's run of all 9 notebooks: real catalog, references, metrics, SMART
    and report, with the mock backend instead of llama.cpp (no weights loaded)."""
    store = tmp_path / "store.duckdb"
    params = {
        "store_path": str(store), "n_items": 3, "max_tokens": 16, "models_dir": str(tmp_path),
        "quant_types": [], "backend": "mock", "metrics": ["rougeL", "chrf", "max_sentences:4"],
    }  # fmt: skip
    res = batch.run_batch(params, tmp_path / "out", log=lambda s: None)
    assert [p.stem for p in res.notebooks] == EXPECTED
    html = res.report.read_text(encoding="utf-8") if res.report else ""
    assert "SmolLM2-135M-Instruct.Q4_1 [mock]" in html and html.count("Plotly.newPlot") >= 4
    from slamkit.store import Store, readers

    with Store(store, read_only=True) as st:
        gens = readers.generation_counts(st, "alpaca_eval")
    assert set(gens["model"]) == {"SmolLM2-135M-Instruct.Q4_1 [mock]",
                                  "gemma-3-270m-q4_k_m [mock]"} or len(gens) == 2  # fmt: skip
    assert gens["generations"].tolist() == [3, 3] and gens["errors"].tolist() == [0, 0]


@pytest.mark.slow
def test_series_runs_on_real_models_and_report_is_offline_and_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llama_server: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    store = tmp_path / "store.duckdb"
    params = {
        "store_path": str(store), "n_items": 2, "max_tokens": 16, "models_dir": str(tmp_path),
        "metrics": ["rougeL", "chrf", "max_sentences:4"], "quality_metric": "rougeL",
        "conformity_metric": "rougeL",
        # a real OpenAI-compatible judge (llama_cpp.server with SmolLM2): the first 2 items,
        # 2 models each against the reference, in both orders
        "judge_base_url": llama_server, "judge_model": "smollm2", "judge_max_tokens": 96,
    }  # fmt: skip
    out = tmp_path / "out"
    res = batch.run_batch(params, out, log=lambda s: None)
    assert [p.stem for p in res.notebooks] == EXPECTED
    quality = json.dumps(nbformat.read(out / "04_quality.ipynb", as_version=4).cells)
    assert "8 cells: 0 cached, " in quality and "verdicts: judge smollm2" in quality
    gen = nbformat.read(out / "03_generate.ipynb", as_version=4)
    assert "errors" in json.dumps(gen.cells[-1].outputs)
    html = res.report.read_text(encoding="utf-8") if res.report else ""
    # charts: Pareto, quality CI, latency, break-even — with plotly.js inline, once
    assert html.count("Plotly.newPlot") >= 4
    for title in ["Quality vs cost", "confidence intervals", "Latency consistency", "Break-even"]:
        assert title in html
    assert "SmolLM2-135M-Instruct.Q4_1" in html and "gemma-3-270m" in html.lower()
    # the variant matrix: measured in 07 (drift, speed, re-runs), shown in the report
    tradeoffs = json.dumps(nbformat.read(out / "07_tradeoffs.ipynb", as_version=4).cells)
    assert "(run speed-" in tradeoffs and "(run repro-" in tradeoffs
    assert "vs quantization drift" in html and "KLD vs parent" in html
    assert "greedy cells re-run" in html or "WARNING: greedy output" in html  # the note
    assert not re.search(r"<script[^>]*\ssrc=", html, re.I)
    for f in out.rglob("*"):
        if f.is_file():
            assert PLANTED not in f.read_text(encoding="utf-8"), f.name

    # changing parameters changes the report; a hostile model output stays text
    _plant_evil_generation(store)
    res2 = batch.run_batch(
        {"store_path": str(store), "n_items": 2, "max_tokens": 16, "models": ["evil-model",
         "SmolLM2-135M-Instruct.Q4_1"]}, tmp_path / "out2", only=["09"], log=lambda s: None,
    )  # fmt: skip
    html2 = res2.report.read_text(encoding="utf-8") if res2.report else ""
    assert "gemma-3-270m" not in html2.lower() and "evil-model" in html2
    assert "<script>alert(" not in html2
    assert "&lt;script&gt;alert(" in html2


def _cells(stem: str) -> list[nbformat.NotebookNode]:
    path = next(p for p in NOTEBOOKS if p.stem == stem)
    return list(nbformat.read(path, as_version=4).cells)


def test_report_labels_simulation_selection_table_truncation_and_dashes() -> None:
    """09 says the savings curve is a simulation, shows per-model conformity, the truncation
    caveat, and renders missing values as dashes (display_table)."""
    cells = _cells("09_report")
    i = next(i for i, c in enumerate(cells) if "charts.smart_savings(" in c.source)
    label = "Simulated: IMDB setting of Jo & Trummer (SMART), 1000 seeds — not your data"
    assert cells[i - 1].cell_type == "markdown" and label in cells[i - 1].source
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    md = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert "selection_display(selection)" in code
    assert "display.display_table(study.headline(" in code
    assert "display.display_table(study.provenance(" in code
    assert "max_tokens" in md and "06_cost" in md and "truncated" in md
    code08 = "\n".join(c.source for c in _cells("08_selection") if c.cell_type == "code")
    assert "selection_display(selection)" in code08
