"""One judge call over the ``openai`` client: JSON output, retries with backoff, no eval.

Any OpenAI-compatible endpoint works (OpenAI, ``python -m llama_cpp.server``, vLLM,
Ollama). The API key is read from an environment variable at call time and is never
stored, logged or put into a judgment row.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from slamkit.backends.base import number_error, whole_error
from slamkit.backends.openai_compat import RateGate, backoff_s, retry_after_s
from slamkit.errors import SlamkitError
from slamkit.secrets import scrub, secret_values

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.S)

#: response_format variants tried in order by ``response_format="auto"``: OpenAI's
#: json_schema; llama_cpp.server's json_object + schema (turned into a grammar); plain
#: JSON mode; nothing (the prompt still asks for JSON and the answer is still validated).
FORMATS = ("json_schema", "json_object_schema", "json_object", "none")


class JudgeError(SlamkitError):
    """The judge endpoint cannot be used as configured (missing key, bad URL)."""


@dataclass
class JudgeConfig:
    """Where the judge runs and how it is called.

    ``api_key_env`` names the environment variable holding the key (never the key
    itself). ``response_format``: ``auto`` (fall back through :data:`FORMATS` when the
    server rejects one) or one of :data:`FORMATS`.

    Time bounds: each request may take ``timeout_s``; a call retries up to
    ``max_attempts`` times (429, 5xx, timeouts, connection errors), waiting what the
    server asks (``retry-after-ms`` / ``Retry-After``, seconds or an HTTP date) or else
    with exponential backoff (``backoff_s`` doubling, at most ``max_backoff_s``, with
    jitter), but never past ``max_total_s`` for the call as a whole (None: twice
    ``timeout_s``, at least 120 s) — so a hanging judge costs at most 120 s per call with
    the defaults (two 60 s attempts), and a pairwise judgment is two calls (both orders).
    A 429 pauses every thread calling the same :class:`JudgeClient` (its shared gate).
    None of these is part of a judgment's id.
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = 0
    timeout_s: float = 60.0
    max_attempts: int = 4
    max_total_s: float | None = None
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    response_format: str = "auto"
    reasoning: bool = True
    max_reason_chars: int | None = None

    def __post_init__(self) -> None:
        if self.response_format != "auto" and self.response_format not in FORMATS:
            raise JudgeError(
                f"response_format={self.response_format!r} is not one of auto, "
                + ", ".join(FORMATS)
            )
        if not urlsplit(self.base_url).scheme.startswith("http"):
            raise JudgeError(f"base_url {self.base_url!r} must start with http:// or https://")
        for name, value, hint in (
            ("timeout_s", self.timeout_s, "seconds per request"),
            ("max_total_s", self.total_s, "seconds per call, all attempts together"),
        ):
            if err := number_error(value, 0, lo_open=True):
                raise JudgeError(f"JudgeConfig {name} {err} ({hint}).")
        for name, value, least in (("max_attempts", self.max_attempts, 1),
                                   ("max_tokens", self.max_tokens, 1)):  # fmt: skip
            if err := whole_error(value, least):
                raise JudgeError(f"JudgeConfig {name} {err}.")
        if err := number_error(self.temperature, 0, 2):
            raise JudgeError(f"JudgeConfig temperature {err} (0 = greedy).")
        for name, value in (("backoff_s", self.backoff_s), ("max_backoff_s", self.max_backoff_s)):
            if err := number_error(value, 0):
                raise JudgeError(f"JudgeConfig {name} {err}.")

    @property
    def total_s(self) -> float:
        """Seconds one call may take, all attempts and backoff waits together."""
        if self.max_total_s is None:
            return max(2 * self.timeout_s, 120.0)
        return self.max_total_s

    @property
    def endpoint(self) -> str:
        """The base URL without credentials or query string (safe to store)."""
        u = urlsplit(self.base_url)
        host = u.hostname or ""
        netloc = host + (f":{u.port}" if u.port else "")
        return urlunsplit((u.scheme, netloc, u.path.rstrip("/"), "", ""))

    def settings(self) -> dict[str, Any]:
        """What changes the verdict (part of judgment ids); no key, no timeouts."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "reasoning": self.reasoning,
            "max_reason_chars": self.max_reason_chars,
        }


@dataclass
class CallResult:
    """The outcome of one judge call (after retries)."""

    parsed: dict[str, Any] | None = None
    content: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 0
    error: str | None = None
    response_format: str | None = None
    errors: list[str] = field(default_factory=list)
    #: seconds this call waited on rate limits and backoff (the shared gate included)
    retry_wait_s: float = 0.0


def parse_json_answer(content: str | None, schema: dict) -> tuple[dict | None, str | None]:
    """``json.loads`` the answer (one optional code fence allowed) and validate it.

    Returns (object, None) or (None, error). Never evaluates the text.

    >>> parse_json_answer('{"verdict": "A"}', {"type": "object"})
    ({'verdict': 'A'}, None)
    >>> parse_json_answer("__import__('os')", {"type": "object"})[1][:19]
    'answer is not JSON:'
    """
    import jsonschema

    if not content or not content.strip():
        return None, "empty answer"
    body = content.strip()
    if m := _FENCE.match(body):
        body = m.group(1)
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"answer is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.path)) or "(root)"
        return None, f"answer does not match the schema at {where}: {exc.message}"
    return obj, None


class JudgeClient:
    """Calls a chat-completions endpoint and returns validated JSON (see :meth:`call`).

    Thread-safe: many threads may :meth:`call` one client at once. The ``response_format``
    fallback is shared (one thread's rejection moves every thread on, and a format is
    dropped once however many threads saw it rejected), and so is the 429 gate
    (:class:`~slamkit.backends.openai_compat.RateGate`): a rate limit pauses every thread.
    """

    #: many threads may :meth:`call` at once (the job engine relies on it)
    thread_safe = True

    def __init__(self, config: JudgeConfig) -> None:
        from slamkit.errors import require

        openai = require("openai")
        self.config = config
        key = os.environ.get(config.api_key_env)
        if not key and "api.openai.com" in config.base_url:
            raise JudgeError(
                f"No API key: set the environment variable {config.api_key_env} "
                f"(e.g. export {config.api_key_env}=sk-...) to judge with {config.model}."
            )
        self._client = openai.OpenAI(  # type: ignore[attr-defined]
            base_url=config.base_url,
            api_key=key or "no-key-needed",
            timeout=config.timeout_s,
            max_retries=0,  # retries are done here, counted and recorded
        )
        self._formats = (
            list(FORMATS) if config.response_format == "auto" else [config.response_format]
        )
        self._formats_lock = threading.Lock()
        #: shared by every thread calling this client: a 429 pauses them all
        self.gate = RateGate()
        self._secrets = secret_values(key)
        del key

    def scrub(self, text: str, patterns: bool = True) -> str:
        """``text`` without the API key (and, with ``patterns``, bearer tokens and key-like
        strings): applied to every error, retry note and transcript before it is stored."""
        return scrub(text, self._secrets, patterns)

    def close(self) -> None:
        self._client.close()

    def _response_format(self, kind: str, schema: dict) -> dict | None:
        if kind == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "judgment", "schema": schema, "strict": True},
            }
        if kind == "json_object_schema":
            return {"type": "json_object", "schema": schema}
        if kind == "json_object":
            return {"type": "json_object"}
        return None

    @property
    def formats(self) -> list[str]:
        """The response_format kinds still to try, the one in use first (a copy)."""
        with self._formats_lock:
            return list(self._formats)

    def _format(self) -> str:
        with self._formats_lock:
            return self._formats[0]

    def _drop_format(self, kind: str) -> bool:
        """``kind`` was rejected: move on to the next format. True when there is one to try
        (also when another thread has already moved on), False when ``kind`` is the last."""
        with self._formats_lock:
            if self._formats[0] != kind:
                return True  # another thread dropped it already
            if len(self._formats) > 1:
                self._formats.pop(0)
                return True
            return False

    def _backoff(self, attempt: int, exc: Exception | None) -> float:
        """Seconds to wait before the next attempt: exponential backoff with jitter (at most
        ``max_backoff_s``), or longer when the server asks for longer (``Retry-After``)."""
        cfg = self.config
        delay = backoff_s(attempt, cfg.backoff_s, cfg.max_backoff_s)
        resp = getattr(exc, "response", None)
        asked = retry_after_s(resp.headers if resp is not None else None)
        return max(delay, asked) if asked is not None else delay

    def call(self, messages: list[dict[str, str]], schema: dict) -> CallResult:
        """Send ``messages``; retry on 429, 5xx, timeouts and connection errors, at most
        ``max_attempts`` times and never past ``max_total_s`` for the whole call (each
        request's timeout is cut to the time left).

        A response_format the server rejects (400/422, or a 500 naming response_format as
        llama_cpp.server sends) switches to the next format
        without costing an attempt. Other failures are returned in ``error``, never raised.
        ``error`` and ``errors`` are scrubbed of the key (servers may echo it back).
        """
        res = self._call(messages, schema)
        if res.error:
            res.error = self.scrub(res.error)
        res.errors = [self.scrub(e) for e in res.errors]
        return res

    def _call(self, messages: list[dict[str, str]], schema: dict) -> CallResult:
        import openai

        cfg, res = self.config, CallResult()
        last: Exception | None = None
        deadline = time.monotonic() + cfg.total_s
        margin = min(cfg.timeout_s, 1.0)  # the least time left worth another attempt
        while res.attempts < cfg.max_attempts:
            waited, open_ = self.gate.wait(until=deadline - margin)
            res.retry_wait_s += waited
            if not open_:
                why = res.error or "rate limited: another call got HTTP 429"
                res.error = (
                    f"{why}; gave up: the wait for the rate limit would pass the call's limit "
                    f"of {cfg.total_s:g}s for all attempts (max_total_s / --max-total)"
                )
                break
            kind = self._format()
            fmt = self._response_format(kind, schema)
            res.attempts += 1
            t0 = time.perf_counter()
            timeout = max(min(cfg.timeout_s, deadline - time.monotonic()), 0.001)
            try:
                resp = self._client.chat.completions.create(
                    model=cfg.model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=cfg.temperature,
                    max_tokens=cfg.max_tokens,
                    timeout=timeout,
                    **({"seed": cfg.seed} if cfg.seed is not None else {}),
                    **({"response_format": fmt} if fmt else {}),
                )
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if fmt is not None and self._drop_format(kind):
                    res.errors.append(f"{kind} rejected ({exc.status_code}); trying next format")
                    res.attempts -= 1
                    continue
                res.error = f"request rejected: HTTP {exc.status_code}: {_short(exc)}"
                return res
            except openai.InternalServerError as exc:
                # llama_cpp.server answers an unknown response_format with HTTP 500
                if fmt is not None and "response_format" in str(exc) and self._drop_format(kind):
                    res.errors.append(f"{kind} rejected ({exc.status_code}); trying next format")
                    res.attempts -= 1
                    continue
                res.errors.append(f"HTTP {exc.status_code}")
                last = exc
                res.error = f"HTTP {exc.status_code} after {res.attempts} attempts: {_short(exc)}"
            except openai.RateLimitError as exc:
                res.errors.append(f"HTTP {exc.status_code}")
                last = exc
                res.error = f"HTTP {exc.status_code} after {res.attempts} attempts: {_short(exc)}"
            except openai.APITimeoutError as exc:
                res.errors.append("timeout")
                last = exc
                res.error = f"timed out after {timeout:g}s ({res.attempts} attempts)"
            except openai.APIConnectionError as exc:
                res.errors.append("connection error")
                last = exc
                res.error = f"connection error after {res.attempts} attempts: {_short(exc)}"
            except openai.APIStatusError as exc:  # 401, 403, 404 ...: retrying will not help
                res.error = f"HTTP {exc.status_code}: {_short(exc)}"
                return res
            except Exception as exc:  # malformed response body and the like
                res.error = f"malformed response: {type(exc).__name__}: {_short(exc)}"
                return res
            else:
                res.latency_s = time.perf_counter() - t0
                res.response_format = kind
                return self._finish(res, resp, schema)
            wait = self._backoff(res.attempts, last)
            if isinstance(last, openai.RateLimitError):
                self.gate.hold(wait)  # every thread waits (at the top of the loop)
            if res.attempts < cfg.max_attempts:
                if deadline - time.monotonic() - wait < margin:
                    res.error = (
                        f"{res.error}; gave up: the call reached its limit of "
                        f"{cfg.total_s:g}s for all attempts (max_total_s / --max-total)"
                    )
                    break
                if not isinstance(last, openai.RateLimitError):
                    time.sleep(wait)
                    res.retry_wait_s += wait
        return res

    def _finish(self, res: CallResult, resp: Any, schema: dict) -> CallResult:
        res.error = None  # earlier attempts' errors stay in res.errors
        try:
            choice = resp.choices[0]
            res.content = choice.message.content
            res.finish_reason = choice.finish_reason
        except (AttributeError, IndexError, TypeError) as exc:
            res.error = f"malformed response: no choices[0].message ({exc})"
            return res
        usage = getattr(resp, "usage", None)
        if usage is not None:
            res.prompt_tokens = getattr(usage, "prompt_tokens", None)
            res.completion_tokens = getattr(usage, "completion_tokens", None)
        res.parsed, err = parse_json_answer(res.content, schema)
        if err:
            cut = (
                " (finish_reason=length: raise max_tokens)" if res.finish_reason == "length" else ""
            )
            res.error = err + cut
        return res


def _short(exc: Exception, n: int = 300) -> str:
    text = str(exc).replace("\n", " ")
    return text[:n] + ("..." if len(text) > n else "")
