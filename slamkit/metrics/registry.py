"""The metric registry: names, spec parsing and checks, building a metric.

Importing this module is cheap; ``evaluate`` (~4 s to import) loads when a metric is built.
Metric specs (``rougeL``, ``max_sentences:4``, ``embed_cosine:/models/bge.gguf``) are
checked by :func:`parse_metric_spec` before anything is built or scored, so a bad spec
among good ones is refused with one line naming it and the accepted form.

>>> from slamkit.metrics import score_generations, parse_metric_spec  # doctest: +SKIP
>>> score_generations(store, ["rougeL", "max_sentences:4"])  # doctest: +SKIP
{'rougeL': 12, 'max_sentences:4': 12}
>>> parse_metric_spec("word_limit:20-50")
('word_limit', {'min_words': 20, 'max_words': 50})
"""

from __future__ import annotations

import difflib
import importlib
import json
import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slamkit.errors import GGUFError, ModelNotFoundError, SlamkitError

if TYPE_CHECKING:
    from slamkit.metrics.base import ItemMetric


class MetricSpecError(SlamkitError):
    """A metric spec, a metric argument or a metric's input file (schema, embedder) is bad."""


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

#: the accepted forms of each metric that takes an argument (used in error messages)
SPEC_FORMS: dict[str, str] = {
    "max_sentences": "max_sentences:4 (at most 4 sentences; plain max_sentences means 4)",
    "word_limit": "word_limit:50 (at most 50 words), word_limit:20-50 (20 to 50, low <= "
    "high) or word_limit:20- (at least 20)",
    "regex_must": "regex_must:PATTERN (a Python regular expression that must be found)",
    "regex_must_not": "regex_must_not:PATTERN (a Python regular expression that must not be found)",
    "banned_phrases": "banned_phrases:first phrase|second phrase (separated by |)",
    "embed_cosine": "embed_cosine (default embedder SmolLM2) or "
    "embed_cosine:/path/to/embedder.gguf",
    "json_schema": "json_schema:/path/to/schema.json (CLI: --json-schema FILE)",
}

#: the keyword argument(s) that can stand in for a spec's argument (``get_metric(name, **kw)``)
_ARG_KWARGS: dict[str, tuple[str, ...]] = {
    "max_sentences": ("n",),
    "word_limit": ("min_words", "max_words"),
    "regex_must": ("pattern",),
    "regex_must_not": ("pattern",),
    "banned_phrases": ("phrases",),
    "embed_cosine": ("model_path",),
    "json_schema": ("schema",),
}
#: metrics that cannot be built without an argument (or its keyword)
_NEEDS_ARG = frozenset(
    {"word_limit", "regex_must", "regex_must_not", "banned_phrases", "json_schema"}
)

_EMBEDDER_FIX = (
    "pass an embedding GGUF (e.g. embed_cosine:/models/bge-small-en-v1.5-q8_0.gguf) or use "
    "plain embed_cosine (default embedder SmolLM2)"
)
_SCHEMA_FIX = 'pass a JSON Schema document such as {"type": "object", "required": ["answer"]}'


def _unknown(name: str, spec: str) -> MetricSpecError:
    known = sorted(REGISTRY, key=str.lower)
    lower = {k.lower(): k for k in known}
    close = [lower[c] for c in difflib.get_close_matches(name.lower(), lower, n=2, cutoff=0.6)]
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    where = f" (in metric spec {spec!r})" if spec != name else ""
    return MetricSpecError(
        f"Unknown metric {name!r}{where}.{hint} Known metrics: {', '.join(known)}; "
        "arguments follow a colon, e.g. max_sentences:4, word_limit:20-50."
    )


