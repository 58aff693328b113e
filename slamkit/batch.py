"""Run the notebook series with papermill and render a self-contained HTML report.

``run_batch(params, out_dir)`` executes ``notebooks/NN_*.ipynb`` in order, each with the
parameters its ``parameters`` cell declares (taken from one YAML/JSON file), keeps every
executed notebook in ``out_dir``, then renders ``report.html`` from the last notebook
(``09_report``) with nbconvert. The HTML opens offline: plotly.js is embedded once,
inline, and no ``<script src=...>`` points anywhere. Secrets found in the environment
(``*_API_KEY``, ``*_KEY``, ``*TOKEN*``, ...) and the variables ``*api_key_env`` parameters
name are redacted from every file written, also when a notebook fails or its kernel dies.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slamkit.errors import SlamkitError, require
from slamkit.secrets import environment_secrets, redact

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
REPORT_NOTEBOOK = "09_report"
_SECRET_PARAM = re.compile(
    r"(^|_)(api_?key|access_?key|secret|secret_?key|password|passwd|credentials?|token)$", re.I
)
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class BatchError(SlamkitError):
    """The batch could not start (bad parameters) or a notebook failed."""


class NotebookFailedError(BatchError):
    """A notebook of the series raised; the message names the notebook and the cell."""


@dataclass
class BatchResult:
    out_dir: Path
    notebooks: list[Path] = field(default_factory=list)
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


# -- parameters ----------------------------------------------------------------------
def load_params(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON parameters file into a flat dict of notebook parameters."""
    p = Path(path)
    if not p.exists():
        raise BatchError(f"Parameters file {p} does not exist; see data/default_params.yaml.")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise BatchError(f"Parameters file {p} is not valid YAML/JSON: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BatchError(f"Parameters file {p} must hold a mapping of name: value at top level.")
    return data


def series(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in workflow order."""
    d = Path(notebooks_dir or NOTEBOOKS_DIR)
    found = sorted(p for p in d.glob("[0-9][0-9]_*.ipynb") if p.is_file())
    if not found:
        raise BatchError(f"No numbered notebooks (NN_name.ipynb) found in {d}.")
    return found


def declared_parameters(notebook: Path) -> dict[str, str]:
    """Names -> default source text of the cell tagged ``parameters`` in ``notebook``."""
    import ast

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cell = next(
        (c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None
    )
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise BatchError(f"{notebook}: the parameters cell is not valid Python: {exc}") from None
    out: dict[str, str] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
        )  # fmt: skip
        for t in targets:
            if isinstance(t, ast.Name):
                out[t.id] = ast.get_source_segment(cell.source, node.value) or ""  # type: ignore[arg-type]
    return out


def check_params(params: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]]) -> None:
    """Reject unknown names (typos) and anything that looks like a secret."""
    for name in params:
        if _SECRET_PARAM.search(name):
            raise BatchError(
                f"Parameter {name!r} looks like a secret. Keep API keys in the environment "
                "(e.g. export OPENAI_API_KEY=...); parameters are written into the executed "
                "notebooks and the report."
            )
    known = set().union(*[set(d) for d in declared.values()]) if declared else set()
    unknown = sorted(set(params) - known)
    if unknown:
        raise BatchError(
            f"Unknown parameter(s) {unknown}: no notebook declares them. Known parameters: "
            f"{sorted(known)}."
        )


def _resolve_paths(params: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(params)
    for k, v in params.items():
        if (k.endswith("_path") or k.endswith("_dir")) and isinstance(v, str) and v:
            if v != ":memory:" and not Path(v).is_absolute():
                out[k] = str((base / v).resolve())
    return out


# -- secrets -------------------------------------------------------------------------
_KEY_ENV_PARAM = re.compile(r"(^|_)api_?key_env$", re.I)


def batch_secrets(
    params: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Secrets to redact from a batch: secret-looking environment variables plus the
    variables that ``api_key_env`` / ``*_api_key_env`` parameters name."""
    named = [v for k, v in params.items() if _KEY_ENV_PARAM.search(k) and isinstance(v, str) and v]
    return environment_secrets(env, names=named)


def _redact_file(path: Path, secrets: Mapping[str, str]) -> None:
    if secrets and path.exists():
        text = path.read_text(encoding="utf-8")
        clean = redact(text, secrets)
        if clean != text:
            path.write_text(clean, encoding="utf-8")


def _last_started_cell(executed: Path) -> tuple[int | None, str]:
    """(index, first source line) of the last cell papermill started in ``executed``."""
    try:
        import nbformat

        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # noqa: BLE001 - missing or half-written file: no cell to name
        return None, ""
    found: tuple[int | None, str] = (None, "")
    for i, cell in enumerate(nb.cells):
        if cell.get("metadata", {}).get("papermill", {}).get("start_time"):
            lines = cell.source.strip().splitlines()
            found = (i, lines[0][:80] if lines else "")
    return found


# -- execution -----------------------------------------------------------------------
@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send this process's (and so the kernel's) file descriptor 2 to ``path`` for a while.

    Kernels inherit stderr: llama.cpp's loader messages and DuckDB's exit-time notices go
    to the notebook's log file instead of the terminal.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as fh:
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run_batch(
    params: Mapping[str, Any] | str | Path,
    out_dir: str | Path | None = None,
    notebooks_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    kernel_name: str = "python3",
    html: bool = True,
    report_notebook: str = REPORT_NOTEBOOK,
    log: Callable[[str], None] = print,
    defaults: Mapping[str, Any] | None = None,
) -> BatchResult:
    """Execute the series with ``params``; keep executed notebooks; render ``report.html``.

    ``params``: a dict or a YAML/JSON file. Relative ``*_path``/``*_dir`` values are taken
    relative to the current directory. ``only``: run just these notebooks (name prefixes
    such as ``"07"``). ``defaults`` fill names a notebook declares but ``params`` lacks
    (the CLI passes its ``--store`` as ``store_path``). A failing notebook stops the
    batch with :class:`NotebookFailedError` naming the notebook, the cell and the kernel's
    log, whatever stopped it (an exception in a cell, a dead kernel, a cell timeout); its
    executed copy is kept. The executed notebook and the log are redacted in every case,
    Ctrl-C included (``KeyboardInterrupt`` is re-raised after redaction).
    """
    papermill: Any = require("papermill")
    if not isinstance(params, Mapping):
        params = load_params(params)
    nb_dir = Path(notebooks_dir or NOTEBOOKS_DIR).resolve()
    notebooks = series(nb_dir)
    declared = {p.stem: declared_parameters(p) for p in notebooks}
    check_params(params, declared)
    if only:
        notebooks = [p for p in notebooks if any(p.stem.startswith(o) for o in only)]
        if not notebooks:
            raise BatchError(f"No notebook in {nb_dir} matches {list(only)}.")
    names = set().union(*[set(d) for d in declared.values()])
    params = {**{k: v for k, v in (defaults or {}).items() if k in names}, **params}
    params = _resolve_paths(params, Path.cwd())
    if out_dir is None:
        store = params.get("store_path")
        out_dir = Path(store).parent / "report" if store else Path("data/runs/batch")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    secrets = batch_secrets(params)
    result = BatchResult(out_dir=out)
    for i, nb in enumerate(notebooks, 1):
        mine = {k: v for k, v in params.items() if k in declared[nb.stem]}
        target = out / nb.name
        kernel_log = out / "logs" / f"{nb.stem}.log"
        kernel_log.parent.mkdir(exist_ok=True)
        kernel_log.write_text("")
        if target.exists():
            target.unlink()  # a stale copy from an earlier batch would name the wrong cell
        log(f"[{i}/{len(notebooks)}] {nb.stem} ...")
        t0 = time.perf_counter()
        try:
            with _stderr_to(kernel_log):
                papermill.execute_notebook(
                    str(nb), str(target), parameters=mine, cwd=str(nb_dir),
                    kernel_name=kernel_name, progress_bar=False, log_output=False,
                    report_mode=False,
                )  # fmt: skip
        except papermill.PapermillExecutionError as exc:
            first = (exc.source or "").strip().splitlines()
            where = first[0][:80] if first else ""
            raise NotebookFailedError(
                redact(
                    f"Notebook {nb.name} failed in cell {exc.cell_index} (execution count "
                    f"{exc.exec_count}: {where!r}): {exc.ename}: {exc.evalue}. The executed "
                    f"notebook with the full traceback is {target}; the kernel's log is "
                    f"{kernel_log}.",
                    secrets,
                )
            ) from None
        except Exception as exc:  # dead kernel, cell timeout, kernel that would not start
            index, where = _last_started_cell(target)
            cell = (
                f"in cell {index} ({where!r}, the last cell that started)"
                if index is not None
                else "before any cell started"
            )
            raise NotebookFailedError(
                redact(
                    f"Notebook {nb.name} stopped {cell}: {type(exc).__name__}: {exc}. The "
                    f"executed notebook (outputs up to that cell) is {target}; the kernel's "
                    f"log is {kernel_log}.",
                    secrets,
                )
            ) from None
        finally:
            # also on KeyboardInterrupt (re-raised as is): papermill writes the notebook
            # while cells run, so whatever a cell printed is on disk already
            result.seconds[nb.stem] = time.perf_counter() - t0
            _redact_file(target, secrets)
            _redact_file(kernel_log, secrets)
        result.notebooks.append(target)
        log(f"    done in {result.seconds[nb.stem]:.1f} s -> {target}")
    if html:
        src = next((p for p in result.notebooks if p.stem == report_notebook), None)
        src = src or (result.notebooks[-1] if result.notebooks else None)
        if src is not None:
            result.report = render_html(src, out / "report.html", exclude_input=True)
            _redact_file(result.report, secrets)
            log(f"report: {result.report}")
    return result


# -- HTML ------------------------------------------------------------------------------
_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}
{%- if resources.slamkit_plotly_js -%}
<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>
<script type="text/javascript">{{ resources.slamkit_plotly_js }}</script>
{%- endif -%}
{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _plotly_to_html(nb: Any) -> bool:
    """Turn plotly mimetype outputs into inline divs; drop live-widget views. Any plots?"""
    import plotly.io as pio

    found = False
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            data = o.get("data") if isinstance(o, dict) else None
            if data and PLOTLY_MIME in data:
                fig = data[PLOTLY_MIME]
                div = pio.to_html(
                    {"data": fig.get("data", []), "layout": fig.get("layout", {})},
                    include_plotlyjs=False, full_html=False, validate=False,
                    config=fig.get("config") or {"responsive": True},
                )  # fmt: skip
                o["data"] = {"text/html": div}
                found = True
            elif data and WIDGET_MIME in data:
                data.pop(WIDGET_MIME)
                if set(data) <= {"text/plain"}:
                    continue  # a live widget has nothing to show in a static page
            kept.append(o)
        cell["outputs"] = kept
    return found


def render_html(notebook: str | Path, target: str | Path, exclude_input: bool = True) -> Path:
    """Render an executed notebook to one offline HTML file (plotly.js inline, once)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    has_plots = _plotly_to_html(nb)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"slamkit_report.html.j2": _TEMPLATE})],
        template_file="slamkit_report.html.j2",
        exclude_input=exclude_input,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    resources: dict[str, Any] = {"metadata": {"name": Path(notebook).stem}}
    if has_plots:
        from plotly.offline import get_plotlyjs

        resources["slamkit_plotly_js"] = get_plotlyjs()
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    if re.search(r"<script[^>]+src=[\"']?(https?:)?//", body, re.I):
        raise BatchError(f"{target}: the report would load a script from the network.")
    out = Path(target)
    out.write_text(body, encoding="utf-8")
    return out
