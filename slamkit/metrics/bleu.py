"""Sentence-level BLEU and chrF against the reference (``sacrebleu``, 0-100 scale)."""

from __future__ import annotations

from typing import Any

from slamkit.metrics.base import Details, ItemMetric


class Bleu(ItemMetric):
    """sacrebleu sentence BLEU (0-100, default 13a tokenizer, exponential smoothing).

    The per-item mean is not corpus BLEU; ``compute()`` also reports ``corpus_bleu``.
    """

    base_name = "bleu"
    version = "1"

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        import sacrebleu

        s = sacrebleu.sentence_bleu(prediction, [reference or ""])
        return float(s.score), {
            "bp": s.bp,
            "sys_len": s.sys_len,
            "ref_len": s.ref_len,
            "precisions": list(s.precisions),
        }

    def _compute(self, predictions: list[str], references: Any = None, **kw: Any) -> dict:
        import sacrebleu

        out = super()._compute(predictions, references, **kw)
        out["corpus_bleu"] = sacrebleu.corpus_bleu(list(predictions), [list(references)]).score
        return out


class Chrf(ItemMetric):
    """sacrebleu sentence chrF (character 6-grams, beta 2; 0-100)."""

    base_name = "chrf"
    version = "1"

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        import sacrebleu

        s = sacrebleu.sentence_chrf(prediction, [reference or ""])
        return float(s.score), None
