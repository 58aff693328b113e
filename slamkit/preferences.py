"""Import pairwise human preferences from any file (JSON, JSONL, CSV, Parquet).

One record per judged pair: the two texts (``text_a``, ``text_b``), optionally the two
model names, the choice (``1`` / ``2`` / ``About the same`` / ``1 is better`` / ``A`` /
``tie`` ... mapped by ``labels``; ``0`` has no default meaning and a field coded only 0 / 1
must have both codes mapped), per-criterion choices, the annotator, the time spent and
the item (an id or the prompt text). Records may be grouped per annotator: a JSON object
``{annotator: [records]}`` (also with one annotator), ``{annotator: {.., nested: [records]}}``
with ``grouped`` and ``nested``, or records that hold a list of records under ``nested`` (the
outer fields, e.g. the annotator id, are inherited by the inner ones). ``records_key`` is a
dotted path (``export.annotators``) to the records inside a JSON object.

Every record lands in ``human_judgments`` (left = A, right = B, ``source =
'preference-import:<file name>'``) with the model names and time spent; a text that
equals a stored generation or reference of the task (same item first) is linked to it,
any other is kept in ``pair_texts`` (side kind ``'text'``). A prompt that matches no item
of the task becomes a new item. Everything is validated before the first write and
written in one transaction: a bad file, record or field raises
:class:`~slamkit.errors.PreferenceImportError` naming them, and the store is left as it
was. Each row carries an ``import_key`` keyed on its content (task, annotator, item id or
prompt, the two texts, criterion, choice), so importing the same file again - or the same
judgments in another file form (JSON, then CSV) - writes nothing; an identical judgment
repeated in one file is stored once.

>>> normalize_choice("1 is better"), normalize_choice("About the same"), normalize_choice(2)
('left', 'tie', 'right')
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slamkit.errors import PreferenceImportError, ReferenceImportError
from slamkit.keys import content_key
from slamkit.references import _MISSING, _get, _read_csv, _read_jsonl, _read_parquet, detect_format
from slamkit.store import jobs

if TYPE_CHECKING:
    from slamkit.store import Store

#: column roles and the column each reads by default (optional roles are used when present)
DEFAULT_COLUMNS = {
    "text_a": "text_a", "text_b": "text_b", "choice": "choice", "model_a": "model_a",
    "model_b": "model_b", "annotator": "annotator", "time_spent": "time_spent",
    "item_id": "item_id", "prompt": "prompt", "reason": "reason",
}  # fmt: skip
ROLES = tuple(DEFAULT_COLUMNS)
_REQUIRED = ("text_a", "text_b")
#: the key an annotator-grouped file's group name is read from (``{annotator: [records]}``)
GROUP_KEY = "@group"
#: a JSON object's only key that names a list of records, not an annotator: ``{"rows": [..]}``
#: is read as the records, not as the group of an annotator called 'rows'
CONTAINER_KEYS = frozenset(
    ["records", "rows", "data", "items", "results", "judgments", "annotations", "preferences",
     "pairs", "comparisons", "examples", "entries", "samples", "export"]
)  # fmt: skip

#: default label mapping (lower case, spaces collapsed); ``labels=`` adds or overrides
DEFAULT_LABELS = {
    **dict.fromkeys(
        ["1", "a", "left", "model a", "model_a", "response a", "response 1", "1 is better",
         "a is better", "first", "output 1", "output a", "1 better", "a>b", "1>2"], "left"),
    **dict.fromkeys(
        ["2", "b", "right", "model b", "model_b", "response b", "response 2", "2 is better",
         "b is better", "second", "output 2", "output b", "2 better", "b>a", "2>1"], "right"),
    **dict.fromkeys(
        ["tie", "about the same", "same", "equal", "both", "neither", "draw", "=",
         "tie (bothbad)", "both bad", "both good", "no preference", "a=b", "1=2"], "tie"),
}  # fmt: skip
#: numeric codes whose meaning files disagree on (0 = tie or 0 = the first response?):
#: "0" is in no default, and a field holding only 0 / 1 needs both mapped explicitly
AMBIGUOUS_CODES = ("0", "1")
_CODE_FIX = "--label 0=left --label 1=right (labels={'0': 'left', '1': 'right'})"


def _norm(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).strip().lower().split())


def normalize_choice(
    value: Any,
    labels: Mapping[str, str] | None = None,
    model_a: str | None = None,
    model_b: str | None = None,
) -> str | None:
    """'left' (A), 'right' (B) or 'tie' for a raw choice, or None when not recognised.

    ``labels`` maps raw values (case-insensitive) to 'left'/'right'/'tie' (also accepted:
    'a'/'1', 'b'/'2'), over :data:`DEFAULT_LABELS`; a value equal to ``model_a`` or
    ``model_b`` picks that side.
    """
    if value is None or isinstance(value, (dict, list)):
        return None
    key = _norm(value)
    mapping = {**DEFAULT_LABELS, **{_norm(k): _side(v) for k, v in (labels or {}).items()}}
    if key in mapping:
        return mapping[key]
    if model_a is not None and key == _norm(model_a):
        return "left"
    if model_b is not None and key == _norm(model_b):
        return "right"
    return None


def _side(value: str) -> str:
    side = DEFAULT_LABELS.get(_norm(value))
    if side is None:
        raise PreferenceImportError(
            f"The label mapping sends a value to {value!r}; map every value to left (A, 1), "
            "right (B, 2) or tie."
        )
    return side


@dataclass
class PreferenceImport:
    """What an import did: records read, rows, items and texts newly written."""

    path: str
    task_id: str
    records: int
    judgments_added: int
    items_added: int
    texts_added: int
    matched_sides: int
    unmatched_sides: int
    annotators: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.records} records of {self.path} -> task {self.task_id!r}: "
            f"{self.judgments_added} judgments, {self.items_added} items, {self.texts_added} "
            f"texts written; {self.matched_sides} sides matched stored outputs, "
            f"{self.unmatched_sides} kept as text; annotators: {', '.join(self.annotators)}"
        )


# -- reading ------------------------------------------------------------------------
@dataclass
class _Rec:
    record: Any
    where: str  # 'record 3 (line 4) of FILE'
    locator: str  # stable id of the record within the file, for import keys
    in_object: bool = False  # read from a JSON object that was not taken as grouped


def _fail(path: Path, problem: str, fix: str) -> PreferenceImportError:
    return PreferenceImportError(f"{path}: {problem}. {fix}.")


def _read(
    path: Path, fmt: str, records_key: str | None, nested: str | None, grouped: bool | None
) -> list[_Rec]:
    if not path.is_file():
        raise PreferenceImportError(f"The preference file {path} does not exist. Check the path.")
    if fmt == "json":
        recs = _read_json(path, records_key, grouped, nested)
    else:
        try:
            rows = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[fmt](path)
        except ReferenceImportError as exc:
            raise PreferenceImportError(str(exc)) from None
        recs = [
            _Rec(r.record, f"record {r.number}" + (f" (line {r.line})" if r.line else "")
                 + f" of {path}", f"r{r.number}")
            for r in rows
        ]  # fmt: skip
    if nested is not None:
        recs = _unnest(path, recs, nested)
    return recs


def _read_json(
    path: Path, records_key: str | None, grouped: bool | None, nested: str | None = None
) -> list[_Rec]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(path, f"is not UTF-8 text ({exc})", "Save the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _fail(
            path,
            f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            "Fix the file (an array of records, an object holding one, or an object of "
            "annotator -> records), or use .jsonl for one record per line",
        ) from None
    in_object = False
    if isinstance(data, dict) and records_key is not None:
        data = _records_at(path, data, records_key)
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if grouped is None:
            grouped = (
                bool(lists) and len(lists) == len(data) and (len(lists) > 1 or _one_annotator(data))
            )
        if grouped:
            # with nested, an annotator's value may be one object holding the list
            ok = (list, dict) if nested is not None else (list,)
            bad = [k for k, v in data.items() if not isinstance(v, ok)]
            if bad:
                value = data[bad[0]]
                raise _fail(
                    path,
                    f"is grouped by annotator, but the value under {bad[0]!r} is a "
                    f"{type(value).__name__}, not a list of records",
                    "Make every value of the object a list of records"
                    + (", or pass nested= / --nested FIELD naming the list of records inside "
                       "each annotator's object" if isinstance(value, dict) else ""),
                )  # fmt: skip
            out = []
            for group, recs in data.items():
                if isinstance(recs, dict):  # unnested by _read: the annotator = the key
                    where = f"the object under {group!r} of {path}"
                    out.append(_Rec({GROUP_KEY: group, **recs}, where, f"g{group}"))
                    continue
                for i, rec in enumerate(recs):
                    if isinstance(rec, Mapping):
                        rec = {GROUP_KEY: group, **rec}
                    out.append(_Rec(rec, f"record {i + 1} under {group!r} of {path}",
                                    f"g{group}/{i + 1}"))  # fmt: skip
            return out
        if len(lists) == 1:
            data = next(iter(lists.values()))
            in_object = True
        else:
            raise _fail(
                path,
                "is a JSON object, and it is not clear which key holds the records (arrays "
                f"under: {', '.join(map(str, lists)) or 'none'})",
                "Pass records_key / --records-key, or grouped=True / --grouped when the keys "
                "are annotators",
            )
    if not isinstance(data, list):
        raise _fail(
            path,
            f"holds a JSON {type(data).__name__}, not a list of records",
            "Make the file an array of records (or an object holding one)",
        )
    return [
        _Rec(rec, f"record {i + 1} of {path}", f"r{i + 1}", in_object) for i, rec in enumerate(data)
    ]


def _one_annotator(data: dict[Any, Any]) -> bool:
    """``{name: [records]}``: one key, not a container name, holding a list of objects."""
    ((key, value),) = data.items()
    return (
        str(key).strip().lower() not in CONTAINER_KEYS
        and bool(value)
        and all(isinstance(rec, Mapping) for rec in value)
    )


def _records_at(path: Path, data: dict[Any, Any], records_key: str) -> Any:
    """The value at ``records_key``, a dotted path like --map's; the error names the part
    that is missing and the keys where it was looked for."""
    value = _get(data, records_key)
    if value is not _MISSING:
        return value
    found: Any = data
    walked: list[str] = []
    part = records_key
    for part in records_key.split("."):
        step = _get(found, part) if isinstance(found, (Mapping, list)) else _MISSING
        if step is _MISSING:
            break
        walked.append(part)
        found = step
    if isinstance(found, Mapping):
        keys = f"keys: {', '.join(map(str, found)) or 'none'}"
    else:
        keys = f"there is a {type(found).__name__}"
    if "." not in records_key:
        raise _fail(
            path,
            f"has no key {records_key!r} ({keys})",
            "Pass the key that holds the records as records_key / --records-key",
        )
    under = f" under {'.'.join(walked)!r}" if walked else ""
    raise _fail(
        path,
        f"has no key {part!r}{under} (records_key {records_key!r}; {keys})",
        "Pass the path to the records as records_key / --records-key (a dotted path like "
        "'export.annotators' reaches nested keys)",
    )


def _unnest(path: Path, recs: list[_Rec], nested: str) -> list[_Rec]:
    out = []
    for r in recs:
        inner = _get(r.record, nested) if isinstance(r.record, Mapping) else _MISSING
        if not isinstance(inner, list):
            what = "has no field" if inner is _MISSING else "holds no list in the field"
            raise PreferenceImportError(
                f"{r.where} {what} {nested!r} (nested: the list of records each record "
                f"holds). Fields in this record: {_fields_of(r.record)}. Fix the record or "
                "pass the right nested= / --nested."
            )
        outer = {k: v for k, v in r.record.items() if k != nested}
        for i, rec in enumerate(inner):
            merged = {**outer, **rec} if isinstance(rec, Mapping) else rec
            out.append(_Rec(merged, f"{nested}[{i}] of {r.where}",
                            f"{r.locator}/{nested}/{i}", r.in_object))  # fmt: skip
    return out


def _fields_of(record: Any) -> str:
    if not isinstance(record, Mapping):
        return "(not an object)"
    return ", ".join(str(k) for k in record if k != GROUP_KEY)


# -- validating ----------------------------------------------------------------------
def _value(rec: _Rec, column: str, role: str, required: bool) -> Any:
    """The field's value; None when empty. ``required``: the field must exist (a mapped
    role's field missing is a typo); only text_a / text_b must also be non-empty."""
    value = _get(rec.record, column)
    empty = value is None or (isinstance(value, float) and math.isnan(value))
    if value is _MISSING or empty:
        if not required or (empty and role not in _REQUIRED):
            return None
        what = "has no field" if value is _MISSING else "has an empty (null) value in field"
        raise PreferenceImportError(
            f"{rec.where} {what} {column!r} (mapped to {role}). Fields in this record: "
            f"{_fields_of(rec.record)}. Fix the record, or map {role} to another field "
            f"(columns={{'{role}': ...}} / --map {role}=FIELD; a dotted path like "
            "'answers.0.text' reaches nested values)."
        )
    return value


