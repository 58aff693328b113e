"""Quality metrics: reference similarity and constraint checks, stored per generation.

Importing this package is cheap; ``evaluate`` (~4 s to import) loads when a metric is built.

>>> from slamkit.metrics import score_generations  # doctest: +SKIP
>>> score_generations(store, ["rougeL", "max_sentences:4"])  # doctest: +SKIP
{'rougeL': 12, 'max_sentences:4': 12}
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from slamkit.errors import SlamkitError

if TYPE_CHECKING:
    from slamkit.metrics.base import ItemMetric

#: name -> (module, class); parametrized names take ``name:arg`` in specs.
REGISTRY: dict[str, tuple[str, str]] = {
    "rougeL": ("slamkit.metrics.rouge", "RougeL"),
    "bleu": ("slamkit.metrics.bleu", "Bleu"),
    "chrf": ("slamkit.metrics.bleu", "Chrf"),
    "exact_match": ("slamkit.metrics.match", "ExactMatch"),
    "normalized_match": ("slamkit.metrics.match", "NormalizedMatch"),
    "length_ratio": ("slamkit.metrics.match", "LengthRatio"),
    "embed_cosine": ("slamkit.metrics.embedding", "EmbeddingCosine"),
    "max_sentences": ("slamkit.metrics.constraints", "MaxSentences"),
    "word_limit": ("slamkit.metrics.constraints", "WordLimit"),
    "regex_must": ("slamkit.metrics.constraints", "RegexMatch"),
    "regex_must_not": ("slamkit.metrics.constraints", "RegexMatch"),
    "banned_phrases": ("slamkit.metrics.constraints", "BannedPhrases"),
    "json_valid": ("slamkit.metrics.constraints", "JsonValid"),
    "json_schema": ("slamkit.metrics.constraints", "JsonSchema"),
}

#: What ``slamkit score`` computes when no metric is named.
DEFAULT_METRICS = [
    "rougeL",
    "bleu",
    "chrf",
    "exact_match",
    "normalized_match",
    "length_ratio",
    "embed_cosine",
    "max_sentences:4",
]


def get_metric(spec: str, **kwargs: Any) -> ItemMetric:
    """Build a metric from a name or ``name:arg`` spec.

    Spec arguments: ``max_sentences:4``, ``word_limit:10-120`` (min-max, either may be
    empty), ``regex_must:PATTERN``, ``regex_must_not:PATTERN``, ``banned_phrases:a|b``,
    ``embed_cosine:/path/model.gguf``. Keyword arguments go to the metric class.
    """
    name, _, arg = spec.partition(":")
    if name not in REGISTRY:
        raise SlamkitError(
            f"Unknown metric {name!r}. Known metrics: {', '.join(sorted(REGISTRY))}."
        )
    module, cls_name = REGISTRY[name]
    cls = getattr(importlib.import_module(module), cls_name)
    if arg:
        if name == "max_sentences":
            kwargs.setdefault("n", int(arg))
        elif name == "word_limit":
            lo, _, hi = arg.partition("-")
            kwargs.setdefault("min_words", int(lo) if lo else None)
            kwargs.setdefault("max_words", int(hi) if hi else None)
        elif name in ("regex_must", "regex_must_not"):
            kwargs.setdefault("pattern", arg)
        elif name == "banned_phrases":
            kwargs.setdefault("phrases", arg.split("|"))
        elif name == "embed_cosine":
            kwargs.setdefault("model_path", arg)
        else:
            raise SlamkitError(f"Metric {name!r} takes no argument (got {spec!r}).")
    if name == "regex_must_not":
        kwargs["must"] = False
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise SlamkitError(f"Cannot build metric {spec!r}: {exc}") from None


def __getattr__(name: str) -> Any:  # lazy public API
    if name in ("score_generations", "load_scores", "summarize_scores", "pass_rates"):
        return getattr(importlib.import_module("slamkit.metrics.score"), name)
    if name == "split_sentences":
        return getattr(importlib.import_module("slamkit.metrics.constraints"), name)
    raise AttributeError(name)


__all__ = [
    "DEFAULT_METRICS",
    "REGISTRY",
    "get_metric",
    "load_scores",
    "pass_rates",
    "score_generations",
    "split_sentences",
    "summarize_scores",
]
