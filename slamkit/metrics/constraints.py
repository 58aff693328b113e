"""Constraint checks as metrics: value 1.0 = pass, 0.0 = fail, details say why.

SLaM's feature demanded at most 4 sentences; its paper never reported how often models
broke that. These checks make such failures visible per model (see :func:`pass_rates`).
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from typing import Any

from slamkit.errors import SlamkitError
from slamkit.metrics.base import Details, ItemMetric

#: Words that end with a period without ending the sentence (compared lower-case, without
#: the final period). ``etc`` is not here: it often ends a sentence (see _ends_sentence).
_ABBREVIATIONS = frozenset(
    (
        "mr mrs ms dr prof sr jr st vs e.g i.e cf a.m p.m no nos fig figs approx dept est "
        "inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec mt ft vol pp ed eds "
        "al gen gov rev sen rep capt lt col sgt"
    ).split()
)
_SENT_END = re.compile(r"(?:[.!?]+|\u2026)[\"'\u201d\u2019)\]]*(?=\s|$)")
#: A list marker at the start of a line: "1.", "2)", "a)", "-", "*", "+", "•", "#" headings.
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,3}[.)]|[a-zA-Z][)]|[-*+\u2022\u2013]|#{1,6})\s+")
_ACRONYM = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")  # U.S, e.g, Ph.D-like tokens
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n\s*```\s*$", re.S)
_FENCE_LINE = re.compile(r"^\s*(```|~~~)")


def _whole(v: Any) -> int | None:
    """``v`` as an int when it is a whole number (numpy ints too; not bool, float, str)."""
    if isinstance(v, bool):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def _ends_sentence(line: str, start: int, m: re.Match[str]) -> bool:
    """Whether the punctuation ``m`` (found after ``line[start:]`` began) ends a sentence."""
    punct = m.group()
    if punct[0] in "!?":
        return True
    rest = line[m.end() :].lstrip()
    nxt = rest[:1]
    if nxt and nxt.islower():  # "e.g. the", "Well... maybe", "U.S. is": not a new sentence
        return False
    if punct.startswith("\u2026") or punct.startswith(".."):
        return True  # an ellipsis before a capital (or the end) ends the sentence
    word = (line[start : m.start()].split()[-1:] or [""])[0].lstrip("(\"'\u201c")
    low = word.lower()
    if low in _ABBREVIATIONS or _ACRONYM.match(word):
        return not nxt  # "Dr. Smith", "the U.S. Army"; still an end at the line's end
    return True


def split_sentences(text: str) -> list[str]:
    """Split on ``.``/``!``/``?``/``…`` followed by whitespace or the end, and on line breaks.

    Each non-empty line is at least one unit (a list item or bullet without a period is one
    sentence); a list marker at the start of a line (``1.``, ``2)``, ``-``, ``*``) never
    ends one. A period does not end a sentence after an abbreviation (``Dr.``, ``e.g.``) or
    an acronym (``U.S.``), or before a lower-case word; decimals like ``3.5`` never split.
    Fragments with no letter or digit (lone bullets, ``---`` rules, emoji lines) and code
    fence lines are dropped.

    >>> split_sentences("Hi Dr. Smith! It is 3.5 km. Go")
    ['Hi Dr. Smith!', 'It is 3.5 km.', 'Go']
    >>> split_sentences("1. Buy milk\\n2. Call mom")
    ['1. Buy milk', '2. Call mom']
    """
    out: list[str] = []
    for line in text.splitlines():
        if _FENCE_LINE.match(line):
            continue
        marker = _LIST_MARKER.match(line)
        start = 0
        for m in _SENT_END.finditer(line, marker.end() if marker else 0):
            if m.start() < start or not _ends_sentence(line, start, m):
                continue
            out.append(line[start : m.end()].strip())
            start = m.end()
        out.append(line[start:].strip())
    return [s for s in out if any(c.isalnum() for c in s)]


class MaxSentences(ItemMetric):
    """Pass when the text has at most ``n`` sentences (SLaM's feature: ``n=4``)."""

    base_name = "max_sentences"
    version = "2"  # 2: list markers, acronyms, lower-case continuations do not split
    needs_reference = False

    def __init__(self, n: int = 4, **kwargs: Any) -> None:
        whole = _whole(n)
        if whole is None or whole < 1:
            raise SlamkitError(
                f"max_sentences: the sentence limit must be a whole number >= 1 (got {n!r}), "
                "e.g. max_sentences:4 or n=4."
            )
        self.n = whole
        super().__init__(label=str(self.n), **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        return {"n": self.n}

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        count = len(split_sentences(prediction))
        return float(count <= self.n), {"sentences": count, "max": self.n}


class WordLimit(ItemMetric):
    """Pass when the whitespace word count lies in ``[min_words, max_words]``."""

    base_name = "word_limit"
    version = "1"
    needs_reference = False

    def __init__(
        self, min_words: int | None = None, max_words: int | None = None, **kwargs: Any
    ) -> None:
        if min_words is None and max_words is None:
            raise SlamkitError("word_limit needs min_words or max_words (e.g. max_words=120).")
        for key, v in (("min_words", min_words), ("max_words", max_words)):
            if v is not None and ((w := _whole(v)) is None or w < 0):
                raise SlamkitError(
                    f"word_limit: {key} must be a whole number >= 0 or None (got {v!r})."
                )
        min_words = None if min_words is None else _whole(min_words)
        max_words = None if max_words is None else _whole(max_words)
        if min_words is not None and max_words is not None and min_words > max_words:
            raise SlamkitError(
                f"word_limit: min_words={min_words} is above max_words={max_words}; the low "
                "limit must not exceed the high one (e.g. word_limit:20-50)."
            )
        self.min_words, self.max_words = min_words, max_words
        label = f"{'' if min_words is None else min_words}-{'' if max_words is None else max_words}"
        super().__init__(label=label, **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        return {"min_words": self.min_words, "max_words": self.max_words}

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        n = len(prediction.split())
        ok = (self.min_words is None or n >= self.min_words) and (
            self.max_words is None or n <= self.max_words
        )
        return float(ok), {"words": n, **self.params}


class RegexMatch(ItemMetric):
    """Pass when ``pattern`` is found (``must=True``) or not found (``must=False``)."""

    version = "1"
    needs_reference = False

    def __init__(
        self,
        pattern: str,
        must: bool = True,
        ignore_case: bool = False,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self.regex = re.compile(pattern, re.I if ignore_case else 0)
        except re.error as exc:
            raise SlamkitError(f"Invalid regex {pattern!r} for constraint: {exc}") from None
        self.pattern, self.must, self.ignore_case = pattern, must, ignore_case
        self.base_name = "regex_must" if must else "regex_must_not"
        super().__init__(label=label or _short_hash([pattern, ignore_case]), **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "must": self.must, "ignore_case": self.ignore_case}

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        m = self.regex.search(prediction)
        found = m.group() if m else None
        return float(bool(m) == self.must), {"match": found, "pattern": self.pattern}


class BannedPhrases(ItemMetric):
    """Pass when none of ``phrases`` occurs (case-insensitive substring by default)."""

    base_name = "banned_phrases"
    version = "1"
    needs_reference = False

    def __init__(
        self,
        phrases: list[str],
        ignore_case: bool = True,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(phrases, str):
            phrases = [phrases]
        if not phrases:
            raise SlamkitError("banned_phrases needs at least one phrase.")
        if not all(isinstance(p, str) and p.strip() for p in phrases):
            raise SlamkitError(
                f"banned_phrases: every phrase must be non-empty text (got {list(phrases)!r}); "
                "an empty phrase would match every output."
            )
        self.phrases, self.ignore_case = list(phrases), ignore_case
        super().__init__(label=label or _short_hash([self.phrases, ignore_case]), **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        return {"phrases": self.phrases, "ignore_case": self.ignore_case}

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        text = prediction.lower() if self.ignore_case else prediction
        hits = [p for p in self.phrases if (p.lower() if self.ignore_case else p) in text]
        return float(not hits), {"found": hits}


def _parse_json(text: str, allow_fence: bool) -> tuple[Any, str | None]:
    body = text.strip()
    if allow_fence and (m := _FENCE.match(body)):
        body = m.group(1)
    try:
        return json.loads(body), None
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at line {exc.lineno} column {exc.colno}"


class JsonValid(ItemMetric):
    """Pass when the whole text parses as JSON (a single ```json fence is allowed)."""

    base_name = "json_valid"
    version = "1"
    needs_reference = False

    def __init__(self, allow_fence: bool = True, **kwargs: Any) -> None:
        self.allow_fence = allow_fence
        super().__init__(label=None if allow_fence else "strict", **kwargs)

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        _, err = _parse_json(prediction, self.allow_fence)
        return float(err is None), {"error": err}


class JsonSchema(ItemMetric):
    """Pass when the text is JSON that conforms to ``schema`` (``jsonschema``, its draft)."""

    base_name = "json_schema"
    version = "1"
    needs_reference = False

    def __init__(
        self,
        schema: dict[str, Any],
        allow_fence: bool = True,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        import jsonschema

        if not isinstance(schema, dict | bool):
            raise SlamkitError(
                f"json_schema: the schema must be a JSON object (a dict) or true/false, not a "
                f"{type(schema).__name__}; load it with slamkit.metrics.load_json_schema(FILE)."
            )
        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            loc = "/" + "/".join(map(str, exc.path)) if exc.path else "the top level"
            msg = " ".join(str(exc.message).split())[:200]
            raise SlamkitError(
                f"json_schema: the schema is not a valid JSON Schema ({msg}, at {loc}); "
                "fix that keyword."
            ) from None
        self._validator = cls(schema)
        self.schema, self.allow_fence = schema, allow_fence
        super().__init__(label=label or _short_hash(schema), **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        return {"schema": self.schema}

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        doc, err = _parse_json(prediction, self.allow_fence)
        if err is not None:
            return 0.0, {"error": f"not JSON: {err}"}
        errors = sorted(self._validator.iter_errors(doc), key=lambda e: list(e.path))
        msgs = [f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5]]
        return float(not errors), {"error": "; ".join(msgs) or None}
