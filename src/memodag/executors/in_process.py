"""The in-process executor: runs each attempt immediately in the driver (the default).

One attempt at a time, and the engine reads each outcome before the next attempt starts: a
step's events, index entries and progress line are recorded as it ends, never held back for a
batch (so Ctrl-C loses no finished step). It decides nothing and records nothing itself.
Its definition, ``in_process_executor``, lives in ``memodag.definitions.executor``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from memodag.definitions.executor import in_process_executor
from memodag.executors.base import Executor, RunPayload
from memodag.runtime.step import StepOutcome, StepRuntime, StepTask, run_step


class InProcessExecutor(Executor):
    """Runs an attempt inside ``submit``; ``wait`` hands back its outcome. No threads.

    Invariant: at most one outcome waits for the engine; ``can_submit`` is false until the
    engine has taken it.
    """

    in_process = True

    def __init__(self) -> None:
        self._done: StepOutcome | None = None
        self._runtime: StepRuntime | None = None

    def start(self, payload: RunPayload, runtime: Any) -> None:
        self._runtime = runtime

    def submit(self, task: StepTask) -> None:
        assert self._runtime is not None, "start() must be called before submit()"
        assert self._done is None, "the previous outcome must be taken with wait() first"
        self._done = run_step(task, self._runtime)

    def can_submit(self) -> bool:
        return self._done is None

    @property
    def in_flight(self) -> int:
        return 0 if self._done is None else 1

    def wait(self, timeout: float | None) -> list[StepOutcome]:
        done = self._done
        if done is None:
            if timeout:
                # nothing runs in the background here: the engine is waiting for a retry's delay
                time.sleep(timeout)
            return []
        self._done = None
        return [done]


def create(config: Mapping[str, Any]) -> Executor:
    """The factory ``in_process_executor`` names (definitions/executor.py)."""
    return InProcessExecutor()


__all__ = ["InProcessExecutor", "create", "in_process_executor"]
