"""Raw speed, as ``llama-bench`` measures it, beside the real-prompt timings of the sweep.

Per model: ``pp`` — one prompt of ``n_prompt`` tokens processed in one batch from an empty
KV cache; ``tg`` — ``n_gen`` tokens generated one at a time from an empty cache (the first
one BOS when the model adds it, like llama-bench; the token ids are a fixed pseudo-random
draw, so no text is needed and every run sees the same ids). One warm-up of each, then
``repetitions`` timed runs (wall clock around the llama.cpp calls); tokens/s mean and
standard deviation (n - 1) over the repetitions, each value kept. The model is loaded
through the sweep's backend (:class:`~slamkit.backends.llamacpp.LlamaCppBackend`), which
times the load; resident memory is sampled after the load and after every run (peak, and
peak minus the memory before the load). Stored per (model, n_prompt, n_gen, repetitions,
threads, GPU layers, machine) in ``speed``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slamkit import engine
from slamkit.backends.base import check_whole
from slamkit.catalog import ModelInfo
from slamkit.engine import NODE, Group, JobResult, JobSpec
from slamkit.keys import content_key
from slamkit.matrix.models import NoResource, resolve_model
from slamkit.store import Store, jobs

__all__ = ["SPEED_VERSION", "bench_model", "mean_sd", "run_speed"]

SPEED_VERSION = 1


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN for one value), as llama-bench.

    >>> mean_sd([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    arr = np.asarray(values, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else float("nan")
    return float(arr.mean()), sd


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def bench_model(
    model: ModelInfo,
    n_prompt: int = 64,
    n_gen: int = 32,
    repetitions: int = 3,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
) -> dict[str, Any]:
    """Load ``model``, run the pp and tg tests, return the ``speed`` columns."""
    from slamkit.backends.llamacpp import LlamaCppBackend

    before = _rss_mb()
    backend = LlamaCppBackend(
        model.path, n_ctx=max(64, n_prompt + n_gen + 8), n_threads=n_threads,
        n_threads_batch=n_threads, n_gpu_layers=n_gpu_layers, name=model.name,
    )  # fmt: skip
    peak = _rss_mb()
    try:
        llm = backend.llm
        n_vocab = int(llm.n_vocab())
        rng = np.random.default_rng(0)
        prompt = [int(t) for t in rng.integers(0, n_vocab, n_prompt)]
        gen = [int(t) for t in rng.integers(0, n_vocab, n_gen)]
        import llama_cpp

        if llama_cpp.llama_vocab_get_add_bos(llm._model.vocab):
            gen[0] = int(llm.token_bos())

        def pp() -> float:
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(prompt)
            return n_prompt / (time.perf_counter() - t0)

        def tg(n: int) -> float:
            llm.reset()
            t0 = time.perf_counter()
            for token in gen[:n]:
                llm.eval([token])
            return n / (time.perf_counter() - t0)

        pp()  # warm-up, as llama-bench
        tg(1)
        pps, tgs = [], []
        for _ in range(repetitions):
            pps.append(pp())
            tgs.append(tg(n_gen))
            peak = max(peak, _rss_mb())
        (pp_mean, pp_sd), (tg_mean, tg_sd) = mean_sd(pps), mean_sd(tgs)
        return {
            "pp_tps_mean": pp_mean, "pp_tps_sd": pp_sd, "tg_tps_mean": tg_mean,
            "tg_tps_sd": tg_sd, "pp_tps": pps, "tg_tps": tgs,
            "load_time_s": backend.load_time_s, "peak_rss_mb": peak,
            "model_mem_mb": peak - before, "n_threads": backend.n_threads,
            "n_gpu_layers": backend.n_gpu_layers,
        }  # fmt: skip
    finally:
        backend.close()


@dataclass
class SpeedCell:
    key: str
    model: ModelInfo


def run_speed(
    store: Store,
    models: Sequence[str | Path | ModelInfo] | None = None,
    *,
    n_prompt: int = 64,
    n_gen: int = 32,
    repetitions: int = 3,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    backend: str = "llamacpp",
    progress: bool = True,
) -> JobResult:
    """Benchmark ``models`` (names or paths; None = every registered GGUF model) and store
    one ``speed`` row each. Resumable: a model already measured on this machine with the
    same settings is skipped. ``backend="mock"`` loads nothing and stores nothing.

    >>> run_speed(store, n_prompt=64, n_gen=32, repetitions=3)  # doctest: +SKIP
    """
    check_whole("n_prompt", n_prompt, 1, "prompt tokens, e.g. 64")
    check_whole("n_gen", n_gen, 1, "generated tokens, e.g. 32")
    check_whole("repetitions", repetitions, 1, "timed runs, e.g. 3")
    if n_threads is not None:
        check_whole("n_threads", n_threads, 1, "None = half the logical cores")
    check_whole("n_gpu_layers", n_gpu_layers, -1, "-1 = all layers on the GPU, 0 = CPU only")
    result = JobResult("speed")
    if backend == "mock":
        return result
    registered = jobs.matrix_models(store)
    refs = list(registered["name"]) if models is None else list(models)
    infos = [resolve_model(store, m, registered) for m in refs]
    from slamkit.backends.llamacpp import default_threads

    threads = n_threads or default_threads()
    cells = {}
    for info in infos:
        key = content_key(
            "speed", v=SPEED_VERSION, model=info.sha256, n_prompt=n_prompt, n_gen=n_gen,
            repetitions=repetitions, n_threads=threads, n_gpu_layers=n_gpu_layers, node=NODE,
        )  # fmt: skip
        cells[key] = SpeedCell(key, info)
    done = jobs.stored_matrix_keys(store, "speed", "speed_key", list(cells))
    todo = [c for k, c in cells.items() if k not in done]

    def row(cell: SpeedCell) -> dict[str, Any]:
        return {
            "speed_key": cell.key, "model_id": cell.model.sha256, "n_prompt": n_prompt,
            "n_gen": n_gen, "repetitions": repetitions, "n_threads": threads,
            "n_gpu_layers": n_gpu_layers,
        }  # fmt: skip

    def call(_: Any, batch: list[SpeedCell]) -> list[dict[str, Any]]:
        (cell,) = batch
        out = row(cell)
        try:
            out.update(bench_model(cell.model, n_prompt, n_gen, repetitions, threads, n_gpu_layers))
        except Exception as exc:  # stored with the cell, retried on the next run
            out["error"] = _message(cell, exc)
        return [out]

    def fail(cell: SpeedCell, exc: BaseException, stage: str) -> dict[str, Any]:
        return {**row(cell), "error": _message(cell, exc)}

    groups = [Group(c.model.name, [c], lambda _p: NoResource(), call, fail) for c in todo]
    spec = JobSpec(
        "speed", "speed", "speed_key", "speed", unit="model", run_column=True,
        node_column=True,
        run={"n_threads": threads, "n_gpu_layers": n_gpu_layers, "params": {
            "n_prompt": n_prompt, "n_gen": n_gen, "repetitions": repetitions,
            "models": [i.name for i in infos],
        }},
    )  # fmt: skip
    return engine.run(
        store, spec, groups, engine.SequentialExecutor(), planned=len(cells),
        cached=len(cells) - len(todo), progress=progress,
    )  # fmt: skip


def _message(cell: SpeedCell, exc: BaseException) -> str:
    from slamkit.backends.llamacpp import one_line
    from slamkit.errors import SlamkitError

    text = one_line(str(exc), 500)
    if isinstance(exc, SlamkitError):
        return text
    return (
        f"speed of {cell.model.name} failed ({type(exc).__name__}: {text}) — the model is "
        "measured again on the next run."
    )
