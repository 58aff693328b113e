"""Tidy readers: every table the analysis, widgets and notebooks show, read by name.

Each reader takes an open :class:`~slamkit.store.Store` (held or short-lived) and returns
a DataFrame with documented columns. Generation *texts* are read only by the readers that
exist to show or judge them (:func:`sample_outputs`, :func:`texts`, :func:`first_generations`);
everything else reads the columns it needs. Per-variant aggregates live in
:mod:`slamkit.store.aggregates`.

A :class:`Selection` says which generations a study looks at (task, variants, first N
items, sampling settings); it becomes one SQL predicate here, so the filter is applied in
the database, not in pandas.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from slamkit.errors import SlamkitError
from slamkit.store.db import Store

#: the generation columns a study reads by default (no text)
GENERATION_COLUMNS = (
    "gen_key", "model_id", "variant", "family", "quant", "n_params", "size_bytes", "task_id",
    "item_id", "sample_index", "error", "prompt_tokens", "completion_tokens", "ttft_s",
    "prefill_tps", "decode_tps", "latency_s", "load_time_s", "peak_rss_mb", "finish_reason",
    "sampling",
)  # fmt: skip

_MODELS = "LEFT JOIN models m ON m.model_id = g.model_id"

#: scores of each metric's newest version only (a metric whose scoring changed bumps its
#: version; older values are left in the table but never mixed into a summary)
_CURRENT_SCORES = (
    "scores sc JOIN (SELECT metric, max(metric_version) AS v FROM scores GROUP BY metric) lv "
    "ON lv.metric = sc.metric AND lv.v = sc.metric_version "
    f"JOIN generations g ON g.gen_key = sc.gen_key {_MODELS}"
)

#: the stored cl100k count of a text column (``token_counts`` keyed by the text's sha256)
_COUNTED = (
    "LEFT JOIN token_counts {alias} ON {alias}.encoding = 'cl100k_base' "
    "AND {alias}.text_sha256 = sha256({text})"
)

_GEN_EXPR = {
    "variant": "coalesce(m.name, g.model_id)",
    "family": "coalesce(m.family, m.architecture, m.name)",
    "quant": "coalesce(m.quant, '?')",
    "n_params": "m.n_params",
    "size_bytes": "m.size_bytes",
}


@dataclass(frozen=True)
class Selection:
    """Which generations a study reads: a task, variants (empty = all), the first
    ``n_items`` items (by position), and generations made with ``temperature`` /
    ``max_tokens`` (None = any). A sampling setting that does not name a value matches.

    ``timings``: which rows' latencies and rates count — ``"isolated"`` (default: rows
    measured with no other request in flight, ``in_flight = 1``; rows stored before the
    engine recorded it were all made one at a time) or ``"all"`` (rows timed under load
    too). Counts, tokens and quality always use every row."""

    task_id: str = "alpaca_eval"
    models: tuple[str, ...] = field(default_factory=tuple)
    n_items: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timings: str = "isolated"


def _sampling_matches(js: Any, temperature: float | None, max_tokens: int | None) -> bool:
    try:
        s = json.loads(js) if isinstance(js, str) else dict(js)
    except (TypeError, ValueError):
        return True
    if temperature is not None and float(s.get("temperature", temperature)) != float(temperature):
        return False
    return max_tokens is None or int(s.get("max_tokens", max_tokens)) == int(max_tokens)


def _max_tokens(js: Any) -> float | None:
    try:
        s = json.loads(js) if isinstance(js, str) else dict(js)
    except (TypeError, ValueError):
        return None
    mt = s.get("max_tokens")
    return float(mt) if isinstance(mt, int | float) else None


#: what ``Selection.timings`` accepts
TIMINGS = ("isolated", "all")
#: a generation timed with no other request in flight (NULL: made before the engine
#: recorded it, when every request ran alone)
ISOLATED = "coalesce(g.in_flight, 1) = 1"


class Scope:
    """A Selection compiled against one store: a WHERE clause over ``generations g`` (joined
    with ``models m`` and the registered sampling table ``_sk_sampling s``) plus params."""

    def __init__(self, store: Store, sel: Selection) -> None:
        self.store, self.sel = store, sel
        sampling = store.df(
            "SELECT DISTINCT sampling FROM generations WHERE task_id = ?", [sel.task_id]
        )["sampling"].tolist()
        keep = [s for s in sampling if _sampling_matches(s, sel.temperature, sel.max_tokens)]
        self.sampling = pa.table(
            {
                "sampling": pa.array(keep, type=pa.string()),
                "max_tokens": pa.array([_max_tokens(s) for s in keep], type=pa.float64()),
            }
        )
        # answers made by a load test (slamkit load) repeat cells under load: never the study's
        where = ["g.task_id = ?", "g.load_id IS NULL"]
        params: list[Any] = [sel.task_id]
        if sel.n_items:
            where.append(
                "g.item_id IN (SELECT item_id FROM items WHERE task_id = ? "
                "ORDER BY position LIMIT ?)"
            )
            params += [sel.task_id, int(sel.n_items)]
        if sel.models:
            stored = set(variants(store, sel.task_id))
            unknown = sorted(set(sel.models) - stored)
            if unknown:
                raise SlamkitError(
                    f"No generations for model(s) {unknown} in {store.path} (task "
                    f"{sel.task_id!r}); stored: {sorted(stored)}. Run 03_generate first."
                )
            where.append(f"{_GEN_EXPR['variant']} IN (SELECT unnest(?))")
            params.append(list(sel.models))
        self.where, self.params = " AND ".join(where), params
        if sel.timings not in TIMINGS:
            raise SlamkitError(
                f"timings must be one of {', '.join(TIMINGS)}, got {sel.timings!r} (isolated: "
                "only requests timed with no other in flight; all: those under load too)."
            )
        #: SQL condition on ``g``: the row's timings count under ``sel.timings``
        self.timed = ISOLATED if sel.timings == "isolated" else "TRUE"

    def query(
        self,
        select: str,
        tail: str = "",
        extra_where: str = "",
        source: str = "",
        extra_params: Sequence[Any] = (),
    ) -> pd.DataFrame:
        """``SELECT {select} FROM {source}`` in this scope, then ``tail``; ``source``
        names ``generations g`` and ``models m`` (default: just those two)."""
        cond = self.where + (f" AND {extra_where}" if extra_where else "")
        src = source or f"generations g {_MODELS}"
        sql = (
            f"SELECT {select} FROM {src} JOIN _sk_sampling s ON s.sampling = g.sampling "
            f"WHERE {cond} {tail}"
        )
        return self.run(sql, [*self.params, *extra_params])

    def generations_in_scope(self, columns: str, extra_where: str = "") -> str:
        """A subquery of the scope's generations (``columns`` of ``g``/``m``); its
        parameters are :attr:`params`, to be placed first."""
        cond = self.where + (f" AND {extra_where}" if extra_where else "")
        return (
            f"SELECT {columns} FROM generations g {_MODELS} "
            f"JOIN _sk_sampling s ON s.sampling = g.sampling WHERE {cond}"
        )

    def run(self, sql: str, params: Sequence[Any]) -> pd.DataFrame:
        """Execute ``sql`` (which may use the scope's sampling table) and return a frame."""
        with self.store.connection() as db:
            db.register("_sk_sampling", self.sampling)
            try:
                return db.execute(sql, list(params)).df()
            finally:
                db.unregister("_sk_sampling")


def scope(store: Store, selection: Selection | Scope) -> Scope:
    """Compile ``selection`` for ``store`` (checks the variant names exist); a compiled
    scope is returned as it is, so a study compiles its selection once."""
    if isinstance(selection, Scope):
        return selection
    return Scope(store, selection)


# -- catalog ------------------------------------------------------------------------------
def models(store: Store) -> pd.DataFrame:
    """The models table as the catalog shows it: name, family, quant, n_params, size_bytes,
    license, path, model_id (ordered by name)."""
    return store.df(
        "SELECT name, family, quant, n_params, size_bytes, license, path, model_id "
        "FROM models ORDER BY name"
    )


def gguf_paths(store: Store, names: Sequence[str] | None = None) -> list[str]:
    """Paths of the registered GGUF files (``names``: only those models; empty = all)."""
    df = store.df("SELECT name, path FROM models WHERE path LIKE '%.gguf' ORDER BY name")
    if names:
        unknown = sorted(set(names) - set(df["name"]))
        if unknown:
            raise SlamkitError(
                f"Model(s) {unknown} are not GGUF files registered in {store.path}; "
                f"registered: {sorted(df['name'])}. Register them with 01_models first."
            )
        df = df[df["name"].isin(list(names))]
    return [str(p) for p in df["path"]]


def variants(store: Store, task_id: str) -> list[str]:
    """Names of the variants with generations for ``task_id``."""
    df = store.df(
        f"SELECT DISTINCT {_GEN_EXPR['variant']} AS v FROM generations g "
        "LEFT JOIN models m USING (model_id) WHERE g.task_id = ? AND g.load_id IS NULL ORDER BY 1",
        [task_id],
    )
    return [str(v) for v in df["v"]]


# -- tasks and items ---------------------------------------------------------------------
def items(store: Store, task_id: str) -> pd.DataFrame:
    """``item_id, position, fields, prompt`` of a task in position order."""
    return store.df(
        "SELECT item_id, position, fields, prompt FROM items WHERE task_id = ? ORDER BY position",
        [task_id],
    )


def item_subsets(
    store: Store, task_id: str, field: str = "dataset", n_items: int | None = None
) -> pd.DataFrame:
    """``item_id, position, subset``: an item field such as AlpacaEval's ``dataset``
    ('all' when absent), for the first ``n_items`` items (None = all)."""
    it = items(store, task_id)
    if n_items:
        it = it.head(int(n_items))

    def pick(js: str) -> str:
        try:
            return str(json.loads(js).get(field, "all"))
        except (ValueError, AttributeError, TypeError):
            return "all"

    it = it.assign(subset=[pick(f) for f in it["fields"]])
    return it[["item_id", "position", "subset"]].reset_index(drop=True)


def item_prompt(store: Store, task_id: str, item_id: str) -> str:
    """The filled prompt of one item ('' when unknown)."""
    v = store.scalar(
        "SELECT prompt FROM items WHERE task_id = ? AND item_id = ?", [task_id, item_id]
    )
    return str(v) if v is not None else ""


# -- generations --------------------------------------------------------------------------
def generations(
    store: Store, selection: Selection | Scope, columns: Sequence[str] = GENERATION_COLUMNS
) -> pd.DataFrame:
    """Generation rows of ``selection`` with the model's variant/family/quant — only the
    ``columns`` asked for (add ``"text"`` only to show texts)."""
    exprs = [f"{_GEN_EXPR[c]} AS {c}" if c in _GEN_EXPR else f"g.{c}" for c in columns]
    return scope(store, selection).query(
        ", ".join(exprs), "ORDER BY variant, g.item_id, g.sample_index"
    )


def generation_counts(store: Store, task_id: str) -> pd.DataFrame:
    """Per model: generations, errors, mean decode tokens/s and latency (what a sweep made)."""
    return store.df(
        """SELECT m.name AS model, count(*) AS generations, count(g.error) AS errors,
                  round(avg(g.decode_tps), 1) AS mean_decode_tps,
                  round(avg(g.latency_s), 2) AS mean_latency_s
           FROM generations g JOIN models m USING (model_id)
           WHERE g.task_id = ? AND g.load_id IS NULL
           GROUP BY 1 ORDER BY 1""",
        [task_id],
    )


def sample_outputs(store: Store, selection: Selection | Scope, n_items: int = 3) -> pd.DataFrame:
    """``variant, item_id, text`` of sample 0 on the first ``n_items`` items (by item id)
    of the selection: the texts a sample table shows, and no more."""
    sc = scope(store, selection)
    ids = sc.query("DISTINCT g.item_id", f"ORDER BY 1 LIMIT {int(n_items)}")["item_id"]
    return sc.query(
        f"{_GEN_EXPR['variant']} AS variant, g.item_id, g.text",
        "ORDER BY variant, g.item_id",
        extra_where="g.sample_index = 0 AND g.item_id IN (SELECT unnest(?))",
        extra_params=[list(ids)],
    )


def texts(store: Store, kind: str, keys: Sequence[str]) -> dict[str, str | None]:
    """key -> text of generations (``kind='generation'``, by gen_key), references
    (``kind='reference'``, by ref_id) or imported pair texts (``kind='text'``)."""
    table, col = {
        "generation": ("generations", "gen_key"),
        "reference": ("reference_outputs", "ref_id"),
        "text": ("pair_texts", "text_id"),
    }.get(kind, (None, None))
    if table is None:
        raise SlamkitError(f"kind must be 'generation', 'reference' or 'text', got {kind!r}.")
    if not keys:
        return {}
    rows = store.rows(
        f"SELECT {col}, text FROM {table} WHERE {col} IN (SELECT unnest(?))", [list(keys)]
    )
    return {k: t for k, t in rows}


def first_generations(store: Store, task_id: str, with_text: bool = True) -> pd.DataFrame:
    """Per (model, item): its first stored sample (lowest sample_index) — what SMART
    compares with the reference. Columns gen_key, model_id, model, item_id, [text], error,
    latency_s, prompt_tokens, completion_tokens."""
    text = "g.text, " if with_text else ""
    return store.df(
        f"""
        SELECT g.gen_key, g.model_id, coalesce(m.name, g.model_id) AS model, g.item_id,
               {text}g.error, g.latency_s, g.prompt_tokens, g.completion_tokens
        FROM generations g LEFT JOIN models m ON m.model_id = g.model_id
        WHERE g.task_id = ? AND g.load_id IS NULL
        QUALIFY row_number() OVER (
            PARTITION BY g.model_id, g.item_id ORDER BY g.sample_index, g.gen_key) = 1
        """,
        [task_id],
    )


def model_names(
    store: Store, gen_keys: Sequence[str] = (), ref_ids: Sequence[str] = ()
) -> dict[tuple[str, str], str]:
    """(kind, id) -> model name: generations via models.name, references via source_model."""
    out: dict[tuple[str, str], str] = {}
    if gen_keys:
        for k, n in store.rows(
            "SELECT g.gen_key, coalesce(m.name, g.model_id) FROM generations g "
            "LEFT JOIN models m ON m.model_id = g.model_id WHERE g.gen_key IN (SELECT unnest(?))",
            [list(gen_keys)],
        ):
            out[("generation", k)] = n
    if ref_ids:
        for k, n in store.rows(
            "SELECT ref_id, source_model FROM reference_outputs WHERE ref_id IN (SELECT unnest(?))",
            [list(ref_ids)],
        ):
            out[("reference", k)] = n
    return out


# -- references ---------------------------------------------------------------------------
def references(
    store: Store,
    task_id: str | None = None,
    source_model: str | None = None,
    n_items: int | None = None,
    with_text: bool = True,
) -> pd.DataFrame:
    """Reference outputs (e.g. GPT-4) with usage, latency and the item's prompt:
    ``ref_id, task_id, item_id, source_model, sample_index, [text], prompt_tokens,
    completion_tokens, latency_s, ttft_s, in_flight, prompt, completion_tokens_counted,
    prompt_tokens_counted`` (first ``n_items`` items by position; ``in_flight``: requests
    in flight while a captured reference was timed, 1 = alone; ``*_counted``: the
    cl100k counts stored when the references were imported, see :mod:`slamkit.tokens`)."""
    clauses: list[str] = []
    params: list[Any] = []
    if task_id:
        clauses.append("r.task_id = ?")
        params.append(task_id)
    if source_model:
        clauses.append("r.source_model = ?")
        params.append(source_model)
    if n_items and task_id:
        clauses.append(
            "r.item_id IN (SELECT item_id FROM items WHERE task_id = ? ORDER BY position LIMIT ?)"
        )
        params += [task_id, int(n_items)]
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    text = "r.text, " if with_text else ""
    return store.df(
        f"SELECT r.ref_id, r.task_id, r.item_id, r.source_model, r.sample_index, {text}"
        f"r.prompt_tokens, r.completion_tokens, r.latency_s, r.ttft_s, "
        f"coalesce(r.in_flight, 1) AS in_flight, i.prompt, "
        f"tc.tokens AS completion_tokens_counted, tp.tokens AS prompt_tokens_counted "
        f"FROM reference_outputs r LEFT JOIN items i USING (task_id, item_id) "
        f"{_COUNTED.format(text='r.text', alias='tc')} "
        f"{_COUNTED.format(text='i.prompt', alias='tp')} {where} "
        f"ORDER BY r.item_id, r.sample_index",
        params,
    )


def first_references(store: Store, task_id: str, source_model: str) -> pd.DataFrame:
    """Per item, the reference's first sample: item_id, ref_text, prompt_tokens,
    completion_tokens, latency_s, prompt. A clear error when there is none."""
    ref = store.df(
        """
        SELECT r.item_id, r.text AS ref_text, r.prompt_tokens, r.completion_tokens,
               r.latency_s, i.prompt
        FROM reference_outputs r
        LEFT JOIN items i ON i.task_id = r.task_id AND i.item_id = r.item_id
        WHERE r.task_id = ? AND r.source_model = ?
        QUALIFY row_number() OVER (PARTITION BY r.item_id ORDER BY r.sample_index, r.ref_id) = 1
        """,
        [task_id, source_model],
    )
    if ref.empty:
        have = store.rows(
            "SELECT DISTINCT task_id, source_model FROM reference_outputs ORDER BY 1, 2"
        )
        pairs = ", ".join(f"{a}/{b}" for a, b in have) or "none"
        raise SlamkitError(
            f"No reference outputs for task {task_id!r} from {source_model!r} in "
            f"{store.path}. Stored (task/source): {pairs}. Import references first."
        )
    return ref


# -- scores -------------------------------------------------------------------------------
def item_scores(store: Store, selection: Selection | Scope) -> pd.DataFrame:
    """Per-generation metric values of the selection: ``gen_key, variant, model_id,
    item_id, sample_index, metric, metric_version, value`` (failed generations and missing
    values excluded)."""
    return scope(store, selection).query(
        f"sc.gen_key, {_GEN_EXPR['variant']} AS variant, g.model_id, g.item_id, "
        "g.sample_index, sc.metric, sc.metric_version, sc.value",
        extra_where="g.error IS NULL AND sc.value IS NOT NULL",
        source=_CURRENT_SCORES,
    )


def metric_names(store: Store, name: str) -> list[str]:
    """Stored metric names equal to ``name`` or starting with ``name:``."""
    return [
        str(r[0])
        for r in store.rows(
            "SELECT DISTINCT metric FROM scores WHERE metric = ? OR starts_with(metric, ?) "
            "ORDER BY 1",
            [name, name + ":"],
        )
    ]


def latest_scores(store: Store, metric: str) -> pd.DataFrame:
    """``gen_key, value`` of ``metric`` (its newest version per generation)."""
    return store.df(
        "SELECT gen_key, value FROM scores WHERE metric = ? QUALIFY row_number() OVER "
        "(PARTITION BY gen_key ORDER BY metric_version DESC) = 1",
        [metric],
    )


# -- runs, selections, judgments ---------------------------------------------------------
def runs(store: Store) -> pd.DataFrame:
    """Every run row (sweeps, imports, captures), oldest first."""
    return store.df("SELECT * FROM runs ORDER BY started_at")


def selections(store: Store, task_id: str | None = None) -> pd.DataFrame:
    """Stored SMART / recommendation results (optionally of one task), oldest first."""
    return store.df(
        "SELECT * FROM selections WHERE (CAST(? AS VARCHAR) IS NULL OR task_id = ?) "
        "ORDER BY created_at",
        [task_id, task_id],
    )


def judgments(store: Store, judge_model: str | None = None) -> pd.DataFrame:
    """All judgment rows (optionally of one judge), oldest first."""
    return store.df(
        "SELECT * FROM judgments WHERE (CAST(? AS VARCHAR) IS NULL OR judge_model = ?) "
        "ORDER BY created_at, judgment_id",
        [judge_model, judge_model],
    )


def human_judgments(
    store: Store,
    annotator: str | None = None,
    criterion: str | None = None,
    task_id: str | None = None,
) -> pd.DataFrame:
    """Human judgment rows (filters optional), in the order they were made."""
    return store.df(
        "SELECT * FROM human_judgments WHERE (CAST(? AS VARCHAR) IS NULL OR annotator = ?) "
        "AND (CAST(? AS VARCHAR) IS NULL OR criterion = ?) "
        "AND (CAST(? AS VARCHAR) IS NULL OR task_id = ?) ORDER BY judgment_seq",
        [annotator, annotator, criterion, criterion, task_id, task_id],
    )


def annotated_pairs(store: Store, annotator: str) -> set[frozenset[tuple[str, str]]]:
    """The (unordered) pairs ``annotator`` has judged on the overall criterion."""
    rows = store.rows(
        "SELECT left_kind, left_id, right_kind, right_id FROM human_judgments "
        "WHERE annotator = ? AND criterion = 'overall'",
        [annotator],
    )
    return {frozenset([(lk, li), (rk, ri)]) for lk, li, rk, ri in rows}


# -- load tests (slamkit load) -------------------------------------------------------------
def load_runs(store: Store, task_id: str | None = None) -> pd.DataFrame:
    """Stored load runs, newest first: ``load_id, run_id, model_id, model, task_id,
    endpoint, protocol, server, sampling, seed, target_ttft_s, target_e2e_s,
    target_source, attainment, status, note, started_at, finished_at, hardware``."""
    return store.df(
        "SELECT l.*, r.hardware FROM load_runs l LEFT JOIN runs r USING (run_id) "
        "WHERE CAST(? AS VARCHAR) IS NULL OR l.task_id = ? "
        "ORDER BY l.started_at DESC, l.load_id DESC",
        [task_id, task_id],
    )


def load_points(store: Store, load_ids: Sequence[str]) -> pd.DataFrame:
    """The points of some load runs (offered load, duration, status, send-time error)."""
    return store.df(
        "SELECT * FROM load_points WHERE load_id IN (SELECT unnest(?)) ORDER BY load_id, point",
        [list(load_ids)],
    )


def load_requests(store: Store, load_ids: Sequence[str], itl: bool = True) -> pd.DataFrame:
    """The timed requests of some load runs (no texts; ``itl``: with the JSON list of
    inter-token gaps)."""
    cols = "*" if itl else "* EXCLUDE (itl_s)"
    return store.df(
        f"SELECT {cols} FROM load_requests WHERE load_id IN (SELECT unnest(?)) "
        "ORDER BY load_id, point, request",
        [list(load_ids)],
    )


def load_text_changes(store: Store, load_ids: Sequence[str]) -> pd.DataFrame:
    """Per load run and point: answers under load compared with the same cell's stored
    answer (generated in isolation): ``load_id, point, greedy, compared, differ`` (greedy:
    the cell's temperature is 0, where the text should not change)."""
    return store.df(
        """
        SELECT q.load_id, q.point,
               coalesce(json_extract(b.sampling, '$.temperature')::DOUBLE, 0) = 0 AS greedy,
               count(*) AS compared, count(*) FILTER (WHERE l.text <> b.text) AS differ
        FROM load_requests q
        JOIN generations l ON l.gen_key = q.gen_key
        JOIN generations b ON b.gen_key = q.cell_key
        WHERE q.load_id IN (SELECT unnest(?)) AND q.status = 'ok'
          AND b.error IS NULL AND b.text IS NOT NULL AND b.load_id IS NULL
        GROUP BY ALL ORDER BY 1, 2, 3
        """,
        [list(load_ids)],
    )


def human_side_models(store: Store) -> dict[tuple[str, str], str]:
    """(kind, id) -> model name of the sides of human judgments whose model name was
    stored with them (imported preferences)."""
    rows = store.rows(
        "SELECT left_kind, left_id, left_model FROM human_judgments WHERE left_model IS NOT NULL "
        "UNION SELECT right_kind, right_id, right_model FROM human_judgments "
        "WHERE right_model IS NOT NULL"
    )
    return {(k, i): m for k, i, m in rows}


# -- the variant matrix (slamkit.matrix) ----------------------------------------------------
def matrix_model_facts(store: Store) -> pd.DataFrame:
    """Per registered model, what the variant matrix shows of it: model_id, variant (name),
    family, quant, n_params, size_bytes, license, parent_model_id, parent (its name)."""
    return store.df(
        "SELECT m.model_id, m.name AS variant, coalesce(m.family, m.architecture) AS family, "
        "m.quant, m.n_params, m.size_bytes, m.license, m.parent_model_id, p.name AS parent "
        "FROM models m LEFT JOIN models p ON p.model_id = m.parent_model_id ORDER BY m.name"
    )


def drift_results(store: Store) -> pd.DataFrame:
    """Stored quantization drift (table ``drift``, good rows, newest first) with the names of
    the variant (``variant``) and of the base (``base``)."""
    return store.df(
        "SELECT d.*, m.name AS variant, b.name AS base FROM drift d "
        "LEFT JOIN models m ON m.model_id = d.model_id "
        "LEFT JOIN models b ON b.model_id = d.base_model_id "
        "WHERE d.error IS NULL ORDER BY d.created_at DESC, m.name"
    )


def speed_results(store: Store) -> pd.DataFrame:
    """Stored raw speed (table ``speed``, good rows, newest first) with ``variant``."""
    return store.df(
        "SELECT s.*, m.name AS variant FROM speed s LEFT JOIN models m USING (model_id) "
        "WHERE s.error IS NULL ORDER BY s.created_at DESC, m.name"
    )


def repro_results(store: Store) -> pd.DataFrame:
    """Every stored re-run (table ``repro``) with ``variant``: gen_key, greedy, attempt,
    executor, n_threads, stored_sha256, text_sha256, same, error."""
    return store.df(
        "SELECT r.*, m.name AS variant FROM repro r LEFT JOIN models m USING (model_id) "
        "ORDER BY m.name, r.gen_key, r.executor, r.n_threads, r.attempt"
    )
