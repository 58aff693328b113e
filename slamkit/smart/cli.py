"""``slamkit simulate`` and ``slamkit smart``: thin wrappers over slamkit.smart."""

from __future__ import annotations

import argparse
import json
from typing import Any

from slamkit.errors import SlamkitError

# The simulator's arguments come from a stdlib-only module, so building the CLI parser does
# not import scipy; slamkit.smart.simulate itself is imported only when the command runs.
from slamkit.smart.simulate_args import (
    PROBABILITY,
    SEED,
    SIM_SETTINGS,
    add_simulate_arguments,
    number,
)

__all__ = ["SIM_SETTINGS", "add_parser", "add_simulate_arguments"]


def _cmd_simulate(args: argparse.Namespace) -> int:
    from slamkit.smart import simulate

    return simulate.run(args)


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "simulate",
        help="SMART / ModelMix / anytime-valid savings and violation rates by simulation",
        description="Bernoulli simulation of the SMART paper's settings (see "
        "slamkit/smart/simulate.py); prints the table and writes OUT.csv / OUT.md.",
    )
    add_simulate_arguments(s)
    s.set_defaults(func=_cmd_simulate)

    m = sub.add_parser(
        "smart",
        help="choose the cheapest model (or mix) that agrees with the reference, with a guarantee",
        description="Run SMART on the stored generations of a task and record the choice in "
        "the selections table.",
    )
    m.add_argument("--task", default="alpaca_eval", help="task id (default alpaca_eval)")
    m.add_argument("--reference", default="gpt4_1106_preview", help="reference source_model")
    m.add_argument(
        "--equivalence", default="embedding",
        choices=["exact", "normalized", "label", "embedding", "judge"],
        help="conformity function (default: embedding similarity >= --tau)",
    )  # fmt: skip
    m.add_argument("--pattern", default=r"(\w+)", help="regex for --equivalence label")
    m.add_argument(
        "--tau", type=number(-1, 1, note="a cosine similarity"), default=0.8,
        help="threshold for embedding similarity, in [-1, 1] (default 0.8)",
    )  # fmt: skip
    m.add_argument(
        "--metric",
        default="embed_cosine",
        help="stored score holding the similarity (for --equivalence embedding; a unique "
        "'embed_cosine:<embedder>' matches 'embed_cosine')",
    )
    m.add_argument(
        "--accept",
        nargs="*",
        default=["win", "tie"],
        help="judge outcomes that count as equivalent",
    )
    m.add_argument("--judge-model", help="stored judge to read (for --equivalence judge)")
    m.add_argument(
        "--delta", type=PROBABILITY, default=0.1,
        help="allowed disagreement, in (0, 1) (default 0.1)",
    )  # fmt: skip
    m.add_argument("--gamma", type=PROBABILITY, default=0.95, help="confidence, in (0, 1) (0.95)")
    m.add_argument(
        "--method", default="anytime", choices=["smart", "smart-mix", "anytime", "anytime-mix"]
    )
    m.add_argument("--models", nargs="*", help="candidate model names (default: all generated)")
    m.add_argument(
        "--cost",
        action="append",
        default=[],
        metavar="MODEL=USD",
        help="cost per item of a model (else the cost model prices it)",
    )
    m.add_argument(
        "--reference-price",
        help="price-table row of the reference (default: "
        "derived from its name, e.g. gpt-4-1106-preview)",
    )
    m.add_argument("--instance", default="aws-c7i.large", help="instance row for self-hosted")
    m.add_argument(
        "--utilization", type=number(0, 1, lo_open=True), default=0.5,
        help="share of the instance's time serving requests, in (0, 1] (default 0.5)",
    )  # fmt: skip
    m.add_argument("--seed", type=SEED, default=0, help=">= 0 (default 0)")
    m.add_argument("--json", action="store_true", help="print the full selection as JSON")
    m.set_defaults(func=_cmd_smart)


def _equivalence(args: argparse.Namespace) -> Any:
    from slamkit.smart.equivalence import get_equivalence

    if args.equivalence == "label":
        return get_equivalence("label", pattern=args.pattern)
    if args.equivalence == "embedding":
        return get_equivalence("embedding", tau=args.tau, column=args.metric)
    if args.equivalence == "judge":
        return get_equivalence("judge", accept=tuple(args.accept), judge_model=args.judge_model)
    return get_equivalence(args.equivalence)


def _costs(pairs: list[str]) -> dict[str, float] | None:
    out = {}
    for p in pairs:
        name, sep, value = p.rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise SlamkitError(f"--cost {p!r}: write MODEL=USD, e.g. --cost gpt-4=0.027")
    return out or None


def _cmd_smart(args: argparse.Namespace) -> int:
    from slamkit.smart.select import jsonable
    from slamkit.smart.stored import smart_from_store
    from slamkit.store import open_store

    with open_store(args.store) as st:
        sel = smart_from_store(
            st, args.task, args.reference, _equivalence(args), args.delta, args.gamma,
            cost_per_item=_costs(args.cost), method=args.method, models=args.models,
            seed=args.seed, reference_price=args.reference_price, instance=args.instance,
            utilization=args.utilization,
        )  # fmt: skip
    if args.json:
        print(json.dumps(jsonable(sel.row()), indent=2))
        return 0
    print(sel.guarantee)
    print("choice:", ", ".join(f"{m} {r:.1%}" for m, r in sel.choice.items()))
    print(
        f"profiled {sel.n_profiled} of {sel.n_items} items; expected cost "
        f"${sel.expected_cost:.4f} vs ${sel.reference_cost:.4f} with the reference only "
        f"({sel.saving:.2f}x); saved as selection {sel.details.get('selection_id')}"
    )
    return 0
