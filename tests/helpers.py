"""Plain helpers shared by the test modules (fixtures live in conftest.py).

Test modules import from here (``from helpers import write_gguf``; ``tests/`` is on
``sys.path`` because it holds the rootdir conftest.py) and never from one another:
tests/test_structure.py checks that.
"""

from __future__ import annotations

import email.utils
import json
import math
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from slamkit.gguf import GGML_TYPES

# -- a tiny GGUF writer for synthetic files ------------------------------------------------

_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _enc_value(vtype: int, value: Any, e: str) -> bytes:
    if vtype in _FMT:
        return struct.pack(e + _FMT[vtype], value)
    if vtype == 8:
        raw = value.encode()
        return struct.pack(e + "Q", len(raw)) + raw
    etype, items = value  # array: (element type, items)
    out = struct.pack(e + "IQ", etype, len(items))
    return out + b"".join(_enc_value(etype, v, e) for v in items)


def write_gguf(
    path: Path,
    kv: list[tuple[str, int, Any]],
    tensors: list[tuple[str, tuple[int, ...], int]],
    version: int = 3,
    e: str = "<",
    alignment: int = 32,
) -> Path:
    """Write a valid GGUF with zeroed tensor data."""
    out = bytearray(b"GGUF" + struct.pack(e + "IQQ", version, len(tensors), len(kv)))
    for key, vtype, value in kv:
        out += _enc_value(8, key, e) + struct.pack(e + "I", vtype) + _enc_value(vtype, value, e)
    offset, sizes = 0, []
    for name, shape, tid in tensors:
        _, block, tsize = GGML_TYPES[tid]
        n = 1
        for d in shape:
            n *= d
        nbytes = n // block * tsize
        out += _enc_value(8, name, e) + struct.pack(e + "I", len(shape))
        out += b"".join(struct.pack(e + "Q", d) for d in shape)
        out += struct.pack(e + "IQ", tid, offset)
        sizes.append(nbytes)
        offset += -(-nbytes // alignment) * alignment
    out += b"\0" * (-len(out) % alignment)
    for i, nbytes in enumerate(sizes):
        out += b"\0" * nbytes
        if i < len(sizes) - 1:
            out += b"\0" * (-nbytes % alignment)
    path.write_bytes(bytes(out))
    return path


#: a few tensors of three types (Q4_0, F32, Q4_K) for synthetic files
TENSORS = [("tok.weight", (64, 10), 2), ("norm", (64,), 0), ("out.weight", (256, 3), 12)]


# -- a store with a task, items, GPT-4 references and generations -------------------------

#: the default task, references and generations of :func:`add_synthetic`
TASK = "t"
REFS = {"i1": "the cat is on the mat", "i2": "a b c d f"}
GENS = {  # (model, item) -> text
    ("m1", "i1"): "the cat sat on the mat",
    ("m1", "i2"): "a b c d e",
    ("m2", "i1"): "The cat is on the mat.",
    ("m2", "i2"): "One. Two. Three. Four. Five.",
}


def add_synthetic(store, gens=GENS, refs=REFS, task_id=TASK) -> dict[tuple[str, str], str]:
    """Insert a task, items, references and generations; return (model, item) -> gen_key."""
    store.insert("tasks", {"task_id": task_id, "template": "{q}"})
    store.insert_many(
        "items",
        [
            {"task_id": task_id, "item_id": i, "position": n, "fields": {"q": i}, "prompt": i}
            for n, i in enumerate(refs)
        ],
    )
    store.insert_many(
        "reference_outputs",
        [
            {"ref_id": f"r-{i}", "task_id": task_id, "item_id": i, "source_model": "gpt-4",
             "sample_index": 0, "text": t}
            for i, t in refs.items()
        ],
    )  # fmt: skip
    for m in {m for m, _ in gens}:
        store.insert("models", {"model_id": m, "name": f"model-{m}", "path": f"/x/{m}.gguf"})
    keys = {}
    rows = []
    for (m, i), text in gens.items():
        keys[(m, i)] = f"g-{m}-{i}"
        rows.append(
            {"gen_key": keys[(m, i)], "run_id": "run", "model_id": m, "task_id": task_id,
             "item_id": i, "sample_index": 0, "seed": 0, "sampling": {}, "text": text,
             "error": None}
        )  # fmt: skip
    store.insert_many("generations", rows)
    return keys


# -- an OpenAI-compatible fake endpoint ------------------------------------------------------


class FakeServer:
    """An OpenAI-compatible chat endpoint that follows a script per item prompt.

    ``script[marker]`` is a list of behaviours consumed one per request whose user message
    contains ``marker``: 'ok:<content>', '429', '500', 'malformed', 'hang', 'reject'
    (422, as a server that does not know the response_format), 'reject500' (the same as
    llama_cpp.server says it: HTTP 500 naming response_format), 'echo401' / 'echo500'
    (an error whose message echoes the bearer token, as some servers do). When a list runs
    out its last behaviour repeats.
    """

    def __init__(self, script: dict[str, list[str]], hang_s: float = 3.0, port: int = 0) -> None:
        self.script = script
        self.hang_s = hang_s
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                user = body["messages"][-1]["content"]
                marker = next(m for m in fake.script if m in user)
                steps = fake.script[marker]
                step = steps.pop(0) if len(steps) > 1 else steps[0]
                if step == "hang":
                    time.sleep(fake.hang_s)
                    step = 'ok:{"reasoning": "late", "verdict": "A"}'
                if step in ("429", "500", "reject", "reject500"):
                    code = {"429": 429, "500": 500, "reject": 422, "reject500": 500}[step]
                    msg = f"scripted {step}" + (": bad response_format" if "rej" in step else "")
                    return self._send(code, {"error": {"message": msg}})
                if step in ("echo401", "echo500"):
                    token = self.headers["authorization"].split()[-1]
                    msg = f"invalid token {token} (Authorization: Bearer {token})"
                    return self._send(int(step[4:]), {"error": {"message": msg}})
                if step == "malformed":
                    return self._send(200, b'{"id": "x", "choices": [ {"mess')
                content = step.removeprefix("ok:")
                self._send(
                    200,
                    {
                        "id": "c1", "object": "chat.completion", "created": 0,
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 7,
                                  "total_tokens": 18},
                    },
                )  # fmt: skip

            def _send(self, code: int, payload: dict | bytes) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- a faulty OpenAI-compatible endpoint for load tests and benchmarks ----------------------


