"""Every ``>>>`` example in the package runs: one case per module under slamkit/.

Modules are discovered when the tests are collected (new modules join automatically); the
examples run with ELLIPSIS and NORMALIZE_WHITESPACE, in a fresh temporary working folder.
Examples that need a real model file are marked slow (see :data:`MODEL_HINTS`); examples
that cannot run here (a remote endpoint, a store on disk) carry ``# doctest: +SKIP``.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import io
import pkgutil
from pathlib import Path

import pytest

import slamkit

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
#: a runnable example calling one of these needs a real model: its module's case is slow
MODEL_HINTS = ("smollm2_path(", "gemma_path(", "default_model_paths(", "Llama(", "LlamaCpp")


def package_modules() -> list[tuple[str, Path]]:
    """(dotted name, file) of every module under slamkit/, found without importing any."""
    found: list[tuple[str, Path]] = []

    def walk(paths: list[str], prefix: str) -> None:
        for info in pkgutil.iter_modules(paths, prefix):
            folder = Path(paths[0]) / info.name.rpartition(".")[2]
            file = folder / "__init__.py" if info.ispkg else folder.with_suffix(".py")
            found.append((info.name, file))
            if info.ispkg:
                walk([str(folder)], info.name + ".")

    walk(list(slamkit.__path__), "slamkit.")
    return [("slamkit", Path(slamkit.__file__)), *sorted(found)]


def _needs_model(source: str) -> bool:
    """Whether a module's runnable (not ``+SKIP``) examples call a real model (read from
    its source, without importing it)."""
    parser = doctest.DocTestParser()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=False)
        for example in parser.get_examples(doc or ""):
            if not example.options.get(doctest.SKIP) and any(
                hint in example.source for hint in MODEL_HINTS
            ):
                return True
    return False


def _cases() -> list[object]:
    cases = []
    for name, file in package_modules():
        try:
            slow = _needs_model(file.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            slow = False  # the case itself reports a module that cannot be imported
        marks = [pytest.mark.slow] if slow else []
        cases.append(pytest.param(name, id=name, marks=marks))
    return cases


def run_doctests(module: object) -> tuple[int, int, str]:
    """(failed, attempted, report) of a module's examples."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    out = io.StringIO()
    name = getattr(module, "__name__", None)
    for test in sorted(finder.find(module, name), key=lambda t: t.name):
        if test.examples:
            runner.run(test, out=out.write, clear_globs=True)
    failed, attempted = runner.summarize(verbose=False)
    return failed, attempted, out.getvalue()


@pytest.mark.parametrize("module_name", _cases())
def test_doctests(module_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(module_name)
    failed, attempted, report = run_doctests(module)
    assert failed == 0, f"{failed} of {attempted} examples failed in {module_name}:\n{report}"


def test_discovery_finds_modules_and_examples() -> None:
    names = [n for n, _ in package_modules()]
    assert len(names) == len(set(names))
    for expected in ("slamkit", "slamkit.catalog", "slamkit.smart.simulate", "slamkit.store"):
        assert expected in names
    for _, file in package_modules():
        assert file.is_file(), file
    failed, attempted, _ = run_doctests(importlib.import_module("slamkit.smart.simulate_args"))
    assert (failed, attempted) == (0, 5)


def test_a_failing_example_is_reported() -> None:
    import types

    mod = types.ModuleType("fake_doctest_module")
    mod.__doc__ = ">>> 1 + 1\n3\n>>> 'a' * 3\n'a...'\n"
    failed, attempted, report = run_doctests(mod)
    assert (failed, attempted) == (1, 2) and "Expected:\n    3" in report
    assert _needs_model('""">>> read_gguf(smollm2_path())\n"""')
    assert not _needs_model('""">>> read_gguf(smollm2_path())  # doctest: +SKIP\n"""')
    assert not _needs_model('def f():\n    """>>> from slamkit.catalog import smollm2_path\n"""')
    multi = '""">>> run_sweep(store, [smollm2_path()])\n... # doctest: +SKIP\n"""'
    assert not _needs_model(multi)
