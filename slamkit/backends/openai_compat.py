"""OpenAI-compatible HTTP backend: GPT-4, llama.cpp server, vLLM, Ollama through one path.

The API key is read from an environment variable at construction and handed to the
``openai`` client only: it is never an attribute of the backend, never stored, logged
or included in an error message (messages are scrubbed of it).

Retries are done here, not in the ``openai`` client (its ``max_retries`` is 0), so that they
are counted and shared: see :class:`OpenAIBackend` and :class:`RateGate`.

>>> be = OpenAIBackend("smollm2", base_url="http://127.0.0.1:8080/v1")  # doctest: +SKIP
>>> be.generate([{"role": "user", "content": "Hi"}], Sampling(max_tokens=16), seed=0)
... # doctest: +SKIP
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from slamkit.backends.base import GenerationResult, Sampling, check_number, check_whole
from slamkit.errors import BackendError, require
from slamkit.secrets import scrub, secret_values

OPENAI_BASE_URL = "https://api.openai.com/v1"
LOCAL_DUMMY_KEY = "sk-no-key-required"


def public_url(url: str) -> str:
    """``url`` without user info or query string (where credentials could hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def endpoint_label(model: str, base_url: str | None) -> str:
    """How messages name an endpoint model (no credentials: see :func:`public_url`).

    >>> endpoint_label("smollm2", "http://127.0.0.1:8080/v1/")
    "endpoint http://127.0.0.1:8080/v1 model 'smollm2'"
    """
    return f"endpoint {public_url(base_url or OPENAI_BASE_URL)} model {model!r}"


def printable(raw: bytes | str, limit: int = 80) -> str:
    """The first ``limit`` printable characters of what a server sent, for a message.

    >>> printable(b"\\xff\\xfe<html>\\n<h1>502 Bad Gateway</h1>")
    "'<html> <h1>502 Bad Gateway</h1>'"
    >>> printable(b"\\x00\\x81")
    '2 bytes, none printable'
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    kept = "".join(ch if ch.isprintable() and ch != "\ufffd" else " " for ch in text)
    flat = " ".join(kept.split())
    if not flat:
        return f"{len(raw)} bytes, none printable" if raw else "an empty body"
    return repr(flat[:limit]) + ("..." if len(flat) > limit else "")


class _Head:
    """Keeps the first bytes a response's body yields, and the last few (for error
    messages): wraps the response's ``iter_bytes``, which the openai client's stream
    reads from."""

    LIMIT = 4096
    TAIL = 256

    def __init__(self, response: Any) -> None:
        self.head = b""
        self.tail = b""
        self._iter_bytes = response.iter_bytes
        response.iter_bytes = self.iter_bytes

    def iter_bytes(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in self._iter_bytes(*args, **kwargs):
            if len(self.head) < self.LIMIT:
                self.head += bytes(chunk[: self.LIMIT - len(self.head)])
            self.tail = (self.tail + bytes(chunk))[-self.TAIL :]
            yield chunk


#: what a decoding error means, in words
_WHY = {"UnicodeDecodeError": "not UTF-8", "JSONDecodeError": "not JSON"}


class _NotACompletion(Exception):
    """The server's answer is not an OpenAI chat completion (internal)."""


def is_openai(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "openai.com" or host.endswith(".openai.com")


# -- retries: what is retried, how long to wait, and the wait every thread shares ----------

#: HTTP statuses worth another attempt: request timeout, rate limited, bad gateway,
#: service unavailable, gateway timeout (a 500 is usually the request's own fault)
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})