def _text(rec: _Rec, column: str, role: str, required: bool = True) -> str | None:
    value = _value(rec, column, role, required)
    if value is None:
        return None
    if isinstance(value, (dict, list, bool)):
        raise PreferenceImportError(
            f"{rec.where}: field {column!r} (mapped to {role}) holds a "
            f"{type(value).__name__}, not text: {str(value)[:80]!r}. Map {role} to a field "
            "holding a string."
        )
    return str(value)


def _seconds(rec: _Rec, column: str, required: bool) -> float | None:
    value = _value(rec, column, "time_spent", required)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        num = float(value)
        if not math.isfinite(num) or num < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise PreferenceImportError(
            f"{rec.where}: field {column!r} (mapped to time_spent) holds {value!r}, not a "
            "number of seconds >= 0. Fix the value or leave it empty."
        ) from None
    return num


def _choice(
    rec: _Rec, column: str, role: str, labels: Mapping[str, str] | None,
    ma: str | None, mb: str | None, required: bool,
) -> str | None:  # fmt: skip
    value = _value(rec, column, role, required)
    if value is None or (not required and _norm(value) == ""):
        return None
    side = normalize_choice(value, labels, ma, mb)
    if side is None and _norm(value) == "0":
        raise PreferenceImportError(
            f"{rec.where}: field {column!r} ({role}) holds 0, a choice code with no default "
            "meaning (0 = the first response, or 0 = tie?). Say what the codes mean: "
            f"{_CODE_FIX} if 0 / 1 are the two responses, or --label 0=tie."
        )
    if side is None:
        raise PreferenceImportError(
            f"{rec.where}: field {column!r} ({role}) holds {value!r}, which is not a known "
            "choice (known: 1 / 2 / A / B / About the same / tie / '1 is better' / a model "
            "name, ...). Map it with labels={'" + str(value) + "': 'left'|'right'|'tie'} / "
            f"--label '{value}=left' (left = A = the first text)."
        )
    return side


