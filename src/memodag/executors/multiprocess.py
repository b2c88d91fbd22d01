"""The multiprocess executor: step attempts in a pool of worker processes on this machine.
(Its definition, ``multiprocess_executor``, lives in ``memodag.definitions.executor``.)

The pool is memodag's own, small and single-threaded on the driver side: each worker holds one
attempt at a time over a pipe, so when a worker dies (SIGKILL, out of memory) exactly its attempt
fails and the others carry on; a fresh worker replaces it. Workers are forked from
multiprocessing's fork server, which has imported memodag once (``spawn`` where there is no fork
server, or if configured): never forked from the driver itself, whose database connections and
threads make forking unsafe. Each worker receives the run's payload once, at start; per attempt
only the ``StepTask`` travels.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memodag.definitions.executor import multiprocess_executor
from memodag.errors import ExecutionError
from memodag.executors.base import Executor, RunPayload
from memodag.executors.limits import Admission, parse_tag_limits
from memodag.executors.worker import (
    describe_exit,
    dumps_payload,
    dumps_task,
    load_outcome,
    lost_attempt_outcome,
    serve_pipe,
    unguarded_main_call,
)
from memodag.runtime.step import StepOutcome, StepTask

WORKER_MODULE = "memodag.executors.worker"


def default_start_method() -> str:
    """'forkserver' where the platform has it (Linux, macOS), else 'spawn'."""
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


@dataclass
class _Worker:
    process: Any
    conn: Any
    task: StepTask | None = None
    started: float = 0.0
    finished: int = 0  # attempts it reported on: none means it may have died starting up


class MultiprocessExecutor(Executor):
    """Runs attempts in up to ``max_concurrent`` worker processes, started on demand.

    Invariants: a worker holds at most one attempt; every submitted attempt ends in exactly one
    outcome from ``wait`` (its own, or a failure naming how its worker died); ``wait`` never blocks
    when nothing is running.
    """

    in_process = False

    def __init__(
        self, max_concurrent: int, limits: Any = (), start_method: str = "forkserver"
    ) -> None:
        self.max_concurrent = max_concurrent
        self.start_method = start_method
        self._admission = Admission(max_concurrent, limits)
        self._workers: list[_Worker] = []
        self._done: list[StepOutcome] = []
        self._names = itertools.count(1)
        self._context: Any = None
        self._run_id = ""
        self._payload_bytes = b""
        self._closed = False

    def start(self, payload: RunPayload, runtime: Any) -> None:
        import multiprocessing

        self._context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            # the fork server (one per driver process, started with the first pool) imports
            # memodag once; each worker forked from it starts in milliseconds instead of ~0.3 s
            # of interpreter start and imports (a later run in the same process pays nothing)
            self._context.set_forkserver_preload([WORKER_MODULE])
        self._run_id = payload.run_id
        self._payload_bytes = dumps_payload(payload)
        # start the whole pool now: a worker still takes a moment to unpickle the job and build
        # the run's resources, which then overlaps the first steps
        for _ in range(self._admission.max_concurrent):
            self._spawn()

    # -- submitting -------------------------------------------------------------------------

    def submit(self, task: StepTask) -> None:
        if self._admission.offer(task):
            self._dispatch(task)

    def can_submit(self) -> bool:
        return self._admission.has_room()

    @property
    def in_flight(self) -> int:
        return self._admission.in_flight + len(self._done)

    def _dispatch(self, task: StepTask) -> None:
        started = time.time()
        try:
            message = dumps_task(task)
        except Exception as exc:
            self._finish_unsent(
                task,
                lost_attempt_outcome(
                    task,
                    started,
                    f"step '{task.step_key}' could not be pickled for a worker process: {type(exc).__name__}: {exc}",
                    exc,
                ),
            )
            return
        for _ in range(3):
            worker = self._idle_worker()
            try:
                worker.conn.send_bytes(message)
            except OSError:
                self._retire(worker)  # it died while idle: not this step's fault
                continue
            worker.task, worker.started = task, started
            return
        self._finish_unsent(
            task,
            lost_attempt_outcome(
                task, started, f"no worker process could be started for step '{task.step_key}'"
            ),
        )

    def _idle_worker(self) -> _Worker:
        for worker in list(self._workers):
            if worker.task is None:
                if worker.process.is_alive():
                    return worker
                self._retire(worker)
        return self._spawn()

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=serve_pipe,
            # a forked worker would otherwise see the fork server's environment, frozen when it
            # started (the first run in this process), not the driver's now
            args=(child_end, self._run_id, self._payload_bytes, dict(os.environ)),
            name=f"memodag-worker-{next(self._names)}",
            daemon=True,
        )
        process.start()
        child_end.close()
        worker = _Worker(process, parent_end)
        self._workers.append(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)

    def _finish_unsent(self, task: StepTask, outcome: StepOutcome) -> None:
        self._done.append(outcome)
        for admitted in self._admission.release(task):
            self._dispatch(admitted)

    # -- collecting -------------------------------------------------------------------------

    def wait(self, timeout: float | None) -> list[StepOutcome]:
        from multiprocessing.connection import wait as wait_for

        if self._done:
            done, self._done = self._done, []
            return done
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy = {}
            for worker in self._workers:
                if worker.task is not None:
                    busy[worker.conn] = worker
                    busy[worker.process.sentinel] = worker
            if not busy:
                return []
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait_for(list(busy), remaining)
            outcomes: list[StepOutcome] = []
            finished: list[StepTask] = []
            for handle in ready:
                worker = busy[handle]
                if worker.task is None:
                    continue  # both its pipe and its sentinel fired
                finished.append(worker.task)
                outcomes.append(self._collect(worker))
            for task in finished:
                for admitted in self._admission.release(task):
                    self._dispatch(admitted)
            outcomes.extend(self._done)
            self._done = []
            if outcomes or (deadline is not None and time.monotonic() >= deadline):
                return outcomes

    def _collect(self, worker: _Worker) -> StepOutcome:
        task = worker.task
        assert task is not None
        worker.task = None
        try:
            # a result sent just before the process ended is still in the pipe
            if worker.conn.poll():  # also true at end of file: count only what arrived
                sent = worker.conn.recv_bytes()
                worker.finished += 1
                return load_outcome(task, worker.started, sent)
        except (EOFError, OSError):
            pass
        worker.process.join(timeout=5)
        exitcode = worker.process.exitcode
        pid = worker.process.pid
        self._retire(worker)
        hint = ""
        if worker.finished == 0 and exitcode == 1:
            # a spawned or forkserver worker imports the driver's script: one that starts runs
            # at import, outside ``if __name__ == "__main__":``, makes the worker fail starting up
            hint = (
                "; it had run no step yet: if the run was started from a script, is the code "
                'that starts it under `if __name__ == "__main__":`? (workers import the script)'
            )
        return lost_attempt_outcome(
            task,
            worker.started,
            f"worker process {pid} died ({describe_exit(exitcode)}) while running step "
            f"'{task.step_key}' (attempt {task.attempt}); nothing it was writing was stored{hint}",
        )

    # -- ending -----------------------------------------------------------------------------

    def shutdown(self, cancel: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._admission.drain()
        for worker in self._workers:
            if cancel or worker.task is not None:
                # an attempt still running when the run ends is abandoned: stop it now
                worker.process.terminate()
            else:
                try:
                    worker.conn.send_bytes(b"")
                except OSError:
                    pass
        for worker in self._workers:
            worker.process.join(timeout=5 if not cancel else 2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.conn.close()
        self._workers.clear()


def create(config: Mapping[str, Any]) -> Executor:
    """The factory ``multiprocess_executor`` names (definitions/executor.py)."""
    unguarded = unguarded_main_call()
    if unguarded is not None:
        script, line = unguarded
        # refused before the run is recorded or any worker starts: each worker would import the
        # script and start the run again (Python starts worker processes that way)
        raise ExecutionError(
            f"{script}, line {line}, starts a multiprocess run when the script is imported; "
            "worker processes import the script too, so each would start it again. Put the "
            'code that starts the run under `if __name__ == "__main__":`'
        )
    max_concurrent = config.get("max_concurrent") or os.cpu_count() or 1
    start_method = config.get("start_method") or default_start_method()
    limits = parse_tag_limits(config.get("tag_concurrency_limits") or [])
    return MultiprocessExecutor(max_concurrent, limits, start_method)


__all__ = ["MultiprocessExecutor", "create", "multiprocess_executor"]
