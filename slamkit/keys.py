"""Content-addressed keys: a versioned hash of everything that changes an output."""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_VERSION = 1


def content_key(kind: str, **parts: Any) -> str:
    """Hash ``parts`` (JSON, sorted keys) under ``kind`` and the key version.

    >>> content_key("gen", a=1) == content_key("gen", a=1)
    True
    """
    payload = json.dumps({"v": KEY_VERSION, "kind": kind, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def generation_key(
    model_sha256: str,
    messages: list[dict[str, str]],
    sampling: dict[str, Any],
    seed: int,
    sample_index: int,
) -> str:
    """Key of one generation cell. Not included on purpose: threads, timeouts, run id."""
    return content_key(
        "generation",
        model=model_sha256,
        messages=messages,
        sampling=sampling,
        seed=seed,
        sample=sample_index,
    )
