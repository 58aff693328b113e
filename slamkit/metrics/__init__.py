"""Quality metrics: reference similarity and constraint checks, stored per generation.

The registry and spec parsing live in :mod:`slamkit.metrics.registry`; scoring a store in
:mod:`slamkit.metrics.score` (loaded on first use: ``evaluate`` takes ~4 s to import).

>>> from slamkit.metrics import parse_metric_spec
>>> parse_metric_spec("max_sentences:4")
('max_sentences', {'n': 4})
"""

from __future__ import annotations

import importlib
from typing import Any

from slamkit.metrics.registry import (
    DEFAULT_METRICS,
    REGISTRY,
    SPEC_FORMS,
    MetricSpecError,
    check_embedder,
    get_metric,
    load_json_schema,
    parse_metric_spec,
    parse_metric_specs,
)


def __getattr__(name: str) -> Any:  # lazy public API
    if name in ("score_generations", "load_scores", "summarize_scores", "pass_rates"):
        return getattr(importlib.import_module("slamkit.metrics.score"), name)
    if name == "split_sentences":
        return getattr(importlib.import_module("slamkit.metrics.constraints"), name)
    raise AttributeError(name)


__all__ = [
    "DEFAULT_METRICS",
    "REGISTRY",
    "SPEC_FORMS",
    "MetricSpecError",
    "check_embedder",
    "get_metric",
    "load_json_schema",
    "load_scores",
    "parse_metric_spec",
    "parse_metric_specs",
    "pass_rates",
    "score_generations",
    "split_sentences",
    "summarize_scores",
]