def retry_after_s(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds a server asks the client to wait before the next request, or None.

    ``retry-after-ms`` wins (OpenAI sends it), else ``Retry-After`` as seconds (fractions
    allowed) or as an HTTP date (``now``: the epoch time to count from, default the clock).
    Negative values are 0; an unreadable (or infinite) header is None.

    >>> retry_after_s({"Retry-After": "2"})
    2.0
    >>> retry_after_s({"retry-after-ms": "1500", "retry-after": "9"})
    1.5
    >>> retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    10.0
    >>> retry_after_s({"retry-after": "soon"}) is None, retry_after_s(None) is None
    (True, True)
    """
    if not headers:
        return None
    low = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = low.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        if not math.isfinite(seconds):  # "inf" would close the gate for good
            continue
        return max(seconds, 0.0)
    value = low.get("retry-after")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def backoff_s(
    failures: int,
    base_s: float = 1.0,
    cap_s: float = 30.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with jitter before the next attempt, after ``failures`` failed
    ones: ``base_s * 2 ** (failures - 1)`` (1 s, 2 s, 4 s ...), at most ``cap_s``, less a
    random 0-25 % so that threads that failed together do not retry together.

    >>> [backoff_s(n, rand=lambda: 0.0) for n in (1, 2, 3, 9)]
    [1.0, 2.0, 4.0, 30.0]
    >>> backoff_s(1, rand=lambda: 1.0)
    0.75
    """
    delay = min(base_s * 2.0 ** min(max(failures - 1, 0), 60), cap_s)
    return delay * (1.0 - 0.25 * rand())


class RateGate:
    """A "not before" time shared by every thread that calls one endpoint client.

    When one request is rate limited (HTTP 429), :meth:`hold` closes the gate for the time
    the server asked (never shortening a longer hold); every thread calls :meth:`wait`
    before each request, so all of them pause, not only the one that got the 429.
    Thread-safe; uses ``time.monotonic``.

    >>> gate = RateGate()
    >>> gate.remaining(), gate.wait()
    (0.0, (0.0, True))
    >>> gate.hold(30.0)
    >>> 29.0 < gate.remaining() <= 30.0
    True
    >>> gate.wait(until=time.monotonic() + 5)  # would open too late: no wait, not open
    (0.0, False)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_before = 0.0  # time.monotonic()
        self.holds = 0  # how many times the gate was closed

    def hold(self, seconds: float) -> None:
        """No request before ``seconds`` from now (a longer hold already set stays)."""
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + max(seconds, 0.0))
            self.holds += 1

    def remaining(self) -> float:
        """Seconds until the gate opens (0.0 when open)."""
        with self._lock:
            return max(self._not_before - time.monotonic(), 0.0)

    def wait(self, until: float = math.inf) -> tuple[float, bool]:
        """Sleep until the gate is open; returns (seconds waited, open). Gives up, without
        sleeping further, when it would open after ``until`` (a ``time.monotonic()`` time);
        then ``open`` is False. A hold set while sleeping is waited for too."""
        began, slept = time.monotonic(), False
        while True:
            with self._lock:
                now = time.monotonic()
                left = self._not_before - now
            if left <= 0 or now + left > until:
                return (now - began if slept else 0.0), left <= 0
            time.sleep(left)
            slept = True


@dataclass
class _Call:
    """One :meth:`OpenAIBackend.generate` call's retry state (internal)."""

    deadline: float  # time.monotonic() past which the call does not wait
    requests: int = 0  # HTTP requests sent
    failures: int = 0  # retryable failures so far
    retries: int = 0  # attempts sent again after one
    waited: float = 0.0  # seconds waited on the gate and on backoff
    rate_limited: int = 0  # 429s received
    note: str = ""  # why the call gave up before its attempts were used up


class _Failed(Exception):
    """An attempt failed with an ``openai`` error after ``chunks`` content chunks."""

    def __init__(self, exc: Exception, chunks: int) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.chunks = chunks


class OpenAIBackend:
    """A chat model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Streams every call: ``ttft_s`` is the time to the first content chunk, ``latency_s``
    end to end, token usage from the final usage chunk (``stream_options.include_usage``;
    when the server sends none, completion tokens are counted as content chunks,
    ``prompt_tokens`` stays None and ``extra['usage'] == 'counted'``; llama_cpp.server
    0.3.x is such a server, and there the chunk count equals its own usage count).
    ``decode_tps`` = (completion_tokens - 1) / (latency_s - ttft_s): the tokens after the
    first over the time after it. HTTP cannot separate prefill, so ``prefill_tps`` is None.
    The seed is sent with every call.

    ``top_k`` and ``repeat_penalty`` are sent (as extra body fields) only to non-OpenAI
    servers, which understand them (llama.cpp, vLLM); OpenAI rejects them.

    **Threads.** One instance may be called from many threads at once (the ``openai``
    client is thread-safe; the backend's own state is a flag set once and a lock-guarded
    :class:`RateGate` and counters).

    **Retries** are done here (the ``openai`` client's own are off), so they are counted and
    shared. A request that fails before any content arrived with HTTP 429, 408, 502, 503,
    504, a timeout or a connection error is retried, up to ``max_retries`` more times (so
    ``max_retries=2``: at most 3 attempts). The wait before a retry is the server's
    ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date) when it sends one, else
    exponential backoff with jitter (:func:`backoff_s`: ``backoff_s`` 1 s, 2 s, 4 s ...,
    at most ``max_backoff_s``). A 429 closes the instance's :class:`RateGate` for that
    time, so **every** thread of this backend pauses, not only the one that got it; other
    failures delay only their own call. A stream that breaks off after content arrived
    is not retried (the error says so; failed cells are retried by the next run).

    **Per-call bound.** ``timeout`` is seconds per request (the ``openai`` client's:
    connecting, and each wait for the next bytes). A call never starts a wait that would
    leave less than one ``timeout`` before ``max_total_s`` after the call began (default
    ``(max_retries + 1) * timeout + max_retries * max_backoff_s``: 240 s with the
    defaults); it fails at once instead, saying so. So a call takes at most
    ``max_total_s``, plus what a stream that keeps sending takes beyond its ``timeout``.

    **What is recorded.** ``extra['attempts']``: the requests this call sent (1 when the
    first succeeded; a server that rejects ``stream_options`` costs one more request,
    once per backend); ``extra['retry_wait_s']``: seconds this call waited on rate limits
    and backoff (the shared gate included). ``latency_s`` and ``ttft_s`` measure only the
    successful attempt, from its request to its last / first chunk: no failed attempt and
    no wait is in them. :meth:`stats` sums these over every call of the instance.
    """

    #: many threads may call :meth:`generate` at once (the job engine relies on it)
    thread_safe = True

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
        send_extra_sampling: bool | None = None,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_total_s: float | None = None,
    ) -> None:
        openai: Any = require("openai")
        # how to make this backend again elsewhere (a Ray worker): settings, never the key
        self._recipe = (
            (model, base_url, api_key_env, timeout, max_retries, send_extra_sampling),
            {"backoff_s": backoff_s, "max_backoff_s": max_backoff_s, "max_total_s": max_total_s},
        )
        check_number("OpenAIBackend timeout", timeout, 0, lo_open=True, hint="seconds per request")
        check_whole("OpenAIBackend max_retries", max_retries, 0, "0 = one attempt")
        check_number("OpenAIBackend backoff_s", backoff_s, 0)
        check_number("OpenAIBackend max_backoff_s", max_backoff_s, 0)
        url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self.name = model
        self.model = model
        self.load_time_s: float | None = None
        self.base_url = public_url(url)
        self.label = endpoint_label(model, url)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        if max_total_s is None:
            max_total_s = (max_retries + 1) * timeout + max_retries * max_backoff_s
        check_number(
            "OpenAIBackend max_total_s", max_total_s, timeout,
            hint=f"seconds per call, all attempts and waits together; at least timeout={timeout:g}",
        )  # fmt: skip
        self.max_total_s = float(max_total_s)
        self.api_key_env = api_key_env
        self.real_openai = is_openai(url)
        self.send_extra_sampling = (
            not self.real_openai if send_extra_sampling is None else send_extra_sampling
        )
        # switched off (once, never on again) if the server rejects stream_options; each
        # call reads it once, so a thread that raced the switch still retries without
        self._stream_usage = True
        #: shared by every thread of this instance: a 429 pauses them all
        self.gate = RateGate()
        self._stats_lock = threading.Lock()
        self._stats: dict[str, float] = dict.fromkeys(
            ("calls", "failed", "requests", "retries", "rate_limited"), 0
        )
        self._stats["retry_wait_s"] = 0.0
        key = os.environ.get(api_key_env) or ""
        if not key:
            if self.real_openai:
                raise BackendError(
                    f"{self.label}: no API key: the environment variable {api_key_env} is "
                    f"not set — set it (export {api_key_env}=...) or pass --api-key-env / "
                    "api_key_env= naming the variable that holds your key."
                )
            key = LOCAL_DUMMY_KEY  # local servers accept any key
        self._secrets = secret_values(key)
        # max_retries=0: retries are done here, counted, and shared through the gate
        self._client = openai.OpenAI(api_key=key, base_url=url, timeout=timeout, max_retries=0)
        del key

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its settings (e.g. for a Ray worker, which reads the key from its own
        environment variable ``api_key_env``): no key, client or lock travels."""
        args, kwargs = self._recipe
        return (_rebuild, (args, kwargs))

    def stats(self) -> dict[str, float]:
        """Totals over every call so far (thread-safe copy): ``calls``, ``failed`` (calls
        that raised), ``requests`` (HTTP requests sent), ``retries``, ``rate_limited``
        (429s received) and ``retry_wait_s`` (seconds calls waited, summed over calls)."""
        with self._stats_lock:
            return dict(self._stats)

    # -- errors ------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _fail(self, cause: str, detail: str, fix: str, tail: str = "") -> BackendError:
        """``<endpoint> model <m>: <cause> (<detail><tail>) — <fix>``, on one line,
        scrubbed; ``detail`` is cut to 200 characters, ``tail`` never."""
        detail = " ".join(self._scrub(detail).split()).rstrip(".")
        if len(detail) > 200:
            detail = detail[:197] + "..."
        return BackendError(f"{self.label}: {cause} ({detail}{tail}) — {fix}.")

    @staticmethod
    def _attempts(n: int) -> str:
        return f"{n} attempt{'s' if n != 1 else ''}"

    def _tail(self, call: _Call | None) -> str:
        """``; 3 attempts, 2 s waited on rate limits and backoff; <why it gave up>``."""
        if call is None:
            return ""
        tail = f"; {self._attempts(call.requests)}"
        if call.waited >= 0.05:
            tail += f", {call.waited:.1f} s waited on rate limits and backoff"
        return tail + (f"; {call.note}" if call.note else "")

    def _error(self, exc: Exception, chunks: int = 0, call: _Call | None = None) -> BackendError:
        import openai

        detail = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
        cause_name = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
        if chunks:
            detail += f"; after {chunks} chunk{'s' if chunks != 1 else ''} of the answer"
        tail = "" if chunks else self._tail(call)
        if isinstance(exc, openai.APITimeoutError) or "Timeout" in cause_name:
            what = "the answer stalled for more than" if chunks else "no answer within"
            return self._fail(
                f"{what} {self.timeout:g} s",
                f"timeout; {detail}",
                "raise --timeout (timeout=) or check the server's load",
                tail,
            )
        if isinstance(exc, openai.AuthenticationError):
            return self._fail(
                f"the endpoint rejected the key in {self.api_key_env}",
                detail,
                "check that variable (or name another with --api-key-env / api_key_env=)",
            )
        if isinstance(exc, openai.APIConnectionError):
            if chunks or "Protocol" in cause_name or "ReadError" in cause_name:
                return self._fail(
                    "the server closed the connection before the answer was complete",
                    f"{detail}; {cause_name}: {exc.__cause__}" if cause_name else detail,
                    "check the server's log (did it crash or restart?) and rerun: failed "
                    "cells are retried",
                    tail,
                )
            return self._fail(
                "Cannot connect to the server",
                f"{detail}; {cause_name}: {exc.__cause__}" if cause_name else detail,
                "check that the server is running and --base-url (base_url=) is right",
                tail,
            )
        if isinstance(exc, openai.NotFoundError):
            return self._fail(
                "the endpoint knows no such model or path",
                detail,
                "check the model name and that --base-url (base_url=) ends with /v1",
            )
        if isinstance(exc, openai.RateLimitError):
            return self._fail(
                "rate limited", detail, "wait and rerun (finished rows are kept)", tail
            )
        if isinstance(exc, openai.APIStatusError):
            body = exc.response.content if exc.response is not None else b""
            return self._fail(
                f"the server answered HTTP {exc.status_code}",
                f"{type(exc).__name__}: {printable(body)}",
                "see the server's log; check that --base-url (base_url=) points at an "
                "OpenAI-compatible /v1 endpoint",
                tail if exc.status_code in RETRY_STATUSES else "",
            )
        return self._fail("the server reported an error", detail, "see the server's log")

    def _gated_out(self, call: _Call) -> BackendError:
        """Another thread's 429 closed the gate past this call's bound before it sent
        anything itself."""
        return self._fail(
            "rate limited",
            "another request of this backend got HTTP 429 and the wait it asks for would "
            f"pass this call's limit of {self.max_total_s:g} s (max_total_s=)",
            "wait and rerun (finished rows are kept)",
            self._tail(call),
        )

    def _garbage(self, head: bytes, why: str, response: Any = None) -> BackendError:
        """The server answered, but not with an OpenAI chat completion."""
        where = ""
        if response is not None:
            ctype = response.headers.get("content-type") or "no content type"
            where = f"HTTP {response.status_code} {ctype}, "
        return self._fail(
            "the server answered something that is not an OpenAI chat completion",
            f"{where}{why}: {printable(head)}",
            "check that --base-url (base_url=) points at an OpenAI-compatible /v1 endpoint",
        )

    # -- retries ---------------------------------------------------------------------
    @staticmethod
    def _retryable(exc: Exception) -> bool:
        import openai

        if isinstance(exc, openai.APIConnectionError):  # timeouts, resets, refused
            return True
        return isinstance(exc, openai.APIStatusError) and exc.status_code in RETRY_STATUSES

    def _retry_wait(self, exc: Exception, call: _Call) -> float:
        """Seconds to wait after a retryable failure: what the server asked, else backoff.
        A 429 closes the shared gate for that long (every thread pauses), even when this
        call has no attempt left."""
        import openai

        response = getattr(exc, "response", None)
        asked = retry_after_s(response.headers if response is not None else None)
        if asked is None:
            asked = backoff_s(call.failures, self.backoff_s, self.max_backoff_s)
        if isinstance(exc, openai.RateLimitError):
            call.rate_limited += 1
            self.gate.hold(asked)
        return asked

    def _backoff(self, wait: float, exc: Exception, call: _Call) -> bool:
        """Wait before this call's next attempt; False (with ``call.note`` set) when the
        wait would pass the call's bound. After a 429 the gate waits instead, at the top
        of :meth:`generate`'s loop."""
        import openai

        if isinstance(exc, openai.RateLimitError):
            return True
        if time.monotonic() + wait + self.timeout > call.deadline:
            call.note = self._past_bound(wait)
            return False
        time.sleep(wait)
        call.waited += wait
        return True

    def _past_bound(self, wait: float) -> str:
        return (
            f"gave up: waiting {wait:.1f} s more would pass this call's limit of "
            f"{self.max_total_s:g} s (max_total_s=)"
        )

    # -- generation ----------------------------------------------------------------
    def _request(
        self, messages: list[dict[str, str]], sampling: Sampling, seed: int, usage: bool
    ) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": seed,
        }
        if self.send_extra_sampling:
            kwargs["extra_body"] = {
                "top_k": sampling.top_k,
                "repeat_penalty": sampling.repeat_penalty,
            }
        if usage:
            kwargs["stream_options"] = {"include_usage": True}
        return self._client.chat.completions.create(**kwargs)

    def generate(
        self, messages: list[dict[str, str]], sampling: Sampling, seed: int
    ) -> GenerationResult:
        """One completion; retried as the class docstring says. Thread-safe."""
        call = _Call(deadline=time.monotonic() + self.max_total_s)
        ok = False
        last: Exception | None = None  # this call's last retryable failure
        try:
            while True:
                waited, open_ = self.gate.wait(until=call.deadline - self.timeout)
                call.waited += waited
                if not open_:
                    if last is not None:  # this call's own last failure, and why it stopped
                        call.note = self._past_bound(self.gate.remaining())
                        raise self._error(last, 0, call) from None
                    raise self._gated_out(call)
                try:
                    result = self._attempt(messages, sampling, seed, call)
                except _Failed as failed:
                    last = failed.exc
                    if failed.chunks or not self._retryable(last):
                        raise self._error(last, failed.chunks, call) from None
                    call.failures += 1
                    wait = self._retry_wait(last, call)  # a 429 holds the gate, retried or not
                    if call.failures > self.max_retries or not self._backoff(wait, last, call):
                        raise self._error(last, 0, call) from None
                    call.retries += 1
                    continue
                result.extra["attempts"] = call.requests
                result.extra["retry_wait_s"] = round(call.waited, 3)
                ok = True
                return result
        finally:
            with self._stats_lock:
                st = self._stats
                st["calls"] += 1
                st["failed"] += 0 if ok else 1
                st["requests"] += call.requests
                st["retries"] += call.retries
                st["rate_limited"] += call.rate_limited
                st["retry_wait_s"] += call.waited

    def _attempt(
        self, messages: list[dict[str, str]], sampling: Sampling, seed: int, call: _Call
    ) -> GenerationResult:
        """One attempt: raises :class:`_Failed` for an ``openai`` error (the caller decides
        whether to retry), BackendError for an answer that is not a completion."""
        import openai

        start = time.perf_counter()
        chunks = 0
        usage_asked = self._stream_usage  # read once: other threads may switch it off
        try:
            try:
                call.requests += 1
                stream = self._request(messages, sampling, seed, usage_asked)
            except openai.BadRequestError as exc:
                if not usage_asked or "stream_options" not in str(exc):
                    raise
                self._stream_usage = False  # server does not know stream_options
                start = time.perf_counter()
                call.requests += 1
                stream = self._request(messages, sampling, seed, False)
            response = getattr(stream, "response", None)
            # keeps the first bytes for a readable error
            tee = _Head(response) if hasattr(response, "iter_bytes") else None
            parts: list[str] = []
            ttft: float | None = None
            valid = 0  # chunks shaped like a chat completion chunk
            finish: str | None = None
            usage = None
            try:
                for chunk in stream:
                    if getattr(chunk, "usage", None) is not None:
                        usage = chunk.usage
                    choices = getattr(chunk, "choices", None)
                    if not isinstance(choices, list):
                        if usage is None:
                            raise _NotACompletion("an event without choices")
                        continue
                    valid += 1
                    for choice in choices:
                        content = choice.delta.content if choice.delta else None
                        if content:
                            if ttft is None:
                                ttft = time.perf_counter() - start
                            parts.append(content)
                            chunks += 1
                        if choice.finish_reason:
                            finish = choice.finish_reason
            except (_NotACompletion, ValueError, TypeError, AttributeError, KeyError) as exc:
                # ValueError: not JSON (json.JSONDecodeError) or not UTF-8 (UnicodeDecodeError)
                head = tee.head if tee is not None else _raw_of(exc)
                why = _WHY.get(
                    type(exc).__name__,
                    str(exc) if isinstance(exc, _NotACompletion) else type(exc).__name__,
                )
                raise self._garbage(head, why, response) from None
            latency = time.perf_counter() - start
        except openai.OpenAIError as exc:
            raise _Failed(exc, chunks) from None
        head = tee.head if tee is not None else b""
        if valid == 0:
            whole = _whole_completion(head)  # a server that ignored stream=True
            if whole is None:
                raise self._garbage(head, "no chat completion in the answer", response)
            parts, finish, usage = [whole[0]], whole[1], whole[2]
            ttft = latency
            chunks = 1
        elif finish is None:
            end = tee.tail if tee is not None else head
            fix = "check the server's log (did it crash or restart?) and rerun: failed cells "
            if end.rstrip().endswith(b"[DONE]"):  # ended on purpose, not cut off
                fix = (
                    "the server closed the stream itself: llama_cpp.server does so when "
                    "another request arrives unless started with --interrupt_requests False; "
                    "start it so (or send one request at a time) and rerun: failed cells "
                )
            raise self._fail(
                "the answer stream broke off before the server finished it",
                f"no finish_reason after {chunks} chunk{'s' if chunks != 1 else ''}; the "
                f"stream ended with {printable(end[-80:])}",
                fix + "are retried",
            )
        extra: dict[str, Any] = {"endpoint": self.base_url}
        prompt_tokens = _int_or_none(getattr(usage, "prompt_tokens", None))
        completion_tokens = _int_or_none(getattr(usage, "completion_tokens", None))
        if completion_tokens is None:
            completion_tokens = chunks
            extra["usage"] = "counted"
        decode_tps = None
        if ttft is not None and completion_tokens and completion_tokens > 1 and latency > ttft:
            decode_tps = (completion_tokens - 1) / (latency - ttft)
        return GenerationResult(
            text="".join(parts),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            ttft_s=ttft,
            prefill_tps=None,
            decode_tps=decode_tps,
            latency_s=latency,
            finish_reason=finish,
            chat_format="server",
            extra=extra,
        )

    def close(self) -> None:
        self._client.close()


def _rebuild(args: tuple[Any, ...], kwargs: dict[str, Any]) -> OpenAIBackend:
    return OpenAIBackend(*args, **kwargs)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _raw_of(exc: BaseException) -> bytes:
    """What a decoding error was decoding (the bytes or text the server sent)."""
    raw = getattr(exc, "object", None) or getattr(exc, "doc", None) or b""
    return raw.encode() if isinstance(raw, str) else bytes(raw)


class _Usage:
    def __init__(self, usage: dict[str, Any]) -> None:
        self.prompt_tokens = usage.get("prompt_tokens")
        self.completion_tokens = usage.get("completion_tokens")


def _whole_completion(body: bytes) -> tuple[str, str | None, _Usage | None] | None:
    """(text, finish_reason, usage) of a whole, non-streamed chat completion body, or None
    when ``body`` is not one (some servers ignore ``stream=True``)."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        text = choice["message"]["content"]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    if not isinstance(text, str):
        return None
    usage = data.get("usage")
    finish = choice.get("finish_reason")
    return (
        text,
        finish if isinstance(finish, str) else None,
        _Usage(usage) if isinstance(usage, dict) else None,
    )