def parse_metric_spec(spec: str, provided: Collection[str] = ()) -> tuple[str, dict[str, Any]]:
    """Check a metric spec and return ``(name, keyword arguments of its metric class)``.

    Accepted: every name in :data:`REGISTRY`, alone or with an argument after the first
    colon: ``max_sentences:4`` (a whole number >= 1), ``word_limit:50`` (at most 50 words),
    ``word_limit:20-50`` / ``word_limit:20-`` / ``word_limit:-50``, ``regex_must:PATTERN``,
    ``regex_must_not:PATTERN``, ``banned_phrases:a|b``, ``embed_cosine:/path/model.gguf``
    (a GGUF file, checked by its header; the model is not loaded) and
    ``json_schema:/path/schema.json`` (read and checked with ``jsonschema``). ``provided``
    names keyword arguments the caller passes itself (then a spec such as plain
    ``regex_must`` needs no argument). Raises :class:`MetricSpecError` (a SlamkitError)
    naming the spec, what is wrong and the accepted form; builds and scores nothing.

    >>> parse_metric_spec("max_sentences:4")
    ('max_sentences', {'n': 4})
    >>> parse_metric_spec("word_limit:50")
    ('word_limit', {'min_words': None, 'max_words': 50})
    >>> parse_metric_spec("max_sentences:abc")
    Traceback (most recent call last):
    ...
    slamkit.metrics.registry.MetricSpecError: metric 'max_sentences:abc': the sentence ...
    """
    if not isinstance(spec, str):
        raise MetricSpecError(
            f"metric spec {spec!r} is a {type(spec).__name__}, not a string: write a metric "
            "name such as 'rougeL' or 'max_sentences:4' (or pass a metric object)."
        )
    name, colon, arg = spec.partition(":")
    name = name.strip()
    if not name:
        raise MetricSpecError(
            f"metric spec {spec!r} has no metric name: write e.g. rougeL or max_sentences:4 "
            f"(known metrics: {', '.join(sorted(REGISTRY, key=str.lower))})."
        )
    if name not in REGISTRY:
        raise _unknown(name, spec)
    prefix = f"metric {spec!r}"
    if not colon:
        if name in _NEEDS_ARG and not any(k in provided for k in _ARG_KWARGS[name]):
            raise MetricSpecError(f"{prefix} needs an argument: write {SPEC_FORMS[name]}.")
        return name, {}
    if name not in SPEC_FORMS:
        raise MetricSpecError(f"{prefix}: {name} takes no argument; write plain {name}.")
    if name == "max_sentences":
        if not re.fullmatch(r"[0-9]+", arg.strip()) or int(arg) < 1:
            raise MetricSpecError(
                f"{prefix}: the sentence limit must be a whole number >= 1, e.g. max_sentences:4."
            )
        return name, {"n": int(arg)}
    if name == "word_limit":
        return name, _word_limit(prefix, arg)
    if name in ("regex_must", "regex_must_not"):
        if not arg:
            raise MetricSpecError(f"{prefix}: the pattern is empty; write {SPEC_FORMS[name]}.")
        try:
            re.compile(arg)
        except re.error as exc:
            raise MetricSpecError(
                f"{prefix}: {arg!r} is not a valid regular expression ({exc}); write "
                f"{SPEC_FORMS[name]}, with special characters escaped (e.g. \\( or \\.)."
            ) from None
        return name, {"pattern": arg}
    if name == "banned_phrases":
        phrases = arg.split("|")
        if not all(p.strip() for p in phrases):
            raise MetricSpecError(
                f"{prefix}: an empty phrase would match every text; write "
                f"{SPEC_FORMS[name]} with no empty part."
            )
        return name, {"phrases": phrases}
    if name == "embed_cosine":
        if not arg.strip():
            raise MetricSpecError(
                f"{prefix}: the embedder path is empty; write {SPEC_FORMS[name]}."
            )
        return name, {"model_path": check_embedder(arg, prefix)}
    # json_schema
    if not arg.strip():
        raise MetricSpecError(f"{prefix}: the schema path is empty; write {SPEC_FORMS[name]}.")
    return name, {"schema": load_json_schema(arg, prefix)}


def _word_limit(prefix: str, arg: str) -> dict[str, int | None]:
    m = re.fullmatch(r"\s*([0-9]*)\s*(-?)\s*([0-9]*)\s*", arg)
    forms = f"write {SPEC_FORMS['word_limit']}"
    if not m or not (m.group(1) or m.group(3)):
        raise MetricSpecError(f"{prefix}: {arg!r} is not a word limit; {forms}.")
    lo, dash, hi = m.groups()
    if not dash:  # "50": at most 50 words
        return {"min_words": None, "max_words": int(lo)}
    low, high = (int(lo) if lo else None), (int(hi) if hi else None)
    if low is not None and high is not None and low > high:
        raise MetricSpecError(f"{prefix}: the low limit {low} is above the high {high}; {forms}.")
    return {"min_words": low, "max_words": high}


def parse_metric_specs(specs: Iterable[Any]) -> list[tuple[str, dict[str, Any]] | None]:
    """Check every spec of a list before any is built (metric objects pass as None).

    Used by :func:`slamkit.metrics.score.score_generations` (hence ``slamkit score`` and the
    notebooks' ``metrics`` parameter) so that one bad spec among good ones stops the run
    before a score is written. A single string is one spec.
    """
    if isinstance(specs, str):
        specs = [specs]
    out: list[tuple[str, dict[str, Any]] | None] = []
    for spec in specs:
        if isinstance(spec, str):
            out.append(parse_metric_spec(spec))
        elif hasattr(spec, "metric_name") and hasattr(spec, "compute"):
            out.append(None)
        else:
            raise MetricSpecError(
                f"metric {spec!r} is a {type(spec).__name__}: pass metric names such as "
                "'rougeL' or 'max_sentences:4', or metric objects from get_metric()."
            )
    return out


