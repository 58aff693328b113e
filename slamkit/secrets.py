"""Scrub secrets (API keys, bearer tokens) out of text before it is stored, logged or shown.

>>> scrub("401: invalid token abcd1234SECRET for Bearer xyz", ["abcd1234SECRET"])
'401: invalid token *** for Bearer ***'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping

#: Values shorter than this are not treated as secrets (replacing them would mangle text).
MIN_SECRET_LEN = 4
#: Placeholder keys sent to local servers: not secret.
NOT_SECRET = frozenset({"sk-no-key-required", "no-key-needed"})

_KEYLIKE = re.compile(r"\b(sk|key|api)[-_][A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)
#: Values shaped like a real credential, whatever they are called: OpenAI / Anthropic
#: (``sk-...``), Hugging Face (``hf_...``), GitHub (``ghp_...``), AWS access key ids,
#: Slack tokens, and ``Bearer <token>``. Stricter than :data:`_KEYLIKE`: used to refuse
#: input, where a false alarm stops a run.
_KEY_VALUE = re.compile(
    r"\bsk-[A-Za-z0-9_\-]{16,}|\bhf_[A-Za-z0-9]{20,}|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bAKIA[0-9A-Z]{16}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}|\bBearer\s+\S{8,}"
)


def secret_values(*values: str | None) -> tuple[str, ...]:
    """The values worth scrubbing: set, long enough, not a local placeholder key."""
    return tuple(
        v for v in dict.fromkeys(values) if v and len(v) >= MIN_SECRET_LEN and v not in NOT_SECRET
    )


def looks_like_key(text: str) -> bool:
    """Whether ``text`` holds a literal credential (``sk-...``, ``hf_...``, ``Bearer ...``).

    >>> looks_like_key("sk-proj-0123456789abcdefXYZ"), looks_like_key("gpt-4")
    (True, False)
    >>> looks_like_key("sk-no-key-required")  # the placeholder local servers accept
    False
    """
    return any(m.group(0) not in NOT_SECRET for m in _KEY_VALUE.finditer(text))


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


#: Environment variable names whose values are treated as secrets in reports: anything with
#: API_KEY / ACCESS_KEY / TOKEN / SECRET / PASSWORD / CREDENTIAL in it, names ending in KEY(S)
#: (``OPENAI_KEY``, ``AZURE_OPENAI_KEY``), and AUTH / PASS as a whole word (``GITHUB_AUTH``).
_SECRET_NAME = re.compile(
    r"API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|COOKIE"
    r"|KEYS?$|(^|_)(AUTH|AUTHORIZATION|PASS)(_|$)",
    re.I,
)
#: ... unless the name says the value is a location, not a secret (``SSH_AUTH_SOCK``,
#: ``KEY_FILE``, ``TOKEN_URL``, ``PATH``, ``PWD``).
_LOCATION_NAME = re.compile(r"(^|_)(PATH|DIRS?|FILE|SOCK|SOCKET|HOME|PWD|URL|URI)$", re.I)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable called ``name`` probably holds a secret."""
    return bool(_SECRET_NAME.search(name)) and not _LOCATION_NAME.search(name)


def environment_secrets(
    env: Mapping[str, str] | None = None, names: Iterable[str] = ()
) -> dict[str, str]:
    """Values of environment variables whose names look secret (8+ characters).

    ``names``: variables to include whatever they are called (e.g. the variable an
    ``api_key_env`` parameter points at).
    """
    env = os.environ if env is None else env
    extra = set(names)
    return {k: v for k, v in env.items() if (k in extra or is_secret_name(k)) and v and len(v) >= 8}


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """Replace every secret value (and its JSON-escaped form) with ``[redacted NAME]``."""
    for name, value in sorted(secrets.items(), key=lambda kv: -len(kv[1])):
        for form in {value, json.dumps(value)[1:-1]}:
            text = text.replace(form, f"[redacted {name}]")
    return text
