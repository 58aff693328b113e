"""The one backend interface every model goes through."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one generation. Part of the content key."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 40
    max_tokens: int = 128
    repeat_penalty: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return f"t={self.temperature:g},top_p={self.top_p:g},max={self.max_tokens}"


@dataclass
class GenerationResult:
    """What a backend returns for one call. Timings are seconds, rates tokens/s."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    chat_format: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """generate -> text + usage + timings; close frees every resource."""

    name: str  # display name of the model behind the backend
    load_time_s: float | None

    def generate(
        self, messages: list[dict[str, str]], sampling: Sampling, seed: int
    ) -> GenerationResult: ...

    def close(self) -> None: ...
