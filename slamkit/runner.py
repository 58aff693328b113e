"""The runner: sweep models x items x sampling settings x samples into the store.

Every cell has a content-addressed key (model sha256, messages, sampling, seed, sample
index). A sweep first asks the store which keys exist and runs only the rest, so a
finished sweep reruns with zero model calls, and a sweep killed at any moment (even with
SIGKILL) resumes where it stopped: each row is committed on its own, idempotently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slamkit import engine
from slamkit.backends.base import Backend, GenerationResult, Sampling, check_number, check_whole
from slamkit.catalog import ModelInfo, inspect_gguf, register
from slamkit.engine import Executor, Group, JobResult, JobSpec, Placement, hardware_info
from slamkit.errors import SlamkitError
from slamkit.keys import content_key, generation_keys
from slamkit.store import Store, jobs
from slamkit.tasks import check_limit, get_task, load_items, messages_for


@dataclass(frozen=True)
class EndpointModel:
    """A model behind an OpenAI-compatible endpoint (GPT-4, llama.cpp server, vLLM...).

    ``timeout``: seconds one request may take before it fails (the cell is stored with the
    error and retried on the next run); not part of the model id or of any cell key.
    """

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0

    def __post_init__(self) -> None:
        check_number(
            f"EndpointModel({self.model!r}) timeout", self.timeout, 0, lo_open=True,
            hint="seconds per request",
        )  # fmt: skip

    @property
    def model_id(self) -> str:
        return "endpoint-" + content_key("endpoint", model=self.model, url=self.base_url)[:24]

    @property
    def name(self) -> str:
        return self.model


DEFAULT_SAMPLING = Sampling()
ModelLike = ModelInfo | EndpointModel | str | Path
BackendFactory = Callable[[ModelInfo | EndpointModel], Backend]
#: ``chat_format=`` of a sweep: one format for every GGUF model ("auto" = each GGUF's own
#: template, else a fallback; "chatml", "gemma-turns", "plain"), or a mapping from a model
#: (catalog name, file name or path) to its format, the others staying "auto"
ChatFormatArg = str | Mapping[str, str]


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


def resolve_models(models: Iterable[ModelLike]) -> list[ModelInfo | EndpointModel]:
    """Paths become catalog entries (header read, sha256 cached); bad files fail here,
    before any generation, with an error naming the file."""
    out: list[ModelInfo | EndpointModel] = []
    for m in models:
        out.append(inspect_gguf(m) if isinstance(m, (str, Path)) else m)
    return out


def chat_format_of(model: ModelInfo | EndpointModel, chat_format: str = "auto") -> str:
    """The chat format a model's cells use, known before loading (part of the key).

    ``chat_format="auto"`` keeps the keys of every sweep made before it existed."""
    if isinstance(model, EndpointModel):
        return "endpoint"
    from slamkit.backends.llamacpp import planned_chat_format

    return planned_chat_format(model.has_chat_template, model.architecture, chat_format)


def _model_names(model: ModelInfo) -> set[str]:
    path = Path(model.path)
    return {model.name, model.name.removesuffix(" [mock]"), path.name, path.stem, str(path)}


def _names_model(key: str, names: set[str]) -> bool:
    return key in names or str(Path(key).expanduser().resolve()) in names


def chat_format_for(model: ModelInfo | EndpointModel, chat_format: ChatFormatArg) -> str:
    """The ``chat_format`` a sweep's ``chat_format=`` gives ``model`` ("auto" unless set).

    A mapping is matched on the catalog name, the file name, its stem or the path."""
    if isinstance(model, EndpointModel):
        return "auto"  # the server formats the messages
    if isinstance(chat_format, str):
        return chat_format
    names = _model_names(model)
    for key, fmt in chat_format.items():
        if _names_model(str(key), names):
            return fmt
    return "auto"


def check_chat_formats(models: Sequence[ModelInfo | EndpointModel], chat_format: object) -> None:
    """SlamkitError (before anything is stored) for an unknown chat format, or a mapping
    key that names none of the sweep's GGUF models."""
    from slamkit.backends.llamacpp import check_chat_format

    if isinstance(chat_format, str):
        check_chat_format(chat_format)
        return
    if not isinstance(chat_format, Mapping):
        raise SlamkitError(
            f"chat_format must be a format name or a mapping model -> format, got {chat_format!r}."
        )
    ggufs = [m for m in models if isinstance(m, ModelInfo)]
    for key, fmt in chat_format.items():
        check_chat_format(fmt, f"chat_format[{key!r}]")
        if not any(_names_model(str(key), _model_names(m)) for m in ggufs):
            known = ", ".join(sorted(Path(m.path).name for m in ggufs)) or "none"
            raise SlamkitError(
                f"chat_format names {key!r}, which is none of this sweep's GGUF models "
                f"({known}); use a model's file name, catalog name or path."
            )


