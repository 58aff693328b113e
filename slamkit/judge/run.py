"""Run a judge over stored generations and write one ``judgments`` row per call.

Resumable: each call has a content-addressed ``judgment_id`` (judge settings, public
endpoint URL, mode, criterion, the two texts' keys and order, prompt fingerprint); stored
successes are skipped, stored failures are retried and replaced. A call that still fails is written
with ``error`` set and ``verdict`` NULL: nothing is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from slamkit import engine
from slamkit.engine import JobResult
from slamkit.errors import SlamkitError
from slamkit.judge import prompts
from slamkit.judge.client import CallResult, JudgeClient, JudgeConfig
from slamkit.keys import content_key
from slamkit.store import jobs
from slamkit.tasks import check_limit

if TYPE_CHECKING:
    from slamkit.store import Store

MODES = ("pairwise", "criteria", "rubric")


def build_pairs(
    store: Store,
    task_id: str | None = None,
    source_model: str | None = None,
    sample_index: int | None = 0,
    model_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Candidate-vs-reference pairs: each generation (text, no error) and its reference.

    The reference is the lowest ``sample_index`` of ``source_model`` for the same item;
    when None, of the task's only reference model (several: a SlamkitError asks to choose,
    see :func:`slamkit.metrics.score.reference_models`). ``sample_index=None`` takes every
    sample. Columns: task_id, item_id, a_kind, a_id, b_kind, b_id (a = candidate
    generation, b = reference).
    """
    from slamkit.metrics.score import reference_models

    sources = reference_models(store, task_id, source_model)
    keys = [f"{t}\x1f{m}" for t, m in sources.items()]
    pairs = jobs.judge_pairs(store, keys, task_id, sample_index)
    if model_ids is not None:
        keep = jobs.generation_keys_of_models(store, model_ids)
        pairs = pairs[pairs["a_id"].isin(keep)]
    return pairs.reset_index(drop=True)


