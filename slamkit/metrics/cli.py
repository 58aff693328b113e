"""``slamkit score``: score stored generations (thin wrapper over score_generations)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("score", help="score generations against references + constraints")
    s.add_argument(
        "--metrics", nargs="+", metavar="SPEC",
        help="metric specs (default: rougeL bleu chrf exact_match normalized_match "
        "length_ratio embed_cosine max_sentences:4); e.g. word_limit:-120, json_valid",
    )  # fmt: skip
    s.add_argument("--task", help="only this task id")
    s.add_argument("--source-model", help="reference source_model to score against "
                   "(default: the task's only reference model)")  # fmt: skip
    s.add_argument("--regex-must", action="append", default=[], metavar="PATTERN")
    s.add_argument("--regex-must-not", action="append", default=[], metavar="PATTERN")
    s.add_argument("--banned", action="append", default=[], metavar="PHRASE")
    s.add_argument("--json-schema", metavar="FILE", help="JSON schema file outputs must match")
    s.add_argument(
        "--load", action="store_true",
        help="also score the answers made under load by `slamkit load`",
    )  # fmt: skip
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    from slamkit.smart.simulate_args import add_executor_arguments

    add_executor_arguments(s)
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from slamkit.metrics import DEFAULT_METRICS, get_metric, load_json_schema, parse_metric_specs
    from slamkit.metrics.score import load_scores, pass_rates, score_generations, summarize_scores
    from slamkit.smart.simulate_args import executor_from_args
    from slamkit.store import open_store

    specs: list = list(args.metrics or DEFAULT_METRICS)
    specs += [get_metric("regex_must", pattern=p) for p in args.regex_must]
    specs += [get_metric("regex_must_not", pattern=p) for p in args.regex_must_not]
    if args.banned:
        specs.append(get_metric("banned_phrases", phrases=args.banned))
    if args.json_schema:
        specs.append(get_metric("json_schema", schema=load_json_schema(args.json_schema)))
    parse_metric_specs(specs)  # every spec checked before the store is opened
    with open_store(args.store) as st:
        counts = score_generations(
            st, specs, task_id=args.task, source_model=args.source_model,
            progress=not args.quiet, executor=executor_from_args(args), load=args.load,
        )  # fmt: skip
        scores = load_scores(st, args.task, args.source_model)
    print("computed: " + ", ".join(f"{k}={v}" for k, v in counts.by_label.items()))
    if counts.failed:
        print(counts)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        if not scores.empty:
            print(summarize_scores(scores).to_string(index=False, float_format=_fmt))
        rates = pass_rates(scores)
        if not rates.empty:
            print("\nconstraint pass rates")
            print(rates.to_string(index=False, float_format=_fmt))
    for m in specs:
        if not isinstance(m, str):
            m.close()
    return 0


def _fmt(x: float) -> str:
    """Plain three-decimal floats (no scientific notation) for the summary tables."""
    return f"{x:.3f}"
