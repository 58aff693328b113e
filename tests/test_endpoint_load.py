"""Endpoint clients under concurrent load: many threads share one OpenAIBackend (or one
JudgeClient) against helpers.FaultyEndpoint, a local OpenAI-compatible endpoint that
delays, rate limits (429 + Retry-After), overloads (503) and rejects on purpose, or
proxies to a real ``python -m llama_cpp.server``.

Time is only ever checked as a lower bound (no request before the Retry-After elapsed,
latency plus waits within the call's own wall time), never as "faster than X": these tests
run on shared 2-core machines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from helpers import EndpointRequest, FaultyEndpoint

from slamkit.backends import GenerationResult, Sampling
from slamkit.backends.openai_compat import OpenAIBackend
from slamkit.errors import BackendError
from slamkit.judge.client import CallResult, JudgeClient, JudgeConfig

SMALL = Sampling(temperature=0.0, max_tokens=16)
VERDICT = '{"reasoning": "A is better", "verdict": "A"}'
SCHEMA = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "verdict": {"enum": ["A", "B", "tie"]}},
    "required": ["verdict"],
}


def prompt(thread: int, call: int) -> str:
    """A prompt unique to (thread, call); FaultyEndpoint's canned reply is its first 8 words."""
    return f"thread {thread} call {call} says one two three four five"


def canned(text: str) -> str:
    return " ".join(text.split()[:8])