def _check_mapping(path: Path, columns: Mapping[str, str]) -> dict[str, str]:
    unknown = set(columns) - set(ROLES)
    if unknown:
        raise PreferenceImportError(
            f"Unknown column role(s) {sorted(unknown)} for {path}. Roles: {', '.join(ROLES)} "
            "(per-criterion choices go in criteria={name: field} / --criterion NAME=FIELD)."
        )
    for role, col in columns.items():
        if not isinstance(col, str) or not col:
            raise PreferenceImportError(
                f"The column of role {role!r} for {path} must be a field name, got {col!r}."
            )
    return {**DEFAULT_COLUMNS, **columns}


# -- the import ------------------------------------------------------------------------
def import_preferences(
    store: Store,
    path: str | Path,
    task_id: str,
    *,
    columns: Mapping[str, str] | None = None,
    criteria: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    annotator: str | None = None,
    format: str | None = None,
    records_key: str | None = None,
    nested: str | None = None,
    grouped: bool | None = None,
) -> PreferenceImport:
    """Import pairwise human preferences from a JSON, JSONL, CSV or Parquet file.

    ``columns`` maps roles to fields (a dotted path reaches nested values), over
    :data:`DEFAULT_COLUMNS`: ``text_a`` and ``text_b`` (required), ``choice`` (the overall
    choice; required unless ``criteria`` are given), ``model_a``, ``model_b``,
    ``annotator`` (else the group key of a grouped file, else the constant ``annotator=``),
    ``time_spent`` (seconds), ``item_id``, ``prompt``, ``reason``. An explicitly mapped
    role must be present in every record; a default one is read where present.
    ``criteria`` maps criterion names to fields with per-criterion choices (an empty value
    is skipped). ``labels`` maps raw choice values to 'left' (A) / 'right' (B) / 'tie',
    over :data:`DEFAULT_LABELS`.

    Example, an export with ``{"worker": .., "pair": {"first": .., "second": ..},
    "verdict": "Response 1 is better", "secs": 41}`` per line::

        import_preferences(st, "prefs.jsonl", "mytask",
                           columns={"annotator": "worker", "text_a": "pair.first",
                                    "text_b": "pair.second", "choice": "verdict",
                                    "time_spent": "secs"},
                           labels={"Response 1 is better": "left",
                                   "Response 2 is better": "right"})
    """
    path = Path(path)
    explicit = dict(columns or {})
    cols = _check_mapping(path, explicit)
    crit_map = dict(criteria or {})
    if "overall" in crit_map:
        raise PreferenceImportError(
            f"The criterion name 'overall' is the choice role for {path}: map it with "
            "columns={'choice': ...} / --map choice=FIELD."
        )
    for v in (labels or {}).values():
        _side(v)
    try:
        fmt = detect_format(path, format)
    except ReferenceImportError as exc:
        raise PreferenceImportError(str(exc).replace("reference format", "format")) from None
    recs = _read(path, fmt, records_key, nested, grouped)
    if not recs:
        raise PreferenceImportError(
            f"{path} holds no records. Check the file (and records_key / nested)."
        )
    source = f"preference-import:{path.name}"
    drafts = []
    for rec in recs:
        if not isinstance(rec.record, Mapping):
            raise PreferenceImportError(
                f"{rec.where} is a {type(rec.record).__name__}, not an object with fields. "
                "Every record must be an object (JSON {...})."
            )

        def req(role: str) -> bool:
            return role in explicit or role in _REQUIRED

        text_a = _text(rec, cols["text_a"], "text_a")
        text_b = _text(rec, cols["text_b"], "text_b")
        model_a = _text(rec, cols["model_a"], "model_a", req("model_a"))
        model_b = _text(rec, cols["model_b"], "model_b", req("model_b"))
        ann = _text(rec, cols["annotator"], "annotator", req("annotator"))
        if ann is None and GROUP_KEY in rec.record:
            ann = str(rec.record[GROUP_KEY])
        ann = ann if ann is not None else annotator
        if ann is None or not ann.strip():
            raise PreferenceImportError(
                f"{rec.where} names no annotator (no field {cols['annotator']!r}). Map the "
                "annotator field (--map annotator=FIELD), or give one name for the whole "
                "file (annotator= / --annotator)"
                + (", or, if the keys of the JSON object are annotators, read it as grouped "
                   "(grouped=True / --grouped)" if rec.in_object else "") + "."
            )  # fmt: skip
        choice_required = "choice" in explicit or not crit_map
        labels_of = {
            "overall": _choice(rec, cols["choice"], "choice", labels, model_a, model_b,
                               choice_required),
            **{c: _choice(rec, col, f"criterion {c!r}", labels, model_a, model_b, False)
               for c, col in crit_map.items()},
        }  # fmt: skip
        labels_of = {c: v for c, v in labels_of.items() if v is not None}
        raw_codes = {}
        for col in (cols["choice"], *crit_map.values()):
            raw = _value(rec, col, "choice", False)
            if raw is not None and not isinstance(raw, (dict, list)):
                raw_codes[col] = _norm(raw)
        if not labels_of:
            raise PreferenceImportError(
                f"{rec.where} holds no choice in any of the fields "
                f"{', '.join(map(repr, [cols['choice'], *crit_map.values()]))}. Fill one in "
                "or remove the record."
            )
        raw_item = _value(rec, cols["item_id"], "item_id", req("item_id"))
        if raw_item is not None and (
            isinstance(raw_item, (dict, list, bool)) or str(raw_item).strip() == ""
        ):
            raise PreferenceImportError(
                f"{rec.where}: field {cols['item_id']!r} (mapped to item_id) holds "
                f"{raw_item!r}, not an id. Map item_id to a field of short ids."
            )
        prompt = _text(rec, cols["prompt"], "prompt", req("prompt"))
        drafts.append(
            {
                "rec": rec, "text_a": text_a, "text_b": text_b, "model_a": model_a,
                "model_b": model_b, "annotator": ann.strip(), "labels": labels_of,
                "item_id": None if raw_item is None else str(raw_item),
                "prompt": prompt,
                "time": _seconds(rec, cols["time_spent"], req("time_spent")),
                "reason": _text(rec, cols["reason"], "reason", req("reason")),
                "raw": raw_codes,
                "item_key": [None if raw_item is None else str(raw_item), prompt],
            }
        )  # fmt: skip
    _check_codes(path, drafts, labels)
    return _write(store, path, task_id, source, drafts)


