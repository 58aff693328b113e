"""What the jobs read and write: the only SQL of the runner, importers, scorer and judge.

Every job module (``runner``, ``tasks``, ``references``, ``catalog``, ``metrics.score``,
``judge.run``/``judge.cli``, ``slam_import``) reaches the store through these named
functions or through :meth:`Store.write <slamkit.store.db.Store.write>`; none of them holds
the connection or writes SQL. Writes of several tables that must land together (a task, its
items, its references and the import's ``runs`` row) happen in one
:meth:`Store.transaction <slamkit.store.db.Store.transaction>` here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from slamkit.errors import TemplateError

if TYPE_CHECKING:
    from slamkit.store.db import Store
    from slamkit.tasks import Task


# -- tasks and items ---------------------------------------------------------------------
def task_row(store: Store, task_id: str) -> tuple[Any, ...] | None:
    """``(task_id, template, system_prompt, description, source)`` of a task, or None."""
    rows = store.rows(
        "SELECT task_id, template, system_prompt, description, source FROM tasks WHERE task_id = ?",
        [task_id],
    )
    return rows[0] if rows else None


def task_ids(store: Store) -> list[str]:
    """Ids of every stored task."""
    return [r[0] for r in store.rows("SELECT task_id FROM tasks")]


def task_items(store: Store, task_id: str, limit: int | None = None) -> pd.DataFrame:
    """Items of a task in position order: task_id, item_id, position, fields (JSON text),
    prompt; the first ``limit`` when given."""
    sql = (
        "SELECT task_id, item_id, position, fields, prompt FROM items WHERE task_id = ? "
        "ORDER BY position, item_id"
    )
    params: list[Any] = [task_id]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return store.df(sql, params)


def item_prompts(store: Store) -> dict[tuple[str, str], str]:
    """``{(task_id, item_id): prompt}`` of every stored item."""
    df = store.df("SELECT task_id, item_id, prompt FROM items")
    return {(t, i): p for t, i, p in zip(df.task_id, df.item_id, df.prompt, strict=True)}


_ITEM_TYPES = {"position": "int32"}
_REF_TYPES = {"sample_index": "int32", "prompt_tokens": "int64", "completion_tokens": "int64"}
_REF_TYPES.update(latency_s="float64", ttft_s="float64")


def write_task(
    store: Store,
    task: Task,
    prepared: Sequence[Mapping[str, Any]],
    positions: Sequence[int] | None = None,
    references: Sequence[Mapping[str, Any]] = (),
    run: Mapping[str, Any] | None = None,
) -> tuple[int, int]:
    """Write a task, its prepared items and their references in one transaction.

    Idempotent: an existing task must have the same template and system prompt (else a
    TemplateError and nothing is written); items already stored with the same fields are
    skipped; new items get the given ``positions`` or follow the last stored one.
    ``references`` are ``reference_outputs`` rows (``ON CONFLICT DO NOTHING``); ``run``,
    a ``runs`` row of text columns, is written only when a reference was. Returns
    ``(items written, references written)``.
    """
    with store.transaction() as db:
        found = db.execute(
            "SELECT template, system_prompt FROM tasks WHERE task_id = ?", [task.task_id]
        ).fetchall()
        row = found[0] if found else None
        if row is None:
            db.execute(
                "INSERT INTO tasks (task_id, template, system_prompt, description, source) "
                "VALUES (?, ?, ?, ?, ?)",
                [task.task_id, task.template, task.system_prompt, task.description, task.source],
            )
        elif (row[0], row[1]) != (task.template, task.system_prompt):
            raise TemplateError(
                f"The task {task.task_id!r} is already stored with template {row[0]!r} and "
                f"system prompt {row[1]!r}, not {task.template!r} / {task.system_prompt!r}. "
                "Use a new task id for a different prompt."
            )
        ids = [p["item_id"] for p in prepared]
        stored = {
            r[0]: r[1]
            for r in db.execute(
                "SELECT item_id, fields FROM items WHERE task_id = ? "
                "AND item_id IN (SELECT unnest(?))",
                [task.task_id, ids],
            ).fetchall()
        }
        next_pos = _scalar(
            db,
            "SELECT coalesce(max(position) + 1, 0) FROM items WHERE task_id = ?",
            [task.task_id],
        )
        new_rows: list[dict[str, Any]] = []
        for i, p in enumerate(prepared):
            fields_json = json.dumps(p["fields"], sort_keys=True, ensure_ascii=False)
            if p["item_id"] in stored:
                if json.loads(stored[p["item_id"]]) != json.loads(fields_json):
                    raise TemplateError(
                        f"The item {p['item_id']!r} of task {task.task_id!r} is already stored "
                        "with different fields. Item ids must keep their content; use a new "
                        "task id or new item ids."
                    )
                continue
            if positions is not None:
                pos = positions[i]
            else:
                pos, next_pos = next_pos, next_pos + 1
            new_rows.append(
                {
                    "task_id": task.task_id,
                    "item_id": p["item_id"],
                    "position": pos,
                    "fields": fields_json,
                    "prompt": p["prompt"],
                }
            )
        n_items = _insert(db, "items", new_rows, _ITEM_TYPES)
        n_refs = _insert(db, "reference_outputs", references, _REF_TYPES)
        if n_refs and run is not None:
            _insert(db, "runs", [run])
    return n_items, n_refs


def _insert(
    db: duckdb.DuckDBPyConnection,
    table: str,
    rows: Sequence[Mapping[str, Any]],
    types: Mapping[str, str] | None = None,
) -> int:
    """Insert rows inside the caller's transaction with one statement (ON CONFLICT DO
    NOTHING). Columns are text unless ``types`` gives an arrow type ('int32', 'float64'...).
    Returns the number of rows written."""
    import pyarrow as pa

    if not rows:
        return 0
    cols = list(rows[0])
    types = types or {}
    schema = pa.schema([(c, pa.type_for_alias(types.get(c, "string"))) for c in cols])
    return _insert_view(
        db, table, cols, pa.Table.from_pylist([dict(r) for r in rows], schema=schema)
    )


def _insert_view(db: duckdb.DuckDBPyConnection, table: str, cols: list[str], data: Any) -> int:
    """``INSERT ... ON CONFLICT DO NOTHING`` of ``data`` (an Arrow table or a frame with
    ``cols``) in the caller's transaction; returns the rows written."""
    col_sql = ", ".join(f'"{c}"' for c in cols)
    before = _scalar(db, f"SELECT count(*) FROM {table}")
    db.register("_slamkit_job_rows", data)
    try:
        db.execute(
            f"INSERT INTO {table} ({col_sql}) SELECT {col_sql} FROM _slamkit_job_rows "
            "ON CONFLICT DO NOTHING"
        )
    finally:
        db.unregister("_slamkit_job_rows")
    return _scalar(db, f"SELECT count(*) FROM {table}") - before


