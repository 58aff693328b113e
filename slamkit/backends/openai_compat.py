"""OpenAI-compatible HTTP backend: GPT-4, llama.cpp server, vLLM, Ollama through one path.

The API key is read from an environment variable at construction and handed to the
``openai`` client only: it is never an attribute of the backend, never stored, logged
or included in an error message (messages are scrubbed of it).

>>> be = OpenAIBackend("smollm2", base_url="http://127.0.0.1:8080/v1")  # doctest: +SKIP
>>> be.generate([{"role": "user", "content": "Hi"}], Sampling(max_tokens=16), seed=0)
... # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from slamkit.backends.base import GenerationResult, Sampling
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
    """Keeps the first bytes a response's body yields (for error messages): wraps the
    response's ``iter_bytes``, which the openai client's stream reads from."""

    LIMIT = 4096

    def __init__(self, response: Any) -> None:
        self.head = b""
        self._iter_bytes = response.iter_bytes
        response.iter_bytes = self.iter_bytes

    def iter_bytes(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in self._iter_bytes(*args, **kwargs):
            if len(self.head) < self.LIMIT:
                self.head += bytes(chunk[: self.LIMIT - len(self.head)])
            yield chunk


#: what a decoding error means, in words
_WHY = {"UnicodeDecodeError": "not UTF-8", "JSONDecodeError": "not JSON"}


class _NotACompletion(Exception):
    """The server's answer is not an OpenAI chat completion (internal)."""


def is_openai(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "openai.com" or host.endswith(".openai.com")


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
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
        send_extra_sampling: bool | None = None,
    ) -> None:
        openai: Any = require("openai")
        url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self.name = model
        self.model = model
        self.load_time_s: float | None = None
        self.base_url = public_url(url)
        self.label = endpoint_label(model, url)
        self.timeout = timeout
        self.max_retries = max_retries
        self.api_key_env = api_key_env
        self.real_openai = is_openai(url)
        self.send_extra_sampling = (
            not self.real_openai if send_extra_sampling is None else send_extra_sampling
        )
        self._stream_usage = True  # switched off if the server rejects stream_options
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
        self._client = openai.OpenAI(
            api_key=key, base_url=url, timeout=timeout, max_retries=max_retries
        )
        del key

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    # -- errors ------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _fail(self, cause: str, detail: str, fix: str) -> BackendError:
        """``<endpoint> model <m>: <cause> (<detail>) — <fix>``, on one line, scrubbed."""
        detail = " ".join(self._scrub(detail).split()).rstrip(".")
        if len(detail) > 200:
            detail = detail[:197] + "..."
        return BackendError(f"{self.label}: {cause} ({detail}) — {fix}.")

    def _attempts(self) -> str:
        n = self.max_retries + 1
        return f"{n} attempt{'s' if n != 1 else ''}"

    def _error(self, exc: Exception, chunks: int = 0) -> BackendError:
        import openai

        detail = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
        cause_name = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
        if chunks:
            detail += f"; after {chunks} chunk{'s' if chunks != 1 else ''} of the answer"
        if isinstance(exc, openai.APITimeoutError) or "Timeout" in cause_name:
            what = "the answer stalled for more than" if chunks else "no answer within"
            return self._fail(
                f"{what} {self.timeout:g} s",
                f"timeout; {detail}" + ("" if chunks else f"; {self._attempts()}"),
                "raise --timeout (timeout=) or check the server's load",
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
                )
            return self._fail(
                "Cannot connect to the server",
                f"{detail}; {cause_name}: {exc.__cause__}" if cause_name else detail,
                "check that the server is running and --base-url (base_url=) is right",
            )
        if isinstance(exc, openai.NotFoundError):
            return self._fail(
                "the endpoint knows no such model or path",
                detail,
                "check the model name and that --base-url (base_url=) ends with /v1",
            )
        if isinstance(exc, openai.RateLimitError):
            return self._fail("rate limited", detail, "wait and rerun (finished rows are kept)")
        if isinstance(exc, openai.APIStatusError):
            body = exc.response.content if exc.response is not None else b""
            return self._fail(
                f"the server answered HTTP {exc.status_code}",
                f"{type(exc).__name__}: {printable(body)}",
                "see the server's log; check that --base-url (base_url=) points at an "
                "OpenAI-compatible /v1 endpoint",
            )
        return self._fail("the server reported an error", detail, "see the server's log")

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

    # -- generation ----------------------------------------------------------------
    def _request(self, messages: list[dict[str, str]], sampling: Sampling, seed: int) -> Any:
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
        if self._stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        return self._client.chat.completions.create(**kwargs)

    def generate(
        self, messages: list[dict[str, str]], sampling: Sampling, seed: int
    ) -> GenerationResult:
        import openai

        start = time.perf_counter()
        chunks = 0
        try:
            try:
                stream = self._request(messages, sampling, seed)
            except openai.BadRequestError as exc:
                if not self._stream_usage or "stream_options" not in str(exc):
                    raise
                self._stream_usage = False  # server does not know stream_options
                start = time.perf_counter()
                stream = self._request(messages, sampling, seed)
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
            raise self._error(exc, chunks) from None
        head = tee.head if tee is not None else b""
        if valid == 0:
            whole = _whole_completion(head)  # a server that ignored stream=True
            if whole is None:
                raise self._garbage(head, "no chat completion in the answer", response)
            parts, finish, usage = [whole[0]], whole[1], whole[2]
            ttft = latency
            chunks = 1
        elif finish is None:
            raise self._fail(
                "the answer stream broke off before the server finished it",
                f"no finish_reason after {chunks} chunk{'s' if chunks != 1 else ''}; the "
                f"stream ended with {printable(head[-80:])}",
                "check the server's log (did it crash or restart?) and rerun: failed cells "
                "are retried",
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
