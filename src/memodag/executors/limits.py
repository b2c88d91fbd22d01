"""Admission of step attempts inside an executor: a global concurrency cap and limits by op tag.

The engine submits whatever is ready while ``can_submit`` says so; an attempt whose tag limit is
full waits here (in submission order) and starts when a slot frees. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memodag.runtime.step import StepTask


@dataclass(frozen=True)
class TagLimit:
    """At most ``limit`` concurrent steps tagged ``key`` (with ``value``, if not None)."""

    key: str
    value: str | None
    limit: int

    def matches(self, tags: Mapping[str, str]) -> bool:
        if self.key not in tags:
            return False
        return self.value is None or tags[self.key] == self.value


def parse_tag_limits(raw: Sequence[Mapping[str, Any]]) -> tuple[TagLimit, ...]:
    """``tag_concurrency_limits`` config entries, checked already (``tag_limit_problems``)."""
    return tuple(TagLimit(e["key"], e.get("value"), e["limit"]) for e in raw or ())


class Admission:
    """Which attempts may start now. Invariant: ``running <= max_concurrent`` and, for each tag
    limit, at most ``limit`` running attempts match it. Attempts held back keep their order."""

    def __init__(self, max_concurrent: int, limits: Sequence[TagLimit] = ()) -> None:
        self.max_concurrent = max_concurrent
        self.limits = tuple(limits)
        self.running = 0
        self.held: deque[StepTask] = deque()
        self._used = [0] * len(self.limits)

    @property
    def in_flight(self) -> int:
        return self.running + len(self.held)

    def has_room(self) -> bool:
        return self.running < self.max_concurrent

    def offer(self, task: StepTask) -> bool:
        """Take ``task`` in; True if it may start now, False if it is held until a slot frees."""
        if self.has_room() and self._fits(task):
            self._occupy(task, +1)
            return True
        self.held.append(task)
        return False

    def release(self, task: StepTask) -> list[StepTask]:
        """``task`` finished: free its slots and return the held attempts that may start now."""
        self._occupy(task, -1)
        started: list[StepTask] = []
        if not self.held:
            return started
        keep: deque[StepTask] = deque()
        while self.held:
            candidate = self.held.popleft()
            if self.has_room() and self._fits(candidate):
                self._occupy(candidate, +1)
                started.append(candidate)
            else:
                keep.append(candidate)
        self.held = keep
        return started

    def drain(self) -> list[StepTask]:
        """Forget every held attempt (cancellation) and return them."""
        held = list(self.held)
        self.held.clear()
        return held

    def _fits(self, task: StepTask) -> bool:
        return self._blocking(task) is None

    def _blocking(self, task: StepTask) -> TagLimit | None:
        for i, limit in enumerate(self.limits):
            if limit.matches(task.tags) and self._used[i] >= limit.limit:
                return limit
        return None

    def _occupy(self, task: StepTask, delta: int) -> None:
        self.running += delta
        for i, limit in enumerate(self.limits):
            if limit.matches(task.tags):
                self._used[i] += delta
