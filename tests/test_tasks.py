"""Tasks: templates, items, messages."""

from __future__ import annotations

import pytest

from slamkit.errors import TemplateError
from slamkit.tasks import (
    add_task,
    fill,
    get_task,
    item_id_for,
    load_items,
    messages_for,
    template_fields,
)


def test_fill_and_fields() -> None:
    assert fill("Q: {question}\nA:", {"question": "2+2?"}) == "Q: 2+2?\nA:"
    assert template_fields("{a} {b} {a} {{literal}}") == ["a", "b"]


def test_missing_field_names_field_item_and_available() -> None:
    with pytest.raises(TemplateError) as err:
        fill("{question}", {"instruction": "hi", "dataset": "x"}, where="item 'q7' (row 7)")
    msg = str(err.value)
    assert "'question'" in msg and "item 'q7' (row 7)" in msg
    assert "instruction" in msg and "dataset" in msg


@pytest.mark.parametrize("bad", ["{instruction", "{}", "{0}"])
def test_malformed_template(bad: str) -> None:
    with pytest.raises(TemplateError):
        fill(bad, {"instruction": "x"})


def test_malformed_template_message_shows_literal_braces_as_typed() -> None:
    with pytest.raises(TemplateError) as err:
        fill("{instruction", {"instruction": "x"})
    msg = str(err.value)
    assert "Use '{field}' for a field and '{{' / '}}' for a literal brace." in msg
    assert "{{{{" not in msg


def test_messages_for() -> None:
    assert messages_for("hi") == [{"role": "user", "content": "hi"}]
    assert messages_for("hi", "sys")[0] == {"role": "system", "content": "sys"}


def test_add_task_and_load_items(store) -> None:
    items = [{"id": f"q{i}", "text": f"t{i}"} for i in range(5)]
    assert add_task(store, "t", "Say {text}", items, id_field="id", system_prompt="S") == 5
    assert add_task(store, "t", "Say {text}", items, id_field="id", system_prompt="S") == 0
    df = load_items(store, "t")
    assert list(df["item_id"]) == [f"q{i}" for i in range(5)]
    assert df["prompt"][2] == "Say t2"
    assert df["fields"][2] == {"text": "t2"}
    assert len(load_items(store, "t", limit=2)) == 2
    assert get_task(store, "t").system_prompt == "S"


def test_add_task_missing_field_writes_nothing(store) -> None:
    items = [{"id": "a", "text": "x"}, {"id": "b", "txt": "y"}]
    with pytest.raises(TemplateError) as err:
        add_task(store, "t", "{text}", items, id_field="id")
    assert "'text'" in str(err.value) and "'b'" in str(err.value) and "txt" in str(err.value)
    assert store.count("items") == 0 and store.count("tasks") == 0


def test_add_task_hash_ids_stable_and_template_conflict(store) -> None:
    items = [{"text": "x"}, {"text": "y"}]
    add_task(store, "t", "{text}", items)
    assert set(load_items(store, "t")["item_id"]) == {item_id_for(i) for i in items}
    with pytest.raises(TemplateError, match="already stored with template"):
        add_task(store, "t", "Other {text}", items)


def test_add_task_appends_positions(store) -> None:
    add_task(store, "t", "{text}", [{"id": "a", "text": "1"}], id_field="id")
    add_task(store, "t", "{text}", [{"id": "b", "text": "2"}], id_field="id")
    assert list(load_items(store, "t")["position"]) == [0, 1]
