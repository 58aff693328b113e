"""The job engine: one loop for every job that calls a model and stores rows.

A job (a generation sweep, a reference capture, judging, embedding scoring) plans
content-addressed cells, leaves out the keys already stored, and hands the rest to the
engine as :class:`Group` s: the cells one model (or metric) serves, with how to open that
model, call it and describe a failure. The engine writes a ``runs`` row, shows one
progress bar, and an :class:`Executor` decides how many calls are in flight:

* ``sequential`` — one call at a time, each timed in isolation (the default);
* ``concurrent`` — N calls in flight against an endpoint that serves many at once;
* ``server``     — a managed llama.cpp server with parallel slots and continuous batching
  per GGUF model, fed N calls at a time (endpoint groups run as ``concurrent``).

Whatever the executor, the driver thread is the only one that writes the store: results
come back to it and are committed in small batches, each one transaction, idempotently
(``ON CONFLICT DO NOTHING`` on the content key; a retried cell replaces its error row in
the same transaction). A kill at any moment loses at most the uncommitted batch — cells
that were never stored and are planned again on the next run — and duplicates nothing.

Every row a timed job stores records the executor, its in-flight limit
(``concurrency``) and ``in_flight``: the most calls that were in flight while this one
ran (1 = measured in isolation). A new executor (e.g. Ray) implements
:meth:`Executor.stream`; the jobs do not change.
"""

from __future__ import annotations

import os
import platform
import queue
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slamkit import __version__
from slamkit.backends.base import check_whole
from slamkit.cells import Group, Lent, Load, Outcome, Placement, chunks
from slamkit.errors import SlamkitError
from slamkit.store import Store, jobs

__all__ = [
    "EXECUTORS", "ConcurrentExecutor", "Executor", "Group", "JobResult", "JobSpec", "Lent",
    "Outcome", "Placement", "SequentialExecutor", "ServerExecutor", "make_executor", "run",
]  # fmt: skip

#: the executors every job accepts (``--executor``; ``server`` serves GGUF models, so
#: only sweeps use it)
EXECUTORS = ("sequential", "concurrent", "server", "ray")
#: this machine's name, recorded with the rows it makes
NODE = platform.node()


class Executor(Protocol):
    """Runs groups and yields their outcomes as they finish (in the driver's thread).

    Closing the iterator (an exception or Ctrl-C in the driver) must stop the work and
    free every resource (threads, servers) before ``close()`` returns.
    """

    name: str
    concurrency: int
    parallel: int | None

    def stream(self, groups: Sequence[Group]) -> Generator[Outcome, None, None]: ...

    def describe(self) -> dict[str, Any]: ...


def _call(
    group: Group, resource: Any, cells: list[Any], placement: Placement, load: Load
) -> Outcome:
    token = load.enter()
    try:
        rows = group.call(resource, cells)
        if len(rows) != len(cells):
            raise SlamkitError(f"{group.label}: {len(rows)} results for {len(cells)} cells")
    except Exception as exc:  # a failed call fails its cells; the job goes on
        rows = [group.fail(c, exc, "call") for c in cells]
    finally:
        in_flight = load.exit(token)
    return Outcome(group, cells, rows, placement, in_flight)


def _failed(group: Group, exc: BaseException, placement: Placement) -> Outcome:
    rows = [group.fail(c, exc, "load") for c in group.cells]
    return Outcome(group, list(group.cells), rows, placement, 0, opened=False)


def _spawn(fn: Callable[..., Outcome], *args: Any) -> Future[Outcome]:
    """Run ``fn(*args)`` in a daemon thread (an interrupted job does not wait for it)."""
    fut: Future[Outcome] = Future()

    def work() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # handed to the driver by fut.result()
            fut.set_exception(exc)

    threading.Thread(target=work, name="slamkit-call", daemon=True).start()
    return fut


