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


def generation_keys(
    model_sha256: str,
    task_id: str,
    item_id: str,
    messages: list[dict[str, str]],
    chat_format: str,
    sampling: dict[str, Any],
    seeds_and_samples: list[tuple[int, int]],
) -> list[str]:
    """:func:`generation_key` of several samples of one (model, item, sampling), byte for
    byte the same keys, at a fraction of the cost: the JSON of the parts shared by the
    samples is written once (a sweep of a million cells plans in seconds, not minutes).

    >>> m = [{"role": "user", "content": "hi"}]
    >>> s = {"temperature": 0.0, "max_tokens": 8}
    >>> generation_keys("abc", "t", "i1", m, "auto", s, [(5, 2)]) == [
    ...     generation_key("abc", "t", "i1", m, "auto", s, 5, 2)]
    True
    """

    def j(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    # the payload of content_key, keys in sorted order: chat_format, item, kind, messages,
    # model, sample, sampling, seed, task, v
    head = (
        f'{{"chat_format": {j(chat_format)}, "item": {j(item_id)}, "kind": "generation", '
        f'"messages": {j(messages)}, "model": {j(model_sha256)}, "sample": '
    )
    mid = f', "sampling": {j(sampling)}, "seed": '
    tail = f', "task": {j(task_id)}, "v": {j(KEY_VERSION)}}}'
    # json.dumps of an int is str(int); the shared head is hashed once and copied
    prefix = hashlib.sha256(head.encode())
    keys = []
    for seed, k in seeds_and_samples:
        h = prefix.copy()
        h.update(f"{int(k)}{mid}{int(seed)}{tail}".encode())
        keys.append(h.hexdigest()[:32])
    return keys
