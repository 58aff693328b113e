"""The runner: sweep models x items x sampling settings x samples into the store.

Every cell has a content-addressed key (model sha256, messages, sampling, seed, sample
index). A sweep first asks the store which keys exist and runs only the rest, so a
finished sweep reruns with zero model calls, and a sweep killed at any moment (even with
SIGKILL) resumes where it stopped: each row is committed on its own, idempotently.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slamkit import __version__
from slamkit.backends.base import Backend, GenerationResult, Sampling
from slamkit.catalog import ModelInfo, inspect_gguf, register
from slamkit.errors import SlamkitError
from slamkit.keys import content_key, generation_key
from slamkit.store import Store, jobs
from slamkit.tasks import get_task, load_items, messages_for


@dataclass(frozen=True)
class EndpointModel:
    """A model behind an OpenAI-compatible endpoint (GPT-4, llama.cpp server, vLLM...)."""

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"

    @property
    def model_id(self) -> str:
        return "endpoint-" + content_key("endpoint", model=self.model, url=self.base_url)[:24]

    @property
    def name(self) -> str:
        return self.model


DEFAULT_SAMPLING = Sampling()
ModelLike = ModelInfo | EndpointModel | str | Path
BackendFactory = Callable[[ModelInfo | EndpointModel], Backend]


@dataclass
class Cell:
    """One generation to make: a model, an item, a sampling setting and a sample index."""

    key: str
    model_id: str
    item_id: str
    messages: list[dict[str, str]]
    sampling: Sampling
    seed: int
    sample_index: int


@dataclass
class SweepResult:
    run_id: str | None
    planned: int = 0  # cells in the sweep
    cached: int = 0  # already stored: skipped without a model call
    generated: int = 0
    failed: int = 0
    models_loaded: list[str] = field(default_factory=list)

    @property
    def model_calls(self) -> int:
        return self.generated + self.failed

    def __str__(self) -> str:
        return (
            f"{self.planned} cells: {self.cached} cached, {self.generated} generated, "
            f"{self.failed} failed (run {self.run_id or '-'})"
        )


def resolve_models(models: Iterable[ModelLike]) -> list[ModelInfo | EndpointModel]:
    """Paths become catalog entries (header read, sha256 cached); bad files fail here,
    before any generation, with an error naming the file."""
    out: list[ModelInfo | EndpointModel] = []
    for m in models:
        out.append(inspect_gguf(m) if isinstance(m, (str, Path)) else m)
    return out


def chat_format_of(model: ModelInfo | EndpointModel) -> str:
    """The chat format a model's cells use, known before loading (part of the key)."""
    if isinstance(model, EndpointModel):
        return "endpoint"
    from slamkit.backends.llamacpp import planned_chat_format

    return planned_chat_format(model.has_chat_template, model.architecture)


def plan_cells(
    model: ModelInfo | EndpointModel,
    task_id: str,
    items: Sequence[tuple[str, str]],
    system_prompt: str | None,
    samplings: Sequence[Sampling],
    n_samples: int,
    seed: int,
) -> list[Cell]:
    """Every cell of one model. The seed of sample k is ``seed + k`` (same for all items)."""
    cells = []
    fmt = chat_format_of(model)
    for sampling in samplings:
        for item_id, prompt in items:
            messages = messages_for(prompt, system_prompt)
            for k in range(n_samples):
                key = generation_key(
                    model.model_id, task_id, item_id, messages, fmt, sampling.as_dict(), seed + k, k
                )
                cells.append(Cell(key, model.model_id, item_id, messages, sampling, seed + k, k))
    return cells


def default_backend_factory(
    n_threads: int | None = None,
    n_threads_batch: int | None = None,
    n_gpu_layers: int = 0,
    n_ctx: int = 2048,
) -> BackendFactory:
    """Backends for catalog models (llama.cpp, in process) and endpoints (HTTP)."""

    def make(model: ModelInfo | EndpointModel) -> Backend:
        if isinstance(model, EndpointModel):
            from slamkit.backends.openai_compat import OpenAIBackend

            return OpenAIBackend(
                model.model, base_url=model.base_url, api_key_env=model.api_key_env
            )
        from slamkit.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(
            model.path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            n_gpu_layers=n_gpu_layers,
            name=model.name,
        )

    return make


