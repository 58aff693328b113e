"""JupyterLab in headless Chromium: run the trade-off notebook, move a widget, see the chart move.

Chromium comes from Debian (``apt-get install chromium``; ``make browser`` does it) and is
driven by the Playwright Python package with ``executable_path`` — never ``playwright
install``. JupyterLab listens on 127.0.0.1 with a random token and temporary config,
runtime and workspace folders. A screenshot is kept in tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

ARTIFACTS = Path(__file__).parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "07_tradeoffs.ipynb"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed: run `make browser` "
        "(apt-get install -y chromium)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fake_store(path: Path) -> None:
    """Two variants x 6 items with scores and timings (the UI, not the models, is tested)."""
    from slamkit.store import open_store

    with open_store(path) as st:
        st.insert("tasks", {"task_id": "alpaca_eval", "template": "{instruction}"})
        st.insert_many(
            "items",
            [{"task_id": "alpaca_eval", "item_id": f"i{i}", "position": i,
              "fields": {"instruction": f"q{i}", "dataset": "oasst" if i % 2 else "koala"},
              "prompt": f"q{i}"} for i in range(6)],
        )  # fmt: skip
        st.insert_many(
            "reference_outputs",
            [{"ref_id": f"r{i}", "task_id": "alpaca_eval", "item_id": f"i{i}",
              "source_model": "gpt4_1106_preview", "text": "reference answer " * 20,
              "completion_tokens": 300, "prompt_tokens": 30} for i in range(6)],
        )  # fmt: skip
        models = [("m1", "small-q4", "small", "Q4_0", 1.0), ("m2", "big-q8", "big", "Q8_0", 2.5)]
        st.insert_many(
            "models",
            [{"model_id": mid, "name": n, "path": f"{n}.gguf", "family": f, "quant": q}
             for mid, n, f, q, _ in models],
        )  # fmt: skip
        gens, scores = [], []
        for mid, _n, _f, _q, lat in models:
            for i in range(6):
                key = f"{mid}-{i}"
                gens.append(
                    {"gen_key": key, "run_id": "r", "model_id": mid, "task_id": "alpaca_eval",
                     "item_id": f"i{i}", "sample_index": 0, "seed": 0,
                     "sampling": {"temperature": 0.0, "max_tokens": 128}, "text": "answer",
                     "prompt_tokens": 30, "completion_tokens": 100, "ttft_s": 0.1 * lat,
                     "decode_tps": 100 / lat, "latency_s": lat + 0.1 * i}
                )  # fmt: skip
                scores.append({"gen_key": key, "metric": "rougeL", "metric_version": "1",
                               "value": 0.1 * lat + 0.01 * i})  # fmt: skip
        st.insert_many("generations", gens)
        st.insert_many("scores", scores)


@pytest.fixture()
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "root"
    root.mkdir()
    store = tmp_path / "store.duckdb"
    _fake_store(store)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += f"\nstore_path = {str(store)!r}\nn_items = 6\nhourly_usd = 0.10"
    nbformat.write(nb, root / NOTEBOOK.name)
    token = secrets.token_hex(16)
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--allow-root", "--LabApp.extension_manager=readonly",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=",
         "--ServerApp.open_browser=False"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'lab.log').read_text()}")
            time.sleep(0.5)
    yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", tmp_path
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


_PLOT_X = """() => {
  const plots = Array.from(document.querySelectorAll('.jupyter-widgets .js-plotly-plot'));
  if (!plots.length || !plots[0].data) return null;
  return JSON.stringify(plots[0].data.map(t => t.x));
}"""


def test_tradeoff_notebook_widget_redraws_chart(lab: tuple[str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    url, tmp = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        external: list[str] = []
        page.on(
            "request",
            lambda r: external.append(r.url) if not r.url.startswith(("http://127.0.0.1",
                                                                      "data:", "blob:")) else None,
        )  # fmt: skip
        try:
            page.goto(url, timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            # JupyterLab may ask which kernel to start: take the default (Python 3)
            try:
                page.locator(".jp-Dialog button").filter(has_text="Select").click(timeout=15_000)
            except Exception:  # no dialog: the kernel started on its own
                pass
            # wait for the kernel, then Run > Run All Cells
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                                   timeout=120_000)  # fmt: skip
            page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
            page.locator(".lm-Menu-itemLabel").filter(has_text="Run All Cells").first.click()
            page.wait_for_function(f"({_PLOT_X})() !== null", timeout=120_000)
            page.wait_for_timeout(1000)
            before = page.evaluate(_PLOT_X)
            summary_before = page.locator(".jupyter-widgets.widget-html").first.inner_text()
            # move the hourly-price slider to its maximum with the keyboard
            slider = page.locator(".widget-slider:has-text('price ($/hour)') .noUi-handle")
            slider.first.focus()
            page.keyboard.press("End")
            x0 = json.loads(before)[0][0]
            # the chart is redrawn in place: wait until it shows the 100x cost (or time out)
            page.wait_for_function(
                f"(() => {{ const s = ({_PLOT_X})(); if (!s) return false;"
                f" const x = JSON.parse(s)[0][0]; return Math.abs(x - {x0 * 100!r}) < 1e-6; }})()",
                timeout=60_000,
            )
            after = page.evaluate(_PLOT_X)
            news = page.locator(".Toastify button").filter(has_text="No")  # the news prompt
            if news.count():
                news.first.click()
            widget = page.locator(".jp-OutputArea-output .widget-vbox").first
            widget.scroll_into_view_if_needed()
            page.wait_for_timeout(500)  # let plotly finish drawing before the picture
            widget.screenshot(path=str(ARTIFACTS / "browser_tradeoffs.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser_tradeoffs_failure.png"), full_page=True)
            print((tmp / "lab.log").read_text()[-4000:])
            raise
        finally:
            browser.close()
    xs_before = [x for xs in json.loads(before) if xs for x in xs if x is not None]
    xs_after = [x for xs in json.loads(after) if xs for x in xs if x is not None]
    # cost per 1K requests scales with the hourly price: $0.10 -> $10/hour is 100x
    assert xs_after[0] == pytest.approx(xs_before[0] * 100, rel=1e-6)
    assert summary_before.startswith("Cheapest variant")
    assert not external, f"the page fetched from outside: {external[:5]}"
