"""The in-process executor: runs each attempt immediately in the driver (the default).

Its definition, ``in_process_executor``, lives in ``memodag.definitions.executor``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from memodag.definitions.executor import in_process_executor
from memodag.executors.base import Executor, RunPayload
from memodag.runtime.step import StepOutcome, StepRuntime, StepTask, run_step


class InProcessExecutor(Executor):
    """Runs an attempt inside ``submit``; ``wait`` hands back what finished. No threads."""

    in_process = True

    def __init__(self) -> None:
        self._done: deque[StepOutcome] = deque()
        self._runtime: StepRuntime | None = None

    def start(self, payload: RunPayload, runtime: Any) -> None:
        self._runtime = runtime

    def submit(self, task: StepTask) -> None:
        assert self._runtime is not None, "start() must be called before submit()"
        self._done.append(run_step(task, self._runtime))

    def can_submit(self) -> bool:
        # bounded so a wide fan-out does not pile up outcomes before the engine reads them
        return len(self._done) < 64

    @property
    def in_flight(self) -> int:
        return len(self._done)

    def wait(self, timeout: float | None) -> list[StepOutcome]:
        if not self._done and timeout:
            # nothing runs in the background here: the engine is waiting for a retry's delay
            time.sleep(timeout)
        done = list(self._done)
        self._done.clear()
        return done


def create(config: Mapping[str, Any]) -> Executor:
    """The factory ``in_process_executor`` names (definitions/executor.py)."""
    return InProcessExecutor()


__all__ = ["InProcessExecutor", "create", "in_process_executor"]
