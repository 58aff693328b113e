"""What the job engine moves around: cells grouped by the model that serves them.

A :class:`Group` is one model's (or metric's) cells with how to open, call and fail
them; a :class:`Placement` says where they run; an :class:`Outcome` carries rows back to
the driver. :mod:`slamkit.engine` runs groups with its executors, and other executors
(:mod:`slamkit.ray_executor`) build on the same parts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Placement:
    """Where a group's cells run: the executor, its in-flight limit, and (``server``) the
    managed llama.cpp server the group's model is served by."""

    executor: str
    concurrency: int
    server: Any = None


@dataclass
class Group:
    """The cells one model (or metric) serves, and how to serve them.

    ``open(placement)`` returns the resource (a backend, a judge client, a metric) whose
    ``close()`` is called when the group is done; if it raises, every cell of the group
    fails with ``fail(cell, exc, "load")``. ``call(resource, cells)`` returns one row per
    cell (``batch`` cells per call; 1 for model calls); if it raises, each of those cells
    fails with ``fail(cell, exc, "call")``. A failure row has ``error`` set.
    A resource whose ``thread_safe`` attribute is true may be called from many threads at
    once (endpoint and server backends, judge clients); any other (an in-process llama.cpp
    model) runs one call at a time under every executor. ``servable``: a catalog GGUF
    model the ``server`` executor may serve.
    """

    label: str
    cells: Sequence[Any]
    open: Callable[[Placement], Any]
    call: Callable[[Any, list[Any]], list[dict[str, Any]]]
    fail: Callable[[Any, BaseException, str], dict[str, Any]]
    servable: Any = None
    batch: int = 1


@dataclass
class Outcome:
    """Rows for some cells of a group, as an executor hands them back to the driver."""

    group: Group
    cells: list[Any]
    rows: list[dict[str, Any]]
    placement: Placement
    in_flight: int = 1
    opened: bool = True
    #: the machine that made the rows (None: this one)
    node: str | None = None


class Lent:
    """A resource the caller owns, lent to a group: the engine's ``close()`` leaves it
    open; ``thread_safe`` is the resource's own."""

    def __init__(self, resource: Any) -> None:
        self.resource = resource
        self.thread_safe = bool(getattr(resource, "thread_safe", False))

    def close(self) -> None:
        pass


class Load:
    """Counts calls in flight; each call learns the most that overlapped it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, int] = {}
        self._next = 0

    def enter(self) -> int:
        with self._lock:
            token = self._next
            self._next += 1
            self._active[token] = 0
            n = len(self._active)
            for t in self._active:
                self._active[t] = max(self._active[t], n)
            return token

    def exit(self, token: int) -> int:
        with self._lock:
            return self._active.pop(token)


def chunks(group: Group) -> list[list[Any]]:
    cells, n = list(group.cells), max(1, group.batch)
    return [cells[i : i + n] for i in range(0, len(cells), n)]
