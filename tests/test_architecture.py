"""The shape of the code: data flows one way, SQL lives in the store, notebooks stay thin.

* The import graph of ``slamkit`` has no cycle, and no module imports one further down
  the data flow (catalog -> runner -> store -> metrics/judges -> stats/cost -> frames ->
  charts -> widgets -> notebooks; the store is the gateway every layer reads and writes
  through, so it sits at the bottom).
* No module outside ``slamkit/store/`` writes SQL or touches the connection (``.db``,
  ``duckdb``), and no notebook does either.
* Notebook cells import only the public API (``slamkit.__all__``) and hold no conditional
  expression, ``if`` statement or SQL.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import slamkit

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "slamkit"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

#: layer of each module (longest matching prefix wins); an import may only go to the same
#: layer or a lower one
LAYERS = {
    "slamkit.errors": 0, "slamkit.keys": 0, "slamkit.secrets": 0, "slamkit.gguf": 0,
    "slamkit.tokens": 0,
    "slamkit.store": 1,
    "slamkit.catalog": 2, "slamkit.quantize": 2, "slamkit.tasks": 2, "slamkit.backends": 2,
    "slamkit.cells": 2, "slamkit.engine": 2, "slamkit.ray_executor": 2, "slamkit.loadgen": 2,
    "slamkit.runner": 3, "slamkit.references": 3, "slamkit.slam_import": 3, "slamkit.load": 3,
    "slamkit.serving": 3, "slamkit.matrix": 3,
    "slamkit.preferences": 4, "slamkit.calibration": 5, "slamkit.calibration_cli": 9,
    "slamkit.metrics": 4, "slamkit.judge": 4, "slamkit.human": 4,
    "slamkit.stats": 5, "slamkit.latency": 5, "slamkit.cost": 5, "slamkit.pareto": 5,
    "slamkit.smart": 5,
    "slamkit.frames": 6, "slamkit.display": 6, "slamkit.smart.display": 6, "slamkit.study": 6,
    "slamkit.charts": 7,
    "slamkit.widgets": 8,
    "slamkit.batch": 9, "slamkit.cli": 9, "slamkit.load_cli": 9, "slamkit.metrics.cli": 9,
    "slamkit.judge.cli": 9,
    "slamkit.smart.cli": 9, "slamkit.smart.simulate": 9, "slamkit.smart.simulate_args": 9,
    "slamkit.smart.limits": 9,
    "slamkit.matrix.cli": 9,
}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()
#: what ``from slamkit import X`` really imports (the facade's lazy names and modules)
FACADE = {**slamkit._NAMES, **{m: f"slamkit.{m}" for m in slamkit._MODULES}}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> set[str]:
    """slamkit modules imported anywhere in ``path`` (functions included, TYPE_CHECKING not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for t in ast.walk(tree) if isinstance(t, ast.If) and _is_type_checking(t)
            for b in t.body for n in ast.walk(b)}  # fmt: skip
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for a in node.names:
                sub = f"{base}.{a.name}"
                if base == "slamkit" and a.name in FACADE:  # the lazy public API
                    found.add(FACADE[a.name])
                else:
                    found.add(sub if sub in MODULES else base)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    # "slamkit" itself (``__version__``) is the lazy facade; its names are resolved above
    return {
        m
        for m in found
        if m not in (name, "slamkit") and (m in MODULES or m.startswith("slamkit."))
    }


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{name} has no layer in tests/test_architecture.py LAYERS"
    return LAYERS[best]


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        if name != "slamkit":  # the lazy public API (importlib only)
            _layer(name)


def test_no_import_reaches_back_up_the_data_flow() -> None:
    bad = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, deps in GRAPH.items() if a != "slamkit"
        for b in deps if _layer(b) > _layer(a)
    ]  # fmt: skip
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_cycle_and_layer_checks_can_fail() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("slamkit.store.readers") < _layer("slamkit.runner") < _layer("slamkit.charts")