def run_group(
    group: Group, placement: Placement, workers: int, load: Load | None = None
) -> Generator[Outcome, None, None]:
    """Open the group's resource, run its cells with up to ``workers`` calls in flight
    (1 unless the resource is ``thread_safe``), close it. Outcomes come in finishing order.
    ``load`` counts the calls in flight; groups that run at the same time share one, so
    ``in_flight`` counts every request on the machine, not only this model's."""
    try:
        resource = group.open(placement)
    except Exception as exc:  # a model that does not load fails each of its cells
        yield _failed(group, exc, placement)
        return
    load = load or Load()
    if workers > 1 and not getattr(resource, "thread_safe", False):
        hint = (
            " — use --executor server (or ray) to run a GGUF model's cells in parallel"
            if group.servable is not None
            else " — use --executor ray to spread its calls over workers"
        )
        warnings.warn(
            f"{group.label}: runs one call at a time "
            f"({type(getattr(resource, 'resource', resource)).__name__} is not "
            f"thread-safe; in-process llama.cpp models and evaluate metrics are not){hint}.",
            stacklevel=2,
        )
        workers = 1
        placement = Placement(placement.executor, 1, placement.server)
    try:
        parts = chunks(group)
        if workers <= 1:
            for chunk in parts:
                yield _call(group, resource, chunk, placement, load)
            return
        todo = iter(parts)
        pending: set[Future[Outcome]] = set()

        def submit() -> None:
            chunk = next(todo, None)
            if chunk is not None:
                pending.add(_spawn(_call, group, resource, chunk, placement, load))

        for _ in range(workers):
            submit()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                pending.discard(fut)
                submit()
                yield fut.result()
        # Ctrl-C or an error in the driver leaves this loop: nothing new starts, and the
        # calls in flight run on in daemon threads (the process may exit at once); their
        # results are dropped and planned again on the next run
    finally:
        resource.close()


class SequentialExecutor:
    """One call at a time: every timing is measured in isolation."""

    name = "sequential"
    concurrency = 1
    parallel: int | None = None

    def stream(self, groups: Sequence[Group]) -> Generator[Outcome, None, None]:
        for group in groups:
            yield from run_group(group, Placement(self.name, 1), 1)

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "concurrency": 1}


class ConcurrentExecutor:
    """Up to ``concurrency`` calls in flight per group, one group (model) at a time.

    For endpoints that serve many requests at once (OpenAI, vLLM, a llama.cpp server):
    the backends retry 429 answers after their ``Retry-After``. A resource that is not
    ``thread_safe`` (an in-process llama.cpp model) still runs one call at a time.
    """

    name = "concurrent"
    parallel: int | None = None

    def __init__(self, concurrency: int = 4) -> None:
        check_whole("concurrency", concurrency, 1, "requests in flight")
        self.concurrency = concurrency

    def stream(self, groups: Sequence[Group]) -> Generator[Outcome, None, None]:
        for group in groups:
            yield from run_group(group, Placement(self.name, self.concurrency), self.concurrency)

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "concurrency": self.concurrency}


class ServerExecutor:
    """A managed llama.cpp server per GGUF model: ``parallel`` slots with continuous
    batching, fed ``parallel`` requests at a time; started on 127.0.0.1 when the model's
    cells begin and stopped when they end (also on errors, Ctrl-C and a killed driver,
    see :mod:`slamkit.backends.server`). Groups that are not GGUF models (endpoints) run
    as :class:`ConcurrentExecutor` with ``concurrency`` (default: ``parallel``).

    ``binary``: a ``llama-server`` executable to use (e.g. a CUDA build) instead of the
    prebuilt ``xllamacpp`` one. ``models_at_once``: how many models are served at the same
    time, each by its own server (e.g. 2 servers of 1 thread on 2 cores); their requests
    count in each other's ``in_flight``, since they share the machine.
    """

    name = "server"

    def __init__(
        self,
        parallel: int = 2,
        concurrency: int | None = None,
        *,
        binary: str | Path | None = None,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_gpu_layers: int = 0,
        n_ctx: int = 2048,
        models_at_once: int = 1,
    ) -> None:
        check_whole("parallel", parallel, 1, "llama.cpp server slots")
        check_whole("models_at_once", models_at_once, 1, "models served at the same time")
        if concurrency is not None:
            check_whole("concurrency", concurrency, 1, "requests in flight")
        self.parallel: int | None = parallel
        self.concurrency = parallel if concurrency is None else concurrency
        if binary is not None:  # checked before anything runs
            from slamkit.backends.server import check_binary

            binary = check_binary(binary, "--server-binary (server_binary=)")
        self.binary = binary
        self.models_at_once = models_at_once
        self.options: dict[str, Any] = {
            "n_threads": n_threads, "n_threads_batch": n_threads_batch,
            "n_gpu_layers": n_gpu_layers, "n_ctx": n_ctx,
        }  # fmt: skip
        self.servers: list[dict[str, Any]] = []  # info() of each server started

    def stream(self, groups: Sequence[Group]) -> Generator[Outcome, None, None]:
        load = Load()
        streams = [self._serve(g, load) for g in groups]
        if self.models_at_once <= 1:
            for one in streams:
                yield from one
            return
        yield from interleave(streams, self.models_at_once)

    def _serve(self, group: Group, load: Load) -> Generator[Outcome, None, None]:
        if group.servable is None:
            placement = Placement("concurrent", self.concurrency)
            yield from run_group(group, placement, self.concurrency, load)
            return
        from slamkit.backends.server import ManagedServer

        model = group.servable
        server = ManagedServer(
            model.path, name=model.name, parallel=self.parallel or 1, binary=self.binary,
            **self.options,
        )  # fmt: skip
        placement = Placement(self.name, self.concurrency, server)
        try:
            server.start()
        except Exception as exc:  # the server did not come up: the model's cells fail
            server.stop()
            yield _failed(group, exc, placement)
            return
        try:
            self.servers.append({"model": model.name, **server.info()})
            yield from run_group(group, placement, self.concurrency, load)
        finally:
            server.stop()

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.name, "concurrency": self.concurrency, "parallel": self.parallel,
            "models_at_once": self.models_at_once, "server": _server_build(self.binary),
            **self.options,
        }  # fmt: skip


