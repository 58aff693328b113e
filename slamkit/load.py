"""Serving load tests: how much traffic can one self-hosted server carry within a target?

:func:`run_load` sends a task's real prompts, with the study's sampling settings, to one
endpoint at rising offered load and stores every request, timed token by token:

* a **closed-loop concurrency sweep** — 1, 2, 4, ... requests kept in flight — that
  stops by itself past the knee (throughput no longer rises while latency does, or
  errors climb), and
* **open-loop Poisson arrivals** at the given rates (how real traffic arrives).

The endpoint is, by default, slamkit's managed llama.cpp server for a catalog model
(``parallel`` slots, continuous batching; the same prompt, sampler and detokenizer as
the in-process run, so greedy answers are comparable with the isolated ones), or any
OpenAI-compatible URL (``base_url`` + ``endpoint_model``: GPT-4 with a key, vLLM,
``llama_cpp.server``). Traffic goes only to that URL.

Everything is bounded: at most ``requests_per_point`` requests per point, none sent after
``max_point_s`` seconds of a point, no point begun after ``max_total_s`` seconds, and each
request given up after ``timeout_s`` — so a run ends by ``max_total_s + timeout_s``.
Rows are committed every second (``load_runs``, ``load_points``, ``load_requests`` and
each answer as a ``generations`` row flagged with its ``load_id``); Ctrl-C stops at
once and keeps what was measured (the run is marked ``interrupted``).

The analysis — percentiles with CIs, goodput, the knee and the capacity at the target —
is :mod:`slamkit.serving`.

>>> res = run_load(store, "alpaca_eval", limit=10)  # doctest: +SKIP
>>> print(res)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slamkit import engine
from slamkit.backends.base import Sampling, check_number, check_whole
from slamkit.catalog import ModelInfo, default_model_paths, register
from slamkit.errors import SlamkitError
from slamkit.keys import content_key
from slamkit.loadgen import LoadGenerator, PointInfo, Prepared, Record
from slamkit.runner import (
    ChatFormatArg,
    EndpointModel,
    ModelLike,
    chat_format_for,
    mock_variant,
    plan_cells,
    resolve_models,
)
from slamkit.store import Store, jobs, readers
from slamkit.tasks import get_task, load_items

#: the target when neither the user nor captured reference latencies give one: an
#: interactive feature's budget (first token within 2 s, the answer within 10 s)
DEFAULT_TARGET = (2.0, 10.0)
DEFAULT_ATTAINMENT = 0.95
MODES = ("closed", "open")


@dataclass(frozen=True)
class LoadTarget:
    """A latency target: TTFT <= ``ttft_s`` and end-to-end <= ``e2e_s`` (None: no limit)
    for at least ``attainment`` of the requests; ``source`` says where it came from."""

    ttft_s: float | None
    e2e_s: float | None
    attainment: float = DEFAULT_ATTAINMENT
    source: str = "given"

    def __post_init__(self) -> None:
        for name in ("ttft_s", "e2e_s"):
            v = getattr(self, name)
            if v is not None:
                check_number(f"target {name}", v, 0, lo_open=True, hint="seconds")
        check_number("target attainment", self.attainment, 0, 1, lo_open=True,
                     hint="the share of requests that must meet the target, e.g. 0.95")  # fmt: skip
        if self.ttft_s is None and self.e2e_s is None:
            raise SlamkitError("A latency target needs ttft_s or e2e_s (or both).")

    @property
    def label(self) -> str:
        parts = []
        if self.ttft_s is not None:
            parts.append(f"TTFT <= {self.ttft_s:.3g} s")
        if self.e2e_s is not None:
            parts.append(f"end-to-end <= {self.e2e_s:.3g} s")
        return f"{' and '.join(parts)} for {self.attainment:.0%} of requests ({self.source})"


def default_target(
    store: Store,
    task_id: str,
    ttft_s: float | None = None,
    e2e_s: float | None = None,
    attainment: float = DEFAULT_ATTAINMENT,
    reference_model: str | None = None,
) -> LoadTarget:
    """The target of a load test: what the user gave; else the reference API's own p95
    TTFT and end-to-end latency over its captured requests in the store (``slamkit refs
    capture``: "as fast as the API we replace"); else :data:`DEFAULT_TARGET`."""
    if ttft_s is not None or e2e_s is not None:
        return LoadTarget(ttft_s, e2e_s, attainment, "given")
    refs = readers.references(store, task_id, reference_model, with_text=False)
    # requests timed alone (a capture with other requests in flight is itself under load)
    timed = refs[refs["latency_s"].notna() & (refs["in_flight"] <= 1)] if len(refs) else refs
    if len(timed) >= 5:
        model = ", ".join(sorted(set(timed["source_model"])))
        ttft = timed["ttft_s"].dropna()
        return LoadTarget(
            float(ttft.quantile(0.95)) if len(ttft) >= 5 else None,
            float(timed["latency_s"].quantile(0.95)),
            attainment,
            f"p95 of {len(timed)} requests captured one at a time from the reference API {model}",
        )
    return LoadTarget(*DEFAULT_TARGET, attainment, "default: no target given and no captured "
                      "reference latencies")  # fmt: skip


@dataclass
class LoadResult:
    """What :func:`run_load` did: ids, the points run, counts, and why it stopped.
    ``print`` it for the knee table (``report``: :func:`slamkit.serving.load_report`)."""

    load_id: str
    run_id: str
    model: str
    endpoint: str
    target: LoadTarget
    points: list[PointInfo] = field(default_factory=list)
    requests: int = 0
    ok: int = 0
    status: str = "complete"
    note: str = ""
    elapsed_s: float = 0.0
    report: str = field(default="", repr=False)

    def __str__(self) -> str:
        head = (
            f"load {self.load_id}: {self.model} at {self.endpoint}: {len(self.points)} "
            f"points, {self.requests} requests ({self.ok} ok) in {self.elapsed_s:.0f} s; "
            f"{self.status}: {self.note}"
        )
        return head + ("\n" + self.report if self.report else "")


class _LlamaReader:
    """Reads llama.cpp's ``/completion`` stream of token ids with slamkit's own
    detokenizer and stops (as :class:`~slamkit.backends.server.ServerBackend` does)."""

    def __init__(self, done: Any, n_prompt: int, max_tokens: int) -> None:
        self.c = done
        self.n_prompt = n_prompt
        self.max_tokens = max_tokens
        self.stopped = False
        self.stop_type: str | None = None
        self.done = False

    def feed(self, event: dict[str, Any]) -> int:
        new = 0
        for token in event.get("tokens") or ():
            if self.stopped:
                break
            new += 1
            self.stopped = self.c.add(int(token)) or len(self.c.tokens) >= self.max_tokens
        if event.get("stop"):
            self.stop_type = event.get("stop_type")
            self.done = True
        elif self.stopped and self.c.finish == "stop" and not self.c.eog:
            self.done = True  # a stop only this side knows: closing the stream ends it
        return new

    def result(self) -> tuple[str, int | None, int | None, str | None]:
        if not self.done and not self.stopped:
            return self.c.text, self.n_prompt, len(self.c.tokens), None
        stop = self.c.finish == "stop" or self.stop_type in ("eos", "word")
        return self.c.text, self.n_prompt, len(self.c.tokens), "stop" if stop else "length"


def _resolve(store: Store, model: ModelLike | None) -> ModelInfo | EndpointModel:
    if model is None:
        model = next(iter(default_model_paths().values()))
    if isinstance(model, str) and not model.endswith(".gguf") and not Path(model).exists():
        model = readers.gguf_paths(store, [model])[0]  # a registered name
    (resolved,) = resolve_models([model])
    return resolved


def check_load_args(
    concurrency: Sequence[int] | None,
    rates: Sequence[float],
    requests_per_point: int | None,
    max_point_s: float,
    max_total_s: float,
    timeout_s: float,
    max_concurrency: int,
) -> None:
    for c in concurrency or ():
        check_whole("concurrency level", c, 1, "requests kept in flight")
    for r in rates:
        check_number("rate", r, 0, lo_open=True, hint="requests per second")
    if requests_per_point is not None:
        check_whole("requests_per_point", requests_per_point, 1)
    check_whole("max_concurrency", max_concurrency, 1)
    check_number("max_point_s", max_point_s, 0, lo_open=True, hint="seconds per point")
    check_number("max_total_s", max_total_s, 0, lo_open=True, hint="seconds per load run")
    check_number("timeout_s", timeout_s, 0, lo_open=True, hint="seconds per request")


def run_load(
    store: Store,
    task_id: str,
    model: ModelLike | None = None,
    *,
    sampling: Sampling | None = None,
    seed: int = 0,
    limit: int | None = None,
    concurrency: Sequence[int] | None = None,
    max_concurrency: int = 64,
    rates: Sequence[float] = (),
    requests_per_point: int | None = None,
    max_point_s: float = 60.0,
    max_total_s: float = 300.0,
    timeout_s: float = 60.0,
    target_ttft_s: float | None = None,
    target_e2e_s: float | None = None,
    attainment: float = DEFAULT_ATTAINMENT,
    reference_model: str | None = None,
    parallel: int = 2,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    n_ctx: int = 2048,
    server_binary: str | Path | None = None,
    chat_format: ChatFormatArg = "auto",
    backend: str = "llamacpp",
    progress: bool = True,
) -> LoadResult:
    """Load-test one model; see the module docstring.

    ``model``: a catalog model (path, registered name or ModelInfo; default: the first
    default model) served by a managed llama.cpp server of ``parallel`` slots, or an
    :class:`~slamkit.runner.EndpointModel` (any OpenAI-compatible URL; its key from its
    ``api_key_env``, sent only to that URL and never stored). ``concurrency``: the
    closed-loop levels (default 1, 2, 4, ... up to ``max_concurrency``, stopping past the
    knee; given levels all run unless errors climb); ``rates``: open-loop Poisson rates
    (requests/s) run after the sweep. ``requests_per_point``: default ``max(8, 3 x
    level)`` closed, ``max(8, 10 s x rate)`` open. The target is :func:`default_target`
    (``reference_model``: whose captured latencies set it; default: any reference model).
    ``backend="mock"``: a dry run against a scripted local endpoint (no weights).
    """
    sampling = sampling or Sampling()
    check_load_args(concurrency, rates, requests_per_point, max_point_s, max_total_s,
                    timeout_s, max_concurrency)  # fmt: skip
    if backend not in ("llamacpp", "mock"):
        raise SlamkitError(f"backend must be 'llamacpp' or 'mock', got {backend!r}.")
    target = default_target(
        store, task_id, target_ttft_s, target_e2e_s, attainment, reference_model
    )
    if concurrency is not None and not list(concurrency) and not list(rates):
        return LoadResult("", "", str(model or "default model"), "", target, status="skipped",
                          note="no load points asked (concurrency=[] and no rates)")  # fmt: skip
    task = get_task(store, task_id)
    items_df = load_items(store, task_id, limit)
    if items_df.empty:
        raise SlamkitError(f"Task {task_id!r} has no items in {store.path}; import them first.")
    items = list(zip(items_df["item_id"], items_df["prompt"], strict=True))
    resolved = _resolve(store, model)
    if backend == "mock":
        if not isinstance(resolved, ModelInfo):
            raise SlamkitError("backend='mock' load-tests a catalog model, not an endpoint.")
        resolved = mock_variant(resolved)
    if isinstance(resolved, ModelInfo):
        register(store, [resolved])
    else:
        from slamkit.runner import _register_endpoints

        _register_endpoints(store, [resolved])
    cells = plan_cells(
        resolved, task_id, items, task.system_prompt, [sampling], 1, seed,
        chat_format=chat_format_for(resolved, chat_format),
    )  # fmt: skip
    load_id = engine.new_run_id("load")
    run = engine.provenance("load")
    t_start = time.monotonic()
    with _Endpoint(resolved, backend, parallel, n_threads, n_gpu_layers, n_ctx,
                   server_binary, chat_format, timeout_s) as ep:  # fmt: skip
        prompts = ep.prepare(cells, sampling, seed)
        run.update(
            n_threads=ep.server_info.get("n_threads"), n_gpu_layers=n_gpu_layers,
            sampling=[sampling.as_dict()], seed=seed, executor="load", parallel=ep.parallel,
            params={
                "task_id": task_id, "model": resolved.name, "limit": limit,
                "concurrency": list(concurrency) if concurrency else "auto",
                "max_concurrency": max_concurrency, "rates": list(rates),
                "requests_per_point": requests_per_point, "max_point_s": max_point_s,
                "max_total_s": max_total_s, "timeout_s": timeout_s, "backend": backend,
                "server": ep.server_info,
            },
        )  # fmt: skip
        jobs.start_load_run(store, run, {
            "load_id": load_id, "run_id": run["run_id"], "model_id": resolved.model_id,
            "model": resolved.name, "task_id": task_id, "endpoint": ep.public_url,
            "protocol": ep.protocol, "server": ep.server_info,
            "sampling": sampling.as_dict(), "seed": seed, "target_ttft_s": target.ttft_s,
            "target_e2e_s": target.e2e_s, "target_source": target.source,
            "attainment": target.attainment, "status": "running",
        })  # fmt: skip
        res = LoadResult(load_id, run["run_id"], resolved.name, ep.public_url, target)
        writer = _Writer(store, load_id, run["run_id"], resolved, task_id, sampling, seed,
                         ep, cells)  # fmt: skip
        sweep = _Sweep(
            ep.generator, prompts, writer, res, target, concurrency, max_concurrency, rates,
            requests_per_point, max_point_s, t_start + max_total_s, seed, progress,
        )  # fmt: skip
        try:
            sweep.run()
        except KeyboardInterrupt:
            writer.flush()
            res.status = "interrupted"
            res.note = f"stopped by Ctrl-C after {res.requests} requests (they are kept)"
            jobs.finish_load_run(store, load_id, res.status, res.note)
            raise
        except BaseException as exc:
            writer.flush()
            res.status = "failed"
            res.note = f"{type(exc).__name__}: {exc}"[:300]
            jobs.finish_load_run(store, load_id, res.status, res.note)
            raise
        writer.flush()
        jobs.finish_load_run(store, load_id, res.status, res.note)
    res.elapsed_s = time.monotonic() - t_start
    from slamkit import serving

    res.report = serving.load_report(store, load_id)
    return res


class _Endpoint:
    """The endpoint under load: a managed llama.cpp server (started here, stopped after),
    the scripted local endpoint (mock) or a given OpenAI-compatible URL."""

    def __init__(
        self,
        model: ModelInfo | EndpointModel,
        backend: str,
        parallel: int,
        n_threads: int | None,
        n_gpu_layers: int,
        n_ctx: int,
        binary: str | Path | None,
        chat_format: ChatFormatArg,
        timeout_s: float,
    ) -> None:
        self.model, self.backend = model, backend
        self.parallel: int | None = None
        self.n_ctx = n_ctx
        self.chat_format = chat_format
        self.timeout_s = timeout_s
        self._args = (parallel, n_threads, n_gpu_layers, n_ctx, binary)
        self.server: Any = None
        self.server_backend: Any = None
        self.stub: Any = None
        self.server_info: dict[str, Any] = {}
        self.protocol = "openai"
        self.public_url = ""
        self.generator: LoadGenerator = None  # type: ignore[assignment]

    def __enter__(self) -> _Endpoint:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        from slamkit.backends.openai_compat import OPENAI_BASE_URL, public_url

        parallel, n_threads, n_gpu_layers, n_ctx, binary = self._args
        headers: dict[str, str] = {}
        m = self.model
        if self.backend == "mock":
            from slamkit.backends.stub_endpoint import StubEndpoint

            assert isinstance(m, ModelInfo)
            k = 4 + int(content_key("mock-reply", name=m.name)[:4], 16) % 24  # as the mock
            self.stub = StubEndpoint(reply_words=k, first_token_s=0.01, token_s=0.002).start()
            url = self.stub.base_url
            self.server_info = {"kind": "stub (mock dry run)"}
        elif isinstance(m, ModelInfo):
            from slamkit.backends.server import ManagedServer, ServerBackend

            self.server = ManagedServer(
                m.path, name=m.name, parallel=parallel, n_threads=n_threads,
                n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, binary=binary,
            ).start()  # fmt: skip
            self.server_backend = ServerBackend(
                self.server, m.path, chat_format=chat_format_for(m, self.chat_format),
                name=m.name, n_ctx=n_ctx,
            )  # fmt: skip
            self.protocol = "llama.cpp"
            self.parallel = parallel
            url = self.server.base_url
            self.server_info = self.server.info()
        else:
            url = (m.base_url or OPENAI_BASE_URL).rstrip("/")
            key = os.environ.get(m.api_key_env) or ""
            from slamkit.backends.openai_compat import is_openai

            if is_openai(url) and not key:
                raise SlamkitError(
                    f"endpoint {public_url(url)} model {m.model!r}: no API key: the "
                    f"environment variable {m.api_key_env} is not set — set it, or name the "
                    "variable that holds your key with --api-key-env."
                )
            if key:
                headers["authorization"] = f"Bearer {key}"
            self.server_info = {"kind": "endpoint", "url": public_url(url)}
        self.public_url = public_url(url)
        self.generator = LoadGenerator(
            url, self.protocol, headers=headers, timeout_s=self.timeout_s
        ).start()

    def prepare(self, cells: Sequence[Any], sampling: Sampling, seed: int) -> list[Prepared]:
        """Every request's body, built once before any is sent."""
        out: list[Prepared] = []
        if self.protocol == "llama.cpp":
            from slamkit.backends.llamacpp import fit_prompt

            sb = self.server_backend
            for c in cells:
                tokens, stop_ids, stops, max_tokens = fit_prompt(
                    sb.prompt, c.messages, sb.n_ctx, sampling.max_tokens, sb.label
                )
                body = json.dumps(sb._body(tokens, sampling, seed, max_tokens)).encode()

                def reader(t: list[int] = tokens, s: set[int] = stop_ids, st: list[str] = stops,
                           n: int = max_tokens) -> _LlamaReader:  # fmt: skip
                    return _LlamaReader(sb.prompt.completion(t, s, st), len(t), n)

                out.append(Prepared(c.item_id, body, c.key, reader))
            return out
        from slamkit.backends.openai_compat import is_openai

        model_name = self.model.model if isinstance(self.model, EndpointModel) else "stub"
        extra = not is_openai(self.public_url)
        for c in cells:
            req: dict[str, Any] = {
                "model": model_name, "messages": c.messages, "stream": True,
                "stream_options": {"include_usage": True},
                "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens, "seed": seed,
            }  # fmt: skip
            if extra:
                req.update(top_k=sampling.top_k, repeat_penalty=sampling.repeat_penalty)
            out.append(Prepared(c.item_id, json.dumps(req).encode(), c.key))
        return out

    @property
    def chat_format_used(self) -> str:
        if self.server_backend is not None:
            return str(self.server_backend.chat_format)
        return "server"

    def close(self) -> None:
        for part in (self.generator, self.server_backend, self.server, self.stub):
            if part is not None:
                try:
                    part.close() if hasattr(part, "close") else None
                    if hasattr(part, "stop"):
                        part.stop()
                except Exception:
                    pass


