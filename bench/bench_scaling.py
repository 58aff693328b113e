"""Benchmark: the job engine's executors against the one-request-at-a-time runner.

Prints, measured in this run on this machine:

1. **Sweep throughput**: the same 2 models x N AlpacaEval items (greedy) swept into fresh
   stores with the ``sequential`` executor (in-process llama.cpp, 1 thread, as the main
   job runs) and with the ``server`` executor (a managed llama.cpp server per model with
   ``--parallel`` slots and continuous batching). Cells/s and output tokens/s, and the
   ratio server / sequential (target >= 1.6x on 2 cores). Also a ``sequential`` sweep at
   2 threads, so the gain is not mistaken for "more threads".
2. **Reproducibility**: the share of greedy cells whose text is byte-identical between
   the sequential in-process sweep and the server sweep (same cell keys).
3. **Ray**: the same sweep on a local 2-worker Ray cluster (2 actors of 1 thread per model,
   the cluster started before the clock), and Ray's fixed start-up cost (``ray.init`` and a
   trivial first actor).
4. **Concurrent capture**: capturing N references from a local OpenAI-compatible
   endpoint that adds a fixed 200 ms to every answer, sequentially and with
   ``--concurrency C`` (target >= 0.8*C x faster).

    .venv/bin/python bench/bench_scaling.py [--items 20] [--max-tokens 64] [--parallel 4]

No GPU figures: this machine has none (see README "Scaling up").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]


def _store(tmp: Path, name: str, items: int):  # type: ignore[no-untyped-def]
    from slamkit.references import load_alpaca_eval
    from slamkit.store import Store

    st = Store(tmp / f"{name}.duckdb")
    load_alpaca_eval(st, limit=items)
    return st


def sweep(tmp: Path, name: str, models: list[str], items: int, max_tokens: int, **kw):  # type: ignore[no-untyped-def]
    from slamkit.backends.base import Sampling
    from slamkit.runner import run_sweep

    st = _store(tmp, name, items)
    t0 = time.perf_counter()
    res = run_sweep(
        st, models, "alpaca_eval", Sampling(temperature=0.0, max_tokens=max_tokens),
        limit=items, progress=False, **kw,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    rows = st.df(
        "SELECT gen_key, text, completion_tokens, latency_s, in_flight FROM generations "
        "WHERE error IS NULL"
    )
    st.close()
    assert res.failed == 0, str(res)
    tokens = int(rows["completion_tokens"].sum())
    return {"wall_s": wall, "cells": len(rows), "tokens": tokens, "rows": rows,
            "cells_s": len(rows) / wall, "tokens_s": tokens / wall}  # fmt: skip


def bench_sweep(items: int, max_tokens: int, parallel: int, only: list[str] | None = None) -> None:
    from slamkit.catalog import gemma_path, smollm2_path

    models = [str(smollm2_path()), str(gemma_path())]
    configs = [
        ("sequential (the default)", "1", {"n_threads": 1, "n_threads_batch": 1}),
        ("sequential", "2", {"n_threads": 2, "n_threads_batch": 2}),
        (f"server, {parallel} slots, 1 model at a time", "2",
         {"executor": "server", "parallel": parallel, "n_threads": 2, "n_threads_batch": 2}),
        (f"server, {parallel} slots, 2 models at once", "1 per server",
         {"executor": "server", "parallel": parallel, "models_at_once": 2, "n_threads": 1,
          "n_threads_batch": 1}),
        ("ray, local 2-worker cluster (2 actors per model, in process; cluster up)",
         "1 per actor", {"executor": "ray", "concurrency": 2, "n_threads": 1,
                         "n_threads_batch": 1}),
    ]  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as d:
        for i, (label, threads, kw) in enumerate(configs):
            if only and not any(o in label for o in only):
                continue
            if kw.get("executor") == "ray":  # throughput with the cluster up; its start-up
                import ray  # cost is measured on its own (bench_ray_startup)

                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR")  # fmt: skip
            try:
                results.append((label, threads, sweep(Path(d), f"s{i}", models, items,
                                                      max_tokens, **kw)))  # fmt: skip
            finally:
                if kw.get("executor") == "ray":
                    ray.shutdown()
    base = results[0][2]
    print(f"\n## Sweep: 2 models (SmolLM2-135M Q4_1, Gemma-3-270M Q4_K_M) x {items} items, "
          f"greedy, max {max_tokens} tokens")  # fmt: skip
    print("| executor | threads | wall s | cells/s | output tokens/s | vs sequential |")
    print("|---|---|---|---|---|---|")
    for label, threads, r in results:
        print(f"| {label} | {threads} | {r['wall_s']:.1f} | {r['cells_s']:.2f} | "
              f"{r['tokens_s']:.1f} | {r['cells_s'] / base['cells_s']:.2f}x |")  # fmt: skip
    if only:  # a partial run (development): the table only
        for label, _, r in results:
            print(label, f"{r['wall_s']:.1f} s", f"{r['cells_s'] / base['cells_s']:.2f}x")
        return
    best = max(results[2:4], key=lambda x: x[2]["cells_s"])
    print(
        f"server / sequential (best server row, {best[0]}): "
        f"{best[2]['cells_s'] / base['cells_s']:.2f}x cells/s, "
        f"{best[2]['tokens_s'] / base['tokens_s']:.2f}x output tokens/s (target >= 1.6x)"
    )
    ray_row = results[4][2]
    print(f"ray / sequential: {ray_row['cells_s'] / base['cells_s']:.2f}x cells/s, "
          f"{ray_row['tokens_s'] / base['tokens_s']:.2f}x output tokens/s (target >= 1.6x; "
          "the cluster was up: its start-up cost is measured above)")  # fmt: skip
    two = results[1][2]
    same = best[2]["cells_s"] / two["cells_s"]
    print(f"same cores (vs sequential at 2 threads): server {same:.2f}x, "
          f"ray {ray_row['cells_s'] / two['cells_s']:.2f}x")  # fmt: skip
    a = base["rows"].set_index("gen_key")["text"].sort_index()
    print("\n## Reproducibility: greedy texts byte-identical to the sequential in-process sweep")
    for label, threads, r in results[1:]:
        b = r["rows"].set_index("gen_key")["text"].sort_index()
        assert list(a.index) == list(b.index), f"{label} planned other cells"
        same = int((a == b).sum())
        loaded = int((r["rows"]["in_flight"] > 1).sum())
        print(f"{label} ({threads} threads): {same} of {len(a)} ({same / len(a):.0%}); "
              f"rows timed under load: {loaded}")  # fmt: skip


def bench_ray_startup(rounds: int = 3) -> None:
    """Ray's fixed cost: starting a local 2-CPU cluster (ray.init) and one actor ready."""
    import ray

    times, first = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        times.append(time.perf_counter() - t0)

        @ray.remote(num_cpus=1)
        class Ready:
            def ping(self) -> int:
                return 1

        t1 = time.perf_counter()
        ray.get(Ready.remote().ping.remote())
        first.append(time.perf_counter() - t1)
        ray.shutdown()
    print(f"\n## Ray's fixed start-up cost (local 2-CPU cluster, {rounds} rounds)")
    print(f"ray.init: median {sorted(times)[rounds // 2]:.1f} s; first actor ready after it: "
          f"median {sorted(first)[rounds // 2]:.1f} s")  # fmt: skip


