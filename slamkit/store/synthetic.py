"""Grow a real store into a large synthetic one: the input of the scale benchmark.

:func:`grow` copies every row of a real store (e.g. the default store of ``make run``) into
a new file and adds, in DuckDB itself (``INSERT ... SELECT`` over ``range()``), synthetic
variants of the real models: ``n_variants`` models x every item of the task x
``n_samples`` samples generations (29 x 805 x 43 = 1,003,835) and one score per
successful generation and metric. The synthetic rows look like the real ones:

* ``models``: derived from a real model (family, architecture, parameters, chat template,
  license), another quantization, a size scaled by its bits per weight, ``parent_model_id``
  the real model, ``source = 'synthetic'`` and a path that is not a GGUF (no sweep loads it).
* ``generations``: the real rows' ``sampling`` text, chat format, backend and sweep seed
  (sample k has seed ``seed + k``); timings drawn around the real rows' (decode and
  prefill rates scaled by the quantization, TTFT = prompt tokens / prefill rate, latency =
  TTFT + completion tokens / decode rate, a 1% slow tail); texts of 500-1,500 characters
  sliced from the real generations and references (so the file size is realistic); a small
  share of failed cells (``error`` set, no text). Pseudo-random values are hashes of the
  cell number and ``seed``: the same arguments grow the same store.
* keys: with ``messages`` (:func:`slamkit.tasks.messages_for`) each ``gen_key`` is the key
  the runner computes for that cell (:func:`slamkit.keys.generation_key`, checked against
  Python on a sample), so planning a sweep of the synthetic variants finds them stored;
  without it, unique ``syn-`` keys.
* ``scores``: the real scores' metric version and reference; values around the real mean
  of the parent model, shifted per variant (fewer bits, slightly lower) and per item.

The real rows are copied unchanged. ``prepare(store)`` runs on the target before the
synthetic rows are made (e.g. :func:`slamkit.references.load_alpaca_eval`, which adds the
805 AlpacaEval items and references that a 10-item default store lacks).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from slamkit.errors import StoreError
from slamkit.gguf import quant_bits
from slamkit.keys import KEY_VERSION, generation_key
from slamkit.store.db import Store

#: quantizations given to synthetic variants, in turn
QUANTS = (
    "Q4_K_M", "Q8_0", "Q2_K", "Q5_K_M", "Q3_K_M", "Q6_K", "Q4_0", "Q5_0", "Q3_K_S", "Q4_K_S",
    "Q5_1", "Q3_K_L", "Q4_1", "Q5_K_S", "F16",
)  # fmt: skip

_TABLES = (
    "models", "tasks", "items", "reference_outputs", "runs", "generations", "scores",
    "judgments", "human_judgments", "selections",
)  # fmt: skip

#: the generation columns :func:`grow` writes (the rest keep their defaults)
_GEN_COLS = (
    "gen_key", "run_id", "model_id", "task_id", "item_id", "sample_index", "seed", "sampling",
    "chat_format", "text", "finish_reason", "prompt_tokens", "completion_tokens", "ttft_s",
    "prefill_tps", "decode_tps", "latency_s", "load_time_s", "peak_rss_mb", "model_mem_mb",
    "backend", "error",
)  # fmt: skip

Messages = Callable[[str, str | None], list[dict[str, str]]]


@dataclass
class GrowResult:
    """What :func:`grow` wrote: row counts of the target and the time it took."""

    target: str
    variants: int
    items: int
    samples: int
    generations: int  # all rows of the target (real + synthetic)
    scores: int
    synthetic_generations: int
    synthetic_scores: int
    runner_keys: bool  # gen_keys are the runner's content keys
    seconds: float
    file_bytes: int


def _say(progress: Callable[[str], None] | None, t0: float, msg: str) -> None:
    if progress is not None:
        progress(f"[grow {time.perf_counter() - t0:6.1f} s] {msg}")


def grow(
    source: str | Path,
    target: str | Path,
    n_variants: int = 29,
    n_samples: int = 43,
    seed: int = 0,
    *,
    task_id: str = "alpaca_eval",
    reference_model: str | None = None,
    metrics: tuple[str, ...] = ("rougeL",),
    messages: Messages | None = None,
    prepare: Callable[[Store], object] | None = None,
    error_share: float = 0.001,
    text_chars: tuple[int, int] = (500, 1500),
    overwrite: bool = False,
    progress: Callable[[str], None] | None = print,
) -> GrowResult:
    """Copy the store ``source`` to ``target`` and add synthetic rows (see the module doc).

    ``n_variants`` synthetic models, each with a generation for every item of ``task_id``
    x ``n_samples`` samples, and a score per successful generation for each of
    ``metrics``; ``reference_model``: the references the scores are against (None: the
    task's most common ``source_model``). ``overwrite``: replace an existing ``target``
    (else a StoreError). Returns the counts and the time taken.
    """
    t0 = time.perf_counter()
    src, dst = Path(source), Path(target)
    if not src.is_file():
        raise StoreError(f"No store at {src} to grow from.")
    if dst.exists() and dst.resolve() == src.resolve():
        raise StoreError(f"grow: the target {dst} is the source store; name a new file.")
    if n_variants < 1 or n_samples < 1:
        raise StoreError(
            f"grow: n_variants and n_samples must be >= 1 ({n_variants}, {n_samples})."
        )
    lo, hi = int(text_chars[0]), int(text_chars[1])
    if not 1 <= lo <= hi:
        raise StoreError(
            f"grow: text_chars must be (low, high) with 1 <= low <= high, got {text_chars}."
        )
    if dst.exists() or Path(str(dst) + ".wal").exists():
        if not overwrite:
            raise StoreError(f"{dst} exists; pass overwrite=True to replace it.")
        dst.unlink(missing_ok=True)
        Path(str(dst) + ".wal").unlink(missing_ok=True)
    with Store(dst) as st:
        _copy(st, src)
        _say(progress, t0, f"copied {src} ({st.count('generations')} generations)")
        if prepare is not None:
            prepare(st)
            _say(progress, t0, f"prepared: {st.count('items', 'task_id = ?', [task_id])} items")
        n_items = _register_items(st, task_id, reference_model, messages)
        variants = _register_variants(st, task_id, n_variants, seed, metrics)
        run_id = _write_run(st, task_id, n_variants, n_samples, seed, metrics)
        _say(
            progress, t0, f"{n_variants} synthetic variants x {n_items} items x {n_samples} samples"
        )
        n_gen = _insert_generations(
            st, task_id, run_id, n_items, n_samples, seed, error_share, lo, hi, messages is not None
        )
        _say(progress, t0, f"{n_gen:,} synthetic generations written")
        if messages is not None:
            _check_keys(st, task_id, run_id, variants)
        n_sc = _insert_scores(st, run_id, seed, metrics)
        _say(progress, t0, f"{n_sc:,} synthetic scores written")
        with st.connection() as db:
            for t in ("_sk_items", "_sk_variants", "_sk_pool"):
                db.execute(f"DROP TABLE IF EXISTS {t}")
            db.execute("CHECKPOINT")
        total_gen, total_sc = st.count("generations"), st.count("scores")
    size = dst.stat().st_size
    _say(
        progress,
        t0,
        f"done: {total_gen:,} generations, {total_sc:,} scores, {size / 2**20:.0f} MiB",
    )
    return GrowResult(
        str(dst), n_variants, n_items, n_samples, total_gen, total_sc, n_gen, n_sc,
        messages is not None, time.perf_counter() - t0, size,
    )  # fmt: skip


# -- the real rows ---------------------------------------------------------------------------
def _copy(st: Store, src: Path) -> None:
    """Every row of the source's tables (columns both schemas have), in one transaction."""
    with st.connection() as db:
        try:
            quoted = str(src).replace("'", "''")
            db.execute(f"ATTACH '{quoted}' AS _sk_src (READ_ONLY)")
        except duckdb.Error as exc:
            raise StoreError(
                f"Cannot open the source store {src} read-only ({exc}). Is a job still "
                "writing it? Wait for it to finish."
            ) from None
        try:
            src_cols = _columns(db, "_sk_src")
            dst_cols = _columns(db, _own_catalog(db))
            db.execute("BEGIN TRANSACTION")
            for table in _TABLES:
                cols = [c for c in dst_cols.get(table, []) if c in src_cols.get(table, [])]
                if cols:
                    names = ", ".join(f'"{c}"' for c in cols)
                    db.execute(
                        f"INSERT INTO {table} ({names}) SELECT {names} FROM _sk_src.main.{table}"
                    )
            # the copied human judgments keep their numbers: move the sequence past them
            last = db.execute("SELECT coalesce(max(judgment_seq), 0) FROM human_judgments")
            n = int(last.fetchall()[0][0])
            if n:
                db.execute("SELECT max(nextval('human_judgment_seq')) FROM range(?)", [n])
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except duckdb.Error:
                pass
            raise
        finally:
            db.execute("DETACH _sk_src")


def _own_catalog(db: duckdb.DuckDBPyConnection) -> str:
    """The name of the connection's own database (the file's stem)."""
    return str(db.execute("SELECT current_database()").fetchall()[0][0])


def _columns(db: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, list[str]]:
    rows = db.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_catalog = ? AND table_schema = 'main' ORDER BY table_name, ordinal_position",
        [catalog],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for t, c in rows:
        out.setdefault(str(t), []).append(str(c))
    return out


# -- what the synthetic rows are made from -------------------------------------------------
def _register_items(
    st: Store, task_id: str, reference_model: str | None, messages: Messages | None
) -> int:
    """Temp table ``_sk_items``: each item's index, the JSON pieces of its key, its
    first reference (what scores point at)."""
    with st.connection() as db:
        task = db.execute("SELECT system_prompt FROM tasks WHERE task_id = ?", [task_id]).fetchall()
        if not task:
            raise StoreError(f"grow: no task {task_id!r} in the store (load its items first).")
        system_prompt = task[0][0]
        if reference_model is None:
            top = db.execute(
                "SELECT source_model FROM reference_outputs WHERE task_id = ? "
                "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
                [task_id],
            ).fetchall()
            reference_model = str(top[0][0]) if top else ""
        items = db.execute(
            """SELECT i.item_id, i.prompt, r.ref_id FROM items i
               LEFT JOIN (SELECT item_id, ref_id FROM reference_outputs
                          WHERE task_id = ? AND source_model = ?
                          QUALIFY row_number() OVER (PARTITION BY item_id
                                                     ORDER BY sample_index, ref_id) = 1) r
               USING (item_id)
               WHERE i.task_id = ? ORDER BY i.position, i.item_id""",
            [task_id, reference_model, task_id],
        ).fetchall()
        if not items:
            raise StoreError(f"grow: task {task_id!r} has no items.")
        table = pa.table(
            {
                "idx": pa.array(range(len(items)), type=pa.int64()),
                "item_id": pa.array([r[0] for r in items], type=pa.string()),
                "prompt_chars": pa.array([len(r[1]) for r in items], type=pa.int64()),
                "item_json": pa.array([json.dumps(r[0]) for r in items], type=pa.string()),
                "messages_json": pa.array(
                    [
                        json.dumps(messages(r[1], system_prompt), sort_keys=True)
                        if messages is not None
                        else ""
                        for r in items
                    ],
                    type=pa.string(),
                ),
                "ref_id": pa.array([r[2] or "" for r in items], type=pa.string()),
            }
        )
        db.register("_sk_items_arrow", table)
        try:
            db.execute("CREATE OR REPLACE TEMP TABLE _sk_items AS SELECT * FROM _sk_items_arrow")
        finally:
            db.unregister("_sk_items_arrow")
    return len(items)


def _parents(st: Store, task_id: str, metric: str) -> list[dict[str, Any]]:
    """The real models with successful generations of the task, with their rows' averages."""
    rows = st.df(
        """
        WITH g AS (
            SELECT g.*, length(i.prompt) AS prompt_chars FROM generations g
            JOIN items i USING (task_id, item_id)
            WHERE g.task_id = ? AND g.error IS NULL
        ), sc AS (
            SELECT s.gen_key, avg(s.value) AS value FROM scores s
            WHERE s.metric = ? AND s.value IS NOT NULL GROUP BY 1
        )
        SELECT m.model_id, m.name, m.family, m.architecture, m.n_params, m.quant,
               m.size_bytes, m.context_length, m.has_chat_template, m.chat_template,
               m.license, m.tensor_types,
               mode(g.sampling) AS sampling, mode(g.chat_format) AS chat_format,
               mode(g.backend) AS backend, mode(g.seed - g.sample_index) AS sweep_seed,
               avg(g.decode_tps) AS decode_tps, avg(g.prefill_tps) AS prefill_tps,
               avg(g.load_time_s) AS load_time_s, avg(g.peak_rss_mb) AS peak_rss_mb,
               avg(g.model_mem_mb) AS model_mem_mb,
               avg(g.prompt_tokens - g.prompt_chars / 4.0) AS prompt_overhead,
               avg(CASE WHEN g.finish_reason = 'length' THEN 1.0
                        WHEN g.finish_reason IS NULL THEN NULL ELSE 0.0 END) AS trunc_share,
               avg(sc.value) AS quality, stddev_samp(sc.value) AS quality_sd
        FROM g JOIN models m USING (model_id) LEFT JOIN sc USING (gen_key)
        GROUP BY ALL ORDER BY m.name
        """,
        [task_id, metric],
    )
    if rows.empty:
        raise StoreError(
            f"grow: the source store has no successful generations of task {task_id!r} "
            "to derive synthetic variants from (run a sweep first: make run)."
        )
    return [{k: _plain(v) for k, v in r.items()} for r in rows.to_dict("records")]


def _plain(v: Any) -> Any:
    """A Python value (numpy scalars unwrapped, NaN as None)."""
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and v != v else v


def _bits(quant: str | None) -> float:
    b = quant_bits(quant)
    return 5.0 if b != b else b  # unknown quantization: about 5 bits per weight


def _num(v: Any, default: float) -> float:
    return default if v is None else float(v)


def _register_variants(
    st: Store, task_id: str, n_variants: int, seed: int, metrics: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Write the synthetic ``models`` rows; temp table ``_sk_variants`` holds what their
    generations are drawn from (one row per variant)."""
    parents = _parents(st, task_id, metrics[0] if metrics else "rougeL")
    models, variants = [], []
    for v in range(n_variants):
        p = parents[v % len(parents)]
        quant = QUANTS[(v // len(parents) + v) % len(QUANTS)]
        p_bits = _bits(p["quant"])
        bits = _bits(quant)
        base = str(p["name"])
        while "." in base and quant_bits(base.rpartition(".")[2]) > 0:  # drop quant suffixes
            base = base.rpartition(".")[0]
        name = f"{base}.{quant}~syn{v:02d}"
        model_id = hashlib.sha256(f"slamkit-synthetic:{seed}:{v}:{name}".encode()).hexdigest()
        size_ratio = bits / p_bits
        models.append(
            {
                "model_id": model_id, "name": name, "path": f"synthetic:{name}",
                "family": p["family"], "architecture": p["architecture"],
                "n_params": p["n_params"], "quant": quant,
                "size_bytes": int(_num(p["size_bytes"], 1e8) * size_ratio),
                "context_length": p["context_length"], "has_chat_template": p["has_chat_template"],
                "chat_template": p["chat_template"], "license": p["license"],
                "parent_model_id": p["model_id"], "tensor_types": p["tensor_types"],
                "source": "synthetic",
            }
        )  # fmt: skip
        max_tokens = None
        try:
            max_tokens = json.loads(p["sampling"]).get("max_tokens")
        except (TypeError, ValueError, AttributeError):
            pass
        jitter = int(hashlib.sha256(f"{seed}:{v}".encode()).hexdigest()[:8], 16) / 2**32
        speed = (p_bits / bits) ** 0.6 * (0.9 + 0.2 * jitter)  # fewer bits: faster
        quality = (
            _num(p["quality"], 0.12) * min(1.08, (bits / p_bits) ** 0.12) * (0.95 + 0.1 * jitter)
        )
        variants.append(
            {
                "v": v, "model_id": model_id, "name": name, "sampling": p["sampling"],
                "chat_format": p["chat_format"], "backend": p["backend"],
                "chat_format_json": json.dumps(p["chat_format"]),
                "model_json": json.dumps(model_id),
                "sweep_seed": int(_num(p["sweep_seed"], 0)),
                "max_tokens": int(max_tokens) if isinstance(max_tokens, int | float) else 128,
                "decode_tps": _num(p["decode_tps"], 40.0) * speed,
                "prefill_tps": _num(p["prefill_tps"], 400.0) * speed,
                "load_time_s": _num(p["load_time_s"], 0.3) * size_ratio,
                "peak_rss_mb": _num(p["peak_rss_mb"], 400.0) * (0.8 + 0.2 * size_ratio),
                "model_mem_mb": _num(p["model_mem_mb"], 150.0) * size_ratio,
                "prompt_overhead": _num(p["prompt_overhead"], 20.0),
                "trunc_share": _num(p["trunc_share"], 0.9),
                "quality": quality, "quality_sd": _num(p["quality_sd"], 0.06) or 0.06,
            }
        )  # fmt: skip
    st.write("models", models)
    table = pa.Table.from_pylist(variants)
    with st.connection() as db:
        db.register("_sk_variants_arrow", table)
        try:
            db.execute(
                "CREATE OR REPLACE TEMP TABLE _sk_variants AS SELECT * FROM _sk_variants_arrow"
            )
        finally:
            db.unregister("_sk_variants_arrow")
    return variants


def _write_run(
    st: Store, task_id: str, n_variants: int, n_samples: int, seed: int, metrics: tuple[str, ...]
) -> str:
    run_id = f"run-synthetic-{seed}-{n_variants}x{n_samples}"
    st.write(
        "runs",
        [
            {
                "run_id": run_id, "kind": "synthetic", "seed": seed,
                "params": {"generator": "slamkit.store.synthetic.grow", "task_id": task_id,
                           "n_variants": n_variants, "n_samples": n_samples,
                           "metrics": list(metrics)},
            }
        ],
    )  # fmt: skip
    return run_id


# -- the synthetic rows, made by DuckDB ------------------------------------------------------
_MACROS = """
CREATE OR REPLACE TEMP MACRO sk_u(c, s) AS
    (hash(xor(hash(c), CAST(s AS UBIGINT))) / 18446744073709551616.0);
CREATE OR REPLACE TEMP MACRO sk_n(c, s) AS
    (sqrt(-2.0 * ln(1.0 - sk_u(c, s))) * cos(2.0 * pi() * sk_u(c, s + 1)));
"""


def _insert_generations(
    st: Store,
    task_id: str,
    run_id: str,
    n_items: int,
    n_samples: int,
    seed: int,
    error_share: float,
    lo: int,
    hi: int,
    runner_keys: bool,
) -> int:
    task_json = json.dumps(task_id)
    if runner_keys:  # the payload of slamkit.keys.content_key("generation", ...), sorted keys
        key = (
            "left(sha256('{\"chat_format\": ' || c.chat_format_json "
            '|| \', "item": \' || c.item_json || \', "kind": "generation", "messages": \' '
            "|| c.messages_json || ', \"model\": ' || c.model_json "
            "|| ', \"sample\": ' || c.k || ', \"sampling\": ' || c.sampling "
            "|| ', \"seed\": ' || (c.sweep_seed + c.k) || ', \"task\": ' || $task_json "
            f"|| ', \"v\": {KEY_VERSION}}}'), 32)"
        )
    else:
        key = "'syn-' || md5(c.model_id || ':' || c.item_id || ':' || c.k)"
    sql = f"""
    INSERT INTO generations ({", ".join(_GEN_COLS)})
    WITH c AS (
        SELECT v.*, i.idx, i.item_id, i.item_json, i.messages_json, i.prompt_chars, s.k,
               ((v.v * $n_items + i.idx) * $n_samples + s.k) * 7919 + $seed AS cell
        FROM _sk_variants v CROSS JOIN _sk_items i CROSS JOIN range($n_samples) s(k)
    ), d AS (
        SELECT c.*, {key} AS gen_key,
               sk_u(cell, 1) < $error_share AS failed,
               CASE WHEN sk_u(cell, 3) < c.trunc_share THEN c.max_tokens
                    ELSE 8 + CAST(floor(sk_u(cell, 4) * (c.max_tokens - 8)) AS INTEGER)
               END AS completion_tokens,
               greatest(1, CAST(round(c.prompt_chars / 4.0 + c.prompt_overhead) AS INTEGER))
                   AS prompt_tokens,
               c.decode_tps * exp(0.08 * sk_n(cell, 5)) AS g_decode,
               c.prefill_tps * exp(0.15 * sk_n(cell, 7)) AS g_prefill,
               CASE WHEN sk_u(cell, 9) < 0.01 THEN 1.5 + 1.5 * sk_u(cell, 10) ELSE 1.0 END
                   AS tail,
               CAST(floor(sk_u(cell, 11) * (SELECT count(*) FROM _sk_pool)) AS BIGINT) AS pa,
               CAST(floor(sk_u(cell, 12) * (SELECT count(*) FROM _sk_pool)) AS BIGINT) AS pb,
               $lo + CAST(floor(sk_u(cell, 13) * ($hi - $lo + 1)) AS INTEGER) AS n_chars,
               1 + CAST(floor(sk_u(cell, 14) * 200) AS INTEGER) AS off
        FROM c
    )
    SELECT d.gen_key, $run_id, d.model_id, $task_id, d.item_id, d.k, d.sweep_seed + d.k,
           d.sampling, d.chat_format,
           CASE WHEN failed THEN NULL
                ELSE substr(a.text || chr(10) || chr(10) || b.text || chr(10) || a.text,
                            least(d.off, greatest(1, length(a.text) - 1)), d.n_chars) END,
           CASE WHEN failed THEN NULL
                WHEN d.completion_tokens >= d.max_tokens THEN 'length' ELSE 'stop' END,
           CASE WHEN failed THEN NULL ELSE d.prompt_tokens END,
           CASE WHEN failed THEN NULL ELSE d.completion_tokens END,
           CASE WHEN failed THEN NULL ELSE d.prompt_tokens / d.g_prefill + 0.004 END,
           CASE WHEN failed THEN NULL ELSE d.g_prefill END,
           CASE WHEN failed THEN NULL ELSE d.g_decode END,
           CASE WHEN failed THEN NULL
                ELSE (d.prompt_tokens / d.g_prefill + 0.004
                      + d.completion_tokens / d.g_decode * 1.02) * d.tail END,
           d.load_time_s, d.peak_rss_mb, d.model_mem_mb, d.backend,
           CASE WHEN failed THEN 'RuntimeError: synthetic failure' END
    FROM d JOIN _sk_pool a ON a.k = d.pa JOIN _sk_pool b ON b.k = d.pb
    """
    params = {
        "n_items": n_items, "n_samples": n_samples, "seed": seed, "error_share": error_share,
        "lo": lo, "hi": hi, "run_id": run_id, "task_id": task_id,
    }  # fmt: skip
    if runner_keys:
        params["task_json"] = task_json
    with st.transaction() as db:
        db.execute(_MACROS)
        db.execute(
            """CREATE OR REPLACE TEMP TABLE _sk_pool AS
               SELECT row_number() OVER (ORDER BY src, id) - 1 AS k, text FROM (
                   SELECT 0 AS src, gen_key AS id, text FROM generations
                   WHERE task_id = ? AND text IS NOT NULL AND length(text) > 0
                   UNION ALL
                   SELECT 1, ref_id, text FROM reference_outputs
                   WHERE task_id = ? AND length(text) > 0)""",
            [task_id, task_id],
        )
        if not db.execute("SELECT count(*) FROM _sk_pool").fetchall()[0][0]:
            raise StoreError(f"grow: no generation or reference texts of {task_id!r} to copy.")
        before = db.execute("SELECT count(*) FROM generations").fetchall()[0][0]
        db.execute(sql, params)
        after = db.execute("SELECT count(*) FROM generations").fetchall()[0][0]
    return int(after - before)


def _check_keys(st: Store, task_id: str, run_id: str, variants: list[dict[str, Any]]) -> None:
    """The SQL keys equal :func:`slamkit.keys.generation_key` (a sample of cells)."""
    rows = st.rows(
        """SELECT g.gen_key, g.model_id, g.item_id, g.chat_format, g.sampling, g.seed,
                  g.sample_index, i.messages_json
           FROM generations g JOIN _sk_items i USING (item_id)
           WHERE g.run_id = ? ORDER BY hash(g.gen_key) LIMIT 50""",
        [run_id],
    )
    for key, model_id, item_id, fmt, sampling, seed, k, msgs in rows:
        want = generation_key(
            model_id, task_id, item_id, json.loads(msgs), fmt, json.loads(sampling), seed, k
        )
        if key != want:
            raise StoreError(
                f"grow: the SQL gen_key {key} of {model_id}/{item_id}/{k} is not the runner's "
                f"key {want} (slamkit.keys changed? update slamkit/store/synthetic.py)."
            )


def _insert_scores(st: Store, run_id: str, seed: int, metrics: tuple[str, ...]) -> int:
    written = 0
    for j, metric in enumerate(metrics):
        versions = st.rows(
            "SELECT metric_version FROM scores WHERE metric = ? GROUP BY 1 "
            "ORDER BY count(*) DESC, 1 DESC LIMIT 1",
            [metric],
        )
        version = str(versions[0][0]) if versions else "1"
        # the real rows' details text of this metric (its format; values not recomputed)
        details = st.scalar(
            "SELECT details FROM scores WHERE metric = ? AND details IS NOT NULL "
            "ORDER BY gen_key LIMIT 1",
            [metric],
        )
        shift = 1.0 if j == 0 else 1.0 + 0.5 * j  # a second metric on another scale
        with st.transaction() as db:
            before = db.execute("SELECT count(*) FROM scores").fetchall()[0][0]
            db.execute(
                """
                INSERT INTO scores (gen_key, metric, metric_version, ref_id, details, value)
                SELECT g.gen_key, ?, ?, i.ref_id, ?,
                       least(1.0, greatest(0.0, ? * (v.quality
                           + 0.5 * v.quality * sk_n(xor(hash(i.item_id), CAST(? AS UBIGINT)), 17)
                           + v.quality_sd * sk_n(xor(hash(g.gen_key), CAST(? AS UBIGINT)), 19))))
                FROM generations g JOIN _sk_variants v USING (model_id)
                JOIN _sk_items i USING (item_id)
                WHERE g.run_id = ? AND g.error IS NULL
                """,
                [metric, version, details, shift, seed + j, seed + j, run_id],
            )
            after = db.execute("SELECT count(*) FROM scores").fetchall()[0][0]
        written += int(after - before)
    return written


def model_rows(store: Store, task_id: str) -> list[dict[str, Any]]:
    """The ``models`` rows (every column) of the models with generations of ``task_id``,
    ordered by name: what a benchmark needs to plan a sweep of them again."""
    df = store.df(
        "SELECT * FROM models WHERE model_id IN "
        "(SELECT DISTINCT model_id FROM generations WHERE task_id = ?) ORDER BY name",
        [task_id],
    )
    return [{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")]
