"""Scrub secrets (API keys, bearer tokens) out of text before it is stored, logged or shown.

>>> scrub("401: invalid token abcd1234SECRET for Bearer xyz", ["abcd1234SECRET"])
'401: invalid token *** for Bearer ***'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

#: Values shorter than this are not treated as secrets (replacing them would mangle text).
MIN_SECRET_LEN = 4
#: Placeholder keys sent to local servers: not secret.
NOT_SECRET = frozenset({"sk-no-key-required", "no-key-needed"})

_KEYLIKE = re.compile(r"\b(sk|key|api)[-_][A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def secret_values(*values: str | None) -> tuple[str, ...]:
    """The values worth scrubbing: set, long enough, not a local placeholder key."""
    return tuple(
        v for v in dict.fromkeys(values) if v and len(v) >= MIN_SECRET_LEN and v not in NOT_SECRET
    )


def env_secrets(*names: str) -> tuple[str, ...]:
    """The values of the environment variables ``names`` that are worth scrubbing."""
    return secret_values(*(os.environ.get(n) for n in names))


def scrub(text: str, secrets: Iterable[str] = (), patterns: bool = True) -> str:
    """``text`` with every value in ``secrets`` replaced by ``***``.

    With ``patterns`` (for error messages and logs), every ``Bearer <token>`` and key-like
    string (``sk-...``, ``key_...``, ``api-...``) is replaced too. Pass ``patterns=False``
    for transcripts of model text, where such words can be ordinary content.
    """
    for secret in secret_values(*secrets):
        text = text.replace(secret, "***")
    if patterns:
        text = _BEARER.sub(r"\1***", text)
        text = _KEYLIKE.sub("***", text)
    return text