def _server_build(binary: str | Path | None) -> str:
    """What serves: ``xllamacpp <version>`` or the ``llama-server`` binary's path."""
    if binary:
        return f"llama-server {binary}"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"xllamacpp {version('xllamacpp')}"
    except PackageNotFoundError:
        return "xllamacpp (not installed)"


_DONE = object()


def interleave(
    streams: Sequence[Generator[Outcome, None, None]], at_once: int
) -> Generator[Outcome, None, None]:
    """Run up to ``at_once`` streams at the same time (each in a thread of its own) and
    yield their outcomes as they come. Closing this stream stops them all: each thread
    closes its stream after the outcome it is waiting for (servers stop, models close)."""
    todo = iter(streams)
    lock = threading.Lock()
    stop = threading.Event()
    out: queue.Queue[Any] = queue.Queue()

    def work() -> None:
        try:
            while not stop.is_set():
                with lock:
                    one = next(todo, None)
                if one is None:
                    break
                try:
                    for outcome in one:
                        out.put(outcome)
                        if stop.is_set():
                            break
                finally:
                    one.close()
        except BaseException as exc:  # handed to the driver, which raises it
            out.put(exc)
        finally:
            out.put(_DONE)

    threads = [
        threading.Thread(target=work, name=f"slamkit-stream-{i}", daemon=True)
        for i in range(min(at_once, len(streams)))
    ]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            item = out.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)


def make_executor(
    executor: str | Executor | None = "sequential",
    concurrency: int | None = None,
    parallel: int | None = None,
    **server_options: Any,
) -> Executor:
    """The executor named by ``--executor`` (an :class:`Executor` is returned as it is).

    ``concurrency``: requests in flight (``concurrent``, default 4; ``server``: default
    ``parallel``); ``parallel``: server slots (``server``, default 2). ``server_options``
    (n_threads, n_threads_batch, n_gpu_layers, n_ctx, binary, models_at_once) configure
    the servers (None: their defaults).

    >>> make_executor("concurrent", concurrency=8).describe()
    {'executor': 'concurrent', 'concurrency': 8}
    >>> make_executor("threads")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    slamkit.errors.SlamkitError: executor must be sequential, concurrent, server or ray, got...
    """
    if executor is None:
        executor = "sequential"
    if not isinstance(executor, str):
        return executor
    options = {k: v for k, v in server_options.items() if v is not None}
    for flag, name, idle, takes in (
        ("--server-binary", "binary", None, ("server", "ray")),
        ("--models-at-once", "models_at_once", 1, ("server",)),
        ("--ray-address", "ray_address", None, ("ray",)),
        ("--ray-gpus", "ray_gpus", None, ("ray",)),
    ):
        if options.get(name) not in (None, idle) and executor not in takes:
            raise SlamkitError(
                f"{flag} is an option of --executor {' and '.join(takes)} (got --executor "
                f"{executor})."
            )
    if executor == "sequential":
        if concurrency not in (None, 1) or parallel not in (None, 1):
            raise SlamkitError(
                "executor 'sequential' runs one request at a time: use --executor concurrent "
                "(endpoints) or --executor server (GGUF models) for --concurrency/--parallel."
            )
        return SequentialExecutor()
    if executor == "concurrent":
        if parallel is not None:
            raise SlamkitError(
                "--parallel sets a managed llama.cpp server's slots: use it with "
                "--executor server (concurrent sends --concurrency requests to endpoints)."
            )
        return ConcurrentExecutor(4 if concurrency is None else concurrency)
    if executor == "server":
        return ServerExecutor(2 if parallel is None else parallel, concurrency, **options)
    if executor == "ray":
        from slamkit.ray_executor import RayExecutor

        options.pop("models_at_once", None)  # Ray runs models at once as resources allow
        threads = options.get("n_threads") or 1
        return RayExecutor(
            address=options.pop("ray_address", None),
            actors_per_model=1 if concurrency is None else concurrency,
            num_cpus=threads, num_gpus=options.pop("ray_gpus", 0.0), parallel=parallel,
            **options,
        )  # fmt: skip
    raise SlamkitError(
        f"executor must be {', '.join(EXECUTORS[:-1])} or {EXECUTORS[-1]}, got {executor!r}."
    )