def _check_codes(
    path: Path, drafts: list[dict[str, Any]], labels: Mapping[str, str] | None
) -> None:
    """Refuse a choice field that holds only the codes 0 and 1 unless both are mapped: the
    defaults would read 1 as the first response whatever 0 means (0 = first, 1 = second
    files would land as tie / left)."""
    mapped = {_norm(k) for k in (labels or {})}
    if all(c in mapped for c in AMBIGUOUS_CODES):
        return
    seen: dict[str, set[str]] = {}
    for d in drafts:
        for field_name, raw in d["raw"].items():
            seen.setdefault(field_name, set()).add(raw)
    for field_name, values in seen.items():
        if values == set(AMBIGUOUS_CODES):
            raise PreferenceImportError(
                f"{path}: field {field_name!r} holds only the choice codes 0 and 1, whose "
                "meaning is ambiguous (0 = the first response, or 0 = tie and 1 = the "
                f"first?). Map both: {_CODE_FIX}, or --label 0=tie --label 1=left."
            )


def _write(
    store: Store,
    path: Path,
    task_id: str,
    source: str,
    drafts: list[dict[str, Any]],
) -> PreferenceImport:
    task_row = jobs.task_row(store, task_id)
    template = task_row[1] if task_row else "{prompt}"
    field_name = template[1:-1] if _single_field(template) else "prompt"
    prompts = sorted({d["prompt"] for d in drafts if d["prompt"] is not None})
    known = jobs.items_with_prompts(store, task_id, prompts) if prompts else {}
    new_items: dict[str, dict[str, Any]] = {}
    for d in drafts:
        if d["item_id"] is None and d["prompt"] is not None:
            item = known.get(d["prompt"])
            if item is None:
                item = "pref-" + content_key("preference-item", prompt=d["prompt"])[:16]
                new_items.setdefault(item, _item(task_id, item, field_name, d["prompt"]))
            d["item_id"] = item
        elif d["item_id"] is not None and d["prompt"] is not None:
            new_items.setdefault(
                d["item_id"], _item(task_id, d["item_id"], field_name, d["prompt"])
            )
    stored_items = set(jobs.task_items(store, task_id)["item_id"]) if new_items else set()
    items = [it for k, it in new_items.items() if k not in stored_items]
    all_texts = sorted({d[s] for d in drafts for s in ("text_a", "text_b")})
    matches = jobs.texts_matching(store, task_id, all_texts)
    by_text: dict[str, list[tuple[Any, ...]]] = {}
    for m in matches.itertuples(index=False):
        by_text.setdefault(m.text, []).append((m.kind, m.id, m.item_id, m.model))
    texts: dict[str, dict[str, Any]] = {}
    rows = []
    matched = unmatched = 0
    for d in drafts:
        sides = []
        for s in ("a", "b"):
            text, model = d[f"text_{s}"], d[f"model_{s}"]
            hit = _best(by_text.get(text, []), d["item_id"], model)
            if hit is None:
                tid = content_key("pair-text", text=text)
                texts.setdefault(tid, {"text_id": tid, "text": text,
                                       "origin": f"{path}#{d['rec'].locator}"})  # fmt: skip
                sides.append(("text", tid, model))
                unmatched += 1
            else:
                sides.append((hit[0], hit[1], model if model is not None else hit[3]))
                d["item_id"] = d["item_id"] or hit[2]
                matched += 1
        (lk, li, lm), (rk, ri, rm) = sides
        for crit, choice in d["labels"].items():
            key = content_key(
                "preference-judgment", task=task_id, annotator=d["annotator"],
                item=d["item_key"], text_a=d["text_a"], text_b=d["text_b"], criterion=crit,
                choice=choice,
            )  # fmt: skip
            rows.append(
                {"annotator": d["annotator"], "task_id": task_id, "item_id": d["item_id"],
                 "left_kind": lk, "left_id": li, "right_kind": rk, "right_id": ri,
                 "criterion": crit, "choice": choice, "reason": d["reason"], "source": source,
                 "left_model": lm, "right_model": rm, "time_spent_s": d["time"],
                 "import_key": key}
            )  # fmt: skip
    task = {"task_id": task_id, "template": "{prompt}", "source": source,
            "description": f"Pairs imported from {path.name}"}  # fmt: skip
    n_items, n_texts, n_rows = jobs.write_preferences(
        store, task, items, list(texts.values()), rows
    )
    return PreferenceImport(
        str(path), task_id, len(drafts), n_rows, n_items, n_texts, matched, unmatched,
        sorted({d["annotator"] for d in drafts}),
    )  # fmt: skip


def _single_field(template: str) -> bool:
    inner = template[1:-1]
    return template.startswith("{") and template.endswith("}") and inner.isidentifier()


def _item(task_id: str, item_id: str, field_name: str, prompt: str) -> dict[str, Any]:
    return {"task_id": task_id, "item_id": item_id, "fields": {field_name: prompt},
            "prompt": prompt}  # fmt: skip


def _best(
    hits: list[tuple[Any, ...]], item_id: str | None, model: str | None
) -> tuple[Any, ...] | None:
    """The stored output to link a text to: of the same item when the item is known, the
    same model first, then the first (generations before references, lowest sample)."""
    if item_id is not None:
        hits = [h for h in hits if h[2] == item_id]
    if not hits:
        return None

    def rank(h: tuple[Any, ...]) -> tuple[int, int]:
        return (0 if item_id is not None and h[2] == item_id else 1,
                0 if model is not None and h[3] == model else 1)  # fmt: skip

    return min(hits, key=rank)
