"""The one backend interface every model goes through."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from slamkit.errors import SlamkitError


def whole_rule(minimum: int) -> str:
    """The rule :func:`check_whole` enforces, as said in its messages.

    >>> whole_rule(1)
    'a whole number >= 1'
    """
    return f"a whole number >= {minimum}"


def number_rule(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    """The rule :func:`check_number` enforces, as said in its messages.

    >>> number_rule(0, 1, True, False)
    'a number > 0 and <= 1'
    >>> number_rule(0, None, True, False)
    'a number > 0'
    """
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return "a number " + " and ".join(parts) if parts else "a finite number"


def whole_error(value: Any, minimum: int) -> str | None:
    """Why ``value`` is not a whole number >= ``minimum`` (None when it is)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"must be {whole_rule(minimum)}, got {value!r}"
    if value < minimum:
        return f"must be {whole_rule(minimum)}, got {value}"
    return None


def number_error(
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> str | None:
    """Why ``value`` is not a finite number in the range (None when it is)."""
    rule = number_rule(lo, hi, lo_open, hi_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"must be {rule}, got {value!r}"
    v = float(value)
    bad = not math.isfinite(v)
    bad = bad or (lo is not None and (v <= lo if lo_open else v < lo))
    bad = bad or (hi is not None and (v >= hi if hi_open else v > hi))
    return f"must be {rule}, got {value}" if bad else None


#: the most tokens one generation may ask for (longer than any context slamkit runs)
MAX_TOKENS_LIMIT = 65_536


def check_whole(name: str, value: Any, minimum: int, hint: str = "") -> None:
    """Raise SlamkitError naming ``name`` unless ``value`` is a whole number >= ``minimum``.

    >>> check_whole("limit", 5, 1)
    >>> check_whole("limit", -1, 1, "None for all")
    Traceback (most recent call last):
    ...
    slamkit.errors.SlamkitError: limit must be a whole number >= 1, got -1 (None for all).
    """
    err = whole_error(value, minimum)
    if err:
        raise SlamkitError(f"{name} {err}" + (f" ({hint})." if hint else "."))


def check_number(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    hint: str = "",
) -> None:
    """Raise SlamkitError naming ``name`` unless ``value`` is a finite number in the range
    (``lo_open`` / ``hi_open``: the bound itself is excluded).

    >>> check_number("top_p", 0.0, 0, 1, lo_open=True)
    Traceback (most recent call last):
    ...
    slamkit.errors.SlamkitError: top_p must be a number > 0 and <= 1, got 0.0.
    """
    err = number_error(value, lo, hi, lo_open, hi_open)
    if err:
        raise SlamkitError(f"{name} {err}" + (f" ({hint})." if hint else "."))


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one generation. Part of the content key.

    Checked when made: ``max_tokens`` >= 1, ``temperature`` in [0, 2], ``top_p`` in
    (0, 1], ``top_k`` >= 0 (0 = no top-k cut), ``repeat_penalty`` > 0; anything else
    raises SlamkitError naming the field and the value.

    >>> Sampling(top_p=0)
    Traceback (most recent call last):
    ...
    slamkit.errors.SlamkitError: Sampling top_p must be a number > 0 and <= 1, got 0 (1 = no cut).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 40
    max_tokens: int = 128
    repeat_penalty: float = 1.0

    def __post_init__(self) -> None:
        check_whole("Sampling max_tokens", self.max_tokens, 1, "the most tokens to generate")
        if self.max_tokens > MAX_TOKENS_LIMIT:
            raise SlamkitError(
                f"Sampling max_tokens must be at most {MAX_TOKENS_LIMIT:,}, got "
                f"{self.max_tokens:,}: no model slamkit runs has a context that long (a "
                "generation stops at the end of its context anyway); use e.g. 128 or 512."
            )
        check_number("Sampling temperature", self.temperature, 0, 2, hint="0 = greedy")
        check_number("Sampling top_p", self.top_p, 0, 1, lo_open=True, hint="1 = no cut")
        check_whole("Sampling top_k", self.top_k, 0, "0 = no top-k cut")
        check_number(
            "Sampling repeat_penalty", self.repeat_penalty, 0, lo_open=True, hint="1 = none"
        )

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