@dataclass(frozen=True)
class EndpointRequest:
    """One chat request a :class:`FaultyEndpoint` served (times: ``time.monotonic()``)."""

    arrival: float  # when its headers had been read
    status: int  # the HTTP status answered (an upstream's own, when proxying)
    prompt: str  # the last user message
    stream: bool
    finished: float  # when the answer was sent (or the client went away)
    in_flight: int  # chat requests being served when it arrived, itself included


def response_format_kind(fmt: object) -> str:
    """The name slamkit's judge gives a request's ``response_format`` (its ``FORMATS``):
    json_schema, json_object_schema (json_object with a schema), json_object or none."""
    if not isinstance(fmt, dict):
        return "none"
    if fmt.get("type") == "json_object":
        return "json_object_schema" if "schema" in fmt else "json_object"
    return str(fmt.get("type"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs under load (1 s retransmits)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # a client going away is normal


class FaultyEndpoint:
    """A local OpenAI-compatible endpoint that misbehaves on purpose, for tests and benches.

    A ``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread (``port=0``: any free port);
    a context manager (or :meth:`start` / :meth:`close`); ``base_url`` ends with ``/v1``.
    Standard library only, so ``bench/`` scripts can use it (``sys.path.insert(0,
    "tests")``; ``import helpers``). Serves ``GET /v1/models`` and ``POST
    /v1/chat/completions``, streamed (SSE chunks shaped like OpenAI's, a final usage chunk
    when ``stream_options.include_usage``) or not.

    Answers come from ``upstream`` (the base URL of a real server, e.g. ``python -m
    llama_cpp.server``: each request is proxied, streams chunk by chunk; at most
    ``upstream_slots`` at once when set, the rest queue) or, without one, are canned and
    deterministic: the first ``reply_words`` words of the last user message, or the words
    of ``reply`` when given (at most ``max_tokens`` of them; ``finish_reason`` "length"
    when that cut them), one chunk per word, usage counted in words.

    Faults, decided on arrival, in this order (counting chat requests from 1):

    * ``rate_limit_first=k``: the first k get HTTP 429; ``rate_limit_every=n``: so does
      every n-th. A 429 carries ``Retry-After`` of ``retry_after_s`` (None: no header) in
      ``retry_after_form``: "seconds" (``Retry-After: 1``), "ms" (``retry-after-ms: 1000``
      beside a whole-seconds ``Retry-After``, as OpenAI sends) or "date" (an HTTP date,
      rounded up to the second).
    * ``max_in_flight=m``: HTTP 503 when more than m chat requests are being served (this
      one included).
    * after ``delay_s``, HTTP 400 (as a server that does not know them) for a request with
      ``stream_options`` when ``reject_stream_options``, or whose
      :func:`response_format_kind` is in ``reject_response_formats``.

    Timing: ``delay_s`` is added before the first byte of every answer that is not a fault
    (faults wait ``fault_delay_s``: rate limiters answer at once); ``chunk_delay_s``
    between streamed chunks (canned answers); ``slow_after=n``: each answer also waits
    ``slow_step_s`` for every chat request in flight beyond n when it arrived (load
    slows answers down).

    Counters (read them any time; :meth:`stats` copies them consistently): ``total`` chat
    requests, ``sent_429``, ``sent_503``, ``sent_400`` (rejections), ``in_flight`` now,
    ``max_in_flight_seen``, ``models_requests`` (GET /v1/models), and :meth:`records`: one
    :class:`EndpointRequest` per finished chat request, in order of arrival.
    """

    def __init__(
        self,
        *,
        upstream: str | None = None,
        upstream_slots: int | None = None,
        upstream_timeout_s: float = 300.0,
        reply_words: int = 8,
        reply: str | None = None,
        model: str = "faulty",
        delay_s: float = 0.0,
        fault_delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        rate_limit_first: int = 0,
        rate_limit_every: int | None = None,
        retry_after_s: float | None = 1.0,
        retry_after_form: str = "seconds",
        max_in_flight: int | None = None,
        slow_after: int | None = None,
        slow_step_s: float = 0.1,
        reject_stream_options: bool = False,
        reject_response_formats: Collection[str] = (),
        port: int = 0,
    ) -> None:
        if retry_after_form not in ("seconds", "ms", "date"):
            raise ValueError(
                f"retry_after_form must be seconds, ms or date, got {retry_after_form!r}"
            )
        self.upstream = upstream.rstrip("/") if upstream else None
        self.upstream_timeout_s = upstream_timeout_s
        self.reply_words = reply_words
        self.reply = reply
        self.reject_stream_options = reject_stream_options
        self.reject_response_formats = frozenset(reject_response_formats)
        self.model = model
        self.delay_s = delay_s
        self.fault_delay_s = fault_delay_s
        self.chunk_delay_s = chunk_delay_s
        self.rate_limit_first = rate_limit_first
        self.rate_limit_every = rate_limit_every
        self.retry_after_s = retry_after_s
        self.retry_after_form = retry_after_form
        self.max_in_flight = max_in_flight
        self.slow_after = slow_after
        self.slow_step_s = slow_step_s
        self.lock = threading.Lock()
        self.total = 0
        self.sent_429 = 0
        self.sent_503 = 0
        self.sent_400 = 0
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.models_requests = 0
        self._records: list[EndpointRequest] = []
        self._slots = threading.Semaphore(upstream_slots) if upstream_slots else None
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms stall
            timeout = 120  # an idle kept-alive connection frees its thread after this

            def log_message(self, *a: object) -> None:  # keep test output quiet
                pass

            def setup(self) -> None:
                super().setup()
                with endpoint.lock:
                    endpoint._conns.add(self.connection)

            def finish(self) -> None:
                with endpoint.lock:
                    endpoint._conns.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:  # noqa: N802
                endpoint._get(self)

            def do_POST(self) -> None:  # noqa: N802
                endpoint._post(self)

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.port = int(self.httpd.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name=f"FaultyEndpoint:{self.port}", daemon=True
        )
        self._started = self._closed = False

    # -- life cycle
    def start(self) -> FaultyEndpoint:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; answers still waiting on a delay end at once (their clients see
        the connection close)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._started:
            self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:  # kept-alive connections: their clients see them close
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FaultyEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counters
    def records(self) -> list[EndpointRequest]:
        """Every finished chat request, in order of arrival (a copy)."""
        with self.lock:
            return sorted(self._records, key=lambda r: r.arrival)

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {
                "total": self.total, "sent_429": self.sent_429, "sent_503": self.sent_503,
                "sent_400": self.sent_400,
                "in_flight": self.in_flight, "max_in_flight_seen": self.max_in_flight_seen,
                "models_requests": self.models_requests,
            }  # fmt: skip

    # -- serving
    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        if self._stop.is_set():
            h.close_connection = True
            return
        path = h.path.split("?")[0].rstrip("/")
        if path not in ("/v1/models", "/models"):
            return _send_json(h, 404, {"error": {"message": f"no route {h.path}"}})
        with self.lock:
            self.models_requests += 1
        if self.upstream:
            return self._proxy(h, "GET", "/models", None, stream=False)
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "slamkit-tests"}
        _send_json(h, 200, {"object": "list", "data": [model]})

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        arrival = time.monotonic()
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if self._stop.is_set():
            h.close_connection = True
            return
        path = h.path.split("?")[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            return _send_json(h, 404, {"error": {"message": f"no route {h.path}"}})
        try:
            body = json.loads(raw)
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            return _send_json(h, 400, {"error": {"message": "body is not a chat request"}})
        prompt = next(
            (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        stream = bool(body.get("stream"))
        with self.lock:
            self.total += 1
            n = self.total
            self.in_flight += 1
            in_flight = self.in_flight
            self.max_in_flight_seen = max(self.max_in_flight_seen, in_flight)
            if n <= self.rate_limit_first or (
                self.rate_limit_every and n % self.rate_limit_every == 0
            ):
                fault = 429
                self.sent_429 += 1
            elif self.max_in_flight is not None and in_flight > self.max_in_flight:
                fault = 503
                self.sent_503 += 1
            else:
                fault = 0
        status = fault or 200
        try:
            if fault == 429:
                self._sleep(self.fault_delay_s)
                _send_json(h, 429, {"error": {
                    "message": f"Rate limit reached (FaultyEndpoint, request {n})",
                    "type": "requests", "code": "rate_limit_exceeded"}},
                    self._retry_after_headers())  # fmt: skip
            elif fault == 503:
                self._sleep(self.fault_delay_s)
                _send_json(h, 503, {"error": {
                    "message": f"overloaded: {in_flight} requests in flight, at most "
                               f"{self.max_in_flight}", "type": "server_error"}})  # fmt: skip
            else:
                slow = 0.0
                if self.slow_after is not None:
                    slow = self.slow_step_s * max(in_flight - self.slow_after, 0)
                self._sleep(self.delay_s + slow)
                if self._stop.is_set():
                    status = 0  # closed while waiting: no answer
                    h.close_connection = True
                elif rejected := self._rejection(body):
                    status = 400
                    with self.lock:
                        self.sent_400 += 1
                    error = {"message": rejected, "type": "invalid_request_error"}
                    _send_json(h, 400, {"error": error})
                elif self.upstream:
                    status = self._proxy(h, "POST", "/chat/completions", raw, stream)
                else:
                    self._canned(h, body, messages, prompt, stream)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            h.close_connection = True  # the client gave up (its timeout)
        finally:
            with self.lock:
                self.in_flight -= 1
                self._records.append(
                    EndpointRequest(arrival, status, prompt, stream, time.monotonic(), in_flight)
                )

    def _rejection(self, body: dict) -> str | None:
        """Why a request is rejected with HTTP 400 (``reject_stream_options``,
        ``reject_response_formats``), or None."""
        if self.reject_stream_options and "stream_options" in body:
            return "Unknown field: stream_options"
        kind = response_format_kind(body.get("response_format"))
        if kind in self.reject_response_formats:
            return f"response_format {kind} is not supported"
        return None

    def _retry_after_headers(self) -> dict[str, str]:
        s = self.retry_after_s
        if s is None:
            return {}
        if self.retry_after_form == "ms":
            return {"retry-after-ms": f"{s * 1000:.0f}", "Retry-After": str(math.ceil(s))}
        if self.retry_after_form == "date":
            return {"Retry-After": email.utils.formatdate(math.ceil(time.time() + s), usegmt=True)}
        return {"Retry-After": f"{s:g}"}

    def _canned(
        self, h: BaseHTTPRequestHandler, body: dict, messages: list, prompt: str, stream: bool
    ) -> None:
        words = (self.reply or prompt).split()[: None if self.reply else self.reply_words]
        words = words or ["ok"]
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and 0 < max_tokens < len(words):
            words, finish = words[:max_tokens], "length"
        usage = {
            "prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in messages),
            "completion_tokens": len(words),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        model = str(body.get("model") or self.model)
        if not stream:
            return _send_json(h, 200, {
                "id": "chatcmpl-faulty", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                             "message": {"role": "assistant", "content": " ".join(words)}}],
                "usage": usage,
            })  # fmt: skip
        opts = body.get("stream_options") or {}
        with_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))

        def chunk(delta: dict, finish_reason: str | None) -> dict:
            out: dict[str, Any] = {
                "id": "chatcmpl-faulty", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}],
            }  # fmt: skip
            if with_usage:
                out["usage"] = None  # as OpenAI: null on every chunk but the last
            return out

        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": w if i == 0 else " " + w}, None) for i, w in enumerate(words)]
        events.append(chunk({}, finish))
        if with_usage:
            events.append({"id": "chatcmpl-faulty", "object": "chat.completion.chunk",
                           "created": int(time.time()), "model": model, "choices": [],
                           "usage": usage})  # fmt: skip
        _start_chunked(h, 200, "text/event-stream")
        for i, event in enumerate(events):
            if i > 1:
                self._sleep(self.chunk_delay_s)
            _write_chunk(h, f"data: {json.dumps(event)}\n\n".encode())
        _write_chunk(h, b"data: [DONE]\n\n")
        _write_chunk(h, b"")

    def _proxy(
        self, h: BaseHTTPRequestHandler, method: str, path: str, raw: bytes | None, stream: bool
    ) -> int:
        """Forward to ``upstream`` and relay its answer (a stream as it comes); returns the
        status relayed (502 when the upstream cannot be reached)."""
        headers = {"Content-Type": "application/json"}
        if auth := h.headers.get("Authorization"):
            headers["Authorization"] = auth
        assert self.upstream is not None
        url = self.upstream + path
        req = urllib.request.Request(url, data=raw, method=method, headers=headers)
        if self._slots is not None:
            self._slots.acquire()
        try:
            try:
                resp = urllib.request.urlopen(req, timeout=self.upstream_timeout_s)
            except urllib.error.HTTPError as err:
                _send(
                    h, err.code, err.read(), err.headers.get("Content-Type") or "application/json"
                )
                return err.code
            except OSError as exc:
                _send_json(h, 502, {"error": {"message": f"upstream unreachable: {exc}"}})
                return 502
            with resp:
                ctype = resp.headers.get("Content-Type") or "application/json"
                if not (stream and "event-stream" in ctype):
                    _send(h, resp.status, resp.read(), ctype)
                    return int(resp.status)
                _start_chunked(h, resp.status, ctype)
                event = b""
                for line in resp:  # relay each SSE event as soon as it is complete
                    event += line
                    if line in (b"\n", b"\r\n"):
                        _write_chunk(h, event)
                        event = b""
                if event:
                    _write_chunk(h, event)
                _write_chunk(h, b"")
                return int(resp.status)
        finally:
            if self._slots is not None:
                self._slots.release()


