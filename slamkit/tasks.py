"""Tasks: a prompt template plus the items that fill it.

A task is ``task_id`` + a ``str.format``-style template (e.g. ``"{instruction}"``) + an
optional system prompt. Each item is a dict of fields; its prompt is the template filled
with those fields, stored next to the fields so every consumer sees the same text.

>>> fill("Translate: {text}", {"text": "hallo"})
'Translate: hallo'
>>> messages_for("Hi", "Be brief.")
[{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from slamkit.backends.base import check_whole
from slamkit.errors import SlamkitError, TemplateError
from slamkit.keys import content_key
from slamkit.store import Store, jobs

DEFAULT_TEMPLATE = "{instruction}"


@dataclass(frozen=True)
class Task:
    """A prompt template (``str.format`` style) and an optional system prompt."""

    task_id: str
    template: str = DEFAULT_TEMPLATE
    system_prompt: str | None = None
    description: str | None = None
    source: str | None = None


def template_fields(template: str) -> list[str]:
    """Names of the fields a template uses, in order of first use.

    >>> template_fields("{a} and {b.x} and {a}")
    ['a', 'b']
    """
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(
            f"The template {template!r} is malformed ({exc}). Use '{{field}}' for a field "
            "and '{{' / '}}' for a literal brace."
        ) from None
    for _, field_name, _, _ in parsed:
        if field_name is None:
            continue
        root = field_name.split(".")[0].split("[")[0]
        if not root or root.isdigit():
            raise TemplateError(
                f"The template {template!r} has a positional field '{{{field_name}}}'. "
                "Name the item field instead, e.g. '{instruction}'."
            )
        if root not in names:
            names.append(root)
    return names


def fill(template: str, fields: Mapping[str, Any], where: str = "") -> str:
    """Fill ``template`` with an item's ``fields``.

    ``where`` says which item this is (e.g. "item 'a-1' (row 3 of refs.csv)") so that a
    missing field can be reported precisely.
    """
    at = f" for {where}" if where else ""
    for name in template_fields(template):
        if name not in fields:
            available = ", ".join(sorted(map(str, fields))) or "(none)"
            raise TemplateError(
                f"The template {template!r} names the field {name!r}, which is missing{at}. "
                f"Available fields: {available}. Change the template to use one of them, or "
                f"map a column to {name!r} (fields=... / --field)."
            )
    try:
        return template.format_map(dict(fields))
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise TemplateError(
            f"The template {template!r} cannot be filled{at}: {type(exc).__name__}: {exc}. "
            "Check the field names and format specs in the template."
        ) from None


def messages_for(item_prompt: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """OpenAI-style chat messages for one item prompt."""
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": item_prompt})
    return messages


def item_id_for(fields: Mapping[str, Any]) -> str:
    """A stable id from an item's fields (same fields -> same id), e.g. ``'item-3f2a...'``."""
    return "item-" + content_key("item", fields=dict(fields))[:16]


def get_task(store: Store, task_id: str) -> Task:
    """Read a stored task; SlamkitError naming the stored tasks if it does not exist."""
    row = jobs.task_row(store, task_id)
    if row is None:
        known = jobs.task_ids(store)
        raise SlamkitError(
            f"No task {task_id!r} in the store {store.path}. Stored tasks: "
            f"{', '.join(known) or '(none)'}. Import one first (slamkit refs import / "
            "slamkit refs alpaca-eval)."
        )
    return Task(*row)


def prepare_items(
    task: Task,
    items: Sequence[Mapping[str, Any]],
    id_field: str | None = None,
    where: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Validate and fill items without writing: ``[{item_id, fields, prompt}]``.

    ``id_field`` names the field holding the item id (kept out of ``fields``); without
    it the id is a stable hash of the fields. ``where`` describes each item for errors.
    """
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        desc = where[i] if where else f"item #{i + 1}"
        fields = dict(item)
        if id_field is not None:
            if id_field not in fields or fields[id_field] in (None, ""):
                raise TemplateError(
                    f"{desc} has no id in the field {id_field!r}. Give every item an id, or "
                    "leave id_field unset to derive ids from the fields."
                )
            item_id = str(fields.pop(id_field))
        else:
            item_id = item_id_for(fields)
        prompt = fill(task.template, fields, where=f"item {item_id!r} ({desc})")
        if item_id in seen:
            prev = out[seen[item_id]]
            if prev["fields"] != fields:
                raise TemplateError(
                    f"The item id {item_id!r} is used twice with different fields "
                    f"({where[seen[item_id]] if where else f'item #{seen[item_id] + 1}'} and "
                    f"{desc}). Item ids must be unique within a task."
                )
            continue
        seen[item_id] = len(out)
        out.append({"item_id": item_id, "fields": fields, "prompt": prompt})
    return out


def add_task(
    store: Store,
    task_id: str,
    template: str,
    items: Sequence[Mapping[str, Any]],
    id_field: str | None = None,
    system_prompt: str | None = None,
    description: str | None = None,
    source: str | None = None,
) -> int:
    """Store a task and its items in one transaction; return the number of new items.

    Every item is validated and filled before anything is written, so a bad item
    leaves the store unchanged. Re-adding the same items writes nothing.

    >>> from slamkit.store import Store
    >>> st = Store(":memory:")
    >>> add_task(st, "greet", "Say hi to {name}", [{"id": "a", "name": "Ann"}], id_field="id")
    1
    """
    task = Task(task_id, template, system_prompt, description, source)
    prepared = prepare_items(task, items, id_field=id_field)
    return jobs.write_task(store, task, prepared)[0]


def check_limit(limit: Any, name: str = "limit", what: str = "items") -> None:
    """Raise SlamkitError unless ``limit`` is None (everything) or a whole number >= 1.

    >>> check_limit(None); check_limit(3)
    >>> check_limit(0)
    Traceback (most recent call last):
    ...
    slamkit.errors.SlamkitError: limit must be a whole number >= 1, got 0 (the first N items; \
None for all).
    """
    if limit is not None:
        check_whole(name, limit, 1, f"the first N {what}; None for all")


def load_items(store: Store, task_id: str, limit: int | None = None) -> pd.DataFrame:
    """Items of a task in position order: columns task_id, item_id, position, fields, prompt.

    ``fields`` is decoded from JSON into a dict. ``limit``: the first N items (None: all);
    anything but a whole number >= 1 raises SlamkitError.
    """
    check_limit(limit)
    df = jobs.task_items(store, task_id, limit)
    df["fields"] = [json.loads(f) for f in df["fields"]]
    return df
