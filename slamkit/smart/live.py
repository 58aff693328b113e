"""SMART on live models: profiling calls ``generate(model, item)`` item by item and stops
as soon as the decision is made, so generations that are not needed are never paid for.

``generate`` returns the output text, or a dict ``{"text": ..., "cost": ...}`` when the
caller knows the call's cost (e.g. from usage and the price table, or latency and the
self-hosted cost model). Otherwise ``prices[model]`` is the cost of one call.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from slamkit.errors import SlamkitError
from slamkit.smart.equivalence import Equivalence
from slamkit.smart.profile import profile
from slamkit.smart.select import Selection, bounds_for, choose

Generate = Callable[[str, Any], Any]


def smart_live(
    items: Sequence[Any],
    candidates: Sequence[str],
    reference: str,
    generate: Generate,
    equivalence: Equivalence,
    prices: Mapping[str, float],
    delta: float,
    gamma: float = 0.95,
    method: str = "anytime",
    seed: int = 0,
    batch: int = 10,
    early_stop: bool = True,
    item_key: Callable[[Any], Hashable] = lambda x: x,
) -> Selection:
    """Profile ``candidates`` live against ``reference`` and choose; no store involved.

    ``items`` are passed to ``generate`` as they are; ``item_key`` names them in the result.
    """
    if reference not in prices:
        raise SlamkitError(f"No price for the reference {reference!r}: pass prices[reference].")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    ref_text: dict[int, str | None] = {}

    def call(model: str, idx: int) -> tuple[str | None, float]:
        out = generate(model, items[idx])
        if isinstance(out, Mapping):
            return out.get("text"), float(out.get("cost", prices[model]))
        return out, float(prices[model])

    def run_reference(idx: Hashable) -> float:
        text, cost = call(reference, int(idx))  # type: ignore[arg-type]
        ref_text[int(idx)] = text  # type: ignore[arg-type]
        return cost

    def judge(model: str, idx: Hashable) -> tuple[bool, float]:
        text, cost = call(model, int(idx))  # type: ignore[arg-type]
        return bool(equivalence(text, ref_text[int(idx)])), cost  # type: ignore[arg-type]

    res = profile(
        order, list(candidates), prices, run_reference, judge, delta,
        bounds_for(method, gamma, len(candidates), delta), reference=reference, batch=batch,
        early_stop=early_stop,
    )  # fmt: skip
    res.profiled_items = [item_key(items[int(i)]) for i in res.profiled_items]  # type: ignore[arg-type]
    sel = choose(res, method, gamma)
    sel.details["equivalence"] = equivalence.spec()
    return sel
