"""The scoring driver: score every stored generation not yet scored, per metric + version."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from slamkit import engine
from slamkit.engine import JobResult
from slamkit.errors import SlamkitError
from slamkit.store import jobs

if TYPE_CHECKING:
    from slamkit.metrics.base import ItemMetric
    from slamkit.store import Store


def reference_models(
    store: Store, task_id: str | None = None, source_model: str | None = None
) -> dict[str, str]:
    """The reference ``source_model`` to score/judge each task's generations against.

    ``source_model`` given: that model for every task (``task_id``, or every task with
    generations). Otherwise each task's only reference model; a task whose references come
    from several models raises a SlamkitError naming them (choose one with
    ``source_model=``). Tasks without references are left out.
    """
    from slamkit.errors import SlamkitError

    df = jobs.reference_models_by_task(store, task_id)
    if source_model is not None:
        tasks = [task_id] if task_id is not None else list(df["task_id"])
        return {t: source_model for t in tasks}
    out: dict[str, str] = {}
    for task, models in zip(df["task_id"], df["models"], strict=True):
        models = list(models)
        if len(models) > 1:
            raise SlamkitError(
                f"Task {task!r} in {store.path} has references from {len(models)} models: "
                f"{', '.join(map(repr, models))}. Choose the one to compare against with "
                "source_model=... (CLI: --source-model)."
            )
        out[task] = models[0]
    return out


def _resolve(
    metrics: str | Sequence[str | ItemMetric] | None,
) -> tuple[list[ItemMetric], list[ItemMetric]]:
    """``(metrics, those built here from specs)``: every spec is checked before any is built.

    A single string is one spec; None or an empty list means :data:`DEFAULT_METRICS`.
    """
    from slamkit.metrics.registry import DEFAULT_METRICS, get_metric, parse_metric_specs

    items = [metrics] if isinstance(metrics, str) else list(metrics or DEFAULT_METRICS)
    parse_metric_specs(items)  # one bad spec among good ones: nothing built, nothing scored
    built: list[ItemMetric] = []
    owned: list[ItemMetric] = []
    try:
        for item in items:
            if isinstance(item, str):
                owned.append(get_metric(item))
                built.append(owned[-1])
            else:
                built.append(item)
    except BaseException:
        for m in owned:
            m.close()
        raise
    return built, owned


@dataclass
class _ScoreCell:
    """One score to compute; ``key`` names the cell in job_errors."""

    key: str
    gen_key: str
    ref_id: str
    text: str
    ref_text: str | None


def score_generations(
    store: Store,
    metrics: str | Sequence[str | ItemMetric] | None = None,
    task_id: str | None = None,
    source_model: str | None = None,
    chunk_size: int = 64,
    progress: bool = True,
    executor: str | engine.Executor = "sequential",
    concurrency: int | None = None,
    load: bool = False,
) -> JobResult:
    """Score generations (text set, no error) and write one ``scores`` row per item.
    ``load=True`` also scores the answers made under load by load tests (``slamkit
    load``; left out by default: they repeat cells of the study).

    Each generation is scored against one reference for its (task, item): the lowest
    ``sample_index`` of ``source_model``; when None, of the task's only reference model
    (several: a SlamkitError asks to choose, see :func:`reference_models`). Only
    (gen_key, metric, version, ref_id) keys not yet stored are computed, so a second call
    computes nothing, and scoring against another reference adds rows.
    Generations without a reference are skipped by reference metrics (a warning says how
    many). Runs on the job engine, ``chunk_size`` scores per call: a chunk that fails is
    stored in ``job_errors`` (job ``score``) and retried on the next call;
    ``JobResult.by_label`` holds the rows computed per metric. A metric computes one chunk
    at a time in this process (evaluate's metrics and the embedding metric's llama.cpp
    model are not thread-safe: ``executor="concurrent"`` says so and runs them one chunk
    at a time); ``executor="ray"`` spreads the chunks over Ray workers. Metrics built
    here are closed after.

    Every spec is checked (:func:`slamkit.metrics.parse_metric_spec`) before anything is
    scored: a bad one raises a SlamkitError naming it and nothing is written. An empty
    (or whitespace-only) output or reference scores 0.0 on the reference metrics, with
    ``empty_output`` / ``empty_reference`` in the details (see ``ItemMetric.score_empty``).
    """
    if task_id is not None and task_id not in (known := jobs.task_ids(store)):
        raise SlamkitError(
            f"No task {task_id!r} in {store.path}; stored tasks: "
            f"{', '.join(sorted(known)) or 'none'}. Import references first (slamkit refs ...)."
        )
    runner = engine.make_executor(executor, concurrency)
    built, owned = _resolve(metrics)
    try:
        sources = (
            reference_models(store, task_id, source_model)
            if any(m.needs_reference for m in built)
            else {}
        )
        pairs = [f"{t}\x1f{m}" for t, m in sources.items()]
        gens = jobs.generations_to_score(store, pairs, task_id, load)
        named = sorted(set(sources.values()))
        groups, planned, cached = [], 0, 0
        for metric in built:
            todo, n_planned = _unscored(store, metric, gens, named)
            planned += n_planned
            cached += n_planned - len(todo)
            if todo:
                groups.append(_score_group(metric, todo, chunk_size))
        spec = engine.JobSpec(
            "score", "scores", "gen_key", "scoring", unit="score", errors_in_table=False,
            run={"params": {"metrics": [m.metric_name for m in built], "task_id": task_id,
                            "source_model": source_model, "chunk_size": chunk_size}},
        )  # fmt: skip
        result = engine.run(
            store, spec, groups, runner, planned=planned, cached=cached, progress=progress
        )
    finally:
        for m in owned:
            m.close()
    for metric in built:
        result.by_label.setdefault(metric.metric_name, 0)
    return result


def _unscored(
    store: Store, metric: ItemMetric, gens: pd.DataFrame, named: list[str]
) -> tuple[list[_ScoreCell], int]:
    """The cells ``metric`` has not scored yet, and how many it has in all."""
    name, version = metric.metric_name, metric.version
    done_keys = jobs.scored_keys(store, name, version)
    refs = gens["ref_id"].fillna("") if metric.needs_reference else [""] * len(gens)
    keys = pd.Series(list(zip(gens["gen_key"], refs, strict=True)), index=gens.index, dtype=object)
    todo = gens[~keys.isin(done_keys)]
    planned = len(gens)
    if metric.needs_reference:
        missing = int(todo["ref_id"].isna().sum())
        if missing:
            warnings.warn(
                f"{missing} generations have no reference"
                f"{' from ' + ', '.join(map(repr, named)) if named else ''}; "
                f"{name} skipped them. Import references, then score again.",
                stacklevel=3,
            )
        todo = todo[todo["ref_id"].notna()]
        planned -= int(gens["ref_id"].isna().sum())
    cells = [
        _ScoreCell(
            f"{gk}\x1f{name}\x1f{version}\x1f{rid if metric.needs_reference else ''}",
            gk,
            rid if metric.needs_reference else "",
            text,
            ref if metric.needs_reference else None,
        )  # fmt: skip
        for gk, rid, text, ref in zip(
            todo["gen_key"], todo["ref_id"], todo["text"], todo["ref_text"], strict=True
        )
    ]
    return cells, planned


def _score_group(metric: ItemMetric, cells: list[_ScoreCell], chunk_size: int) -> engine.Group:
    name, version = metric.metric_name, metric.version

    def call(lent: engine.Lent, batch: list[_ScoreCell]) -> list[dict[str, Any]]:
        refs = [c.ref_text or "" for c in batch] if metric.needs_reference else None
        out = metric.compute(predictions=[c.text for c in batch], references=refs)
        return [
            {"gen_key": c.gen_key, "metric": name, "metric_version": version,
             "ref_id": c.ref_id, "value": _clean(v), "details": _details(d, metric.params)}
            for c, v, d in zip(batch, out["scores"], out["details"], strict=True)
        ]  # fmt: skip

    def fail(cell: _ScoreCell, exc: BaseException, stage: str) -> dict[str, Any]:
        from slamkit.backends.llamacpp import one_line

        detail = one_line(f"{type(exc).__name__}: {exc}", 300)
        return {
            "error": f"metric {name} {version}: scoring failed ({detail}) — the score is "
            "retried on the next `slamkit score`."
        }

    return engine.Group(
        name, cells, lambda _: engine.Lent(metric), call, fail, batch=max(1, chunk_size)
    )


def _clean(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if v != v else v  # NaN -> NULL


def _details(d: dict[str, Any] | None, params: dict[str, Any]) -> str | None:
    merged = {**(d or {}), **({"params": params} if params else {})}
    return json.dumps(merged, sort_keys=True, default=str) if merged else None


def load_scores(
    store: Store, task_id: str | None = None, source_model: str | None = None
) -> pd.DataFrame:
    """Scores joined with their generation, model and reference: one row per (generation,
    metric, version, reference). ``ref_id``/``source_model`` are None for metrics without a
    reference. ``source_model`` keeps reference metrics scored against that model only
    (reference-free metrics are always kept)."""
    return jobs.joined_scores(store, task_id, source_model)


def latest_versions(scores: pd.DataFrame) -> pd.DataFrame:
    """Only the newest ``metric_version`` of each (generation, metric, reference) (pure).

    A metric whose version was bumped keeps its old rows in the store; summaries must not
    average them with the new ones. Versions compare as numbers when they are numbers.
    Frames without ``gen_key``/``metric_version`` columns are returned as they are.
    """
    if scores.empty or not {"gen_key", "metric", "metric_version"} <= set(scores.columns):
        return scores
    keys = ["gen_key", "metric"] + (["ref_id"] if "ref_id" in scores.columns else [])
    version = scores["metric_version"].astype(str)
    numeric = pd.to_numeric(version, errors="coerce")
    order = pd.DataFrame({"n": numeric.fillna(float("-inf")), "s": version}, index=scores.index)
    ranked = scores.assign(_n=order["n"], _s=order["s"]).sort_values(["_n", "_s"], kind="stable")
    newest = ranked.drop_duplicates(subset=keys, keep="last").drop(columns=["_n", "_s"])
    return newest.sort_index()


def summarize_scores(scores: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """Mean, std and count of each metric per ``by`` (pure; input from :func:`load_scores`;
    only each metric's newest version per generation, see :func:`latest_versions`)."""
    cols = [by, "metric", "n", "mean", "std"]
    scores = latest_versions(scores)
    if scores.empty:
        return pd.DataFrame(columns=cols)
    out = scores.groupby([by, "metric"])["value"].agg(n="count", mean="mean", std="std")
    return out.reset_index()[cols]


CONSTRAINT_NAMES = frozenset(
    {"max_sentences", "word_limit", "regex_must", "regex_must_not", "banned_phrases"}
    | {"json_valid", "json_schema"}
)


def pass_rates(scores: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """Pass rate per ``by`` and constraint metric (pure; input from ``load_scores``).

    Expects columns ``by``, ``metric`` and ``value`` (1 pass / 0 fail). Returns
    ``[by, metric, n, passed, pass_rate]``; only constraint metrics are kept, each at its
    newest version per generation (:func:`latest_versions`).
    """
    cols = [by, "metric", "n", "passed", "pass_rate"]
    scores = latest_versions(scores)
    df = scores.dropna(subset=["value"]) if not scores.empty else scores
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df[df["metric"].str.split(":").str[0].isin(CONSTRAINT_NAMES)]
    out = (
        df.groupby([by, "metric"])["value"]
        .agg(n="count", passed="sum")
        .reset_index()
        .assign(pass_rate=lambda d: d["passed"] / d["n"])
    )
    out["passed"] = out["passed"].astype(int)
    return out[cols].sort_values([by, "metric"]).reset_index(drop=True)
