"""Content-addressed keys: a versioned hash of everything that changes an output."""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_VERSION = 2


def content_key(kind: str, **parts: Any) -> str:
    """Hash ``parts`` (JSON, sorted keys) under ``kind`` and the key version.

    >>> content_key("gen", a=1) == content_key("gen", a=1)
    True
    """
    payload = json.dumps({"v": KEY_VERSION, "kind": kind, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def generation_key(
    model_sha256: str,
    task_id: str,
    item_id: str,
    messages: list[dict[str, str]],
    chat_format: str,
    sampling: dict[str, Any],
    seed: int,
    sample_index: int,
) -> str:
    """Key of one generation cell: everything that changes the output, and the cell's place
    (task, item) so identical prompts in two places are two cells. Not included on
    purpose: threads, GPU layers, timeouts, run id (they change speed, not text)."""
    return content_key(
        "generation",
        model=model_sha256,
        task=task_id,
        item=item_id,
        messages=messages,
        chat_format=chat_format,
        sampling=sampling,
        seed=seed,
        sample=sample_index,
    )
