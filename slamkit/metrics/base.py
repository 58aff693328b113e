"""The base class of every slamkit metric: an ``evaluate.Metric`` that scores item by item.

``evaluate`` ships no metric scripts and its hub is unreachable offline, so every metric is
a small subclass written here. Importing this module imports ``evaluate`` (~4 s): the
package ``slamkit.metrics`` imports it only when a metric is built.
"""

from __future__ import annotations

import math
from typing import Any

import datasets
import evaluate

Details = dict[str, Any] | None


class ItemMetric(evaluate.Metric):
    """An evaluate metric that returns one value (and a details dict) per prediction.

    Subclasses set ``base_name``, ``version``, ``needs_reference`` and implement
    :meth:`score_one`. ``name`` is the stored metric name; parametrized metrics append a
    label (``max_sentences:4``) so that different settings never share a score row.

    >>> m = get_metric("exact_match")  # doctest: +SKIP
    >>> m.compute(predictions=["a"], references=["a"])["scores"]  # doctest: +SKIP
    [1.0]
    """

    base_name: str = "item_metric"
    version: str = "1"
    needs_reference: bool = True
    description: str = ""

    def __init__(self, label: str | None = None, **kwargs: Any) -> None:
        self.label = label
        kwargs.setdefault("keep_in_memory", True)  # no arrow cache files under HF_HOME
        super().__init__(**kwargs)

    # -- identity ----------------------------------------------------------------
    @property
    def metric_name(self) -> str:
        """The name stored in ``scores.metric``."""
        return f"{self.base_name}:{self.label}" if self.label else self.base_name

    @property
    def params(self) -> dict[str, Any]:
        """Settings that change the value (stored in details)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.metric_name!r}, version={self.version!r})"

    # -- evaluate API ------------------------------------------------------------
    def _info(self) -> evaluate.MetricInfo:
        feats = {"predictions": datasets.Value("string")}
        if self.needs_reference:
            feats["references"] = datasets.Value("string")
        return evaluate.MetricInfo(
            description=self.description or (self.__doc__ or "").strip(),
            citation="",
            inputs_description="predictions: list of str"
            + ("; references: list of str" if self.needs_reference else ""),
            features=datasets.Features(feats),
        )

    def _compute(
        self, predictions: list[str], references: list[str] | None = None, **_: Any
    ) -> dict[str, Any]:
        refs = references if references is not None else [None] * len(predictions)
        pairs = self.score_batch(list(predictions), list(refs))
        values = [v for v, _ in pairs]
        finite = [v for v in values if v is not None and not math.isnan(v)]
        return {
            self.metric_name: sum(finite) / len(finite) if finite else float("nan"),
            "scores": values,
            "details": [d for _, d in pairs],
        }

    # -- per item ----------------------------------------------------------------
    def score_batch(
        self, predictions: list[str], references: list[str | None]
    ) -> list[tuple[float | None, Details]]:
        """Score many items; override when batching is cheaper (embeddings)."""
        return [self.score_one(p, r) for p, r in zip(predictions, references, strict=True)]

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        raise NotImplementedError

    def close(self) -> None:
        """Free resources (models); a no-op for most metrics."""
