"""A scripted backend for fast, offline unit tests (never the only test of a feature)."""

from __future__ import annotations

from collections.abc import Callable

from slamkit.backends.base import GenerationResult, Sampling


class MockBackend:
    """Replies from a list (cycled) or a function of the last user message.

    ``fail_on`` makes calls whose user message contains that text raise, to test
    per-item error handling. Thread-safe (no shared state but a call counter), so the
    concurrent executors may call it from many threads.
    """

    thread_safe = True

    def __init__(
        self,
        replies: list[str] | Callable[[str], str] | None = None,
        name: str = "mock",
        fail_on: str | None = None,
    ) -> None:
        self.name = name
        self.load_time_s: float | None = 0.0
        self._replies = replies or ["mock reply"]
        self.fail_on = fail_on
        self.calls: list[list[dict[str, str]]] = []
        self.closed = False

    def generate(
        self, messages: list[dict[str, str]], sampling: Sampling, seed: int
    ) -> GenerationResult:
        self.calls.append(messages)
        user = messages[-1]["content"]
        if self.fail_on and self.fail_on in user:
            raise RuntimeError(f"scripted failure on {user[:40]!r}")
        if callable(self._replies):
            text = self._replies(user)
        else:
            text = self._replies[(len(self.calls) - 1) % len(self._replies)]
        n_out = len(text.split())
        return GenerationResult(
            text=text,
            prompt_tokens=len(user.split()),
            completion_tokens=n_out,
            ttft_s=0.001,
            prefill_tps=1000.0,
            decode_tps=100.0,
            latency_s=0.001 + n_out / 100.0,
            finish_reason="stop",
            chat_format="mock",
        )

    def close(self) -> None:
        self.closed = True