# -- what a job is and what it returns ------------------------------------------------
@dataclass
class JobSpec:
    """How a job's rows are stored.

    ``table`` / ``key``: where rows go and their content key column. ``errors_in_table``:
    the table has an ``error`` column (a failed cell is a row there, replaced when a retry
    succeeds); otherwise failures go to ``job_errors`` keyed by the cell's ``key``.
    ``timed``: rows record executor / concurrency / in_flight; ``run_column``: rows get the
    run's id; ``node_column``: rows record the machine that made them. ``run``: the
    ``runs`` row's other columns (see :func:`provenance`).
    """

    kind: str
    table: str
    key: str
    desc: str
    unit: str = "cell"
    errors_in_table: bool = True
    timed: bool = False
    run_column: bool = False
    node_column: bool = False
    run: dict[str, Any] = field(default_factory=dict)
    flush_rows: int = 16
    flush_s: float = 2.0


#: how each job's summary names what it made
_VERBS = {"generate": "generated", "capture": "captured", "judge": "judged", "score": "scored"}
#: where each job's failed cells are stored (others: ``job_errors``)
_ERRORS_AT = {"generate": "generations.error", "judge": "judgments.error"}


@dataclass
class JobResult:
    """What a job did: cells planned, already stored (cached), done, failed, and the
    distinct errors (each names the model, the cause and what to do)."""

    kind: str = "generate"
    run_id: str | None = None
    planned: int = 0
    cached: int = 0
    done: int = 0
    failed: int = 0
    models_loaded: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    executor: str = "sequential"
    concurrency: int = 1
    elapsed_s: float | None = None
    #: cells done per label (a model or metric)
    by_label: dict[str, int] = field(default_factory=dict)

    #: distinct errors :meth:`__str__` shows
    SHOWN_ERRORS = 3

    @property
    def generated(self) -> int:
        """Cells made by this run (``done``), the word a sweep uses."""
        return self.done

    @property
    def model_calls(self) -> int:
        return self.done + self.failed

    def counts(self) -> dict[str, int]:
        """``planned``, ``cached``, ``done``, ``failed`` as a dict (e.g. for a log line).

        >>> JobResult(planned=4, cached=1, done=2, failed=1).counts()
        {'planned': 4, 'cached': 1, 'done': 2, 'failed': 1}
        """
        return {"planned": self.planned, "cached": self.cached, "done": self.done,
                "failed": self.failed}  # fmt: skip

    def add_error(self, message: str) -> None:
        """Count one failed cell with ``message``."""
        self.failed += 1
        if message not in self.error_counts:
            self.errors.append(message)
            self.error_counts[message] = 0
        self.error_counts[message] += 1

    def __str__(self) -> str:
        """The summary line, then the first distinct errors, one per line.

        >>> r = JobResult(run_id="run-1", planned=3, done=1)
        >>> for _ in range(2): r.add_error("m.gguf: it broke — fix it")
        >>> print(r)
        3 cells: 0 cached, 1 generated, 2 failed (run run-1)
          error (2 cells): m.gguf: it broke — fix it
        """
        how = "" if self.executor == "sequential" else f", {self.executor} x{self.concurrency}"
        lines = [
            f"{self.planned} cells: {self.cached} cached, {self.done} "
            f"{_VERBS.get(self.kind, 'done')}, {self.failed} failed "
            f"(run {self.run_id or '-'}{how})"
        ]
        for message in self.errors[: self.SHOWN_ERRORS]:
            n = self.error_counts.get(message, 1)
            lines.append(f"  error ({n} cell{'s' if n != 1 else ''}): {message}")
        if len(self.errors) > self.SHOWN_ERRORS:
            more = len(self.errors) - self.SHOWN_ERRORS
            lines.append(
                f"  ... and {more} more distinct error{'s' if more != 1 else ''} "
                f"(all in {_ERRORS_AT.get(self.kind, 'job_errors')} of the store)"
            )
        return "\n".join(lines)


