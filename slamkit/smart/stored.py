"""SMART on stored generations: read generations + reference outputs, choose, record.

Conformity of a candidate on an item = the equivalence function applied to its first
stored sample (lowest sample_index) and the reference's first sample. A missing or failed
generation counts as *not* conforming (conservative). Unit costs: ``cost_per_item[model]``
when given, else the cost model (:mod:`slamkit.cost`): the reference is priced from its
stored token usage (or offline token counts) and the dated API price table; a self-hosted
candidate from each generation's measured latency on the chosen instance.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from slamkit import cost as costmod
from slamkit.errors import SlamkitError
from slamkit.keys import content_key
from slamkit.smart.equivalence import EmbeddingSimilarity, Equivalence, JudgeVerdict
from slamkit.smart.profile import profile
from slamkit.smart.select import METHODS, Selection, choose, profile_options
from slamkit.store import readers


def _reference(store: Any, task_id: str, reference_model: str) -> pd.DataFrame:
    return readers.first_references(store, task_id, reference_model)


def _generations(
    store: Any, task_id: str, models: Sequence[str] | None, with_text: bool = True
) -> pd.DataFrame:
    gens = readers.first_generations(store, task_id, with_text=with_text)
    if models:
        gens = gens[gens["model"].isin(models) | gens["model_id"].isin(models)]
    if gens.empty:
        raise SlamkitError(
            f"No generations for task {task_id!r}"
            + (f" from models {list(models)}" if models else "")
            + f" in {store.path}. Run `slamkit run` (or the generate notebook) first."
        )
    return gens


def _judge_outcomes(store: Any, gen_keys: Sequence[str], judge_model: str | None) -> pd.Series:
    """Per generation: 'win' | 'tie' | 'loss' against the reference, both orders combined by
    :func:`slamkit.judge.analysis.pairwise_outcomes` (a verdict that flips with the order is a
    tie; a pair judged in one order only has no outcome yet)."""
    from slamkit.judge.analysis import pairwise_outcomes

    out = pairwise_outcomes(readers.judgments(store, judge_model))
    out = out[(out["mode"] == "pairwise") & (out["criterion"] == "overall")]
    out = out[(out["candidate_kind"] == "generation") & (out["other_kind"] == "reference")]
    out = out[out["candidate_id"].isin(list(gen_keys))]
    judges = sorted(out["judge_model"].dropna().unique())
    if len(judges) > 1:
        raise SlamkitError(
            f"Judgments from several judges ({', '.join(judges)}): pick one with "
            "JudgeVerdict(judge_model=...) or --judge-model."
        )
    names = {"candidate": "win", "other": "loss", "tie": "tie"}
    return out.set_index("candidate_id")["outcome"].map(names)


def _metric_name(store: Any, name: str) -> str:
    """``name`` itself, or the one stored metric called ``name:<label>`` (e.g. the
    embedder's file name in ``embed_cosine:SmolLM2-135M-Instruct.Q4_1``)."""
    names = readers.metric_names(store, name)
    if name in names:
        return name
    if len(names) == 1:
        return str(names[0])
    if not names:
        raise SlamkitError(
            f"No scores named {name!r} in {store.path}: run `slamkit score` with the "
            "embedding metric first, or name a stored metric (EmbeddingSimilarity(column=...))."
        )
    raise SlamkitError(
        f"Several stored metrics match {name!r}: {', '.join(sorted(names))}. Name one exactly."
    )


def conformity_frame(
    store: Any,
    task_id: str,
    reference_model: str,
    equivalence: Equivalence,
    models: Sequence[str] | None = None,
    all_items: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference rows, one row per (model, item) with ``conforms``).

    The items are those with a reference output and a generation from at least one
    candidate (``all_items=True``: every item with a reference output).
    """
    ref = _reference(store, task_id, reference_model)
    # an equivalence over stored scores or verdicts needs no text: read none
    stored = (isinstance(equivalence, EmbeddingSimilarity) and equivalence.embed is None) or (
        isinstance(equivalence, JudgeVerdict) and equivalence.judge is None
    )
    gens = _generations(store, task_id, models, with_text=not stored)
    gens = gens[gens["item_id"].isin(ref["item_id"])]
    if not all_items:
        ref = ref[ref["item_id"].isin(gens["item_id"])].reset_index(drop=True)
    grid = pd.MultiIndex.from_product(
        [sorted(gens["model"].unique()), ref["item_id"]], names=["model", "item_id"]
    ).to_frame(index=False)
    df = grid.merge(gens, on=["model", "item_id"], how="left").merge(
        ref[["item_id", "ref_text"]], on="item_id", how="left"
    )
    if isinstance(equivalence, EmbeddingSimilarity) and equivalence.embed is None:
        metric = _metric_name(store, equivalence.column)
        sc = readers.latest_scores(store, metric)
        df = df.merge(sc.rename(columns={"value": equivalence.column}), on="gen_key", how="left")
    if isinstance(equivalence, JudgeVerdict) and equivalence.judge is None:
        out = _judge_outcomes(store, df["gen_key"].dropna().tolist(), equivalence.judge_model)
        if out.empty:
            raise SlamkitError(
                f"No pairwise judgments of task {task_id!r} generations against the reference in "
                f"{store.path}: run the judge first, or use another equivalence."
            )
        df[equivalence.column] = df["gen_key"].map(out)
    ok = (df["text"].notna() if "text" in df else df["gen_key"].notna()) & df["error"].isna()
    df["conforms"] = False
    if ok.any():
        df.loc[ok, "conforms"] = equivalence.frame(df[ok]).to_numpy()
    return ref, df


def _costs(
    ref: pd.DataFrame,
    df: pd.DataFrame,
    cost_per_item: Mapping[str, float] | None,
    reference_model: str,
    reference_price: str | None,
    instance: str,
    utilization: float,
    prices: pd.DataFrame | None,
    capacity: Mapping[str, tuple[float, str]] | None = None,
) -> tuple[pd.Series, pd.Series, dict[str, Any]]:
    """Per-item cost of the reference (by item) and of each generation (by row of df).
    ``capacity``: model -> (requests/hour at the latency target, basis) from load tests."""
    cpi = dict(cost_per_item or {})
    info: dict[str, Any] = {}
    if reference_model in cpi:
        ref_cost = pd.Series(float(cpi[reference_model]), index=ref["item_id"])
        info["reference"] = {"cost_per_item": float(cpi[reference_model])}
    else:
        prices = costmod.load_prices() if prices is None else prices
        name = reference_price or costmod.price_name_for(reference_model)
        pr = costmod.api_price(prices, name)
        tin = ref["prompt_tokens"].astype(float)
        tout = ref["completion_tokens"].astype(float)
        if tin.isna().any():
            counted = costmod.count_tokens(ref["prompt"].where(ref["prompt"].notna(), ""))
            tin = tin.fillna(pd.Series(counted, index=ref.index).astype(float) + 7)
        if tout.isna().any():
            tout = tout.fillna(pd.Series(costmod.count_tokens(ref["ref_text"]), index=ref.index))
        p_in, p_out = float(pr["input_per_1k_usd"]), float(pr["output_per_1k_usd"])
        c = pd.Series(
            [
                costmod.api_cost_per_request(a, b, p_in, p_out)
                for a, b in zip(tin, tout, strict=True)
            ]
        )
        ref_cost = pd.Series(c.to_numpy(), index=ref["item_id"])
        info["reference"] = {
            "price_name": name, "price_date": pr["date"].date().isoformat(),
            "input_per_1k_usd": float(pr["input_per_1k_usd"]),
            "output_per_1k_usd": float(pr["output_per_1k_usd"]),
            "mean_tokens_in": float(tin.mean()), "mean_tokens_out": float(tout.mean()),
        }  # fmt: skip
    gen_cost = pd.Series(np.nan, index=df.index)
    for model, rows in df.groupby("model"):
        if model in cpi:
            gen_cost[rows.index] = float(cpi[str(model)])
            info[str(model)] = {"cost_per_item": float(cpi[str(model)])}
            continue
        prices = costmod.load_prices() if prices is None else prices
        hourly = float(costmod.instance_price(prices, instance)["hourly_usd"])
        lat = rows["latency_s"].astype(float)
        fallback = lat.mean() if lat.notna().any() else np.nan
        if np.isnan(fallback):
            raise SlamkitError(
                f"Model {model!r} has no measured latency_s, so the cost model cannot price it: "
                "pass cost_per_item={...} for it."
            )
        lat = lat.fillna(fallback)
        cap_rph, cap_basis = (capacity or {}).get(str(model), (np.nan, ""))
        rph = float(cap_rph)
        if rph > 0:  # a load test's capacity at the latency target prices it
            gen_cost[rows.index] = hourly / (rph * utilization)
        else:
            gen_cost[rows.index] = [
                costmod.self_hosted_cost_per_request(hourly, t, utilization) for t in lat
            ]
        info[str(model)] = {
            "instance": instance, "hourly_usd": hourly, "utilization": utilization,
            "mean_latency_s": float(lat.mean()),
            "throughput_basis": cap_basis if rph > 0 else costmod.SEQUENTIAL_BASIS,
        }  # fmt: skip
    return ref_cost, gen_cost, info


def smart_from_store(
    store: Any,
    task_id: str,
    reference_model: str,
    equivalence: Equivalence,
    delta: float,
    gamma: float = 0.95,
    cost_per_item: Mapping[str, float] | None = None,
    method: str = "anytime",
    models: Sequence[str] | None = None,
    seed: int = 0,
    batch: int = 10,
    reference_price: str | None = None,
    instance: str = "aws-c7i.large",
    utilization: float = 0.5,
    prices: pd.DataFrame | None = None,
    save: bool = True,
    all_items: bool = False,
) -> Selection:
    """Run SMART (``method``: smart | smart-mix | anytime) on stored generations of a task.

    N is the number of items with a reference output and at least one candidate generation
    (``all_items=True``: every item with a reference output; candidates' missing items then
    count as not conforming). Returns the :class:`Selection` (choice + guarantee) and, with
    ``save``, inserts it into the ``selections`` table (idempotent: the id hashes every input).
    """
    if method not in METHODS:
        raise SlamkitError(f"Unknown SMART method {method!r}: use one of {', '.join(METHODS)}.")
    ref, df = conformity_frame(store, task_id, reference_model, equivalence, models, all_items)
    from slamkit import serving

    cap = serving.capacity_frame(store, task_id)
    capacity = {
        str(m): (float(r), str(b))
        for m, r, b in zip(cap["model"], cap["requests_per_hour"], cap["basis"], strict=True)
    }
    ref_cost, gen_cost, cost_info = _costs(
        ref,
        df,
        cost_per_item,
        reference_model,
        reference_price,
        instance,
        utilization,
        prices,
        capacity,
    )
    df["cost"] = gen_cost
    candidates = sorted(df["model"].unique())
    conform = {(r.model, r.item_id): (bool(r.conforms), float(r.cost)) for r in df.itertuples()}
    prior = {m: float(df.loc[df["model"] == m, "cost"].mean()) for m in candidates}
    items = list(ref["item_id"])
    random.Random(seed).shuffle(items)
    res = profile(
        items, candidates, prior, lambda i: float(ref_cost[i]), lambda m, i: conform[(m, i)],
        delta, reference=reference_model, batch=batch,
        **profile_options(method, gamma, len(candidates), delta, len(items), batch),
    )  # fmt: skip
    sel = choose(res, method, gamma)
    sel.details.update(
        {"equivalence": equivalence.spec(), "costs": cost_info, "seed": seed,
         "conformity_all_items": df.groupby("model")["conforms"].mean().to_dict()}
    )  # fmt: skip
    if save:
        sid = content_key(
            "selection", task=task_id, ref=reference_model, eq=equivalence.spec(), delta=delta,
            gamma=gamma, method=method, seed=seed, batch=batch, models=candidates,
            costs=cost_info, n=len(items),
        )  # fmt: skip
        sel.details["selection_id"] = sid
        store.insert(
            "selections",
            sel.row(
                selection_id=sid, task_id=task_id, reference_model=reference_model,
                equivalence=equivalence.spec(),
            ),
        )  # fmt: skip
    return sel