def mock_variant(model: ModelInfo) -> ModelInfo:
    """The mock stand-in of a catalog model: same header facts, its own id and name."""
    return dataclasses.replace(
        model, sha256=content_key("mock-variant", sha256=model.sha256),
        name=f"{model.name} [mock]", source="mock",
    )  # fmt: skip


def mock_backend_factory(model: ModelInfo | EndpointModel) -> Backend:
    """Scripted replies that differ per model: the first k words of the request, with k
    set by the model's name (so quality and length differ between variants)."""
    from slamkit.backends.mock import MockBackend

    k = 4 + int(content_key("mock-reply", name=model.name)[:4], 16) % 24

    def reply(user: str) -> str:
        return " ".join(user.split()[:k]) or "ok"

    return MockBackend(reply, name=model.name)


def provenance(
    *,
    n_threads: int | None,
    n_threads_batch: int | None,
    n_gpu_layers: int,
    samplings: Sequence[Sampling],
    seed: int,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The ``runs`` row: versions, hardware, thread settings, sampling, seed, git revision."""
    from slamkit.backends.llamacpp import default_threads

    row: dict[str, Any] = {
        "run_id": "run-" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8],
        "kind": "generate",
        "slamkit_version": __version__,
        "hardware": hardware_info(),
        "n_threads": n_threads or default_threads(),
        "n_threads_batch": n_threads_batch or n_threads or default_threads(),
        "n_gpu_layers": n_gpu_layers,
        "sampling": [s.as_dict() for s in samplings],
        "seed": seed,
        "git_revision": git_revision(),
        "params": params,
        "llama_cpp_python_version": None,
        "llama_cpp_system_info": None,
    }
    try:
        from slamkit.backends.llamacpp import llama_cpp_info

        info = llama_cpp_info()
        row["llama_cpp_python_version"] = info["llama_cpp_python"]
        row["llama_cpp_system_info"] = info["system_info"]
        row["hardware"]["gpu_offload_supported"] = info["gpu_offload"]
    except ImportError:  # endpoint-only sweeps work without llama-cpp-python
        pass
    return row


def hardware_info() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _row(cell: Cell, task_id: str, run_id: str, backend: Backend | None) -> dict[str, Any]:
    return {
        "gen_key": cell.key,
        "run_id": run_id,
        "model_id": cell.model_id,
        "task_id": task_id,
        "item_id": cell.item_id,
        "sample_index": cell.sample_index,
        "seed": cell.seed,
        "sampling": cell.sampling.as_dict(),
        "load_time_s": getattr(backend, "load_time_s", None),
        "backend": type(backend).__name__ if backend is not None else None,
    }


def _store_cell(store: Store, row: dict[str, Any]) -> None:
    """Commit one row; a stored error row for the same key is replaced (a retry), in the
    same transaction."""
    store.write("generations", [row], replace_errors_of="gen_key")


def run_sweep(
    store: Store,
    models: Iterable[ModelLike],
    task_id: str,
    samplings: Sequence[Sampling] | Sampling = DEFAULT_SAMPLING,
    *,
    n_samples: int = 1,
    seed: int = 0,
    limit: int | None = None,
    n_threads: int | None = None,
    n_threads_batch: int | None = None,
    n_gpu_layers: int = 0,
    n_ctx: int = 2048,
    backend_factory: BackendFactory | None = None,
    retry_errors: bool = True,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    backend: str = "llamacpp",
) -> SweepResult:
    """Generate every missing cell of models x items x samplings x samples.

    Models are loaded one at a time and closed before the next loads. A failing cell is
    stored with its error and the sweep goes on; ``retry_errors`` retries such cells on
    the next run. ``on_row`` is called after each row is committed.

    ``backend="mock"`` is a dry run that loads no weights: each GGUF model becomes a
    separate mock variant (``<name> [mock]``, its own model id, so its rows never pass for
    the real model's) answering with scripted text — for a fast smoke run of the notebooks.

    >>> run_sweep(store, [smollm2_path()], "alpaca_eval", Sampling(max_tokens=64), limit=10)
    ... # doctest: +SKIP
    """
    if isinstance(samplings, Sampling):
        samplings = [samplings]
    if n_samples < 1:
        raise SlamkitError(f"n_samples must be at least 1, got {n_samples}.")
    task = get_task(store, task_id)
    items_df = load_items(store, task_id, limit)
    if items_df.empty:
        raise SlamkitError(
            f"Task {task_id!r} has no items in {store.path}; import references first."
        )
    items = list(zip(items_df["item_id"], items_df["prompt"], strict=True))
    if backend not in ("llamacpp", "mock"):
        raise SlamkitError(f"backend must be 'llamacpp' or 'mock', got {backend!r}.")
    resolved = resolve_models(models)
    if backend == "mock":
        resolved = [mock_variant(m) for m in resolved if isinstance(m, ModelInfo)]
        backend_factory = mock_backend_factory
    register(store, [m for m in resolved if isinstance(m, ModelInfo)])
    _register_endpoints(store, [m for m in resolved if isinstance(m, EndpointModel)])
    factory = backend_factory or default_backend_factory(
        n_threads, n_threads_batch, n_gpu_layers, n_ctx
    )

    plans = []
    result = SweepResult(run_id=None)
    for model in resolved:
        cells = plan_cells(model, task_id, items, task.system_prompt, samplings, n_samples, seed)
        done = _done_keys(store, [c.key for c in cells], retry_errors)
        todo = [c for c in cells if c.key not in done]
        result.planned += len(cells)
        result.cached += len(cells) - len(todo)
        plans.append((model, todo))
    total = sum(len(t) for _, t in plans)
    if total == 0:
        return result

    run = provenance(
        n_threads=n_threads,
        n_threads_batch=n_threads_batch,
        n_gpu_layers=n_gpu_layers,
        samplings=samplings,
        seed=seed,
        params={
            "task_id": task_id,
            "models": [m.name for m in resolved],
            "n_samples": n_samples,
            "limit": limit,
            "n_ctx": n_ctx,
            "retry_errors": retry_errors,
        },
    )
    store.insert("runs", run)
    result.run_id = run["run_id"]

    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not progress, unit="gen", desc="generating")
    try:
        for model, todo in plans:
            if not todo:
                continue
            bar.set_postfix_str(model.name)
            try:
                loaded = factory(model)
            except Exception as exc:  # any load failure: recorded per cell, sweep goes on
                for cell in todo:  # recorded, never silently dropped
                    row = _row(cell, task_id, run["run_id"], None)
                    row["error"] = f"model failed to load: {exc}"
                    _store_cell(store, row)
                    result.failed += 1
                    bar.update(1)
                continue
            result.models_loaded.append(model.name)
            try:
                for cell in todo:
                    row = _row(cell, task_id, run["run_id"], loaded)
                    try:
                        res = loaded.generate(cell.messages, cell.sampling, cell.seed)
                        row.update(_result_columns(res))
                        result.generated += 1
                    except Exception as exc:  # per-item: store it and go on
                        row["error"] = f"{type(exc).__name__}: {exc}"
                        result.failed += 1
                    _store_cell(store, row)
                    if on_row is not None:
                        on_row(row)
                    bar.update(1)
            finally:
                loaded.close()  # freed before the next model loads
    finally:
        bar.close()
    return result


def _result_columns(res: GenerationResult) -> dict[str, Any]:
    return {
        "text": res.text,
        "finish_reason": res.finish_reason,
        "prompt_tokens": res.prompt_tokens,
        "completion_tokens": res.completion_tokens,
        "ttft_s": res.ttft_s,
        "prefill_tps": res.prefill_tps,
        "decode_tps": res.decode_tps,
        "latency_s": res.latency_s,
        "peak_rss_mb": res.extra.get("peak_rss_mb"),
        "model_mem_mb": res.extra.get("model_mem_mb"),
        "chat_format": res.chat_format,
    }


def _done_keys(store: Store, keys: list[str], retry_errors: bool) -> set[str]:
    return jobs.stored_generation_keys(store, keys, ok_only=retry_errors)


def _register_endpoints(store: Store, endpoints: list[EndpointModel]) -> None:
    from slamkit.backends.openai_compat import public_url

    jobs.register_models(
        store,
        [
            {
                "model_id": e.model_id,
                "name": e.model,
                "path": public_url(e.base_url) if e.base_url else "openai",
                "family": e.model,
                "source": "endpoint",
            }
            for e in endpoints
        ],
    )