def run(
    store: Store,
    spec: JobSpec,
    groups: Sequence[Group],
    executor: Executor,
    *,
    planned: int,
    cached: int,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> JobResult:
    """Run ``groups`` with ``executor`` and store every row; see the module docstring.

    ``planned`` / ``cached``: the job's cells and those already stored (left out of
    ``groups``). Nothing to do: no ``runs`` row is written. ``on_row`` is called with each
    row after it is committed.
    """
    from tqdm.auto import tqdm

    result = JobResult(
        spec.kind, planned=planned, cached=cached, executor=executor.name,
        concurrency=executor.concurrency,
    )  # fmt: skip
    todo = sum(len(g.cells) for g in groups)
    if todo == 0:
        return result
    row = {
        **provenance(spec.kind),
        **spec.run,
        "executor": executor.name,
        "concurrency": executor.concurrency,
        "parallel": executor.parallel,
    }
    params = dict(row.get("params") or {})
    params["executor"] = executor.describe()
    row["params"] = params
    store.insert("runs", row)
    result.run_id = row["run_id"]
    bar = tqdm(total=todo, disable=not progress, unit=spec.unit, desc=spec.desc)
    buffer: list[tuple[Any, dict[str, Any], str]] = []
    last = time.monotonic()
    started = time.perf_counter()

    def flush() -> None:
        nonlocal last
        if buffer:
            _commit(store, spec, row["run_id"], buffer)
            if on_row is not None:
                for _, r, _ in buffer:
                    on_row(r)
            buffer.clear()
        last = time.monotonic()

    stream = executor.stream(groups)
    try:
        for out in stream:
            label = out.group.label
            if out.opened and label not in result.models_loaded:
                result.models_loaded.append(label)
            for cell, r in zip(out.cells, out.rows, strict=True):
                if spec.run_column:
                    r["run_id"] = row["run_id"]
                if spec.timed:
                    r["executor"] = out.placement.executor
                    r["concurrency"] = out.placement.concurrency
                    r["in_flight"] = out.in_flight if out.opened else None
                if spec.node_column:
                    r["node"] = out.node or NODE
                if r.get("error"):
                    result.add_error(str(r["error"]))
                else:
                    result.done += 1
                    result.by_label[label] = result.by_label.get(label, 0) + 1
                buffer.append((cell, r, label))
            bar.set_postfix_str(label, refresh=False)
            bar.update(len(out.cells))
            if len(buffer) >= spec.flush_rows or time.monotonic() - last >= spec.flush_s:
                flush()
    finally:
        stream.close()  # stops the executor's threads and servers
        try:
            flush()  # what finished is kept, also on Ctrl-C
            servers = getattr(executor, "servers", None)
            if servers:  # what really served (build, slots, threads), per model
                jobs.merge_run_params(store, row["run_id"], {"servers": servers})
        finally:
            bar.close()
            result.elapsed_s = time.perf_counter() - started
    return result


def _commit(store: Store, spec: JobSpec, run_id: str, batch: list[tuple[Any, dict, str]]) -> None:
    if spec.errors_in_table:
        jobs.write_cells(store, spec.table, spec.key, [r for _, r, _ in batch])
        return
    ok = [r for _, r, _ in batch if not r.get("error")]
    done = [c.key for c, r, _ in batch if not r.get("error")]
    failed = [
        {"job": spec.kind, "cell_key": c.key, "run_id": run_id, "label": label,
         "error": str(r["error"])}
        for c, r, label in batch if r.get("error")
    ]  # fmt: skip
    jobs.write_cells(store, spec.table, spec.key, ok, job=spec.kind, done=done, failed=failed)


# -- provenance ----------------------------------------------------------------------
def new_run_id(kind: str) -> str:
    """``run-<time>-<hex>`` for sweeps (as before), ``<kind>-<time>-<hex>`` otherwise."""
    prefix = "run" if kind == "generate" else kind
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def provenance(kind: str) -> dict[str, Any]:
    """The ``runs`` columns every job records: id, kind, versions, hardware, git revision."""
    row: dict[str, Any] = {
        "run_id": new_run_id(kind),
        "kind": kind,
        "slamkit_version": __version__,
        "hardware": hardware_info(),
        "git_revision": git_revision(),
    }
    return row


def hardware_info() -> dict[str, Any]:
    """CPU model, cores, memory, platform, Python, OMP_WAIT_POLICY (for ``runs``)."""
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
