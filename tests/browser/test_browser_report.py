"""The HTML report draws its charts in Chromium with every network request blocked."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from slamkit import batch, charts, widgets

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed: run `make browser`",
    ),
]


def _executed_notebook(path: Path) -> None:
    """An executed-looking notebook with two plotly outputs and a hostile model output."""
    df = pd.DataFrame(
        {"variant": ["<script>alert(1)</script>", "b"], "family": ["f", "g"],
         "quant": ["Q4_0", "Q8_0"], "quality": [0.4, 0.5], "cost_per_1k": [0.1, 0.3],
         "p95_latency_s": [1.0, 2.0]}
    )  # fmt: skip
    lat = pd.DataFrame({"variant": ["a"] * 3, "latency_s": [1.0, 2.0, 3.0]})
    nb = nbformat.v4.new_notebook()
    for fig in (charts.pareto_scatter(df), charts.latency_distribution(lat)):
        cell = nbformat.v4.new_code_cell("fig")
        cell.outputs = [nbformat.v4.new_output("display_data", data=widgets.figure_bundle(fig))]
        nb.cells.append(cell)
    nbformat.write(nb, path)


def test_report_charts_render_offline(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    src = tmp_path / "09_report.ipynb"
    _executed_notebook(src)
    page_path = batch.render_html(src, tmp_path / "report.html")
    assert "<script>alert(1)" not in page_path.read_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    blocked: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})

        def guard(route, request) -> None:  # noqa: ANN001
            if request.url.startswith("file:"):
                route.continue_()
            else:
                blocked.append(request.url)
                route.abort()

        page.route("**/*", guard)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))  # alert() ran
        page.goto(page_path.as_uri())
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=30_000
        )
        traces = page.evaluate(
            "Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => d.data.length)"
        )
        page.screenshot(path=str(ARTIFACTS / "report_offline.png"), full_page=True)
        browser.close()
    assert traces[0] >= 3 and traces[1] == 1
    assert not blocked, f"the report tried to fetch: {blocked[:5]}"
    assert not errors, errors
