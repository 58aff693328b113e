"""The load generator: many streamed requests at once, each timed token by token.

One asyncio event loop (``aiohttp``, in a daemon thread, so the caller's thread stays
free to store rows and to take Ctrl-C) sends prepared requests to one URL and times
every answer: when it was due (open loop), when it was sent, its first token (TTFT),
every later token (inter-token latencies) and its end. Two protocols:

* ``openai``: ``POST {base_url}/chat/completions`` with ``stream: true`` (any
  OpenAI-compatible endpoint: GPT-4, vLLM, ``llama_cpp.server``);
* ``llama.cpp``: ``POST {base_url}/completion`` with token ids, as slamkit's managed
  llama.cpp server is driven (:class:`slamkit.backends.server.ServerBackend`: same
  prompt, same sampler, same detokenizer and stops, so greedy text is comparable with
  the in-process run).

Two kinds of load point (see :func:`LoadGenerator.closed` and :func:`LoadGenerator.open`):
a **closed loop** keeps ``concurrency`` requests in flight (each worker sends its next
request when its last one ends); an **open loop** sends at Poisson arrival times of a
given rate, whatever the server's state (how real traffic arrives). Both are bounded:
at most ``n_requests`` requests, none sent after ``max_s`` seconds, and every request is
given up after ``timeout_s`` (status ``timeout``) — so a point lasts at most
``max_s + timeout_s``.

The generator never decides what to store; it hands each finished :class:`Record` to
``on_record`` as it ends (from the loop's thread).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slamkit.errors import SlamkitError

PROTOCOLS = ("openai", "llama.cpp")


@dataclass
class Prepared:
    """One request ready to send. ``body`` is the JSON body (bytes, built once);
    ``reader`` makes the object that reads its answer (llama.cpp protocol: detokenizes
    and applies stops); ``cell_key`` is the generation cell it repeats (None for none)."""

    item_id: str
    body: bytes
    cell_key: str | None = None
    reader: Callable[[], Any] | None = None


@dataclass
class Record:
    """One request's measurements. Times in seconds; ``*_at_s`` are offsets from the start
    of its load point. ``status``: ``ok``, ``error`` (HTTP error, broken or unreadable
    answer), ``timeout`` (no end within ``timeout_s``) or ``cancelled`` (stopped by
    Ctrl-C before it ended: never stored)."""

    point: int
    request: int
    item_id: str
    cell_key: str | None
    scheduled_at_s: float | None = None
    sent_at_s: float = math.nan
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    max_in_flight: int = 1
    status: str = "ok"
    http_status: int | None = None
    error: str | None = None
    text: str | None = None
    finish_reason: str | None = None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e - ttft) / (tokens - 1)."""
        n = self.completion_tokens
        if self.ttft_s is None or self.e2e_s is None or not n or n < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (n - 1)


@dataclass
class PointInfo:
    """What one load point did: its offered load, how long it took, how it ended and the
    send-time error of the generator (open loop: actual minus scheduled send time)."""

    point: int
    mode: str  # 'closed' | 'open'
    concurrency: int | None
    rate_rps: float | None
    planned: int
    sent: int = 0
    duration_s: float = 0.0
    status: str = "complete"  # 'complete' | 'time bound' | 'interrupted'
    lag_mean_s: float | None = None
    lag_p99_s: float | None = None
    lag_max_s: float | None = None