def _send(
    h: BaseHTTPRequestHandler,
    code: int,
    data: bytes,
    ctype: str,
    headers: dict[str, str] | None = None,
) -> None:
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


def _send_json(
    h: BaseHTTPRequestHandler, code: int, payload: dict, headers: dict[str, str] | None = None
) -> None:
    _send(h, code, json.dumps(payload).encode(), "application/json", headers)


def _start_chunked(h: BaseHTTPRequestHandler, code: int, ctype: str) -> None:
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Cache-Control", "no-cache")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()


def _write_chunk(h: BaseHTTPRequestHandler, data: bytes) -> None:
    """One HTTP/1.1 chunk (``b""``: the last), flushed at once."""
    h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    h.wfile.flush()


# -- SLaM tool files (METHOD.md appendix A) --------------------------------------------------

#: a SLaM tool use case: a prompt and the outputs of three models
USECASE = {
    "prompt": "Write a pep talk for: finish report, gym.",
    "prompt_disc": "## Daily Pep Talk\nUp to 4 sentences.",
    "outputs": {
        "gpt-4": ["You can do it!", "Go get them!"],
        "mistral-7b-q4_0": ["Finish the report, then gym.", "Report first."],
        "zephyr-7b-q2_K": ["Keep going."],
    },
}


def write_json(path: Path, obj: object) -> Path:
    """Write ``obj`` as JSON to ``path`` (parents created); return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def write_slam_dir(root: Path) -> Path:
    """A SLaM tool folder under ``root``: a use case, a human evaluation and a run file."""
    write_json(root / "data" / "peptalk.json", USECASE)
    write_json(
        root / ".human_eval_config" / "responses.json",
        {"11": "You can do it!", "12": "Finish the report, then gym.", "13": "Keep going."},
    )
    write_json(root / "results" / "w1_set0.json", {
        "worker_id": "w1", "question_set_id": 0, "start_time": 1700000000,
        "end_time": 1700000100, "question_index": 2,
        "evals": [
            {"result": {"overall": "Response A", "clarity": "About the Same",
                        "feedback": "A is concrete"},
             "time": 1700000050, "question": ["peptalk", {"mistral-7b-q4_0": 12, "gpt-4": 11}]},
            {"result": {"overall": "Response B", "feedback": ""},
             "time": 1700000090, "question": ["peptalk", {"zephyr-7b-q2_K": 13, "gpt-4": 99}]},
        ],
    })  # fmt: skip
    write_json(root / "runs" / "r1" / "mistral.json", {
        "outputs": [{"response": "Report, then gym!", "time": 1.5},
                    {"response": "Go.", "time": 0.5}],
        "full_prompt": "<s>[INST] Write a pep talk for: finish report, gym. [/INST]",
        "avg_time": 1.0, "model_name": "mistral-7b-q4_0",
    })  # fmt: skip
    return root


#: the processes a local Ray cluster runs
RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "default_worker.py", "dashboard/agent.py")


def ray_processes_left(timeout_s: float = 15.0, children_only: bool = False) -> list[str]:
    """Ray processes this test session started (they carry its ``SLAMKIT_TEST_SESSION``
    marker; ``children_only``: only this process's descendants, i.e. its own cluster)
    still running after ``timeout_s`` (polled); [] once all are gone."""
    import os
    import time

    import psutil

    mark = os.environ.get("SLAMKIT_TEST_SESSION")
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        procs = (
            psutil.Process().children(recursive=True) if children_only
            else list(psutil.process_iter())
        )  # fmt: skip
        for p in procs:
            try:
                cmd = " ".join(p.cmdline())
                if p.pid == os.getpid() or not any(n in cmd for n in RAY_PROCESSES):
                    continue
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                if p.environ().get("SLAMKIT_TEST_SESSION") == mark:
                    left.append(f"pid {p.pid}: {cmd[:120]}")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.3)