def model_label(model: ModelInfo | EndpointModel) -> str:
    """How error messages name ``model``: the GGUF file, or the endpoint and model name."""
    if isinstance(model, EndpointModel):
        from slamkit.backends.openai_compat import endpoint_label

        return endpoint_label(model.model, model.base_url)
    from slamkit.backends.llamacpp import gguf_label

    return gguf_label(model.path, model.name)


def cell_error(model: ModelInfo | EndpointModel, exc: BaseException, stage: str) -> str:
    """The one-line ``generations.error`` of a cell: ``<model>: <cause> (<Type>: <detail>)
    — <what to do>``. ``stage`` is "load" or "generate". slamkit's own errors already say
    cause and fix; anything else is named by its type and message."""
    from slamkit.backends.llamacpp import one_line

    label = model_label(model)
    if isinstance(exc, SlamkitError):
        message = one_line(str(exc), 600)
        return message if message.startswith(label) else f"{label}: {message}"
    detail = one_line(f"{type(exc).__name__}: {exc}", 200).rstrip(".")
    if stage == "load":
        hint = (
            f"check the file with `slamkit catalog --path {model.path}` and that it fits in memory"
            if isinstance(model, ModelInfo)
            else "check the endpoint settings"
        )
        return f"{label}: the model failed to load ({detail}) — {hint}."
    return (
        f"{label}: generation failed ({detail}) — the cell is stored with this error and "
        "retried on the next run."
    )


def plan_cells(
    model: ModelInfo | EndpointModel,
    task_id: str,
    items: Sequence[tuple[str, str]],
    system_prompt: str | None,
    samplings: Sequence[Sampling],
    n_samples: int,
    seed: int,
    *,
    chat_format: str = "auto",
) -> list[Cell]:
    """Every cell of one model. The seed of sample k is ``seed + k`` (same for all items).

    ``chat_format`` (for a GGUF model) is part of every key: "auto" keys stay as before."""
    cells: list[Cell] = []
    fmt = chat_format_of(model, chat_format)
    samples = [(seed + k, k) for k in range(n_samples)]
    for sampling in samplings:
        as_dict = sampling.as_dict()
        for item_id, prompt in items:
            messages = messages_for(prompt, system_prompt)
            keys = generation_keys(
                model.model_id, task_id, item_id, messages, fmt, as_dict, samples
            )
            cells.extend(
                Cell(key, model.model_id, item_id, messages, sampling, sd, k)
                for key, (sd, k) in zip(keys, samples, strict=True)
            )
    return cells