def run_threads(n: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` for i in range(n), each in its own thread, all released together."""
    barrier = threading.Barrier(n)

    def go(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def _one_line(msg: str) -> bool:
    return "\n" not in msg and msg.count(" — ") == 1


def assert_gate_held(
    records: list[EndpointRequest], retry_after: float, first_calls: set[str]
) -> int:
    """After the first 429 no request reached the endpoint before ``retry_after`` elapsed,
    except the first request of each prompt in ``first_calls`` (a thread's very first
    request may have been sent before any client saw the 429). Returns how many requests
    were checked."""
    first = next(r for r in records if r.status == 429)
    seen: set[str] = set()
    checked = 0
    for r in records:
        exempt = r.prompt not in seen and r.prompt in first_calls
        seen.add(r.prompt)
        if r.arrival <= first.arrival or exempt:
            continue
        checked += 1
        assert r.arrival >= first.arrival + retry_after - 1e-3, (
            f"{r.prompt!r} arrived {r.arrival - first.arrival:.3f} s after the first 429 "
            f"(Retry-After {retry_after} s)"
        )
    return checked


# -- OpenAIBackend: one instance, many threads ---------------------------------------------


def test_eight_threads_share_one_backend() -> None:
    with FaultyEndpoint(delay_s=0.2) as ep:
        be = OpenAIBackend("m", base_url=ep.base_url)

        def work(i: int) -> list[tuple[str, GenerationResult]]:
            out = []
            for call in range(2):
                text = prompt(i, call)
                out.append((text, be.generate([{"role": "user", "content": text}], SMALL, 0)))
            return out

        results = [r for rs in run_threads(8, work) for r in rs]
        be.close()
    assert len(results) == 16
    for text, res in results:
        assert res.text == canned(text) and res.finish_reason == "stop"
        assert res.completion_tokens == 8 and res.prompt_tokens == len(text.split())
        assert res.extra["attempts"] == 1 and res.extra["retry_wait_s"] == 0.0
        assert res.ttft_s is not None and res.latency_s is not None
        assert 0 < res.ttft_s <= res.latency_s
    stats = ep.stats()
    assert stats["total"] == 16 and stats["sent_429"] == stats["sent_503"] == 0
    assert stats["max_in_flight_seen"] > 1  # the calls really overlapped
    assert {r.status for r in ep.records()} == {200}
    assert be.stats() == {"calls": 16, "failed": 0, "requests": 16, "retries": 0,
                          "rate_limited": 0, "retry_wait_s": 0.0}  # fmt: skip


def test_stream_options_fallback_is_thread_safe() -> None:
    """A server that rejects stream_options: every thread that raced the first rejection
    retries without it (the flag is read once per call), none fails."""
    with FaultyEndpoint(reject_stream_options=True, delay_s=0.1) as ep:
        be = OpenAIBackend("m", base_url=ep.base_url, max_retries=0)
        results = run_threads(
            8, lambda i: be.generate([{"role": "user", "content": prompt(i, 0)}], SMALL, 0)
        )
        later = be.generate([{"role": "user", "content": prompt(9, 1)}], SMALL, 0)
        be.close()
    assert [r.text for r in results] == [canned(prompt(i, 0)) for i in range(8)]
    assert all(r.extra["usage"] == "counted" for r in [*results, later])
    stats = ep.stats()
    assert 1 <= stats["sent_400"] <= 8  # at most one rejection per racing call, then none
    assert later.extra["attempts"] == 1
    assert sum(r.extra["attempts"] for r in [*results, later]) == stats["total"]


def test_a_429_pauses_every_thread_for_its_retry_after() -> None:
    """8 threads x 2 calls, the first 3 requests rate limited with Retry-After: 1. Every call
    succeeds; the attempts add up to what the endpoint counted; and after the first 429
    no request (retry or another thread's next call) arrived before 1 s had passed."""
    with FaultyEndpoint(delay_s=0.2, rate_limit_first=3, retry_after_s=1.0) as ep:
        be = OpenAIBackend("m", base_url=ep.base_url)

        def work(i: int) -> list[tuple[str, GenerationResult, float]]:
            out = []
            for call in range(2):
                text = prompt(i, call)
                t0 = time.monotonic()
                res = be.generate([{"role": "user", "content": text}], SMALL, 0)
                out.append((text, res, time.monotonic() - t0))
            return out

        results = [r for rs in run_threads(8, work) for r in rs]
        be.close()
    records = ep.records()
    assert len(results) == 16
    assert all(res.text == canned(text) for text, res, _ in results)
    stats = ep.stats()
    assert stats["sent_429"] == 3 and stats["total"] == 16 + 3
    assert sum(res.extra["attempts"] for _, res, _ in results) == stats["total"]
    assert sorted(res.extra["attempts"] for _, res, _ in results) == [1] * 13 + [2] * 3
    # the gate: a lower bound on arrival times, and every later call waited for it
    assert assert_gate_held(records, 1.0, {prompt(i, 0) for i in range(8)}) == 3 + 8
    assert sum(res.extra["retry_wait_s"] > 0 for _, res, _ in results) >= 3
    # latency_s / ttft_s measure the successful attempt only: with the waits, within the
    # call's own wall time
    for _, res, wall in results:
        assert res.latency_s is not None and res.ttft_s is not None
        assert res.ttft_s <= res.latency_s
        assert res.latency_s + res.extra["retry_wait_s"] <= wall + 1e-3
    st = be.stats()
    assert (st["calls"], st["failed"], st["requests"], st["retries"], st["rate_limited"]) == (
        16, 0, 19, 3, 3)  # fmt: skip


@pytest.mark.parametrize("form", ["seconds", "ms", "date"])
def test_every_retry_after_form_is_honoured(form: str) -> None:
    with FaultyEndpoint(rate_limit_first=1, retry_after_s=1.0, retry_after_form=form) as ep:
        be = OpenAIBackend("m", base_url=ep.base_url)
        res = be.generate([{"role": "user", "content": prompt(0, 0)}], SMALL, 0)
        be.close()
    first, second = ep.records()
    assert (first.status, second.status) == (429, 200) and res.extra["attempts"] == 2
    assert second.arrival - first.arrival >= 0.9  # a date has 1 s resolution (rounded up)
    assert res.extra["retry_wait_s"] >= 0.9


def test_exhausted_retries_give_the_one_line_rate_limit_error() -> None:
    with FaultyEndpoint(rate_limit_first=1000, retry_after_s=0.05) as ep:
        be = OpenAIBackend("m", base_url=ep.base_url, max_retries=2)
        with pytest.raises(BackendError) as err:
            be.generate([{"role": "user", "content": "hi"}], SMALL, 0)
        be.close()
    msg = str(err.value)
    assert msg.startswith(f"endpoint {ep.base_url} model 'm': rate limited (RateLimitError: ")
    assert "; 3 attempts" in msg and msg.endswith("— wait and rerun (finished rows are kept).")
    assert _one_line(msg) and err.value.__cause__ is None
    assert ep.stats()["total"] == ep.stats()["sent_429"] == 3
    assert be.stats()["failed"] == 1 and be.stats()["rate_limited"] == 3


def test_a_retry_after_past_the_call_bound_fails_at_once() -> None:
    """Retry-After: 3600 against a call bounded to 240 s: no waiting, the error says why."""
    with FaultyEndpoint(rate_limit_first=1000, retry_after_s=3600) as ep:
        be = OpenAIBackend("m", base_url=ep.base_url)
        with pytest.raises(BackendError) as err:
            be.generate([{"role": "user", "content": "hi"}], SMALL, 0)
        # the gate stays closed for this backend: another call gives up without a request
        with pytest.raises(BackendError) as err2:
            be.generate([{"role": "user", "content": "again"}], SMALL, 0)
        be.close()
    msg = str(err.value)
    assert "rate limited" in msg and "; 1 attempt;" in msg and _one_line(msg)
    assert "would pass this call's limit of 240 s (max_total_s=)" in msg
    assert "another request of this backend got HTTP 429" in str(err2.value)
    assert "; 0 attempts" in str(err2.value) and _one_line(str(err2.value))
    assert ep.stats()["total"] == 1


def test_503_when_overloaded_is_retried_until_served() -> None:
    with FaultyEndpoint(delay_s=0.2, max_in_flight=2) as ep:
        be = OpenAIBackend("m", base_url=ep.base_url, max_retries=12, backoff_s=0.1,
                           max_backoff_s=0.4)  # fmt: skip
        results = run_threads(
            6, lambda i: be.generate([{"role": "user", "content": prompt(i, 0)}], SMALL, 0)
        )
        be.close()
    assert [r.text for r in results] == [canned(prompt(i, 0)) for i in range(6)]
    stats = ep.stats()
    assert sum(r.extra["attempts"] for r in results) == stats["total"]
    assert stats["sent_503"] == stats["total"] - 6 and stats["sent_429"] == 0
    assert all(r.in_flight <= 2 for r in ep.records() if r.status == 200)


def test_per_request_timeout_fails_clearly() -> None:
    with FaultyEndpoint(delay_s=2.0) as ep:
        be = OpenAIBackend("m", base_url=ep.base_url, timeout=0.5, max_retries=1, backoff_s=0.05)
        with pytest.raises(BackendError) as err:
            be.generate([{"role": "user", "content": "hi"}], SMALL, 0)
        be.close()
        total = ep.stats()["total"]
    msg = str(err.value)
    assert msg.startswith(
        f"endpoint {ep.base_url} model 'm': no answer within 0.5 s (timeout; APITimeoutError"
    )
    assert "; 2 attempts" in msg and msg.endswith(
        "— raise --timeout (timeout=) or check the server's load."
    )
    assert _one_line(msg) and err.value.__cause__ is None and total == 2


def test_faulty_endpoint_speaks_openai() -> None:
    """The openai client itself reads FaultyEndpoint: models, whole and streamed answers."""
    with FaultyEndpoint(model="canned") as ep:
        client = openai.OpenAI(base_url=ep.base_url, api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == ["canned"]
        msgs = [{"role": "user", "content": "one two three four"}]
        whole = client.chat.completions.create(model="x", messages=msgs, max_tokens=3)
        assert whole.choices[0].message.content == "one two three"
        assert whole.choices[0].finish_reason == "length" and whole.usage is not None
        assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (4, 3)
        chunks = list(client.chat.completions.create(
            model="x", messages=msgs, stream=True, stream_options={"include_usage": True},
        ))  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "one two three four"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 4
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        client.close()
        assert ep.stats()["models_requests"] == 1 and ep.stats()["total"] == 2


# -- JudgeClient: one client, many threads ---------------------------------------------------


def judge_config(url: str, **kw: Any) -> JudgeConfig:
    base: dict[str, Any] = dict(base_url=url, model="j", timeout_s=5, max_attempts=4,
                                backoff_s=0.05, max_backoff_s=0.2)  # fmt: skip
    return JudgeConfig(**{**base, **kw})


def test_judge_client_format_fallback_is_shared_by_threads() -> None:
    """4 threads whose first requests all use json_schema, which the server rejects: the
    format is dropped once (not once per thread), every call answers through the next one."""
    with FaultyEndpoint(reply=VERDICT, reject_response_formats={"json_schema"},
                        delay_s=0.2) as ep:  # fmt: skip
        client = JudgeClient(judge_config(ep.base_url))

        def work(i: int) -> list[CallResult]:
            return [
                client.call([{"role": "user", "content": prompt(i, c)}], SCHEMA) for c in range(3)
            ]

        results = [r for rs in run_threads(4, work) for r in rs]
        formats = client.formats
        client.close()
    assert formats == ["json_object_schema", "json_object", "none"]
    for res in results:
        assert res.error is None and res.parsed == {"reasoning": "A is better", "verdict": "A"}
        assert res.response_format == "json_object_schema" and res.attempts == 1
    stats = ep.stats()
    assert 1 <= stats["sent_400"] <= 4  # only requests sent before the first rejection
    rejections = [e for r in results for e in r.errors]
    assert rejections == ["json_schema rejected (400); trying next format"] * stats["sent_400"]
    assert stats["total"] == 12 + stats["sent_400"]


def test_judge_client_shares_the_rate_limit_gate() -> None:
    with FaultyEndpoint(reply=VERDICT, delay_s=0.2, rate_limit_first=2, retry_after_s=1.0) as ep:
        client = JudgeClient(judge_config(ep.base_url, response_format="json_object"))

        def work(i: int) -> list[CallResult]:
            return [
                client.call([{"role": "user", "content": prompt(i, c)}], SCHEMA) for c in range(2)
            ]

        results = [r for rs in run_threads(4, work) for r in rs]
        client.close()
    assert all(r.error is None and r.parsed is not None for r in results)
    stats = ep.stats()
    assert stats["sent_429"] == 2 and sum(r.attempts for r in results) == stats["total"] == 10
    assert [r.errors for r in results].count(["HTTP 429"]) == 2
    assert assert_gate_held(ep.records(), 1.0, {prompt(i, 0) for i in range(4)}) == 2 + 4
    assert sum(r.retry_wait_s > 0 for r in results) >= 2


# -- the real server behind the faulty proxy ---------------------------------------------------


@pytest.mark.slow
def test_through_the_faulty_proxy_to_a_real_llama_server(llama_server: str) -> None:
    """3 threads, one backend, 429s injected in front of a real llama_cpp.server: every call
    succeeds with the very answer the server gives directly. ``upstream_slots=1``: llama_cpp
    .server (started without ``--interrupt_requests False``) ends a running stream when
    another request arrives, so the proxy queues requests as a one-slot gateway would."""
    prompts = [f"Name colour number {i}." for i in range(3)]
    direct = OpenAIBackend("smollm2", base_url=llama_server)
    expected = [direct.generate([{"role": "user", "content": p}], SMALL, 0) for p in prompts]
    direct.close()
    with FaultyEndpoint(upstream=llama_server, upstream_slots=1, rate_limit_first=2,
                        retry_after_s=1.0) as ep:  # fmt: skip
        assert [m.id for m in openai.OpenAI(base_url=ep.base_url, api_key="x").models.list()] == [
            "smollm2"
        ]
        be = OpenAIBackend("smollm2", base_url=ep.base_url)
        results = run_threads(
            3, lambda i: be.generate([{"role": "user", "content": prompts[i]}], SMALL, 0)
        )
        be.close()
    assert [r.text for r in results] == [e.text for e in expected]
    assert all(r.text and r.finish_reason in ("stop", "length") for r in results)
    assert [r.completion_tokens for r in results] == [e.completion_tokens for e in expected]
    assert all(r.extra.get("usage") == "counted" for r in results)  # llama_cpp.server 0.3.x
    stats = ep.stats()
    assert stats["sent_429"] == 2 and stats["total"] == 5
    assert sum(r.extra["attempts"] for r in results) == 5
    assert assert_gate_held(ep.records(), 1.0, set(prompts)) == 2
