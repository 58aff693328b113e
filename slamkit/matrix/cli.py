"""``slamkit drift`` / ``speed`` / ``repro`` / ``matrix``: thin wrappers over slamkit.matrix."""

from __future__ import annotations

import argparse
from typing import Any

from slamkit.smart.simulate_args import whole


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("drift", help="quantization drift (KL divergence) of variants vs a base")
    d.add_argument(
        "--model", action="append", metavar="NAME_OR_PATH",
        help="variant(s) to measure (default: each registered variant with a parent)",
    )  # fmt: skip
    d.add_argument("--base", metavar="NAME_OR_PATH",
                   help="the base to compare with (default: each variant's parent)")  # fmt: skip
    d.add_argument("--task", default="alpaca_eval", help="task whose references are the text")
    d.add_argument("--source-model", help="reference source_model (default: any)")
    d.add_argument("--n-items", type=whole(1), default=10, help="first N references (10)")
    d.add_argument("--text-file", metavar="F.txt", help="measure on this UTF-8 text instead")
    d.add_argument("--n-ctx", type=whole(8), default=128, help="tokens per chunk (128)")
    d.add_argument("--chunks", type=whole(1), default=4,
                   help="chunks at most, spread over the text (4)")  # fmt: skip
    d.add_argument("--all-chunks", action="store_true", help="every whole window of the text")
    d.add_argument("--threads", type=whole(1), help="n_threads (default: half the cores)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_drift)

    s = sub.add_parser("speed", help="llama-bench-style prompt/generation tokens/s per model")
    s.add_argument("--model", action="append", metavar="NAME_OR_PATH",
                   help="model(s) to measure (default: every registered GGUF model)")  # fmt: skip
    s.add_argument("--pp", type=whole(1), default=64, help="prompt tokens (64)")
    s.add_argument("--tg", type=whole(1), default=32, help="generated tokens (32)")
    s.add_argument("--reps", type=whole(1), default=3, help="repetitions (3)")
    s.add_argument("--threads", type=whole(1), help="n_threads (default: half the cores)")
    s.add_argument("--gpu-layers", type=whole(-1, "-1 = all layers"), default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_speed)

    r = sub.add_parser("repro", help="re-run stored cells and check they reproduce byte for byte")
    r.add_argument("--cells", type=whole(1), default=3, help="greedy and sampled cells each (3)")
    r.add_argument("-k", type=whole(1), default=1, help="re-runs per configuration (1)")
    r.add_argument("--threads", type=whole(1), nargs="+", default=[1, 2],
                   help="thread counts to re-run with (1 2)")  # fmt: skip
    r.add_argument(
        "--executor", nargs="+", choices=("sequential", "server"), default=["sequential"],
        help="executors to re-run with (sequential)",
    )  # fmt: skip
    r.add_argument("--task", help="only cells of this task")
    r.add_argument("--model", action="append", metavar="NAME", help="only these variants")
    r.add_argument("--seed", type=whole(0), default=0, help="seed of the draw of cells (0)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_repro)

    m = sub.add_parser("matrix", help="the variant matrix: quality, drift, speed, repro")
    m.add_argument("--task", default="alpaca_eval")
    m.add_argument("--n-items", type=whole(1), default=10, help="first N items (10)")
    m.add_argument("--max-tokens", type=whole(1), help="generations of this max_tokens only")
    m.add_argument("--reference-model", default="gpt4_1106_preview")
    m.add_argument("--metric", default="rougeL", help="the quality metric (rougeL)")
    m.add_argument("--drift-n-ctx", type=whole(8), default=128,
                   help="drift rows measured with this n_ctx (128)")  # fmt: skip
    m.add_argument("--drift-chunks", type=whole(1), default=4,
                   help="drift rows measured with this many chunks asked (4)")  # fmt: skip
    m.add_argument("--drift-all-chunks", action="store_true",
                   help="drift rows measured on every window")  # fmt: skip
    m.add_argument("--pp", type=whole(1), default=64, help="speed rows with this pp (64)")
    m.add_argument("--tg", type=whole(1), default=32, help="speed rows with this tg (32)")
    m.add_argument("--threads", type=whole(1), help="speed rows with these threads (any)")
    m.set_defaults(func=_matrix)


def _print(result: Any) -> None:
    print(result)


def _drift(args: argparse.Namespace) -> int:
    from pathlib import Path

    from slamkit.errors import MatrixError
    from slamkit.matrix import TextSet, run_drift
    from slamkit.store import open_store, readers

    texts = None
    if args.text_file:
        path = Path(args.text_file)
        try:
            texts = TextSet(path.name, path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise MatrixError(
                f"--text-file {path}: cannot read it as UTF-8 text ({exc}); pass a text file."
            ) from exc
    with open_store(args.store) as st:
        result = run_drift(
            st, args.model, args.base, texts=texts, task_id=args.task,
            reference_model=args.source_model, n_items=args.n_items, n_ctx=args.n_ctx,
            n_chunks=None if args.all_chunks else args.chunks, n_threads=args.threads,
            progress=not args.quiet,
        )  # fmt: skip
        _print(result)
        df = readers.drift_results(st)
    cols = ["variant", "base", "text_set", "n_ctx", "n_chunks", "n_tokens", "kld_mean",
            "kld_lo", "kld_hi", "kld_se_token", "kld_p90", "kld_p99", "same_top1",
            "delta_p_top", "delta_p", "ppl_model", "ppl_base"]  # fmt: skip
    if len(df):
        names = _file_names([*(args.model or []), *([args.base] if args.base else [])])
        for col, mid in (("variant", "model_id"), ("base", "base_model_id")):
            df[col] = df[col].fillna(df[mid].map(names)).fillna(df[mid].str.slice(0, 12))
        df = df.drop_duplicates(
            ["model_id", "base_model_id", "text_sha256", "n_ctx", "chunks_asked"]
        )  # every setting measured, newest first
        print(df[cols].to_string(index=False))
    return 1 if result.failed and not result.done else 0


def _file_names(refs: list[str]) -> dict[str, str]:
    """model_id -> file name of the GGUF paths among ``refs`` (unregistered models)."""
    from pathlib import Path

    from slamkit.catalog import inspect_gguf

    return {inspect_gguf(r).sha256: Path(r).name for r in refs if Path(r).is_file()}


def _speed(args: argparse.Namespace) -> int:
    from slamkit.matrix import run_speed
    from slamkit.store import open_store, readers

    with open_store(args.store) as st:
        result = run_speed(
            st, args.model, n_prompt=args.pp, n_gen=args.tg, repetitions=args.reps,
            n_threads=args.threads, n_gpu_layers=args.gpu_layers, progress=not args.quiet,
        )  # fmt: skip
        _print(result)
        df = readers.speed_results(st)
    cols = ["variant", "n_prompt", "n_gen", "repetitions", "n_threads", "pp_tps_mean",
            "pp_tps_sd", "tg_tps_mean", "tg_tps_sd", "load_time_s", "peak_rss_mb"]  # fmt: skip
    if len(df):
        print(df.drop_duplicates("model_id")[cols].to_string(index=False, float_format="%.2f"))
    return 1 if result.failed and not result.done else 0


def _repro(args: argparse.Namespace) -> int:
    from slamkit import frames
    from slamkit.matrix import run_repro
    from slamkit.store import open_store, readers

    with open_store(args.store) as st:
        result = run_repro(
            st, n_cells=args.cells, k=args.k, thread_counts=args.threads,
            executors=args.executor, task_id=args.task, models=args.model, seed=args.seed,
            progress=not args.quiet,
        )  # fmt: skip
        _print(result)
        df = readers.repro_results(st)
    print(frames.repro_note(df))
    per = frames.reproducibility(df)
    if len(per):
        print(per.drop(columns="model_id").to_string(index=False))
    return 1 if result.failed and not result.done else 0


def _matrix(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from slamkit.errors import MatrixError
    from slamkit.study import Study

    if str(args.store) != ":memory:" and not Path(args.store).is_file():
        raise MatrixError(
            f"--store {args.store}: no store there (slamkit matrix only reads one); pass the "
            "path of an existing store (make run writes one under data/runs/default/)."
        )
    study = Study(
        args.store, args.task, (), args.n_items, None, args.max_tokens, args.reference_model
    )
    stored = sorted(set(study.scores["metric"])) if len(study.scores) else []
    if stored and args.metric not in stored:
        raise MatrixError(
            f"--metric {args.metric}: no such quality metric stored in {args.store} for task "
            f"{args.task}; stored: {', '.join(stored)}."
        )
    table = study.matrix(
        args.metric, args.drift_n_ctx, None if args.drift_all_chunks else args.drift_chunks,
        args.pp, args.tg, args.threads,
    )  # fmt: skip
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(table.to_string(index=False, float_format="%.3g"))
    print(study.repro_note())
    return 0