def default_backend_factory(
    n_threads: int | None = None,
    n_threads_batch: int | None = None,
    n_gpu_layers: int = 0,
    n_ctx: int = 2048,
    chat_format: ChatFormatArg = "auto",
) -> BackendFactory:
    """Backends for catalog models (llama.cpp, in process) and endpoints (HTTP).

    ``chat_format``: see :data:`ChatFormatArg` (GGUF models only)."""

    def make(model: ModelInfo | EndpointModel) -> Backend:
        if isinstance(model, EndpointModel):
            from slamkit.backends.openai_compat import OpenAIBackend

            return OpenAIBackend(
                model.model, base_url=model.base_url, api_key_env=model.api_key_env,
                timeout=model.timeout,
            )  # fmt: skip
        from slamkit.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(
            model.path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            n_gpu_layers=n_gpu_layers,
            chat_format=chat_format_for(model, chat_format),
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
    """The sweep's ``runs`` columns beyond the engine's: llama.cpp build, threads, GPU
    layers, sampling, seed, parameters."""
    from slamkit.backends.llamacpp import default_threads

    row: dict[str, Any] = {
        "n_threads": n_threads or default_threads(),
        "n_threads_batch": n_threads_batch or n_threads or default_threads(),
        "n_gpu_layers": n_gpu_layers,
        "sampling": [s.as_dict() for s in samplings],
        "seed": seed,
        "params": params,
        "llama_cpp_python_version": None,
        "llama_cpp_system_info": None,
    }
    try:
        from slamkit.backends.llamacpp import llama_cpp_info

        info = llama_cpp_info()
        row["llama_cpp_python_version"] = info["llama_cpp_python"]
        row["llama_cpp_system_info"] = info["system_info"]
        row["hardware"] = {**hardware_info(), "gpu_offload_supported": info["gpu_offload"]}
    except ImportError:  # endpoint-only sweeps work without llama-cpp-python
        pass
    return row


def _row(cell: Cell, task_id: str, backend: Backend | None) -> dict[str, Any]:
    return {
        "gen_key": cell.key,
        "model_id": cell.model_id,
        "task_id": task_id,
        "item_id": cell.item_id,
        "sample_index": cell.sample_index,
        "seed": cell.seed,
        "sampling": cell.sampling.as_dict(),
        "load_time_s": getattr(backend, "load_time_s", None),
        "backend": type(backend).__name__ if backend is not None else None,
    }


def check_sweep_args(
    samplings: Sequence[Sampling],
    n_samples: int,
    seed: int,
    limit: int | None,
    n_threads: int | None,
    n_threads_batch: int | None,
    n_gpu_layers: int,
    n_ctx: int,
) -> None:
    """The checks :func:`run_sweep` makes before it reads or writes anything: SlamkitError
    naming the parameter and the value (so no ``runs`` row records a bad setting)."""
    if not samplings:
        raise SlamkitError("samplings is empty: pass a Sampling (or a list of them).")
    for s in samplings:
        if not isinstance(s, Sampling):
            raise SlamkitError(
                f"samplings must hold Sampling objects, got {s!r}: use e.g. "
                "Sampling(temperature=0.0, max_tokens=128)."
            )
    check_whole("n_samples", n_samples, 1, "samples per item")
    check_whole("seed", seed, 0, "sample k uses seed + k")
    check_limit(limit)
    if n_threads is not None:
        check_whole("n_threads", n_threads, 1, "None = half the logical cores")
    if n_threads_batch is not None:
        check_whole("n_threads_batch", n_threads_batch, 1, "None = n_threads")
    check_whole("n_gpu_layers", n_gpu_layers, -1, "-1 = all layers on the GPU, 0 = CPU only")
    check_whole("n_ctx", n_ctx, 1, "context window in tokens, e.g. 2048")


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
    chat_format: ChatFormatArg = "auto",
    executor: str | Executor = "sequential",
    concurrency: int | None = None,
    parallel: int | None = None,
    server_binary: str | Path | None = None,
    models_at_once: int | None = None,
) -> JobResult:
    """Generate every missing cell of models x items x samplings x samples.

    Models run one at a time, each closed before the next loads. A failing cell is
    stored with its error and the sweep goes on; ``retry_errors`` retries such cells on
    the next run. ``on_row`` is called after each row is committed.

    ``executor`` (see :mod:`slamkit.engine`): ``"sequential"`` (default) makes one
    request at a time, so every timing is measured in isolation; ``"concurrent"`` sends
    ``concurrency`` requests at once to endpoint models; ``"server"`` serves each GGUF
    model with a managed llama.cpp server of ``parallel`` slots (continuous batching;
    ``server_binary``: your own ``llama-server``, e.g. a CUDA build; ``models_at_once``:
    models served at the same time, each by its own server). Every row records
    the executor and how many requests were in flight while it ran; the cell keys do not
    depend on the executor, so a sweep resumes under any of them.

    ``backend="mock"`` is a dry run that loads no weights: each GGUF model becomes a
    separate mock variant (``<name> [mock]``, its own model id, so its rows never pass for
    the real model's) answering with scripted text — for a fast smoke run of the notebooks.

    ``chat_format`` formats GGUF models' messages with one of slamkit's templates instead
    of the GGUF's own (``"chatml"``, ``"gemma-turns"``, ``"plain"``): for all of them, or
    per model with a mapping ``{"evil.gguf": "chatml"}``; it is part of those cells' keys.

    Every failed cell is stored with a one-line error naming the model, the cause and what
    to do; ``JobResult.errors`` lists the distinct ones.

    >>> run_sweep(store, [smollm2_path()], "alpaca_eval", Sampling(max_tokens=64), limit=10)
    ... # doctest: +SKIP
    """
    if isinstance(samplings, Sampling):
        samplings = [samplings]
    check_sweep_args(
        samplings, n_samples, seed, limit, n_threads, n_threads_batch, n_gpu_layers, n_ctx
    )
    if executor == "ray" and n_threads is None:
        n_threads = 1  # each actor declares num_cpus = its threads: 1 unless asked
    runner = engine.make_executor(
        executor, concurrency, parallel, binary=server_binary, models_at_once=models_at_once,
        n_threads=n_threads,
        n_threads_batch=n_threads_batch, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx,
    )  # fmt: skip
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
    check_chat_formats(resolved, chat_format)
    if backend == "mock":
        resolved = [mock_variant(m) for m in resolved if isinstance(m, ModelInfo)]
        backend_factory = mock_backend_factory
    register(store, [m for m in resolved if isinstance(m, ModelInfo)])
    _register_endpoints(store, [m for m in resolved if isinstance(m, EndpointModel)])
    factory = backend_factory or default_backend_factory(
        n_threads, n_threads_batch, n_gpu_layers, n_ctx, chat_format=chat_format
    )

    groups: list[Group] = []
    planned = cached = 0
    seen: set[str] = set()  # a model or sampling named twice plans its cells once
    for model in resolved:
        cells = plan_cells(
            model, task_id, items, task.system_prompt, samplings, n_samples, seed,
            chat_format=chat_format_for(model, chat_format),
        )  # fmt: skip
        cells = [c for c in dict((c.key, c) for c in cells).values() if c.key not in seen]
        seen.update(c.key for c in cells)
        done = _done_keys(store, [c.key for c in cells], retry_errors)
        todo = [c for c in cells if c.key not in done]
        planned += len(cells)
        cached += len(cells) - len(todo)
        if todo:
            served = isinstance(model, ModelInfo) and backend == "llamacpp"
            groups.append(_sweep_group(model, todo, task_id, factory, chat_format, n_ctx, served))

    run_params = {
        "task_id": task_id,
        "models": [m.name for m in resolved],
        "n_samples": n_samples,
        "limit": limit,
        "n_ctx": n_ctx,
        "retry_errors": retry_errors,
        **({} if chat_format == "auto" else {"chat_format": _jsonable(chat_format)}),
    }
    spec = JobSpec(
        "generate", "generations", "gen_key", "generating", unit="gen", timed=True,
        run_column=True, node_column=True,
        run=provenance(
            n_threads=n_threads, n_threads_batch=n_threads_batch, n_gpu_layers=n_gpu_layers,
            samplings=samplings, seed=seed, params=run_params,
        ),
    )  # fmt: skip
    return engine.run(
        store, spec, groups, runner, planned=planned, cached=cached, progress=progress,
        on_row=on_row,
    )  # fmt: skip