def first_items(store: Store, pairs: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The pairs whose item is among the first ``limit`` items of its task by position
    (``items.position``, as :func:`slamkit.tasks.load_items` orders them)."""
    keep = []
    for task in pairs["task_id"].drop_duplicates():
        first = set(jobs.task_items(store, str(task), limit)["item_id"])
        keep.append(pairs[(pairs["task_id"] == task) & pairs["item_id"].isin(first)])
    if not keep:
        return pairs.iloc[0:0]
    return pd.concat(keep).reset_index(drop=True)


def _texts(store: Store, pairs: pd.DataFrame) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for kind in ("generation", "reference", "text"):  # 'text': imported human pairs
        ids = set(pairs.loc[pairs.a_kind == kind, "a_id"]) | set(
            pairs.loc[pairs.b_kind == kind, "b_id"]
        )
        if ids:
            out.update({(kind, k): t for k, t in jobs.texts_by_id(store, kind, ids).items()})
    return out


def _prompts(store: Store, pairs: pd.DataFrame) -> dict[tuple[str, str], str]:
    return jobs.item_prompts(store)


def plan_judgments(
    pairs: pd.DataFrame,
    config: JudgeConfig,
    mode: str = "pairwise",
    criteria: Sequence[str] = prompts.DEFAULT_CRITERIA,
    rubric: str = prompts.DEFAULT_RUBRIC,
    rubric_with_reference: bool = True,
) -> list[dict[str, Any]]:
    """Every call the judge must make: both orders per pair (pairwise, criteria), one
    call per candidate (rubric). Each dict carries its ``judgment_id`` and ids."""
    if mode not in MODES:
        raise SlamkitError(f"Unknown judge mode {mode!r}: use one of {', '.join(MODES)}.")
    if mode == "rubric":
        schema = prompts.rubric_schema(config.reasoning, config.max_reason_chars)
    else:
        schema = prompts.pairwise_schema(config.reasoning, config.max_reason_chars)
    crits: list[str | None]
    if mode == "pairwise":
        crits = ["overall"]
    elif mode == "criteria":
        crits = list(criteria)
        if not crits:
            raise SlamkitError("mode='criteria' needs at least one criterion.")
    else:
        crits = [None]
    fp = prompts.prompt_fingerprint(mode, schema, rubric if mode == "rubric" else None)
    plan = []
    for p in pairs.itertuples(index=False):
        orders = [False] if mode == "rubric" else [False, True]
        for crit in crits:
            for swapped in orders:
                a = (p.b_kind, p.b_id) if swapped else (p.a_kind, p.a_id)
                b = (p.a_kind, p.a_id) if swapped else (p.b_kind, p.b_id)
                if mode == "rubric" and not rubric_with_reference:
                    b = (None, None)
                jid = content_key(
                    "judgment", judge=config.settings(), endpoint=config.endpoint, mode=mode,
                    criterion=crit, a=list(a), b=list(b), prompt=fp,
                )  # fmt: skip
                plan.append(
                    {"judgment_id": jid, "mode": mode, "criterion": crit, "task_id": p.task_id,
                     "item_id": p.item_id, "a_kind": a[0], "a_id": a[1], "b_kind": b[0],
                     "b_id": b[1], "order_swapped": swapped, "schema": schema,
                     "prompt_fp": fp, "rubric": rubric if mode == "rubric" else None}
                )  # fmt: skip
    return plan


@dataclass
class _JudgeCell:
    """One judge call of the plan; ``key`` is its ``judgment_id``."""

    key: str
    call: dict[str, Any]


def run_judge(
    store: Store,
    config: JudgeConfig,
    mode: str = "pairwise",
    pairs: pd.DataFrame | None = None,
    task_id: str | None = None,
    source_model: str | None = None,
    sample_index: int | None = 0,
    model_ids: Sequence[str] | None = None,
    criteria: Sequence[str] = prompts.DEFAULT_CRITERIA,
    rubric: str = prompts.DEFAULT_RUBRIC,
    rubric_with_reference: bool = True,
    limit: int | None = None,
    retry_failed: bool = True,
    progress: bool = True,
    executor: str | engine.Executor = "sequential",
    concurrency: int | None = None,
) -> JobResult:
    """Judge every planned call not yet stored, on the job engine; return its summary.

    ``pairs`` defaults to :func:`build_pairs` (each generation vs its reference).
    ``limit`` counts items, not pairs: the first N items of each task by position (the
    items a sweep with the same ``limit`` generated), with every pair of those items —
    all models, all samples asked for (None: every item; else a whole number >= 1).
    ``executor="concurrent"`` keeps ``concurrency`` judge calls in flight (the client
    waits out 429 answers' ``Retry-After``, shared by all of them). The result counts
    ``planned``, ``cached`` (already stored), ``done`` (parsed verdicts) and ``failed``
    (rows written with an error, retried on the next run).
    """
    check_limit(limit)
    if mode not in MODES:
        raise SlamkitError(f"Unknown judge mode {mode!r}: use one of {', '.join(MODES)}.")
    runner = engine.make_executor(executor, concurrency)
    if pairs is None:
        pairs = build_pairs(store, task_id, source_model, sample_index, model_ids)
    if limit is not None:
        pairs = first_items(store, pairs, limit)
    plan = plan_judgments(pairs, config, mode, criteria, rubric, rubric_with_reference)
    ids = [c["judgment_id"] for c in plan]
    stored = jobs.stored_judgments(store, ids)
    ok = set(stored.loc[stored.error.isna(), "judgment_id"])
    failed_before = set(stored.loc[stored.error.notna(), "judgment_id"])
    todo = [c for c in plan if c["judgment_id"] not in ok]
    if not retry_failed:
        todo = [c for c in todo if c["judgment_id"] not in failed_before]
    groups = []
    if todo:
        texts = _texts(store, pairs)
        item_prompts = _prompts(store, pairs)

        def call(client: JudgeClient, batch: list[_JudgeCell]) -> list[dict[str, Any]]:
            return [_judge_one(client, config, c.call, texts, item_prompts) for c in batch]

        def fail(cell: _JudgeCell, exc: BaseException, stage: str) -> dict[str, Any]:
            return _failed_row(config, cell.call, exc)

        cells = [_JudgeCell(c["judgment_id"], c) for c in todo]
        groups.append(engine.Group(config.model, cells, lambda _: JudgeClient(config), call, fail))
    spec = engine.JobSpec(
        "judge", "judgments", "judgment_id", f"judge {config.model} ({mode})", unit="call",
        run={
            "params": {
                **config.settings(), "endpoint": config.endpoint, "mode": mode,
                "limit": limit, "timeout_s": config.timeout_s,
            },
            "seed": config.seed,
        },
    )  # fmt: skip
    return engine.run(
        store, spec, groups, runner, planned=len(plan), cached=len(plan) - len(todo),
        progress=progress,
    )  # fmt: skip


def _row_ids(config: JudgeConfig, call: dict[str, Any]) -> dict[str, Any]:
    return {
        "judgment_id": call["judgment_id"],
        "judge_model": config.model,
        "judge_endpoint": config.endpoint,
        "mode": call["mode"],
        "criterion": call["criterion"],
        "task_id": call["task_id"],
        "item_id": call["item_id"],
        "a_kind": call["a_kind"],
        "a_id": call["a_id"],
        "b_kind": call["b_kind"],
        "b_id": call["b_id"],
        "order_swapped": call["order_swapped"],
    }


def _failed_row(config: JudgeConfig, call: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """The row of a call the judge client could not even make (e.g. no API key)."""
    import os

    from slamkit.backends.llamacpp import one_line
    from slamkit.secrets import scrub, secret_values

    secrets = secret_values(os.environ.get(config.api_key_env))
    detail = one_line(scrub(f"{type(exc).__name__}: {exc}", secrets), 300)
    return {
        **_row_ids(config, call),
        "error": f"judge {config.model} at {config.endpoint}: {detail}",
        "params": config.settings(),
    }


def _judge_one(
    client: JudgeClient,
    config: JudgeConfig,
    call: dict[str, Any],
    texts: dict[tuple[str, str], str],
    item_prompts: dict[tuple[str, str], str],
) -> dict[str, Any]:
    prompt = item_prompts.get((call["task_id"], call["item_id"]), "")
    a = texts.get((call["a_kind"], call["a_id"]))
    b = texts.get((call["b_kind"], call["b_id"])) if call["b_kind"] else None
    schema = call["schema"]
    if call["mode"] == "rubric":
        messages = prompts.rubric_messages(prompt, a or "", call["rubric"], schema, b)
    else:
        messages = prompts.pairwise_messages(prompt, a or "", b or "", call["criterion"], schema)
    if a is None or (call["b_kind"] and b is None):
        res = CallResult(error="a text to judge is missing from the store")
    else:
        res = client.call(messages, schema)
    verdict, score, reasoning = None, None, None
    if res.parsed is not None:
        reasoning = res.parsed.get("reasoning")
        if call["mode"] == "rubric":
            score = float(res.parsed["score"])
            verdict = str(res.parsed["score"])
        else:
            verdict = res.parsed["verdict"]
    raw = {
        "messages": messages,
        "response": res.content,
        "finish_reason": res.finish_reason,
        "retries": [client.scrub(e) for e in res.errors],
    }
    if reasoning is not None:
        reasoning = client.scrub(str(reasoning), patterns=False)
    params = {
        **config.settings(),
        "response_format": res.response_format,
        "prompt": call["prompt_fp"],
        "prompt_version": prompts.PROMPT_VERSION,
    }
    return {
        **_row_ids(config, call),
        "verdict": verdict,
        "score": score,
        "reasoning": reasoning,
        "raw": client.scrub(json.dumps(raw, ensure_ascii=False), patterns=False),
        "prompt_tokens": res.prompt_tokens,
        "completion_tokens": res.completion_tokens,
        "latency_s": res.latency_s,
        "attempts": res.attempts,
        "error": client.scrub(res.error) if res.error else None,
        "params": params,
    }


def judge_endpoint(
    store: Store,
    base_url: str | None,
    model: str | None,
    max_tokens: int = 256,
    task_id: str | None = None,
    source_model: str | None = None,
    limit: int | None = None,
) -> JobResult | str:
    """Run the pairwise judge served by ``model`` at the OpenAI-compatible ``base_url``
    (the key is read from ``OPENAI_API_KEY``); nothing when either is unset."""
    if not (base_url and model):
        return "no judge endpoint set (judge_base_url / judge_model): skipped"
    config = JudgeConfig(base_url=base_url, model=model, max_tokens=max_tokens)
    return run_judge(
        store, config, task_id=task_id, source_model=source_model, limit=limit, progress=False
    )
