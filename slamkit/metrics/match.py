"""Exact match, normalized match and length ratio against the reference."""

from __future__ import annotations

import re
import string

from slamkit.metrics.base import Details, ItemMetric, is_empty

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD-style normalization: lowercase, drop punctuation and articles, squeeze spaces.

    >>> normalize_text("The  Cat, sat!")
    'cat sat'
    """
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


class ExactMatch(ItemMetric):
    """1.0 when the prediction equals the reference after stripping outer whitespace.

    An empty output or reference scores 0.0 (flagged), even when both are empty.
    """

    base_name = "exact_match"
    version = "2"  # 2: an empty output no longer matches an empty reference

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        return float(prediction.strip() == (reference or "").strip()), None


class NormalizedMatch(ItemMetric):
    """1.0 when both texts are equal after :func:`normalize_text`.

    A text that normalizes to nothing (``"The."``, ``"!"``) matches nothing: 0.0, with
    ``empty_after_normalization`` in the details.
    """

    base_name = "normalized_match"
    version = "2"  # 2: empty texts (also after normalization) match nothing

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        pred, ref = normalize_text(prediction), normalize_text(reference or "")
        if not pred or not ref:
            return 0.0, {"empty_after_normalization": True}
        return float(pred == ref), None


class LengthRatio(ItemMetric):
    """Words in the prediction / words in the reference (whitespace words; 1.0 = same length).

    Details also carry the character ratio. An empty (or whitespace-only) reference gives
    NULL, an empty output 0.0; both are flagged in the details.
    """

    base_name = "length_ratio"
    version = "1"

    def score_empty(
        self, prediction: str | None, reference: str | None
    ) -> tuple[float | None, Details] | None:
        pair = super().score_empty(prediction, reference)
        if pair is None:
            return None
        return (None if is_empty(reference) else 0.0), pair[1]

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        ref = reference or ""
        pw, rw = len(prediction.split()), len(ref.split())
        details = {
            "pred_words": pw,
            "ref_words": rw,
            "char_ratio": len(prediction) / len(ref) if ref else None,
        }
        return (pw / rw if rw else None), details
