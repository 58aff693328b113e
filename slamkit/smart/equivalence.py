"""Pluggable conformity functions: is a candidate's output *equivalent* to the reference's?

Each function works on one pair (``eq(candidate, reference, row)``) for the live path and
on a DataFrame (``eq.frame(df)``: columns ``text``, ``ref_text`` and whatever the function
names) for stored generations. ``spec()`` is stored in ``selections.equivalence``.

* :class:`Exact` - identical strings.
* :class:`Normalized` - equal after lower-casing, dropping punctuation, collapsing spaces.
* :class:`ExtractedLabel` - the first regex match (group 1 if any) of both, normalized.
* :class:`EmbeddingSimilarity` - a similarity score >= tau, from a column (e.g. a stored
  metric) or from an ``embed`` function (cosine of the two embeddings).
* :class:`JudgeVerdict` - a judge outcome ('win' | 'tie' | 'loss' for the candidate against
  the reference) in an accepted set, from a column or a ``judge`` function.

:func:`equivalence_error` reports a function's own error against human labels.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from slamkit.errors import SlamkitError
from slamkit.smart.bounds import clopper_pearson

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_SPACE = re.compile(r"\s+")


def normalize(text: str | None) -> str:
    """Lower-case, strip punctuation, collapse whitespace.

    >>> normalize("  Positive! ")
    'positive'
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    return _SPACE.sub(" ", _PUNCT.sub(" ", str(text).lower())).strip()


class Equivalence:
    """Base class. Subclasses implement ``__call__``; ``frame`` applies it row by row."""

    name = "equivalence"

    def params(self) -> dict[str, Any]:
        return {}

    def spec(self) -> str:
        return json.dumps({"name": self.name, **self.params()}, sort_keys=True)

    def __call__(self, candidate: str | None, reference: str | None, row: Any = None) -> bool:
        raise NotImplementedError

    def frame(self, df: pd.DataFrame) -> pd.Series:
        """Conformity (bool) per row of ``df`` (columns text, ref_text, ...)."""
        for col in self.columns():
            if col not in df.columns:
                raise SlamkitError(
                    f"Equivalence {self.name!r} needs a column {col!r}, which the data lacks "
                    f"(columns: {', '.join(map(str, df.columns))})."
                )
        out = [bool(self(r.get("text"), r.get("ref_text"), r)) for r in df.to_dict("records")]
        return pd.Series(out, index=df.index, dtype=bool)

    def columns(self) -> list[str]:
        return ["text", "ref_text"]


@dataclass
class Exact(Equivalence):
    name = "exact"

    def __call__(self, candidate: str | None, reference: str | None, row: Any = None) -> bool:
        return candidate is not None and reference is not None and candidate == reference


@dataclass
class Normalized(Equivalence):
    name = "normalized"

    def __call__(self, candidate: str | None, reference: str | None, row: Any = None) -> bool:
        if candidate is None or reference is None:
            return False
        return normalize(candidate) == normalize(reference)


@dataclass
class ExtractedLabel(Equivalence):
    """Compare the first match of ``pattern`` (group 1 if present), normalized.

    >>> ExtractedLabel(r"(positive|negative)")("It is POSITIVE.", "positive")
    True
    """

    pattern: str = r"(\w+)"
    labels: Sequence[str] | None = None  # if given, an extracted label must be one of these
    name = "extracted-label"

    def params(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "labels": list(self.labels) if self.labels else None}

    def extract(self, text: str | None) -> str | None:
        if text is None or (isinstance(text, float) and np.isnan(text)):
            return None
        m = re.search(self.pattern, str(text), flags=re.IGNORECASE)
        if not m:
            return None
        label = normalize(m.group(1) if m.groups() else m.group(0))
        if self.labels is not None and label not in {normalize(x) for x in self.labels}:
            return None
        return label

    def __call__(self, candidate: str | None, reference: str | None, row: Any = None) -> bool:
        a, b = self.extract(candidate), self.extract(reference)
        return a is not None and a == b