def check_embedder(path: str | Path, where: str = "embed_cosine") -> Path:
    """Refuse an embedder path that is not a readable GGUF file, before llama.cpp loads it.

    Reads the magic bytes and the header with :mod:`slamkit.gguf` (never the weights).
    Raises ModelNotFoundError (missing file) or GGUFError (not a GGUF, truncated, a
    directory), both naming ``where`` (the spec or parameter) and the file. Returns the path.
    """
    from slamkit.gguf import GGUF_MAGIC, read_gguf

    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotFoundError(f"{where}: no such embedder file {p}; {_EMBEDDER_FIX}.")
    if p.is_dir():
        raise GGUFError(f"{where}: {p} is a directory, not a GGUF model file; {_EMBEDDER_FIX}.")
    try:
        with open(p, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise GGUFError(f"{where}: cannot read {p} ({exc.strerror or exc}).") from None
    if head[:4] != GGUF_MAGIC:
        if not head:
            what = "the file is empty"
        elif all(32 <= b < 127 or b in (9, 10, 13) for b in head):
            first = (head.decode("ascii").strip().splitlines() or [""])[0][:40]
            what = f"it is a text file starting with {first!r}"
        else:
            what = f"its first 4 bytes are {head[:4]!r}, not b'GGUF'"
        raise GGUFError(f"{where}: {p} is not a GGUF model file ({what}): {_EMBEDDER_FIX}.")
    try:
        read_gguf(p, check_data=True)
    except GGUFError as exc:  # truncated or corrupt header: read_gguf says where
        raise GGUFError(f"{where}: {exc} Or {_EMBEDDER_FIX}.") from None
    return p


def load_json_schema(path: str | Path, where: str = "--json-schema") -> Any:
    """Read a JSON Schema file and check it with ``jsonschema`` (``check_schema``).

    Raises :class:`MetricSpecError` naming ``where`` (flag or spec), the file and the
    problem: missing, unreadable, not JSON (line and column), not an object, or not a valid
    schema for its draft (the failing keyword's location). Returns the parsed schema.
    """
    import jsonschema

    p = Path(path).expanduser()
    at = f"{where} {p}" if where.startswith("-") else f"{where}: {p}"
    if not p.exists():
        raise MetricSpecError(f"{at}: no such file; {_SCHEMA_FIX}.")
    if p.is_dir():
        raise MetricSpecError(f"{at}: is a directory, not a JSON Schema file; {_SCHEMA_FIX}.")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetricSpecError(
            f"{at}: not UTF-8 text (byte {exc.start}); save the schema as UTF-8 JSON."
        ) from None
    except OSError as exc:
        raise MetricSpecError(f"{at}: cannot read the file ({exc.strerror or exc}).") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetricSpecError(
            f"{at}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "fix the file so that it holds one JSON Schema object."
        ) from None
    if not isinstance(schema, dict | bool):
        raise MetricSpecError(
            f"{at}: a JSON Schema is a JSON object (or true/false), this file holds a "
            f"{type(schema).__name__}; {_SCHEMA_FIX}."
        )
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        loc = "/" + "/".join(map(str, exc.path)) if exc.path else "the top level"
        msg = " ".join(str(exc.message).split())
        msg = msg if len(msg) <= 200 else msg[:197] + "..."
        raise MetricSpecError(
            f"{at}: not a valid JSON Schema ({msg}, at {loc}; checked as "
            f"{cls.__name__.removesuffix('Validator')}); fix that keyword."
        ) from None
    return schema


def get_metric(spec: str, **kwargs: Any) -> ItemMetric:
    """Build a metric from a name or ``name:arg`` spec (checked by :func:`parse_metric_spec`).

    Spec arguments: ``max_sentences:4``, ``word_limit:50`` (at most 50), ``word_limit:20-50``
    (``low-high``, either may be empty), ``regex_must:PATTERN``, ``regex_must_not:PATTERN``,
    ``banned_phrases:a|b``, ``embed_cosine:/path/model.gguf``, ``json_schema:FILE.json``.
    Keyword arguments go to the metric class and win over the spec's argument.
    """
    name, spec_kwargs = parse_metric_spec(spec, provided=kwargs)
    for key, value in spec_kwargs.items():
        kwargs.setdefault(key, value)
    module, cls_name = REGISTRY[name]
    cls = getattr(importlib.import_module(module), cls_name)
    if name == "regex_must_not":
        kwargs["must"] = False
    try:
        return cls(**kwargs)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise MetricSpecError(f"Cannot build metric {spec!r}: {exc}") from None


__all__ = [
    "DEFAULT_METRICS",
    "REGISTRY",
    "SPEC_FORMS",
    "MetricSpecError",
    "check_embedder",
    "get_metric",
    "load_json_schema",
    "parse_metric_spec",
    "parse_metric_specs",
]
