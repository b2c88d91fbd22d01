"""What the driver completes around attempts that run in worker processes.

Before an attempt goes to a worker, the io managers of its inputs prepare them
(``IOManager.prepare_worker_input``: the DuckDB table store exports a table the worker cannot
open); when it comes back successful, the io managers of its outputs accept them
(``accept_worker_output``: the DuckDB table store writes the table the worker handed over)
before the engine records anything. ``HandOverExecutor`` wraps the run's executor to do both,
so neither the engine loop nor the executors know about it. It decides nothing about what runs:
a failure here becomes the attempt's failed outcome, which the engine treats as any other.
Driver-side only, single-threaded (the engine's thread).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import replace

from memodag.executors.base import Executor, RunPayload
from memodag.executors.worker import lost_attempt_outcome
from memodag.runtime.step import ErrorInfo, StepOutcome, StepRuntime, StepTask
from memodag.storage.instance.records import Event, EventType
from memodag.storage.io_manager import Address, IOManager, OutputContext, RunInfo


def hands_over(manager: IOManager) -> bool:
    """Whether ``manager`` does anything for attempts on workers (overrides a driver hook)."""
    kind = type(manager)
    return (
        kind.prepare_worker_input is not IOManager.prepare_worker_input
        or kind.accept_worker_output is not IOManager.accept_worker_output
    )


class HandOverExecutor(Executor):
    """``inner``, with the driver's io managers preparing inputs before each submit and
    accepting outputs after each successful outcome.

    Invariant: an outcome reaches the engine only after every one of its outputs was accepted;
    one that could not be is a failed outcome naming the op, output and io manager.
    """

    in_process = False

    def __init__(
        self,
        inner: Executor,
        managers: Mapping[str, IOManager],
        run_id: str,
        job_name: str,
        tags: Mapping[str, str],
    ) -> None:
        self.inner = inner
        self.managers = {k: m for k, m in managers.items() if hands_over(m)}
        self._infos = {k: RunInfo(run_id, job_name, k, dict(tags)) for k in self.managers}
        self._tasks: dict[str, StepTask] = {}  # in flight, by step key
        self._refused: list[StepOutcome] = []  # attempts whose inputs could not be prepared

    def start(self, payload: RunPayload, runtime: StepRuntime | None) -> None:
        self.inner.start(payload, runtime)

    def submit(self, task: StepTask) -> None:
        started = time.time()
        for load in task.inputs:
            for address in load.addresses or ():
                manager = self.managers.get(address.io_manager_key)
                if manager is None:
                    continue
                try:
                    manager.prepare_worker_input(self._infos[address.io_manager_key], address)
                except Exception as exc:
                    message = (
                        f"step '{task.step_key}' could not load input '{load.name}' (io manager "
                        f"'{address.io_manager_key}'): {type(exc).__name__}: {exc}"
                    )
                    outcome = lost_attempt_outcome(task, started, message, exc)
                    self._refused.append(replace(outcome, lost_inputs=(address,)))
                    return
        self._tasks[task.step_key] = task
        self.inner.submit(task)

    def wait(self, timeout: float | None) -> list[StepOutcome]:
        if self._refused:
            refused, self._refused = self._refused, []
            return refused
        return [self._accept(outcome) for outcome in self.inner.wait(timeout)]

    def can_submit(self) -> bool:
        return self.inner.can_submit()

    @property
    def in_flight(self) -> int:
        return self.inner.in_flight + len(self._refused)

    def shutdown(self, cancel: bool = False) -> None:
        self.inner.shutdown(cancel)

    def _accept(self, outcome: StepOutcome) -> StepOutcome:
        task = self._tasks.pop(outcome.step_key, None)
        if not outcome.success or task is None:
            return outcome
        for stored in outcome.outputs:
            address = stored.address
            manager = self.managers.get(address.io_manager_key)
            if manager is None:
                continue
            try:
                manager.accept_worker_output(
                    self._infos[address.io_manager_key], _context(task, address), address
                )
            except Exception as exc:
                return _failed(outcome, task, address, exc)
        return outcome


def _context(task: StepTask, address: Address) -> OutputContext:
    op_def = task.op_def
    return OutputContext(
        task.step_key,
        address.output_name,
        task.run_id,
        op_def,
        op_def.outs.get(address.output_name) if op_def is not None else None,
        address.mapping_key,
        address.version,
        tags=task.tags,
    )


def _failed(
    outcome: StepOutcome, task: StepTask, address: Address, exc: BaseException
) -> StepOutcome:
    """``outcome`` turned into a failure: its output could not be completed in the driver."""
    piece = f" piece '{address.mapping_key}'" if address.mapping_key is not None else ""
    op_name = task.op_def.name if task.op_def is not None else task.step_key
    step = f" in step '{task.step_key}'" if task.step_key != op_name else ""
    message = (
        f"op '{op_name}'{step} could not store output '{address.output_name}'{piece} "
        f"(io manager '{address.io_manager_key}', in the driver): {exc}"
    )
    info = ErrorInfo(type(exc).__name__, message, "".join(traceback.format_exception(exc)))
    ended = time.time()
    events = [e for e in outcome.events if e.event_type is not EventType.STEP_SUCCESS]
    events.append(
        Event(
            EventType.STEP_FAILURE,
            task.run_id,
            ended,
            task.step_key,
            f"{info.cls_name}: {info.message}",
            {"error": info.to_dict(), "attempt": outcome.attempt, "duration": outcome.duration},
        )
    )
    return StepOutcome(
        outcome.step_key,
        False,
        events,
        outcome.outputs,
        info,
        exc,
        outcome.attempt,
        outcome.duration,
    )
