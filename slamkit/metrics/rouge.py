"""ROUGE-L F-measure against the reference (``rouge-score``, Porter stemmer)."""

from __future__ import annotations

from typing import Any

from slamkit.metrics.base import Details, ItemMetric


class RougeL(ItemMetric):
    """ROUGE-L (longest common subsequence) F1 in [0, 1], stemmed, whole text as one summary.

    ``split_summaries`` (rougeLsum) needs NLTK punkt, which is not available offline, so the
    text is compared as one token sequence.
    """

    base_name = "rougeL"
    version = "1"

    def __init__(self, use_stemmer: bool = True, **kwargs: Any) -> None:
        from rouge_score import rouge_scorer

        self.use_stemmer = use_stemmer
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
        super().__init__(label=None if use_stemmer else "nostem", **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        return {"use_stemmer": self.use_stemmer}

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        s = self._scorer.score(target=reference or "", prediction=prediction)["rougeL"]
        return float(s.fmeasure), {"precision": s.precision, "recall": s.recall}
