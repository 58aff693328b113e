"""``slamkit load``: a serving load test, a thin wrapper over :func:`slamkit.load.run_load`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from slamkit.backends.llamacpp import CHAT_FORMATS
from slamkit.errors import SlamkitError
from slamkit.smart.simulate_args import LIMIT, SEED, number, whole

SECONDS = number(0, lo_open=True, note="seconds")


def add_parser(sub: Any) -> None:
    g = sub.add_parser(
        "load",
        help="serving load test: latency percentiles vs offered load, the knee, capacity",
        description="Send a task's prompts to one endpoint at rising load — a closed-loop "
        "concurrency sweep (1, 2, 4, ... until past the knee) and optional open-loop Poisson "
        "rates — store every request, and print the knee table and the capacity at the "
        "latency target. Default endpoint: a managed llama.cpp server for the first default "
        "model. Bounded: --requests per point, --max-point-s, --max-total-s, --timeout.",
    )
    g.add_argument("--task", default="alpaca_eval", help="task id in the store")
    g.add_argument("--model", help="GGUF path or registered model name (default: SmolLM2 Q4_1)")
    g.add_argument(
        "--endpoint", metavar="MODEL",
        help="load-test a model behind an OpenAI-compatible endpoint instead (with --base-url; "
        "without it: OpenAI, e.g. --endpoint gpt-4, which needs the key in --api-key-env)",
    )  # fmt: skip
    g.add_argument("--base-url", help="the endpoint of --endpoint (default: OpenAI)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the key")
    g.add_argument("--limit", type=LIMIT, help="first N items' prompts (default: all)")
    g.add_argument("--seed", type=SEED, default=0, help="seed, >= 0 (default 0)")
    g.add_argument("--temperature", type=number(0, 2), default=0.0, help="0 to 2 (default 0)")
    g.add_argument("--top-p", type=number(0, 1, lo_open=True), default=1.0, help="(0, 1]")
    g.add_argument("--max-tokens", type=whole(1), default=128, help=">= 1 (default 128)")
    g.add_argument(
        "--concurrency", type=whole(1), action="append",
        help="closed-loop level (repeatable; default 1, 2, 4, ... up to --max-concurrency, "
        "stopping past the knee)",
    )  # fmt: skip
    g.add_argument("--max-concurrency", type=whole(1), default=64, help="(default 64)")
    g.add_argument(
        "--no-sweep", action="store_true",
        help="no closed-loop sweep: only the --rate points (open loop)",
    )  # fmt: skip
    g.add_argument(
        "--rate", type=number(0, lo_open=True, note="requests per second"), action="append",
        default=[], help="open-loop Poisson arrival rate in requests/s (repeatable)",
    )  # fmt: skip
    g.add_argument(
        "--requests", type=whole(1),
        help="requests per point (default: max(8, 3 x level) closed, max(8, 10 s x rate) open)",
    )  # fmt: skip
    g.add_argument("--max-point-s", type=SECONDS, default=60.0, help="seconds per point (60)")
    g.add_argument("--max-total-s", type=SECONDS, default=300.0, help="seconds per run (300)")
    g.add_argument("--timeout", type=SECONDS, default=60.0, help="seconds per request (60)")
    g.add_argument("--target-ttft", type=SECONDS, help="target time to first token, seconds")
    g.add_argument("--target-e2e", type=SECONDS, help="target end-to-end latency, seconds")
    g.add_argument(
        "--attainment", type=number(0, 1, lo_open=True), default=0.95,
        help="share of requests that must meet the target (default 0.95)",
    )  # fmt: skip
    g.add_argument(
        "--reference", metavar="SOURCE_MODEL",
        help="the reference whose captured latencies set the default target (default: any)",
    )  # fmt: skip
    g.add_argument("--parallel", type=whole(1), default=2, help="server slots (default 2)")
    g.add_argument("--threads", type=whole(1), help="server threads (default: half the cores)")
    g.add_argument("--gpu-layers", type=whole(-1, "-1 = all layers"), default=0)
    g.add_argument("--n-ctx", type=whole(16), default=2048, help="context per slot (2048)")
    g.add_argument("--server-binary", help="your own llama-server executable (e.g. CUDA)")
    g.add_argument("--chat-format", default="auto", choices=CHAT_FORMATS)
    g.add_argument("--mock", action="store_true", help="dry run against a scripted endpoint")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=_cmd_load)


def _cmd_load(args: argparse.Namespace) -> int:
    from slamkit.backends import Sampling
    from slamkit.load import run_load
    from slamkit.runner import EndpointModel
    from slamkit.store import open_store

    if args.no_sweep and not args.rate:
        raise SlamkitError("--no-sweep leaves no load point: give at least one --rate.")
    if args.no_sweep and args.concurrency:
        raise SlamkitError("--no-sweep and --concurrency contradict each other: pick one.")
    model: Any = args.model
    if args.endpoint:
        model = EndpointModel(args.endpoint, args.base_url, args.api_key_env, args.timeout)
    with open_store(args.store) as st:
        try:
            res = run_load(
                st, args.task, model,
                sampling=Sampling(temperature=args.temperature, top_p=args.top_p,
                                  max_tokens=args.max_tokens),
                seed=args.seed, limit=args.limit,
                concurrency=[] if args.no_sweep else args.concurrency,
                max_concurrency=args.max_concurrency, rates=args.rate,
                requests_per_point=args.requests, max_point_s=args.max_point_s,
                max_total_s=args.max_total_s, timeout_s=args.timeout,
                target_ttft_s=args.target_ttft, target_e2e_s=args.target_e2e,
                attainment=args.attainment, reference_model=args.reference,
                parallel=args.parallel, n_threads=args.threads,
                n_gpu_layers=args.gpu_layers, n_ctx=args.n_ctx,
                server_binary=args.server_binary, chat_format=args.chat_format,
                backend="mock" if args.mock else "llamacpp", progress=not args.quiet,
            )  # fmt: skip
        except KeyboardInterrupt:
            print(
                "slamkit load: interrupted — every request measured before the interrupt is "
                f"stored in {args.store} (the load run is marked interrupted); run again for "
                "a new load run.",
                file=sys.stderr,
            )
            return 130
    print(res)
    if res.requests and not res.ok:
        print("slamkit load: error: no request was answered (see the errors above).",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0
