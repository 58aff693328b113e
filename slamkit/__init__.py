"""slamkit: can a small self-hosted GGUF model replace your GPT-4 calls?

The public API — what the notebooks use — is the names in ``__all__``. They load lazily
(``import slamkit`` stays fast, and ``slamkit --help`` imports neither llama.cpp nor
plotly):

* ``Study`` — the generations, references, prices and equivalence of an analysis, with
  every summary computed in DuckDB (:mod:`slamkit.study`);
* ``Sampling``, ``OpenAIBackend`` — sampling settings and the OpenAI-compatible client;
* ``open_store`` — the DuckDB store (:mod:`slamkit.store`), ``readers`` its tidy readers;
* ``selection_display``, ``items_needed_display``, ``simulation_long`` — SMART results as
  tables and chart inputs;
* modules: ``catalog``, ``quantize``, ``references``, ``runner``, ``metrics``, ``judge``,
  ``human``, ``stats``, ``latency``, ``cost``, ``smart``, ``frames``, ``charts``,
  ``widgets``, ``display``, ``load`` (serving load tests), ``serving`` (their analysis),
  ``matrix`` (drift, speed, reproducibility).

>>> import slamkit
>>> "Study" in slamkit.__all__ and slamkit.Sampling().temperature == 0.0
True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_MODULES = (
    "catalog", "quantize", "references", "runner", "metrics", "judge", "human", "stats",
    "latency", "cost", "smart", "frames", "charts", "widgets", "display", "load", "serving",
    "preferences", "calibration", "matrix",
)  # fmt: skip
_NAMES = {
    "Study": "slamkit.study",
    "Sampling": "slamkit.backends",
    "OpenAIBackend": "slamkit.backends.openai_compat",
    "open_store": "slamkit.store",
    "readers": "slamkit.store",
    "selection_display": "slamkit.smart.display",
    "items_needed_display": "slamkit.smart.display",
    "simulation_long": "slamkit.smart.display",
}

__all__ = ["__version__", *sorted(_NAMES), *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"slamkit.{name}")
    else:
        raise AttributeError(f"module 'slamkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
