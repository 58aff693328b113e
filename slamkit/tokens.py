"""Offline token counts with OpenAI's tokenizer (``bpe-openai``, cl100k_base by default).

GPT-4 references imported from files carry no usage; their token counts price the API.
Counting 805 texts costs about a second (mostly loading the tokenizer), so jobs count each
text once and the store keeps the counts by the text's sha256 (``token_counts``); analysis
reads them instead of loading the tokenizer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from slamkit.errors import require

#: the encoding that prices GPT-4 (and GPT-3.5) requests
ENCODING = "cl100k_base"


def count_tokens(texts: Iterable[str | None], encoding: str = ENCODING) -> list[int]:
    """Token counts with the offline OpenAI tokenizer (``bpe-openai``); None counts 0."""
    bpe = require("bpe_openai", "bpe-openai")
    enc = bpe.get_encoding(encoding)  # type: ignore[attr-defined]
    return [len(enc.encode(t)) if isinstance(t, str) else 0 for t in texts]


def text_sha256(text: str) -> str:
    """The key of a text's stored count (DuckDB's ``sha256(text)`` gives the same).

    >>> text_sha256("hi")[:12]
    '8f434346648f'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