class _ChatReader:
    """Reads an OpenAI chat-completion stream: content deltas, usage, finish reason."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.done = False

    def feed(self, event: dict[str, Any]) -> int:
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = usage.get("prompt_tokens")
            self.completion_tokens = usage.get("completion_tokens")
        new = 0
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.parts.append(content)
                new += 1
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return new

    def result(self) -> tuple[str, int | None, int | None, str | None]:
        tokens = self.completion_tokens if self.completion_tokens else len(self.parts)
        return "".join(self.parts), self.prompt_tokens, tokens, self.finish


class LoadGenerator:
    """Sends load to one endpoint. ``base_url`` ends with ``/v1`` (openai) or is the
    llama.cpp server's root (llama.cpp). ``headers``: e.g. the authorization header — it
    stays in this object and is never put in a record or a message."""

    def __init__(
        self,
        base_url: str,
        protocol: str = "openai",
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 60.0,
        max_connections: int = 1024,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise SlamkitError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise SlamkitError(f"timeout_s must be a number > 0, got {timeout_s!r}.")
        self.base_url = base_url.rstrip("/")
        self.protocol = protocol
        self.url = self.base_url + ("/chat/completions" if protocol == "openai" else "/completion")
        self._headers = {"content-type": "application/json", **(headers or {})}
        self.timeout_s = float(timeout_s)
        self.max_connections = max_connections
        self.in_flight = 0
        #: the last point begun (also when it was interrupted)
        self.last_info: PointInfo | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None

    # -- the loop thread ---------------------------------------------------------------
    def start(self) -> LoadGenerator:
        if self._loop is not None:
            return self
        import aiohttp  # noqa: F401  (fail here, before any thread starts)

        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="slamkit-loadgen", daemon=True
        )
        self._thread.start()
        self._call(self._open_session())
        return self

    async def _open_session(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            # llama.cpp's server drops kept-alive connections (a reused one then fails
            # before the request is written): one connection per request there, which on
            # 127.0.0.1 costs well under a millisecond against seconds of generation
            connector=aiohttp.TCPConnector(
                limit=self.max_connections, force_close=self.protocol == "llama.cpp"
            ),
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,  # never through a proxy
            auto_decompress=False,
        )

    def _call(self, coro: Any, tick: Callable[[], None] | None = None, poll_s: float = 0.1) -> Any:
        """Run ``coro`` on the loop; wait in short steps (calling ``tick`` after each) so
        Ctrl-C reaches this thread at once, and cancel the coroutine then (its requests
        end as ``cancelled``)."""
        assert self._loop is not None
        finished = threading.Event()

        async def tracked() -> Any:
            try:
                return await coro
            finally:
                finished.set()

        fut = asyncio.run_coroutine_threadsafe(tracked(), self._loop)
        try:
            while True:
                try:
                    return fut.result(timeout=poll_s)
                except TimeoutError:
                    if tick is not None:
                        tick()
        except BaseException:
            fut.cancel()  # cancels the task; wait until it has wound down (records, status)
            finished.wait(5)
            raise

    def close(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            if self._session is not None:
                asyncio.run_coroutine_threadsafe(self._session.close(), loop).result(5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        loop.close()
        self._loop = self._session = None

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request -------------------------------------------------------------------
    async def _send(self, req: Prepared, rec: Record, t0: float) -> Record:
        import aiohttp

        self.in_flight += 1
        rec.max_in_flight = self.in_flight
        rec.sent_at_s = time.perf_counter() - t0
        reader = req.reader() if req.reader is not None else _ChatReader()
        last: float | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await self._post(req, rec, t0)
                async with resp:
                    rec.http_status = resp.status
                    if resp.status != 200:
                        raw = await resp.content.read(300)
                        rec.status = "error"
                        rec.error = f"HTTP {resp.status}: {_printable(raw)}"
                        return rec
                    async for line in resp.content:
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            break
                        event = json.loads(payload)
                        if "error" in event:
                            rec.status = "error"
                            rec.error = f"the server reported an error: {event['error']}"[:300]
                            return rec
                        new = reader.feed(event)
                        if new:
                            now = time.perf_counter()
                            sent = t0 + rec.sent_at_s
                            if last is None:
                                rec.ttft_s = now - sent
                            else:
                                rec.itl_s.append(now - last)
                            last = now
                            if self.in_flight > rec.max_in_flight:
                                rec.max_in_flight = self.in_flight
                        if reader.done:
                            break
            rec.e2e_s = time.perf_counter() - t0 - rec.sent_at_s
            text, p_tok, c_tok, finish = reader.result()
            rec.text, rec.prompt_tokens, rec.completion_tokens = text, p_tok, c_tok
            rec.finish_reason = finish
            if finish is None:
                rec.status = "error"
                rec.error = "the answer stream ended before the server finished it"
        except TimeoutError:
            rec.status = "timeout"
            rec.error = f"no complete answer within {self.timeout_s:g} s"
        except asyncio.CancelledError:
            rec.status = "cancelled"
            raise
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            rec.status = "error"
            rec.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.in_flight -= 1
        return rec

    async def _post(self, req: Prepared, rec: Record, t0: float) -> Any:
        """POST the request; once more on a fresh connection when a pooled one turns out
        closed by the server before any answer (llama.cpp's server closes idle ones):
        that is the client's artefact, so the request is timed from the second send."""
        import aiohttp

        try:
            return await self._session.post(self.url, data=req.body, headers=self._headers)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            rec.sent_at_s = time.perf_counter() - t0
            return await self._session.post(self.url, data=req.body, headers=self._headers)

    # -- load points ---------------------------------------------------------------------
    def closed(
        self,
        point: int,
        prompts: Sequence[Prepared],
        concurrency: int,
        n_requests: int,
        max_s: float,
        on_record: Callable[[Record], None],
        first_request: int = 0,
        tick: Callable[[], None] | None = None,
    ) -> PointInfo:
        """Closed loop: ``concurrency`` workers, each sending its next request (prompts
        in turn, from ``first_request``) when its last one ended; at most ``n_requests``
        and none sent after ``max_s`` seconds. ``tick`` is called about every 0.1 s from
        this thread while the point runs."""
        info = self.last_info = PointInfo(point, "closed", concurrency, None, n_requests)
        self._call(self._closed(info, prompts, n_requests, max_s, on_record, first_request), tick)
        return info

    async def _closed(
        self,
        info: PointInfo,
        prompts: Sequence[Prepared],
        n_requests: int,
        max_s: float,
        on_record: Callable[[Record], None],
        first: int,
    ) -> None:
        t0 = time.perf_counter()
        counter = iter(range(n_requests))

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() - t0 > max_s:
                    info.status = "time bound"
                    return
                req = prompts[(first + i) % len(prompts)]
                rec = Record(info.point, i, req.item_id, req.cell_key)
                info.sent += 1
                on_record(await self._send(req, rec, t0))

        await self._gather(info, [worker() for _ in range(info.concurrency or 1)], t0)

    def open(
        self,
        point: int,
        prompts: Sequence[Prepared],
        rate_rps: float,
        n_requests: int,
        max_s: float,
        on_record: Callable[[Record], None],
        seed: int = 0,
        first_request: int = 0,
        tick: Callable[[], None] | None = None,
    ) -> PointInfo:
        """Open loop: requests at Poisson arrival times of ``rate_rps`` per second (seeded
        exponential gaps), whatever is in flight; at most ``n_requests``, none due after
        ``max_s``. The send-time error (sent minus due) is in the returned info."""
        info = self.last_info = PointInfo(point, "open", None, rate_rps, n_requests)
        rng = np.random.default_rng(seed)
        due = np.cumsum(rng.exponential(1.0 / rate_rps, size=n_requests))
        due = due - due[0]  # the first request at once
        self._call(self._open(info, prompts, due, max_s, on_record, first_request), tick)
        return info

    async def _open(
        self,
        info: PointInfo,
        prompts: Sequence[Prepared],
        due: np.ndarray,
        max_s: float,
        on_record: Callable[[Record], None],
        first: int,
    ) -> None:
        t0 = time.perf_counter()
        lags: list[float] = []

        async def one(i: int, at: float) -> None:
            req = prompts[(first + i) % len(prompts)]
            rec = Record(info.point, i, req.item_id, req.cell_key, scheduled_at_s=at)
            on_record(await self._send(req, rec, t0))

        tasks = []
        for i, at in enumerate(due.tolist()):
            if at > max_s:
                info.status = "time bound"
                break
            wait = t0 + at - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            lags.append(time.perf_counter() - t0 - at)
            info.sent += 1
            tasks.append(asyncio.ensure_future(one(i, at)))
        if lags:
            arr = np.asarray(lags)
            info.lag_mean_s = float(arr.mean())
            info.lag_p99_s = float(np.quantile(arr, 0.99))
            info.lag_max_s = float(arr.max())
        await self._gather(info, tasks, t0)

    async def _gather(self, info: PointInfo, aws: list[Any], t0: float) -> None:
        tasks = [asyncio.ensure_future(a) for a in aws]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            info.status = "interrupted"
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            info.duration_s = time.perf_counter() - t0


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:200]
