"""OpenAI-compatible HTTP backend: GPT-4, llama.cpp server, vLLM, Ollama through one path.

The API key is read from an environment variable at construction and handed to the
``openai`` client only: it is never an attribute of the backend, never stored, logged
or included in an error message (messages are scrubbed of it).

>>> be = OpenAIBackend("smollm2", base_url="http://127.0.0.1:8080/v1")  # doctest: +SKIP
>>> be.generate([{"role": "user", "content": "Hi"}], Sampling(max_tokens=16), seed=0)
... # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
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
                    f"No API key for {self.base_url}: the environment variable {api_key_env} "
                    f"is not set. Set it (export {api_key_env}=...) or pass api_key_env= "
                    "naming the variable that holds your key."
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

    def _error(self, exc: Exception) -> BackendError:
        import httpx
        import openai

        where = f"model {self.model!r} at {self.base_url}"
        detail = self._scrub(f"{type(exc).__name__}: {exc}").rstrip(".")
        if isinstance(exc, openai.AuthenticationError):
            hint = f"The endpoint rejected the key in {self.api_key_env}: check that variable."
        elif isinstance(exc, openai.APITimeoutError):
            hint = "The request timed out: raise timeout= or check the server's load."
        elif isinstance(exc, (openai.APIConnectionError, httpx.HTTPError)):
            hint = "Cannot connect: check that the server is running and base_url is right."
        elif isinstance(exc, openai.NotFoundError):
            hint = "Check the model name and that base_url ends with /v1."
        elif isinstance(exc, openai.RateLimitError):
            hint = "Rate limited: wait and rerun (finished rows are kept)."
        else:
            hint = "See the server's log for details."
        return BackendError(f"Generation failed for {where}: {detail}. {hint}")

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
        import httpx
        import openai

        start = time.perf_counter()
        try:
            try:
                stream = self._request(messages, sampling, seed)
            except openai.BadRequestError as exc:
                if not self._stream_usage or "stream_options" not in str(exc):
                    raise
                self._stream_usage = False  # server does not know stream_options
                start = time.perf_counter()
                stream = self._request(messages, sampling, seed)
            parts: list[str] = []
            ttft: float | None = None
            chunks = 0
            finish: str | None = None
            usage = None
            for chunk in stream:
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
                for choice in chunk.choices or []:
                    content = choice.delta.content if choice.delta else None
                    if content:
                        if ttft is None:
                            ttft = time.perf_counter() - start
                        parts.append(content)
                        chunks += 1
                    if choice.finish_reason:
                        finish = choice.finish_reason
            latency = time.perf_counter() - start
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise self._error(exc) from None
        extra: dict[str, Any] = {"endpoint": self.base_url}
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
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