def _scalar(db: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> int:
    # fetchall, not fetchone: DuckDB 2 refuses register() while a result is unfinished
    rows = db.execute(sql, params or []).fetchall()
    return int(rows[0][0]) if rows else 0


# -- models and runs -----------------------------------------------------------------------
def register_models(store: Store, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``models`` rows (ON CONFLICT DO NOTHING). Returns rows written."""
    return store.write("models", rows)


# -- the job engine ------------------------------------------------------------------------
def merge_run_params(store: Store, run_id: str, extra: Mapping[str, Any]) -> None:
    """Add keys to the ``params`` JSON of a ``runs`` row (what a job learns as it runs,
    e.g. the servers it started)."""
    with store.transaction() as db:
        rows = db.execute("SELECT params FROM runs WHERE run_id = ?", [run_id]).fetchall()
        if not rows:
            return
        params = json.loads(rows[0][0]) if rows[0][0] else {}
        params.update(extra)
        db.execute(
            "UPDATE runs SET params = ? WHERE run_id = ?",
            [json.dumps(params, sort_keys=True, default=str), run_id],
        )


def _same_columns(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the union of their columns (a failed cell's row has fewer), None-filled."""
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return [{c: r.get(c) for c in cols} for r in rows]


def write_cells(
    store: Store,
    table: str,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    job: str | None = None,
    done: Sequence[str] = (),
    failed: Sequence[Mapping[str, Any]] = (),
) -> int:
    """Commit one batch of a job's rows in one transaction; return rows written.

    Without ``job``: ``table`` has an ``error`` column; a row replaces a stored error row
    with its ``key`` (a retry), and an already stored good row is kept (idempotent). With
    ``job``: failures are ``job_errors`` rows (``failed``, replacing that cell's earlier
    error), and the ``done`` cell keys' earlier errors are deleted with the rows' insert.
    """
    rows = _same_columns(rows)
    if job is None:
        return store.write(table, rows, replace_errors_of=key)
    with store.transaction() as db:
        written = _insert_rows(db, table, rows)
        keys = [*done, *(f["cell_key"] for f in failed)]
        if keys:
            db.execute(
                "DELETE FROM job_errors WHERE job = ? AND cell_key IN (SELECT unnest(?))",
                [job, keys],
            )
        _insert_rows(db, "job_errors", _same_columns(failed))
    return written


def _insert_rows(
    db: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Insert rows inside the caller's transaction, cast to the table's types by DuckDB."""
    from slamkit.store.db import to_db

    if not rows:
        return 0
    cols = list(rows[0])
    frame = pd.DataFrame([[to_db(r[c]) for c in cols] for r in rows], columns=cols, dtype=object)
    return _insert_view(db, table, cols, frame)


def job_errors(store: Store, job: str, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Stored failures of ``job`` (cell_key, run_id, label, error), optionally of ``keys``."""
    sql = "SELECT cell_key, run_id, label, error FROM job_errors WHERE job = ?"
    df = store.df(sql + " ORDER BY created_at", [job])
    if keys is not None:
        df = df[df["cell_key"].isin(set(keys))]
    return df.reset_index(drop=True)


# -- the runner ----------------------------------------------------------------------------
def stored_generation_keys(store: Store, keys: Iterable[str], ok_only: bool = True) -> set[str]:
    """Which of a sweep's planned ``gen_key``s are stored (``ok_only``: without an error,
    so failed cells are planned again)."""
    return store.existing(
        "generations", "gen_key", keys, where="t.error IS NULL" if ok_only else ""
    )


# -- references ------------------------------------------------------------------------------
def referenced_items(store: Store, task_id: str, source_model: str, sample_index: int) -> set[str]:
    """Item ids of a task that already have a reference from ``source_model`` at
    ``sample_index`` (what a capture skips)."""
    rows = store.rows(
        "SELECT item_id FROM reference_outputs WHERE task_id = ? AND source_model = ? "
        "AND sample_index = ?",
        [task_id, source_model, sample_index],
    )
    return {r[0] for r in rows}


_FIRST_REFS = """
WITH refs AS (
    SELECT ref_id, task_id, item_id, text,
           row_number() OVER (PARTITION BY task_id, item_id
                              ORDER BY sample_index, ref_id) AS rn
    FROM reference_outputs
    WHERE list_contains(CAST(? AS VARCHAR[]), task_id || chr(31) || source_model)
)
"""


def reference_models_by_task(store: Store, task_id: str | None = None) -> pd.DataFrame:
    """Columns task_id, models (sorted distinct reference ``source_model``s): ``task_id``,
    or every task with generations."""
    return store.df(
        """
        SELECT r.task_id, list(DISTINCT r.source_model ORDER BY r.source_model) AS models
        FROM reference_outputs r
        WHERE (CAST(? AS VARCHAR) IS NULL AND r.task_id IN (SELECT task_id FROM generations))
           OR r.task_id = ?
        GROUP BY r.task_id ORDER BY r.task_id
        """,
        [task_id, task_id],
    )


# -- scoring -------------------------------------------------------------------------------
def generations_to_score(
    store: Store, sources: Sequence[str], task_id: str | None = None, load: bool = False
) -> pd.DataFrame:
    """Generations with text and no error, each with its first reference (lowest
    sample_index, then ref_id) of the task's source model, if any. ``sources`` are
    ``task_id + '\\x1f' + source_model`` keys. Columns gen_key, text, ref_id, ref_text.
    ``load``: also the answers made by load tests (``load_id`` set)."""
    return store.df(
        _FIRST_REFS
        + """
SELECT g.gen_key, g.text, r.ref_id, r.text AS ref_text
FROM generations g
LEFT JOIN refs r ON r.task_id = g.task_id AND r.item_id = g.item_id AND r.rn = 1
WHERE g.text IS NOT NULL AND g.error IS NULL AND (? OR g.load_id IS NULL)
  AND (CAST(? AS VARCHAR) IS NULL OR g.task_id = ?)
ORDER BY g.task_id, g.item_id, g.gen_key
""",
        [list(sources), load, task_id, task_id],
    )


def scored_keys(store: Store, metric: str, version: str) -> set[tuple[str, str]]:
    """``(gen_key, ref_id)`` pairs already scored with ``metric`` at ``version``."""
    done = store.df(
        "SELECT gen_key, ref_id FROM scores WHERE metric = ? AND metric_version = ?",
        [metric, version],
    )
    return set(zip(done["gen_key"], done["ref_id"], strict=True))


def joined_scores(
    store: Store, task_id: str | None = None, source_model: str | None = None
) -> pd.DataFrame:
    """Scores joined with their generation, model and reference (see
    :func:`slamkit.metrics.score.load_scores`)."""
    return store.df(
        """
        SELECT s.gen_key, s.metric, s.metric_version, s.value, s.details,
               nullif(s.ref_id, '') AS ref_id, r.source_model,
               g.model_id, coalesce(m.name, g.model_id)
                   || CASE WHEN g.load_id IS NULL THEN '' ELSE ' (under load)' END AS model,
               g.task_id, g.item_id, g.sample_index, g.load_id
        FROM scores s JOIN generations g USING (gen_key)
        LEFT JOIN models m ON m.model_id = g.model_id
        LEFT JOIN reference_outputs r ON r.ref_id = s.ref_id
        WHERE (CAST(? AS VARCHAR) IS NULL OR g.task_id = ?)
          AND (CAST(? AS VARCHAR) IS NULL OR s.ref_id = '' OR r.source_model = ?)
        ORDER BY model, s.metric, g.item_id, g.sample_index, r.source_model
        """,
        [task_id, task_id, source_model, source_model],
    )


# -- the judge -----------------------------------------------------------------------------
def judge_pairs(
    store: Store,
    sources: Sequence[str],
    task_id: str | None = None,
    sample_index: int | None = 0,
) -> pd.DataFrame:
    """Candidate-vs-reference pairs: every generation (text, no error) of ``sample_index``
    (None: every sample) with its first reference of the task's source model (``sources``
    as in :func:`generations_to_score`). Columns task_id, item_id, a_kind, a_id, b_kind,
    b_id."""
    return store.df(
        _FIRST_REFS
        + """
SELECT g.task_id, g.item_id, 'generation' AS a_kind, g.gen_key AS a_id,
       'reference' AS b_kind, r.ref_id AS b_id
FROM generations g
JOIN refs r ON r.task_id = g.task_id AND r.item_id = g.item_id AND r.rn = 1
WHERE g.text IS NOT NULL AND g.error IS NULL AND g.load_id IS NULL
  AND (CAST(? AS VARCHAR) IS NULL OR g.task_id = ?)
  AND (CAST(? AS INTEGER) IS NULL OR g.sample_index = ?)
ORDER BY g.task_id, g.item_id, g.gen_key
""",
        [list(sources), task_id, task_id, sample_index, sample_index],
    )


def generation_keys_of_models(store: Store, model_ids: Sequence[str]) -> set[str]:
    """Every ``gen_key`` made by one of ``model_ids``."""
    rows = store.rows(
        "SELECT gen_key FROM generations WHERE model_id IN (SELECT unnest(?))", [list(model_ids)]
    )
    return {r[0] for r in rows}


_TEXT_TABLES = {
    "generation": ("generations", "gen_key"),
    "reference": ("reference_outputs", "ref_id"),
    "text": ("pair_texts", "text_id"),
}


def texts_by_id(store: Store, kind: str, ids: Iterable[str]) -> dict[str, str]:
    """``{id: text}`` of generations (``kind='generation'``, by gen_key), references
    (``kind='reference'``, by ref_id) or imported pair texts (``kind='text'``)."""
    table, key = _TEXT_TABLES[kind]
    df = store.df(
        f"SELECT {key} AS k, text FROM {table} WHERE {key} IN (SELECT unnest(?))",
        [sorted(ids)],
    )
    return dict(zip(df.k, df.text, strict=True))


def stored_judgments(store: Store, judgment_ids: Sequence[str]) -> pd.DataFrame:
    """Columns judgment_id, error of the stored judgments among ``judgment_ids``."""
    return store.df(
        "SELECT judgment_id, error FROM judgments WHERE judgment_id IN (SELECT unnest(?))",
        [list(judgment_ids)],
    )


def item_for_prompt(store: Store, task_id: str, prompt: str) -> str | None:
    """The item of ``task_id`` whose prompt equals or is contained in ``prompt`` (the
    longest such), or None."""
    rows = store.rows(
        "SELECT item_id FROM items WHERE task_id = ? AND (prompt = ? OR position(prompt IN ?) > 0)"
        " ORDER BY length(prompt) DESC LIMIT 1",
        [task_id, prompt, prompt],
    )
    return str(rows[0][0]) if rows else None


def _first_with_text(
    store: Store, table: str, key: str, owner: str, task_id: str, item_id: str,
    owner_value: str, text: str,
) -> str | None:  # fmt: skip
    found = store.scalar(
        f"SELECT {key} FROM {table} WHERE task_id = ? AND item_id = ? AND {owner} = ? "
        "AND text = ? ORDER BY sample_index LIMIT 1",
        [task_id, item_id, owner_value, text],
    )
    return None if found is None else str(found)


def generation_with_text(
    store: Store, task_id: str, item_id: str, model_id: str, text: str
) -> str | None:
    """``gen_key`` of the first sample of a model's generation with exactly ``text``."""
    return _first_with_text(
        store, "generations", "gen_key", "model_id", task_id, item_id, model_id, text
    )


def reference_with_text(
    store: Store, task_id: str, item_id: str, source_model: str, text: str
) -> str | None:
    """``ref_id`` of the first sample of a reference with exactly ``text``."""
    return _first_with_text(
        store, "reference_outputs", "ref_id", "source_model", task_id, item_id, source_model,
        text,
    )  # fmt: skip


def human_judgment_stored(store: Store, row: Mapping[str, Any], when: Any) -> bool:
    """Whether ``human_judgments`` holds this choice (annotator, item, sides, criterion,
    source; and, when ``when`` is given, created at that unix time to the millisecond)."""
    return bool(
        store.rows(
            "SELECT 1 FROM human_judgments WHERE annotator = ? AND item_id = ? AND left_id = ?"
            " AND right_id = ? AND criterion = ? AND source = ? AND "
            "(CAST(? AS DOUBLE) IS NULL OR abs(epoch(created_at) - CAST(? AS DOUBLE)) < 0.001)",
            [
                row["annotator"],
                row["item_id"],
                row["left_id"],
                row["right_id"],
                row["criterion"],
                row["source"],
                when,
                when,
            ],
        )  # fmt: skip
    )


def uncounted_reference_texts(store: Store, task_id: str, encoding: str) -> list[tuple[str, str]]:
    """``(sha256, text)`` of the reference texts and item prompts of ``task_id`` that have no
    stored token count in ``encoding`` yet (each distinct text once)."""
    rows = store.rows(
        """
        WITH t AS (
            SELECT text FROM reference_outputs WHERE task_id = ? AND text IS NOT NULL
            UNION SELECT prompt FROM items WHERE task_id = ? AND prompt IS NOT NULL
        )
        SELECT sha256(t.text), t.text FROM t
        LEFT JOIN token_counts c ON c.text_sha256 = sha256(t.text) AND c.encoding = ?
        WHERE c.tokens IS NULL
        """,
        [task_id, task_id, encoding],
    )
    return [(str(h), str(t)) for h, t in rows]


def write_token_counts(store: Store, counts: list[dict[str, object]]) -> int:
    """Store ``text_sha256, encoding, tokens`` rows (idempotent)."""
    return store.write("token_counts", counts)


# -- load tests (slamkit.load) ---------------------------------------------------------------
def start_load_run(store: Store, run: Mapping[str, Any], load: Mapping[str, Any]) -> None:
    """The ``runs`` row (provenance) and the ``load_runs`` row of a new load test, together."""
    with store.transaction() as db:
        _insert_rows(db, "runs", [dict(run)])
        _insert_rows(db, "load_runs", [dict(load)])


def write_load_batch(
    store: Store,
    requests: Sequence[Mapping[str, Any]],
    generations: Sequence[Mapping[str, Any]],
    points: Sequence[Mapping[str, Any]] = (),
) -> int:
    """Commit measured requests, their answers (generations rows) and finished points in
    one transaction (a kill leaves all of them or none; ON CONFLICT DO NOTHING)."""
    with store.transaction() as db:
        _insert_rows(db, "generations", _same_columns(generations))
        written = _insert_rows(db, "load_requests", _same_columns(requests))
        _insert_rows(db, "load_points", _same_columns(points))
    return written


def finish_load_run(store: Store, load_id: str, status: str, note: str) -> None:
    """Mark a load run ``complete`` / ``interrupted`` / ``failed`` with why it stopped."""
    with store.transaction() as db:
        db.execute(
            "UPDATE load_runs SET status = ?, note = ?, finished_at = current_timestamp "
            "WHERE load_id = ?",
            [status, note, load_id],
        )


# -- imported human preferences (slamkit.preferences) ---------------------------------------
def texts_matching(store: Store, task_id: str, texts: Sequence[str]) -> pd.DataFrame:
    """Generations (with text) and references of ``task_id`` whose text is one of
    ``texts``. Columns kind, id, item_id, model, text, sample_index."""
    return store.df(
        """
        SELECT 'generation' AS kind, g.gen_key AS id, g.item_id, coalesce(m.name, g.model_id)
               AS model, g.text, g.sample_index
        FROM generations g LEFT JOIN models m ON m.model_id = g.model_id
        WHERE g.task_id = ? AND g.error IS NULL AND g.load_id IS NULL
          AND g.text IN (SELECT unnest(?))
        UNION ALL
        SELECT 'reference', ref_id, item_id, source_model, text, sample_index
        FROM reference_outputs WHERE task_id = ? AND text IN (SELECT unnest(?))
        ORDER BY kind, sample_index, id
        """,
        [task_id, list(texts), task_id, list(texts)],
    )


def items_with_prompts(store: Store, task_id: str, prompts: Sequence[str]) -> dict[str, str]:
    """``{prompt: item_id}`` of the items of ``task_id`` whose prompt is one of ``prompts``
    (the first item by position when several share a prompt)."""
    rows = store.rows(
        "SELECT prompt, item_id FROM items WHERE task_id = ? AND prompt IN (SELECT unnest(?)) "
        "ORDER BY position DESC NULLS FIRST, item_id DESC",
        [task_id, list(prompts)],
    )
    return {p: i for p, i in rows}


def write_preferences(
    store: Store,
    task: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    texts: Sequence[Mapping[str, Any]],
    judgments: Sequence[Mapping[str, Any]],
) -> tuple[int, int, int]:
    """Write imported preferences in one transaction: the task (when missing), new items,
    pair texts, and the ``human_judgments`` rows whose ``import_key`` is not stored yet.
    A failure rolls all of it back. Returns (items, texts, judgments) written."""
    with store.transaction() as db:
        if not db.execute("SELECT 1 FROM tasks WHERE task_id = ?", [task["task_id"]]).fetchall():
            _insert(db, "tasks", [task])
        next_pos = _scalar(
            db,
            "SELECT coalesce(max(position) + 1, 0) FROM items WHERE task_id = ?",
            [task["task_id"]],
        )
        rows = [
            {**it, "position": next_pos + k, "fields": json.dumps(it["fields"], sort_keys=True)}
            for k, it in enumerate(items)
        ]
        n_items = _insert(db, "items", rows, _ITEM_TYPES)
        n_texts = _insert(db, "pair_texts", texts)
        keys = [j["import_key"] for j in judgments]
        stored = {
            r[0]
            for r in db.execute(
                "SELECT import_key FROM human_judgments WHERE import_key IN (SELECT unnest(?))",
                [keys],
            ).fetchall()
        }
        new = [dict(j) for j in judgments if j["import_key"] not in stored]
        new = list({j["import_key"]: j for j in new}.values())
        n_judged = _insert(db, "human_judgments", new, {"time_spent_s": "float64"})
    return n_items, n_texts, n_judged


# -- the variant matrix (slamkit.matrix: drift, speed, repro) -------------------------------
def matrix_models(store: Store) -> pd.DataFrame:
    """Registered GGUF models: model_id, name, path, family, architecture, quant,
    parent_model_id (ordered by name)."""
    return store.df(
        "SELECT model_id, name, path, family, architecture, quant, parent_model_id "
        "FROM models WHERE path LIKE '%.gguf' ORDER BY name"
    )


def stored_matrix_keys(store: Store, table: str, key: str, keys: Iterable[str]) -> set[str]:
    """Which of a matrix job's planned keys (``drift``, ``speed``, ``repro``) are stored
    without an error (failed cells are planned again)."""
    if table not in ("drift", "speed", "repro"):
        raise ValueError(f"not a matrix table: {table!r}")
    return store.existing(table, key, keys, where="t.error IS NULL")


def reference_texts(
    store: Store, task_id: str, source_model: str | None, limit: int | None
) -> list[str]:
    """The first reference text of each item of ``task_id`` (by item position; the first
    ``limit`` items), from ``source_model`` (None: any source), for a drift text set."""
    sql = (
        "SELECT r.text FROM reference_outputs r "
        "LEFT JOIN items i ON i.task_id = r.task_id AND i.item_id = r.item_id "
        "WHERE r.task_id = ?" + (" AND r.source_model = ?" if source_model else "") + " "
        "QUALIFY row_number() OVER (PARTITION BY r.item_id "
        "ORDER BY r.source_model, r.sample_index, r.ref_id) = 1 "
        "ORDER BY i.position, r.item_id"
    )
    params: list[Any] = [task_id, *([source_model] if source_model else [])]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return [str(r[0]) for r in store.rows(sql, params)]


def repro_candidates(store: Store, task_id: str | None = None) -> pd.DataFrame:
    """Stored generations that can be re-run in process: good rows of registered GGUF
    models made by a sweep (not load-test answers: ``load_id`` set by ``slamkit load``,
    whose keys a sweep cannot plan), with what re-running needs — gen_key, model_id, name,
    path, task_id, item_id, sample_index, seed, sampling (JSON), chat_format, text, prompt,
    system_prompt — ordered by gen_key."""
    sql = (
        "SELECT g.gen_key, g.model_id, m.name, m.path, g.task_id, g.item_id, g.sample_index, "
        "g.seed, g.sampling, g.chat_format, g.text, i.prompt, t.system_prompt "
        "FROM generations g JOIN models m ON m.model_id = g.model_id "
        "JOIN items i ON i.task_id = g.task_id AND i.item_id = g.item_id "
        "JOIN tasks t ON t.task_id = g.task_id "
        "WHERE g.error IS NULL AND g.text IS NOT NULL AND m.path LIKE '%.gguf' "
        "AND coalesce(g.backend, '') <> 'MockBackend' AND g.load_id IS NULL"
        + (" AND g.task_id = ?" if task_id else "")
        + " ORDER BY g.gen_key"
    )
    return store.df(sql, [task_id] if task_id else [])