class _Writer:
    """Collects finished requests (from the generator's thread) and commits them with
    their answers every :attr:`EVERY_S` seconds, and at the end of each point."""

    EVERY_S = 1.0

    def __init__(
        self,
        store: Store,
        load_id: str,
        run_id: str,
        model: ModelInfo | EndpointModel,
        task_id: str,
        sampling: Sampling,
        seed: int,
        ep: _Endpoint,
        cells: Sequence[Any],
    ) -> None:
        self.store, self.load_id, self.run_id = store, load_id, run_id
        self.model, self.task_id, self.seed = model, task_id, seed
        self.sampling = json.dumps(sampling.as_dict(), sort_keys=True)
        self.ep = ep
        self.load_time_s = getattr(ep.server, "load_time_s", None)
        self.pending: deque[Record] = deque()
        self.points: list[dict[str, Any]] = []
        self.concurrency: dict[int, int | None] = {}
        self.last = time.monotonic()
        self.stored = 0

    def add(self, rec: Record) -> None:  # called from the generator's thread
        self.pending.append(rec)

    def tick(self) -> None:
        if time.monotonic() - self.last >= self.EVERY_S:
            self.flush()

    def point_done(self, info: PointInfo) -> None:
        self.points.append(
            {"load_id": self.load_id, **{k: v for k, v in dataclasses.asdict(info).items()}}
        )
        self.flush()

    def flush(self) -> None:
        """Commit what is pending; the rows leave the queue only once committed, so a
        Ctrl-C in the middle of a write loses nothing (the next flush writes them)."""
        self.last = time.monotonic()
        n = len(self.pending)  # the generator's thread only appends
        taken = [self.pending[i] for i in range(n)]
        recs = [r for r in taken if r.status != "cancelled"]
        if not recs and not self.points:
            for _ in range(n):
                self.pending.popleft()
            return
        requests, gens = [], []
        for r in recs:
            gen_key = None
            if r.status == "ok":
                gen_key = content_key(
                    "load-generation", cell=r.cell_key, load=self.load_id, point=r.point,
                    request=r.request,
                )  # fmt: skip
                gens.append(self._generation(r, gen_key))
            tpot = r.tpot_s
            requests.append({
                "load_id": self.load_id, "point": r.point, "request": r.request,
                "item_id": r.item_id, "cell_key": r.cell_key, "gen_key": gen_key,
                "scheduled_at_s": r.scheduled_at_s, "sent_at_s": r.sent_at_s,
                "ttft_s": r.ttft_s, "e2e_s": r.e2e_s, "tpot_s": tpot,
                "itl_s": json.dumps([round(x, 6) for x in r.itl_s]),
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "in_flight": r.max_in_flight, "status": r.status,
                "http_status": r.http_status, "error": r.error,
            })  # fmt: skip
        jobs.write_load_batch(self.store, requests, gens, self.points)
        for _ in range(n):
            self.pending.popleft()
        self.stored += len(requests)
        self.points = []

    def _generation(self, r: Record, gen_key: str) -> dict[str, Any]:
        tpot = r.tpot_s
        return {
            "gen_key": gen_key, "run_id": self.run_id, "model_id": self.model.model_id,
            "task_id": self.task_id, "item_id": r.item_id, "sample_index": 0,
            "seed": self.seed, "sampling": self.sampling,
            "chat_format": self.ep.chat_format_used, "text": r.text,
            "finish_reason": r.finish_reason, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "ttft_s": r.ttft_s,
            "prefill_tps": None, "decode_tps": 1.0 / tpot if tpot else None,
            "latency_s": r.e2e_s, "load_time_s": self.load_time_s, "backend": "load",
            "executor": "load", "concurrency": self.concurrency.get(r.point),
            "in_flight": r.max_in_flight, "node": engine.NODE, "load_id": self.load_id,
        }  # fmt: skip


