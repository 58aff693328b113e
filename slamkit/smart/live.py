"""SMART on live models: profiling calls ``generate(model, item)`` item by item and stops
as soon as the decision is made, so generations that are not needed are never paid for.

``generate`` returns the output text, or a dict ``{"text": ..., "cost": ...}`` when the
caller knows the call's cost. Or pass ``cost(model, output) -> USD``, e.g. a self-hosted
model priced by the cost model from the call's measured latency::

    from slamkit.cost import self_hosted_cost_per_request
    cost = lambda m, out: (self_hosted_cost_per_request(0.089, out["latency_s"], 0.5)
                           if m != "gpt-4" else out["cost"])

Otherwise ``prices[model]`` is the cost of one call. ``prices`` also orders the
candidates (cheapest first) before anything is measured.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, cast

from slamkit.errors import SlamkitError
from slamkit.smart.equivalence import Equivalence
from slamkit.smart.profile import profile
from slamkit.smart.select import Selection, choose, profile_options

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
    cost: Callable[[str, Any], float] | None = None,
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
        text = out.get("text") if isinstance(out, Mapping) else out
        if cost is not None:
            return text, float(cost(model, out))
        if isinstance(out, Mapping):
            return text, float(out.get("cost", prices[model]))
        return text, float(prices[model])

    def run_reference(idx: Hashable) -> float:
        i = cast(int, idx)
        text, c = call(reference, i)
        ref_text[i] = text
        return c

    def judge(model: str, idx: Hashable) -> tuple[bool, float]:
        i = cast(int, idx)
        text, c = call(model, i)
        return bool(equivalence(text, ref_text[i])), c

    res = profile(
        order, list(candidates), prices, run_reference, judge, delta,
        reference=reference, batch=batch, early_stop=early_stop,
        **profile_options(method, gamma, len(candidates), delta, len(items), batch),
    )  # fmt: skip
    res.profiled_items = [item_key(items[cast(int, i)]) for i in res.profiled_items]
    sel = choose(res, method, gamma)
    sel.details["equivalence"] = equivalence.spec()
    return sel


def backend_generate(
    backends: Mapping[str, Any],
    prompt: Callable[[Any], str] = str,
    sampling: Any = None,
    seed: int = 0,
    system: str | None = None,
) -> Generate:
    """A ``generate(model, item)`` over slamkit backends (llama.cpp, OpenAI-compatible, mock).

    ``backends`` maps a model name to an open backend; ``prompt(item)`` is the user message.
    Returns dicts with text, prompt/completion tokens and latency_s, ready for :func:`priced`.
    """
    from slamkit.backends.base import Sampling

    samp = sampling or Sampling()

    def generate(model: str, item: Any) -> dict[str, Any]:
        if model not in backends:
            raise SlamkitError(f"No backend for model {model!r}: pass backends[{model!r}].")
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt(item)})
        r = backends[model].generate(messages, samp, seed)
        return {
            "text": r.text, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "latency_s": r.latency_s,
        }  # fmt: skip

    return generate


def priced(
    api: Mapping[str, tuple[float, float]] | None = None,
    hourly: Mapping[str, float] | None = None,
    utilization: float = 0.5,
) -> Callable[[str, Any], float]:
    """A ``cost(model, output)`` callback from the cost model: API models by their usage and
    (input, output) USD per 1K tokens; self-hosted models by measured latency and USD/hour."""
    from slamkit.cost import api_cost_per_request, self_hosted_cost_per_request

    api, hourly = dict(api or {}), dict(hourly or {})

    def cost(model: str, out: Any) -> float:
        if model in api:
            pin, pout = api[model]
            return api_cost_per_request(
                out.get("prompt_tokens") or 0, out.get("completion_tokens") or 0, pin, pout
            )
        if model in hourly:
            return self_hosted_cost_per_request(hourly[model], out["latency_s"], utilization)
        raise SlamkitError(f"No price for {model!r}: add it to api=... or hourly=....")

    return cost