def bench_capture(items: int, concurrency: int, delay: float) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import FaultyEndpoint  # the tests' local OpenAI-compatible endpoint

    from slamkit.backends.base import Sampling
    from slamkit.backends.openai_compat import OpenAIBackend
    from slamkit.references import capture_references

    out = {}
    with FaultyEndpoint(delay_s=delay) as ep, tempfile.TemporaryDirectory() as d:
        for name, kw in (
            ("sequential", {}),
            ("concurrent", {"executor": "concurrent", "concurrency": concurrency}),
        ):
            st = _store(Path(d), name, items)
            backend = OpenAIBackend("canned", base_url=ep.base_url)
            t0 = time.perf_counter()
            res = capture_references(st, backend, "alpaca_eval", "endpoint", Sampling(), 0,
                                     progress=False, **kw)  # fmt: skip
            out[name] = time.perf_counter() - t0
            assert res.done == items and not res.failed, str(res)
            backend.close()
            st.close()
    ratio = out["sequential"] / out["concurrent"]
    print(f"\n## Capture: {items} references from a local endpoint that adds {delay * 1000:.0f} "
          f"ms per answer")  # fmt: skip
    print(f"sequential {out['sequential']:.2f} s, concurrent x{concurrency} "
          f"{out['concurrent']:.2f} s: {ratio:.2f}x faster "
          f"(target >= {0.8 * concurrency:.1f}x = 0.8 x {concurrency})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--capture-items", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    from slamkit.engine import hardware_info

    hw = hardware_info()
    import shutil

    gpu = (
        "an NVIDIA GPU (nvidia-smi found): measure it with --executor server --server-binary"
        if shutil.which("nvidia-smi")
        else "none found (no nvidia-smi): no GPU figures are measured"
    )
    print(f"machine: {hw['cpu']}, {hw['logical_cores']} logical cores, {hw['memory_gb']} GB; "
          f"GPU: {gpu}")  # fmt: skip
    bench_capture(args.capture_items, args.concurrency, 0.2)
    bench_ray_startup()
    bench_sweep(args.items, args.max_tokens, args.parallel)


if __name__ == "__main__":
    main()