@dataclass
class EmbeddingSimilarity(Equivalence):
    """Similarity >= tau: from ``column``, or the cosine of ``embed(candidate)``, ``embed(ref)``.

    The column may hold any "higher is closer" score (e.g. a stored ``rougeL``), so the
    stored spec names what was used: ``name`` when given, else ``embedding-similarity``
    for an ``embed`` function or an ``embed*`` column, and ``score>=tau:<column>>=<tau>``
    for any other column (``score>=tau:rougeL>=0.3``).
    """

    tau: float = 0.8
    column: str = "embed_cosine"
    embed: Callable[[str], Sequence[float]] | None = field(default=None, repr=False)
    name: str = ""  # the label in the stored spec; "" = derived as described above

    def __post_init__(self) -> None:
        if not self.name:
            generic = self.embed is not None or self.column.startswith("embed")
            self.name = (
                "embedding-similarity" if generic else f"score>=tau:{self.column}>={self.tau:g}"
            )

    def params(self) -> dict[str, Any]:
        return {"tau": self.tau, "column": None if self.embed else self.column}

    def columns(self) -> list[str]:
        return ["text", "ref_text"] if self.embed else [self.column]

    def __call__(self, candidate: str | None, reference: str | None, row: Any = None) -> bool:
        if self.embed is not None:
            if candidate is None or reference is None:
                return False
            a = np.asarray(self.embed(candidate), dtype=float)
            b = np.asarray(self.embed(reference), dtype=float)
            sim = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
        else:
            if row is None:
                raise SlamkitError(
                    f"EmbeddingSimilarity reads column {self.column!r}; "
                    "pass embed=... for live use."
                )
            sim = row.get(self.column)
        return sim is not None and not pd.isna(sim) and float(sim) >= self.tau


@dataclass
class JudgeVerdict(Equivalence):
    """The judge's outcome for the candidate vs the reference is in ``accept``."""

    accept: tuple[str, ...] = ("win", "tie")
    column: str = "judge_outcome"
    judge: Callable[[str, str], str] | None = field(default=None, repr=False)
    judge_model: str | None = None  # which stored judge to read (if several)
    name = "judge-verdict"

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"accept": list(self.accept)}
        p["column"] = None if self.judge else self.column
        if self.judge_model:
            p["judge_model"] = self.judge_model
        return p

    def columns(self) -> list[str]:
        return ["text", "ref_text"] if self.judge else [self.column]

    def __call__(self, candidate: str | None, reference: str | None, row: Any = None) -> bool:
        if self.judge is not None:
            if candidate is None or reference is None:
                return False
            outcome = self.judge(candidate, reference)
        else:
            if row is None:
                raise SlamkitError("JudgeVerdict reads a column; pass judge=... for live use.")
            outcome = row.get(self.column)
        return outcome is not None and not pd.isna(outcome) and str(outcome) in self.accept


def get_equivalence(name: str, **kwargs: Any) -> Equivalence:
    """Build one by name (CLI): exact | normalized | label | embedding | judge."""
    table: dict[str, type[Equivalence]] = {
        "exact": Exact,
        "normalized": Normalized,
        "label": ExtractedLabel,
        "extracted-label": ExtractedLabel,
        "embedding": EmbeddingSimilarity,
        "embedding-similarity": EmbeddingSimilarity,
        "judge": JudgeVerdict,
        "judge-verdict": JudgeVerdict,
    }
    if name not in table:
        raise SlamkitError(f"Unknown equivalence {name!r}: use one of {', '.join(sorted(table))}.")
    return table[name](**kwargs)


def equivalence_error(
    eq: Equivalence, df: pd.DataFrame, truth: str = "human_equivalent", conf: float = 0.95
) -> pd.DataFrame:
    """How often ``eq`` disagrees with human labels (column ``truth``), with CP intervals.

    Returns one row per rate: agreement, false_accept (eq says equivalent, human not) and
    false_reject, each with n, estimate and a Clopper-Pearson interval.
    """
    if truth not in df.columns:
        raise SlamkitError(f"equivalence_error needs a boolean column {truth!r} of human labels.")
    pred = eq.frame(df).to_numpy(bool)
    gold = df[truth].astype(bool).to_numpy()
    rows = []
    for name, k, n in [
        ("agreement", int((pred == gold).sum()), len(gold)),
        ("false_accept", int((pred & ~gold).sum()), int((~gold).sum())),
        ("false_reject", int((~pred & gold).sum()), int(gold.sum())),
    ]:
        lo, hi = clopper_pearson(k, n, conf)
        rows.append(
            {
                "equivalence": eq.spec(),
                "rate": name,
                "k": k,
                "n": n,
                "estimate": k / n if n else np.nan,
                "ci_lo": float(lo),
                "ci_hi": float(hi),
            }
        )
    return pd.DataFrame(rows)
