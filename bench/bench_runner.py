"""Benchmark: slamkit's runner against a bare llama-cpp-python loop, in one process.

Prints (1) decode tokens/s and end-to-end latency of slamkit's llama.cpp backend vs
``Llama.create_chat_completion`` on the same model, prompts and settings, measured
alternately so both see the same machine load; (2) a fully cached rerun of a sweep vs
its first run. Ratios > 1 mean slamkit is faster.

    .venv/bin/python bench/bench_runner.py [--rounds 8] [--max-tokens 64] [--items 10]

Decode tokens/s is measured two ways on both sides: llama.cpp's own perf counters
(``llama_perf_context``: time inside llama_decode only, blind to Python overhead) and wall
clock (decode calls after the first token / wall seconds after the first token, which
includes everything slamkit adds per token). End-to-end latency is wall clock per call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def bench_decode(rounds: int, max_tokens: int, threads: int) -> dict[str, float]:
    import json

    import llama_cpp

    from slamkit.backends.base import Sampling
    from slamkit.backends.llamacpp import LlamaCppBackend
    from slamkit.catalog import smollm2_path
    from slamkit.references import alpaca_eval_path

    prompts = [r["instruction"] for r in json.loads(alpaca_eval_path().read_text())[:rounds]]
    path = smollm2_path()
    ours = LlamaCppBackend(path, n_threads=threads, n_threads_batch=threads)
    bare = llama_cpp.Llama(
        str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    s = Sampling(temperature=0.0, max_tokens=max_tokens)
    keys = ["ours_tps", "bare_tps", "ours_wall_tps", "bare_wall_tps", "ours_s", "bare_s"]
    rows: dict[str, list[float]] = {k: [] for k in keys}
    for i, prompt in enumerate(prompts):
        msgs = [{"role": "user", "content": prompt}]
        # alternate which side goes first so neither always gets the warmer cache
        order = ("ours", "bare") if i % 2 == 0 else ("bare", "ours")
        for side in order:
            if side == "ours":
                t0 = time.perf_counter()
                r = ours.generate(msgs, s, seed=0)
                rows["ours_s"].append(time.perf_counter() - t0)
                rows["ours_tps"].append(r.decode_tps or 0.0)
                after_first = (r.latency_s or 0.0) - (r.ttft_s or 0.0)
                rows["ours_wall_tps"].append(r.extra["n_eval"] / after_first)
            else:
                llama_cpp.llama_perf_context_reset(bare.ctx)
                t0 = time.perf_counter()
                first = None
                for _chunk in bare.create_chat_completion(
                    msgs, max_tokens=max_tokens, temperature=0.0, top_k=40, top_p=1.0,
                    min_p=0.0, repeat_penalty=1.0, seed=0, stream=True,
                ):  # fmt: skip
                    if first is None:
                        first = time.perf_counter()
                end = time.perf_counter()
                rows["bare_s"].append(end - t0)
                p = llama_cpp.llama_perf_context(bare.ctx)
                rows["bare_tps"].append(p.n_eval / (p.t_eval_ms / 1000) if p.t_eval_ms else 0.0)
                rows["bare_wall_tps"].append(p.n_eval / (end - (first or t0)))
    ours.close()
    bare.close()
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "decode_tps_slamkit": med["ours_tps"],
        "decode_tps_bare": med["bare_tps"],
        "decode_ratio": med["ours_tps"] / med["bare_tps"],
        "decode_wall_tps_slamkit": med["ours_wall_tps"],
        "decode_wall_tps_bare": med["bare_wall_tps"],
        "decode_wall_ratio": med["ours_wall_tps"] / med["bare_wall_tps"],
        "e2e_s_slamkit": med["ours_s"],
        "e2e_s_bare": med["bare_s"],
        "e2e_ratio": med["bare_s"] / med["ours_s"],
    }


def bench_cache(items: int, max_tokens: int, threads: int) -> dict[str, float]:
    from slamkit.backends.base import Sampling
    from slamkit.catalog import default_model_paths
    from slamkit.references import load_alpaca_eval
    from slamkit.runner import run_sweep
    from slamkit.store import Store

    models = list(default_model_paths().values())
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as st:
        load_alpaca_eval(st, limit=items)
        s = Sampling(max_tokens=max_tokens)
        t0 = time.perf_counter()
        first = run_sweep(st, models, "alpaca_eval", s, n_threads=threads, progress=False)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = run_sweep(st, models, "alpaca_eval", s, n_threads=threads, progress=False)
        t_again = time.perf_counter() - t0
    assert again.model_calls == 0, again
    return {
        "first_run_s": t_first,
        "cached_rerun_s": t_again,
        "cache_speedup": t_first / t_again,
        "cells": float(first.planned),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8, help="prompts per side (decode bench)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--items", type=int, default=10, help="items per model (cache bench)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    d = bench_decode(args.rounds, args.max_tokens, args.threads)
    print(f"decode tokens/s (median of {args.rounds}, SmolLM2-135M Q4_1, {args.threads} thread)")
    ours, bare = d["decode_tps_slamkit"], d["decode_tps_bare"]
    print(f"  slamkit {ours:.1f}   bare llama-cpp-python {bare:.1f}")
    print(f"  llama.cpp perf counters: ratio slamkit/bare = {d['decode_ratio']:.3f}")
    ours_w, bare_w = d["decode_wall_tps_slamkit"], d["decode_wall_tps_bare"]
    print(f"  wall clock after the first token: slamkit {ours_w:.1f}   bare {bare_w:.1f}")
    print(f"  wall-clock ratio slamkit/bare = {d['decode_wall_ratio']:.3f}  (target >= 0.95)")
    print(
        f"end-to-end latency per request: slamkit {d['e2e_s_slamkit']:.3f} s, "
        f"bare {d['e2e_s_bare']:.3f} s; speed ratio bare/slamkit = {d['e2e_ratio']:.3f}"
    )
    c = bench_cache(args.items, args.max_tokens, args.threads)
    print(
        f"sweep of {c['cells']:.0f} cells (2 default models x {args.items} AlpacaEval items): "
        f"first run {c['first_run_s']:.2f} s, cached rerun {c['cached_rerun_s']:.3f} s"
    )
    print(f"  cache speed-up = {c['cache_speedup']:.0f}x  (target >= 50x)")


if __name__ == "__main__":
    main()