class _Sweep:
    """The points of one run, in order, and when to stop."""

    def __init__(
        self,
        gen: LoadGenerator,
        prompts: list[Prepared],
        writer: _Writer,
        res: LoadResult,
        target: LoadTarget,
        concurrency: Sequence[int] | None,
        max_concurrency: int,
        rates: Sequence[float],
        requests_per_point: int | None,
        max_point_s: float,
        deadline: float,
        seed: int,
        progress: bool,
    ) -> None:
        self.gen, self.prompts, self.writer, self.res = gen, prompts, writer, res
        self.target = target
        self.auto = concurrency is None
        levels = list(concurrency or [])
        if self.auto:
            c = 1
            while c <= max_concurrency:
                levels.append(c)
                c *= 2
        self.levels = levels
        self.rates = list(rates)
        self.n = requests_per_point
        self.max_point_s = max_point_s
        self.deadline = deadline
        self.seed = seed
        self.progress = progress
        self.sent = 0  # requests sent so far: the next point starts at the next prompt

    def run(self) -> None:
        from slamkit import serving

        res = self.res
        history: list[dict[str, Any]] = []
        point = 0
        stop_note = ""
        for c in self.levels:
            if time.monotonic() >= self.deadline:
                stop_note = "time budget (max_total_s) used up"
                break
            n = self.n or max(8, 3 * c)
            recs = self._point(point, "closed", c, None, n)
            summary = serving.point_summary(recs, res.points[-1], self.target)
            history.append(summary)
            point += 1
            why = serving.past_knee(history, self.auto)
            if why:
                stop_note = why
                break
        else:
            stop_note = (
                "every concurrency level run"
                if not self.auto
                else (f"reached max_concurrency {self.levels[-1] if self.levels else 0}")
            )
        for rate in self.rates:
            if time.monotonic() >= self.deadline:
                stop_note += "; time budget (max_total_s) used up before every rate"
                break
            n = self.n or max(8, int(math.ceil(10 * rate)))
            self._point(point, "open", None, rate, n)
            point += 1
        res.status = "complete"
        res.note = stop_note

    def _point(
        self, point: int, mode: str, c: int | None, rate: float | None, n: int
    ) -> list[Record]:
        from tqdm.auto import tqdm

        got: list[Record] = []
        writer = self.writer
        writer.concurrency[point] = c
        label = f"c={c}" if mode == "closed" else f"{rate:g} req/s"
        bar = tqdm(total=n, desc=f"load {label}", unit="req", disable=not self.progress,
                   leave=False)  # fmt: skip
        done = [0]

        def on_record(rec: Record) -> None:
            got.append(rec)
            writer.add(rec)

        def tick() -> None:
            bar.update(len(got) - done[0])
            done[0] = len(got)
            writer.tick()

        max_s = max(min(self.max_point_s, self.deadline - time.monotonic()), 0.001)
        info: PointInfo | None = None
        try:
            if mode == "closed":
                assert c is not None
                info = self.gen.closed(point, self.prompts, c, n, max_s, on_record,
                                       first_request=self.sent, tick=tick)  # fmt: skip
            else:
                assert rate is not None
                info = self.gen.open(point, self.prompts, rate, n, max_s, on_record,
                                     seed=self.seed + point, first_request=self.sent,
                                     tick=tick)  # fmt: skip
        except BaseException:
            if info is None and self.gen.last_info is not None:
                self.gen.last_info.status = "interrupted"
            raise
        finally:
            bar.close()
            if info is None:  # interrupted: what the point did until then
                info = self.gen.last_info
            if info is not None:
                self.sent += info.sent
                self.res.points.append(info)
                self.res.requests += sum(r.status != "cancelled" for r in got)
                self.res.ok += sum(r.status == "ok" for r in got)
                writer.point_done(info)
        return got