# -- SQL lives in the store -------------------------------------------------------------
TABLES = (
    "generations|scores|models|items|tasks|reference_outputs|runs|judgments|human_judgments|"
    "selections|token_counts|_slamkit_migrations"
)
SQL = re.compile(
    r"\bselect\b[\s\S]*\bfrom\b|\binsert\s+(or\s+(replace|ignore)\s+)?into\b|"
    r"\bdelete\s+from\b|\bupdate\s+\w+\s+set\b|"
    r"\b(create|drop|alter)\s+(or\s+replace\s+)?(temp\s+|temporary\s+)?(table|view|index)\b|"
    r"\bbegin\s+transaction\b|^\s*(commit|rollback)\s*;?\s*$|"
    rf"\bfrom\s+({TABLES})\s+(\w+\s+)?(where|join|left|group|order|limit|using)\b",
    re.I | re.M,
)
CONNECTION = re.compile(
    r"\.db\b|\bduckdb\.|\bimport duckdb\b|\bfrom duckdb\b|\.execute\(|\.sql\(|\.df\(|"
    r"\.rows\(|\.scalar\(|\.connection\(|\.transaction\("
)


def _strings_and_code(path: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(string constants, code lines without comments) of a module; docstrings left out."""
    src = path.read_text(encoding="utf-8")
    tree = ast.parse(src)
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    strings = [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]
    code = [(i, line.split("#")[0]) for i, line in enumerate(src.splitlines(), 1)]
    return strings, code


def _sql_outside_store(files: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in files.items():
        if name == "slamkit.store" or name.startswith("slamkit.store."):
            continue
        strings, code = _strings_and_code(path)
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        bad += [f"{rel}:{i}: SQL {s[:60]!r}" for i, s in strings if SQL.search(s)]
        bad += [f"{rel}:{i}: {c.strip()[:80]}" for i, c in code
                if CONNECTION.search(c)]  # fmt: skip
    return bad


def test_no_sql_or_connection_outside_the_store() -> None:
    bad = _sql_outside_store(MODULES)
    assert not bad, "SQL or DuckDB connection use outside slamkit/store/:\n" + "\n".join(bad)


def test_the_sql_check_catches_sql(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text('def f(st):\n    return st.db.execute("SELECT 1 FROM x")\n', encoding="utf-8")
    found = _sql_outside_store({"slamkit.m": p})
    assert len(found) == 2 and "SQL" in found[0]
    for planted in (
        'Q = "select count(*) from generations"',
        "from duckdb import connect as c",
        'Q = "INSERT OR REPLACE INTO scores VALUES (1)"',
        'Q = "CREATE OR REPLACE TABLE t AS FROM generations"',
        "x = con.sql('anything')",
    ):
        p.write_text(planted + "\n", encoding="utf-8")
        assert _sql_outside_store({"slamkit.m": p}), planted


def test_the_graph_sees_facade_and_importlib_edges(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text(
        "def f():\n    from slamkit import Study\n    import importlib\n"
        "    importlib.import_module('slamkit.widgets')\n",
        encoding="utf-8",
    )
    assert {"slamkit.study", "slamkit.widgets"} <= _imports("slamkit.store.m", p)


# -- notebooks ---------------------------------------------------------------------------
def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_use_the_public_api_only(path: Path) -> None:
    public = set(slamkit.__all__)
    for i, src in enumerate(_code_cells(path)):
        where = f"{path.name} code cell {i}"
        assert not SQL.search(src), f"{where}: raw SQL"
        touches = re.search(r"\.db\b|\.df\(|import duckdb|duckdb\.", src)
        assert not touches, f"{where}: touches the connection"
        tree = ast.parse(src)
        for node in ast.walk(tree):
            assert not isinstance(node, ast.IfExp | ast.If), f"{where}: a conditional"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slamkit"):
                assert node.module == "slamkit", f"{where}: imports {node.module}"
                names = {a.name for a in node.names}
                assert names <= public, f"{where}: {sorted(names - public)} not in __all__"
            if isinstance(node, ast.Import):
                assert not [a for a in node.names if a.name.startswith("slamkit")], where


def test_public_api_names_resolve() -> None:
    for name in slamkit.__all__:
        assert getattr(slamkit, name) is not None, name
    with pytest.raises(AttributeError):
        slamkit.report  # noqa: B018 - dissolved
