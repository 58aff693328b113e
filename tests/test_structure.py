"""The shape of the code base: test modules stand alone, no import cycles between the
modules named below, and the per-test cache isolation of conftest.py really isolates."""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import slamkit.catalog as catalog

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "slamkit"


# -- test modules import helpers.py / conftest.py fixtures, never one another ---------------


def _test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "artifacts" not in p.parts)


def _imported_names(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import anywhere in a module, ``from m import n`` as both
    ``m`` and ``m.n``; string arguments of ``importlib.import_module`` / ``__import__``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if node.module:
                yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if node.module else base + alias.name
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str):
                    yield node.lineno, arg.value


def test_no_test_module_imports_another_test_module() -> None:
    test_modules = {p.stem for p in _test_files() if p.stem.startswith("test_")} | {"conftest"}
    offenders = []
    for path in _test_files():
        for line, name in _imported_names(ast.parse(path.read_text(), str(path))):
            parts = name.lstrip(".").split(".")
            if parts[0] == "tests":
                parts = parts[1:]
            if parts and parts[0] in test_modules:
                offenders.append(f"{path.relative_to(TESTS.parent)}:{line} imports {name}")
    assert not offenders, (
        "Test modules must not import one another: move what they share into "
        "tests/helpers.py (functions) or tests/conftest.py (fixtures).\n" + "\n".join(offenders)
    )


def test_the_import_check_sees_every_form() -> None:
    src = (
        "import test_a\nfrom test_b import x\nfrom tests.test_c import y\n"
        "from tests import test_d\nfrom . import test_e\n"
        "def f():\n    from test_f import z\n    importlib.import_module('test_g')\n"
    )
    names = {n for _, n in _imported_names(ast.parse(src))}
    for want in ("test_a", "test_b", "tests.test_c", "tests.test_d", ".test_e", "test_f"):
        assert want in names
    assert "test_g" in names


# -- no import cycles between these modules --------------------------------------------------


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _in_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _slamkit_imports(path: Path, modules: set[str]) -> set[str]:
    """slamkit modules imported anywhere in ``path`` (functions included, ``if
    TYPE_CHECKING:`` blocks excluded); ``from pkg import mod`` counts as importing ``mod``."""
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _in_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in out if m in modules and m != this}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _slamkit_imports(path, set(files)) for name, path in files.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


@pytest.mark.parametrize(
    "a, b",
    [("slamkit.catalog", "slamkit.quantize"), ("slamkit.smart.cli", "slamkit.smart.simulate")],
)
def test_no_import_cycle_between(a: str, b: str) -> None:
    graph = import_graph()
    assert a in graph and b in graph
    assert not (_reaches(graph, a, b) and _reaches(graph, b, a)), (
        f"{a} and {b} import each other (directly or through other slamkit modules)"
    )


# -- cache isolation (conftest.isolated_cache) ------------------------------------------------


def _is_under(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def test_caches_point_at_a_per_test_folder(
    isolated_cache: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    real_cache = Path(os.path.expanduser("~")) / ".cache"
    assert catalog.cache_dir() == isolated_cache
    assert _is_under(isolated_cache, tmp_path_factory.getbasetemp())
    assert not _is_under(isolated_cache, tmp_path)  # tests may expect an empty tmp_path
    for var in ("SLAMKIT_CACHE_DIR", "XDG_CACHE_HOME", "HF_HOME"):
        assert _is_under(Path(os.environ[var]), isolated_cache.parent), var
        assert not _is_under(Path(os.environ[var]), real_cache), var
    assert not _is_under(catalog.models_dir(), real_cache)

    # a sha256 computed through the catalog lands in this test's cache, not in ~/.cache
    real_index = real_cache / "slamkit" / "sha256.json"
    before = real_index.read_bytes() if real_index.exists() else None
    model = tmp_path / "m.bin"
    model.write_bytes(b"isolated")
    digest = catalog.file_sha256(model)
    entries = json.loads((isolated_cache / "sha256.json").read_text())
    assert entries[str(model.resolve())]["sha256"] == digest
    after = real_index.read_bytes() if real_index.exists() else None
    assert after == before
    assert after is None or str(model.resolve()) not in after.decode(errors="replace")


def test_each_test_gets_a_fresh_cache(isolated_cache: Path) -> None:
    index = isolated_cache / "sha256.json"
    entries = json.loads(index.read_text()) if index.exists() else {}
    # only the default models' hashes are seeded; nothing from the test above
    assert not any(k.endswith("m.bin") for k in entries)
    assert (isolated_cache / "models").resolve() == catalog.models_dir().resolve()
