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

    Empty texts: a reference metric never compares an empty (or whitespace-only) output or
    reference; :meth:`score_empty` gives its value (0.0: no similarity) and the details
    flag it (``{"empty_output": true}``, ``{"empty_reference": true}``). Reference-free
    metrics (constraints) score an empty output as usual and flag it the same way.
    Bump ``version`` whenever a metric's value changes for some input, so that stored
    values are recomputed rather than mixed with new ones.

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
        preds = list(predictions)
        refs = list(references) if references is not None else [None] * len(preds)
        pairs: list[tuple[float | None, Details] | None] = [
            self.score_empty(p, r) if self.needs_reference else None
            for p, r in zip(preds, refs, strict=True)
        ]
        todo = [i for i, pair in enumerate(pairs) if pair is None]
        if todo:
            scored = self.score_batch([preds[i] for i in todo], [refs[i] for i in todo])
            for i, pair in zip(todo, scored, strict=True):
                pairs[i] = pair
        done = [_flag_empty(p, pair) for p, pair in zip(preds, pairs, strict=True)]
        values = [v for v, _ in done]
        finite = [v for v in values if v is not None and not math.isnan(v)]
        return {
            self.metric_name: sum(finite) / len(finite) if finite else float("nan"),
            "scores": values,
            "details": [d for _, d in done],
        }

    # -- per item ----------------------------------------------------------------
    def score_batch(
        self, predictions: list[str], references: list[str | None]
    ) -> list[tuple[float | None, Details]]:
        """Score many items; override when batching is cheaper (embeddings)."""
        return [self.score_one(p, r) for p, r in zip(predictions, references, strict=True)]

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        raise NotImplementedError

    def score_empty(
        self, prediction: str | None, reference: str | None
    ) -> tuple[float | None, Details] | None:
        """The score of a pair with an empty output or reference; None when neither is empty.

        Default: 0.0 (an empty text is similar to nothing), details flagging which side was
        empty. Such pairs never reach :meth:`score_one` (no embedding of ``" "``).
        """
        flags = _empty_flags(prediction, reference)
        return (0.0, flags) if flags else None

    def close(self) -> None:
        """Free resources (models); a no-op for most metrics."""


def is_empty(text: str | None) -> bool:
    """True for None, ``""`` and whitespace-only text."""
    return text is None or not text.strip()


def _empty_flags(prediction: str | None, reference: str | None) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    if is_empty(prediction):
        flags["empty_output"] = True
    if is_empty(reference):
        flags["empty_reference"] = True
    return flags


def _flag_empty(
    prediction: str | None, pair: tuple[float | None, Details] | None
) -> tuple[float | None, Details]:
    """``pair`` with ``empty_output: True`` in its details when the output is empty."""
    assert pair is not None
    value, details = pair
    if is_empty(prediction) and not (details or {}).get("empty_output"):
        details = {**(details or {}), "empty_output": True}
    return value, details
