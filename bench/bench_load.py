"""Benchmark: the load generator of ``slamkit load``, and a real load test against raw
llama.cpp.

Prints, measured in this run on this machine:

1. **The generator is not the bottleneck.** Against a no-op OpenAI-compatible endpoint
   (:class:`slamkit.backends.stub_endpoint.StubEndpoint`, answering at once, in its own
   process so it does not share the generator's interpreter lock): closed-loop requests/s
   at concurrency 1, 8 and 64, and open-loop Poisson rates of 500, 1000 and 2000
   requests/s — achieved rate / offered rate and the **timing error** (actual minus
   scheduled send time: mean, p99, max). Target: >= 500 requests/s sustained.
2. **A real load test against raw llama.cpp.** SmolLM2-135M (greedy, ``--max-tokens``)
   through a managed llama.cpp server of ``--parallel`` slots at concurrency 1, 2, 4 ...
   (to the knee), beside raw llama.cpp in process (llama-cpp-python, one request at a
   time, same prompts): requests/s and the ratio load-test capacity / raw sequential —
   what the capacity-based cost model gains over pricing from sequential speed.

    .venv/bin/python bench/bench_load.py [--items 8] [--max-tokens 64] [--parallel 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

STUB = (
    "import sys, time\n"
    "from slamkit.backends.stub_endpoint import StubEndpoint\n"
    "ep = StubEndpoint(reply_words=4).start()\n"
    "print(ep.base_url, flush=True)\n"
    "sys.stdin.read()\n"
)


def generator_part() -> None:
    from slamkit.loadgen import LoadGenerator, Prepared

    proc = subprocess.Popen([sys.executable, "-c", STUB], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    messages = [{"role": "user", "content": "a b c d e f"}]
    body = json.dumps({"model": "stub", "stream": True, "max_tokens": 8, "messages": messages})
    body = body.encode()
    prompts = [Prepared("i", body)]
    print("1. load generator against a no-op endpoint (separate process)")
    try:
        with LoadGenerator(url) as gen:
            gen.closed(0, prompts, 8, 500, 30, lambda r: None)  # warm-up
            for c in (1, 8, 64):
                recs: list = []
                info = gen.closed(0, prompts, c, 5000, 60, recs.append)
                ok = sum(r.status == "ok" for r in recs)
                e2e = sorted(r.e2e_s for r in recs if r.e2e_s is not None)
                print(f"   closed loop c={c:>2}: {ok / info.duration_s:8.0f} requests/s "
                      f"({ok} ok in {info.duration_s:.2f} s), e2e p50 against the no-op "
                      f"{e2e[len(e2e) // 2] * 1e3:.2f} ms")  # fmt: skip
            for rate in (500.0, 1000.0, 2000.0):
                recs = []
                info = gen.open(0, prompts, rate, int(rate * 5), 60, recs.append, seed=1)
                ok = sum(r.status == "ok" for r in recs)
                achieved = ok / info.duration_s
                print(f"   open loop {rate:6.0f}/s: achieved {achieved:7.0f}/s "
                      f"(ratio {achieved / rate:.3f}), timing error mean "
                      f"{(info.lag_mean_s or 0) * 1e3:.2f} ms, p99 "
                      f"{(info.lag_p99_s or 0) * 1e3:.2f} ms, max "
                      f"{(info.lag_max_s or 0) * 1e3:.2f} ms")  # fmt: skip
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(10)


def real_part(items: int, max_tokens: int, parallel: int, threads: int) -> None:
    from slamkit.backends.base import Sampling
    from slamkit.backends.llamacpp import LlamaCppBackend
    from slamkit.catalog import smollm2_path
    from slamkit.load import run_load
    from slamkit.references import load_alpaca_eval
    from slamkit.store import Store, readers
    from slamkit.tasks import messages_for

    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    path = smollm2_path()
    print(f"2. SmolLM2-135M, {items} AlpacaEval prompts, greedy, {max_tokens} tokens, "
          f"{threads} thread(s)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        st = Store(Path(tmp) / "load.duckdb")
        load_alpaca_eval(st, limit=items)
        prompts = list(readers.items(st, "alpaca_eval")["prompt"])
        be = LlamaCppBackend(path, n_threads=threads)
        be.generate(messages_for(prompts[0]), sampling, 0)  # warm-up
        t0 = time.perf_counter()
        for p in prompts:
            be.generate(messages_for(p), sampling, 0)
        raw = len(prompts) / (time.perf_counter() - t0)
        be.close()
        print(f"   raw llama.cpp in process, one at a time: {raw:.3f} requests/s")
        res = run_load(st, "alpaca_eval", path, sampling=sampling, parallel=parallel,
                       n_threads=threads, requests_per_point=max(8, items),
                       max_concurrency=8, progress=False)  # fmt: skip
        print("   " + res.report.replace("\n", "\n   "))
        from slamkit import serving

        cap = serving.capacity(serving.load_table(st, res.load_id))["capacity_rps"]
        table = serving.load_table(st, res.load_id)
        best = float(table["throughput_rps"].max())
        shown = f"{cap / raw:.2f}x" if cap == cap else "none (no point met the target)"
        print(f"   ratio managed server c=1 / raw: "
              f"{float(table['throughput_rps'].iloc[0]) / raw:.2f}x; best throughput / raw: "
              f"{best / raw:.2f}x; capacity at the target / raw: {shown}")  # fmt: skip
        st.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-real", action="store_true", help="only the generator part")
    args = ap.parse_args()
    generator_part()
    if not args.skip_real:
        real_part(args.items, args.max_tokens, args.parallel, args.threads)


if __name__ == "__main__":
    main()