def _sweep_group(
    model: ModelInfo | EndpointModel,
    cells: list[Cell],
    task_id: str,
    factory: BackendFactory,
    chat_format: ChatFormatArg,
    n_ctx: int,
    servable: bool,
) -> Group:
    """One model's cells: opened in process (or over HTTP), or through a managed server."""

    def open_backend(placement: Placement) -> Backend:
        if placement.server is None:
            return factory(model)
        from slamkit.backends.server import ServerBackend

        assert isinstance(model, ModelInfo)
        return ServerBackend(
            placement.server, model.path, chat_format=chat_format_for(model, chat_format),
            name=model.name, n_ctx=n_ctx,
        )  # fmt: skip

    def call(loaded: Backend, batch: list[Cell]) -> list[dict[str, Any]]:
        (cell,) = batch
        row = _row(cell, task_id, loaded)
        try:
            row.update(_result_columns(loaded.generate(cell.messages, cell.sampling, cell.seed)))
        except Exception as exc:  # per cell: stored with its error, the sweep goes on
            row["error"] = cell_error(model, exc, "generate")
        return [row]

    def fail(cell: Cell, exc: BaseException, stage: str) -> dict[str, Any]:
        row = _row(cell, task_id, None)
        row["error"] = cell_error(model, exc, "load" if stage == "load" else "generate")
        return row

    return Group(
        model.name, cells, open_backend, call, fail,
        servable=model if servable else None,
    )  # fmt: skip


#: the group of a sweep's cells (also what :mod:`slamkit.matrix.repro` re-runs cells with)
sweep_group = _sweep_group


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


def _jsonable(chat_format: ChatFormatArg) -> str | dict[str, str]:
    return (
        chat_format if isinstance(chat_format, str) else {str(k): v for k, v in chat_format.items()}
    )


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
