"""Exact match, normalized match and length ratio against the reference."""

from __future__ import annotations

import re
import string

from slamkit.metrics.base import Details, ItemMetric

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
    """1.0 when the prediction equals the reference after stripping outer whitespace."""

    base_name = "exact_match"
    version = "1"

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        return float(prediction.strip() == (reference or "").strip()), None


class NormalizedMatch(ItemMetric):
    """1.0 when both texts are equal after :func:`normalize_text`."""

    base_name = "normalized_match"
    version = "1"

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        return float(normalize_text(prediction) == normalize_text(reference or "")), None


class LengthRatio(ItemMetric):
    """Words in the prediction / words in the reference (whitespace words; 1.0 = same length).

    Details also carry the character ratio. An empty reference gives NULL.
    """

    base_name = "length_ratio"
    version = "1"

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        ref = reference or ""
        pw, rw = len(prediction.split()), len(ref.split())
        details = {
            "pred_words": pw,
            "ref_words": rw,
            "char_ratio": len(prediction) / len(ref) if ref else None,
        }
        return (pw / rw if rw else None), details
