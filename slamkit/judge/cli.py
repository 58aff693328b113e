"""``slamkit judge``: LLM-as-judge over stored generations (thin wrapper over run_judge)."""

from __future__ import annotations

import argparse

from slamkit.smart.simulate_args import (
    LIMIT,
    add_executor_arguments,
    executor_from_args,
    number,
    whole,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("judge", help="LLM judge via any OpenAI-compatible endpoint")
    j.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    j.add_argument("--model", required=True, help="judge model name sent to the endpoint")
    j.add_argument("--mode", choices=["pairwise", "criteria", "rubric"], default="pairwise")
    j.add_argument("--criteria", default="clarity,helpfulness,trustworthiness,overall",
                   help="comma-separated (mode criteria)")  # fmt: skip
    j.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the key (never stored)")  # fmt: skip
    j.add_argument("--task", help="only this task id")
    j.add_argument("--source-model", help="reference source_model "
                   "(default: the task's only reference model)")  # fmt: skip
    j.add_argument("--model-id", action="append", help="only these candidate model ids")
    j.add_argument("--all-samples", action="store_true", help="judge every sample, not only 0")
    j.add_argument(
        "--limit", type=LIMIT,
        help="the first N items of each task by position, with every pair of those items "
        "(all models; default: every item)",
    )  # fmt: skip
    j.add_argument("--max-tokens", type=whole(1), default=512, help=">= 1 (default 512)")
    j.add_argument("--temperature", type=number(0, 2), default=0.0, help="0 to 2 (default 0)")
    j.add_argument(
        "--timeout", type=number(0, lo_open=True, note="seconds"), default=60.0,
        help="seconds per request (default 60)",
    )  # fmt: skip
    j.add_argument(
        "--max-attempts", type=whole(1), default=4,
        help="tries per call on 429, 5xx, timeouts, connection errors (default 4)",
    )  # fmt: skip
    j.add_argument(
        "--max-total", type=number(0, lo_open=True, note="seconds"),
        help="seconds one call may take with all its attempts and waits (default: twice "
        "--timeout, at least 120): a hanging judge costs at most this per call, and a "
        "pairwise pair is two calls",
    )  # fmt: skip
    j.add_argument(
        "--response-format",
        default="auto",
        choices=["auto", "json_schema", "json_object_schema", "json_object", "none"],
    )
    j.add_argument("--no-reasoning", action="store_true", help="ask for the verdict only")
    add_executor_arguments(j)
    j.add_argument("--quiet", action="store_true")
    j.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from slamkit.judge import (
        JudgeConfig,
        load_judgments,
        pairwise_outcomes,
        position_bias,
        run_judge,
    )
    from slamkit.store import open_store

    cfg = JudgeConfig(
        base_url=args.base_url, model=args.model, api_key_env=args.api_key_env,
        temperature=args.temperature, max_tokens=args.max_tokens, timeout_s=args.timeout,
        max_attempts=args.max_attempts, max_total_s=args.max_total,
        response_format=args.response_format,
        reasoning=not args.no_reasoning,
    )  # fmt: skip
    with open_store(args.store) as st:
        counts = run_judge(
            st, cfg, mode=args.mode, task_id=args.task, source_model=args.source_model,
            sample_index=None if args.all_samples else 0, model_ids=args.model_id,
            criteria=[c.strip() for c in args.criteria.split(",") if c.strip()],
            limit=args.limit, progress=not args.quiet, executor=executor_from_args(args),
        )  # fmt: skip
        bias = position_bias(pairwise_outcomes(load_judgments(st, args.model)))
    print(counts)
    if not bias.empty:
        print("position bias (share of pairs whose winner flips with the order):")
        print(bias.to_string(index=False))
    return 1 if counts.failed else 0
