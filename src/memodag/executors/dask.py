"""The Dask executor: step attempts on a Dask distributed cluster (an existing scheduler, or a
``LocalCluster`` of worker processes started for the run and closed after it). Its definition,
``dask_executor``, lives in ``memodag.definitions.executor``.

memodag's engine still decides what runs; Dask only places attempts on workers. The run's payload
reaches every worker once, in a worker plugin (``executors/dask_worker.py``); per attempt only the
pickled ``StepTask`` travels, and each worker builds the run's resources once
(``executors/worker.py``). Attempts submitted together go to Dask in one message, handed to Dask
to run once (``fire_and_forget``): the driver holds no futures, so Dask frees each result as it
finishes and never re-runs a finished attempt whose worker later dies. Each attempt's outcome comes
back as Dask events on the driver's client topic (``run_dask_task``); a worker's death comes as the
scheduler's ``remove-worker`` event naming the attempts it took down.
Importing this module does not import Dask: the factory does, so ``import memodag`` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import time
import uuid
from collections.abc import Mapping
from typing import Any

from memodag.definitions.executor import dask_executor
from memodag.errors import ExecutionError
from memodag.executors.base import Executor, RunPayload
from memodag.executors.limits import Admission, TagLimit, parse_tag_limits
from memodag.executors.worker import (
    dumps_payload,
    dumps_task,
    load_outcome,
    lost_attempt_outcome,
)
from memodag.runtime.step import StepOutcome, StepTask

SCHEDULER_CONFIG: dict[str, Any] = {
    # an attempt whose worker died is reported to memodag, never silently run again by Dask
    "distributed.scheduler.allowed-failures": 0,
    # attempts do not move between workers once placed
    "distributed.scheduler.work-stealing": False,
    # the backlog of a wide fan-out stays on the scheduler; a worker holds at most one queued
    # attempt per thread besides those running (a death takes those down too). At 1.0 it would
    # hold none, but every step then waits for a scheduler round trip: ~2x the cost per step.
    "distributed.scheduler.worker-saturation": 2.0,
    # Dask's statistical profiler samples every worker thread's stack every 10 ms: on a small
    # machine that is CPU and GIL contention taken from the steps themselves
    "distributed.worker.profile.enabled": False,
    # the event loops' housekeeping (latency ticks, resource sampling) wakes every 20-500 ms by
    # default; each wake-up takes the GIL from the step running in the worker's thread
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    # every nanny (in the driver's process, for a LocalCluster) and every worker reads its
    # process's memory every 100 ms by default, ~2 ms of CPU each time here: 4% of a core in the
    # driver alone. Once a second still pauses or restarts a worker running out of memory.
    "distributed.worker.memory.monitor-interval": "1s",
}
"""Scheduler settings under which each step attempt runs at most once. The executor applies them
to the ``LocalCluster`` it starts; set them on a scheduler you start yourself."""


DEFAULT_BACKLOG = 10_000

LOST_STATES = frozenset({None, "released", "erred", "forgotten"})
"""States of an attempt's task on the scheduler once it can no longer report an outcome (a task run
to completion is forgotten right away; so is one that erred, e.g. its worker died)."""

POLL_SECONDS = (2.0, 30.0)
"""The driver checks its attempts' tasks on the scheduler this often, backing off from the first
figure to the second while nothing arrives: what catches an outcome that never came (a task
cancelled by someone else, outcomes lost while the client reconnected)."""

CHECK_TIMEOUT = 5.0
"""Seconds a check may wait for the scheduler's answer (an unreachable scheduler would otherwise
hold the run for the client's whole connect timeout)."""

UNSEEN_GRACE_SECONDS = 10.0
"""An attempt no check has seen on the scheduler counts as gone only this long after it was handed
over, and at three checks running: the scheduler may still be reading its batch."""

SEND_INTERVAL_SECONDS = 0.001
"""The driver's client sends to the scheduler at most this often (Dask's client default: 10 ms).
memodag already hands each engine round's attempts over in one message, so Dask's own batching
only delayed the next stage: a step whose inputs finished within 10 ms of the last hand-over
waited out the rest of that interval before the scheduler saw it."""

DEATH_GRACE_SECONDS = 1.0
"""How long the driver waits for outcomes of attempts a removed worker was running before it
asks the scheduler about them: a nanny can report its worker's death before the scheduler has
read all the worker sent."""


class DaskExecutor(Executor):
    """Submits attempts to a Dask cluster and hands back outcomes as they arrive.

    Invariants: at most ``max_concurrent`` attempts are in Dask at once (default: every ready
    attempt, up to ``DEFAULT_BACKLOG``); each submitted attempt ends in exactly one outcome from
    ``wait``. Attempts are fire-and-forget tasks: Dask drops each result as soon as it is computed,
    so nothing finished is ever recomputed. Under ``SCHEDULER_CONFIG`` Dask does not re-run an
    attempt whose worker died either, so a worker's death fails (or, per the op's
    ``RetryPolicy``, retries) the attempts it was running and the few Dask had queued on it; the
    scheduler keeps the rest of the backlog. On a scheduler without those settings Dask may re-run
    such an attempt elsewhere (``allowed-failures``, default 3): memodag then waits for that run.
    """

    in_process = False

    def __init__(
        self,
        address: str | None,
        n_workers: int | None,
        threads_per_worker: int,
        max_concurrent: int | None,
        limits: tuple[TagLimit, ...],
    ) -> None:
        self.address = address
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self._max_concurrent = max_concurrent
        self._limits = limits
        self._admission = Admission(max_concurrent or 1, limits)
        self._client: Any = None
        self._cluster: Any = None
        self._task_fn: Any = None
        self._plugin_name: str | None = None
        self._run_id = ""
        self._pending: dict[str, tuple[StepTask, float]] = {}  # by Dask key, sent or not
        self._unsent: list[tuple[str, bytes]] = []
        self._topic = ""
        self._key_prefix = "memodag-step-"
        # filled by Dask's event-loop thread, drained by the engine's, in arrival order:
        # ("outcome", (key, bytes)), ("refused", status) as the scheduler refuses a batch,
        # ("removed", (worker, keys)) as a worker running some of ours is removed
        self._arrived: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._parts: dict[tuple[str, str], list[bytes]] = {}  # (key, run of it) -> parts so far
        self._seen: set[str] = set()  # pending keys a check found on the scheduler
        self._missing: dict[str, int] = {}  # pending key -> checks running that found it gone
        self._suspects: dict[str, tuple[float, str]] = {}  # key -> (when to ask, dead worker)
        self._refused = ""  # the scheduler refused a batch of ours (why, for the messages)
        self._poll_after = POLL_SECONDS[0]
        self._next_check = 0.0
        self._disconnected_checks = 0
        self._comm: Any = None  # the client's stream to the scheduler: a new one after a reconnect
        self._done: list[StepOutcome] = []
        self._closed = False

    def start(self, payload: RunPayload, runtime: Any) -> None:
        import dask
        import distributed

        from memodag.executors.dask_worker import (
            PRELOAD,
            OrphanGuard,
            RunPlugin,
            key_prefix,
            run_dask_task,
        )

        if self.address:
            try:
                self._client = distributed.Client(self.address, set_as_default=False, timeout=30)
            except (OSError, ValueError) as exc:
                raise ExecutionError(
                    f"dask_executor: cannot reach the Dask scheduler at {self.address!r}: {exc}"
                ) from exc
        else:
            with dask.config.set(SCHEDULER_CONFIG):
                self._cluster = distributed.LocalCluster(
                    n_workers=self.n_workers or os.cpu_count() or 1,
                    threads_per_worker=self.threads_per_worker,
                    processes=True,
                    # the scheduler serves HTTP even without a dashboard, on 8787 unless told:
                    # a free port, so runs side by side (or a user's own cluster) do not clash;
                    # no dashboard (":0" alone would start Bokeh's where it is installed)
                    dashboard_address=":0",
                    scheduler_kwargs={"dashboard": False},
                    silence_logs=logging.ERROR,
                    # workers import memodag while the cluster starts, not at the run's start
                    preload=[PRELOAD],
                )
            self._client = distributed.Client(self._cluster, set_as_default=False)
        # before anything is sent, so no message waits out Dask's default interval
        _shorten_send_interval(self._client.scheduler_comm)
        # Dask queues what its workers cannot take yet (see SCHEDULER_CONFIG): handing it the
        # whole backlog in one message costs far less per step than trickling attempts in
        self._admission = Admission(self._max_concurrent or DEFAULT_BACKLOG, self._limits)
        self._run_id = payload.run_id
        self._task_fn = run_dask_task
        # every worker imports memodag and unpickles the job now, all at once, instead of at
        # their first attempts; a worker that joins later gets the plugin as it registers
        plugin = RunPlugin(self._run_id, dumps_payload(payload), self._client.id)
        self._plugin_name = plugin.name  # unregistered at shutdown even if registering fails
        try:
            self._client.register_plugin(plugin)
        except Exception as exc:
            raise ExecutionError(
                f"dask_executor: could not install run {self._run_id[:8]} on the Dask workers: "
                f"{type(exc).__name__}: {exc} (is memodag installed where the workers run?)"
            ) from exc
        # a driver killed outright cannot cancel its fire-and-forget attempts: the scheduler
        # does, once the client has been gone a while (a scheduler without memodag refuses
        # the guard; runs go on without it)
        with contextlib.suppress(Exception):
            self._client.register_plugin(OrphanGuard())
        self._key_prefix = key_prefix(self._client.id)
        # outcomes arrive as events on this client's own topic (see run_dask_task); the
        # scheduler keeps at most `distributed.admin.low-level-log-length` (1,000) events of a
        # topic and drops a client's topic some time after the client leaves
        self._topic = self._client.id
        self._client.subscribe_topic(self._topic, self._on_event)
        # the scheduler announces every worker it removes there, with the tasks it was running
        self._client.subscribe_topic("all", self._on_cluster_event)
        self._comm = self._client.scheduler_comm
        self._next_check = time.monotonic() + POLL_SECONDS[0]

    def _on_event(self, event: Any) -> None:
        """Runs in Dask's event loop for each event on the run's topic: outcome parts from the
        workers, and the scheduler's news of this client (of which a refused graph matters)."""
        message = event[1]
        if not isinstance(message, dict):
            return
        if message.get("action") == "update-graph" and message.get("status") != "OK":
            self._arrived.put(("refused", message.get("status")))
            return
        key = message.get("memodag_key")
        if key not in self._pending:
            return
        part, count = message["outcome"], message.get("parts", 1)
        if count > 1:
            # parts are keyed by the run of the task that sent them, in case Dask ran it again
            run = (key, message.get("run", ""))
            parts = self._parts.setdefault(run, [])
            parts.append(part)
            if len(parts) < count:
                return
            part = b"".join(parts)
            for stale in [k for k in self._parts if k[0] == key]:
                del self._parts[stale]
        self._arrived.put(("outcome", (key, part)))

    def _on_cluster_event(self, event: Any) -> None:
        message = event[1]
        if isinstance(message, dict) and message.get("action") == "remove-worker":
            ours = [k for k in message.get("processing-tasks") or () if k in self._pending]
            if ours:
                self._arrived.put(("removed", (message.get("worker", "?"), ours)))

    # -- submitting -------------------------------------------------------------------------

    def submit(self, task: StepTask) -> None:
        if self._admission.offer(task):
            self._launch(task)

    def can_submit(self) -> bool:
        return self._admission.has_room()

    @property
    def in_flight(self) -> int:
        return self._admission.in_flight + len(self._done)

    def _launch(self, task: StepTask) -> None:
        started = time.time()
        try:
            message = dumps_task(task)
        except Exception as exc:
            self._finish(
                task,
                lost_attempt_outcome(
                    task,
                    started,
                    f"step '{task.step_key}' could not be pickled for a Dask worker: {type(exc).__name__}: {exc}",
                    exc,
                ),
            )
            return
        key = f"{self._key_prefix}{uuid.uuid4().hex}"
        self._pending[key] = (task, started)
        self._unsent.append((key, message))

    def _send(self) -> None:
        """Hand Dask every attempt submitted since the last call, in one message."""
        if not self._unsent:
            return
        keys = [key for key, _ in self._unsent]
        messages = [message for _, message in self._unsent]
        self._unsent.clear()
        try:
            self._client.sync(self._submit_on_loop, keys, messages)
        except Exception as exc:  # the client is closed: these never reached Dask
            self._lost(keys, f"could not be handed to Dask: {type(exc).__name__}: {exc}")

    async def _submit_on_loop(self, keys: list[str], messages: list[bytes]) -> None:
        """Runs on the client's event loop, so the graph and the fire-and-forget request leave
        in the same batch and the scheduler reads them back to back: a task that finished
        before Dask knew it was fire-and-forget would stay in the cluster's memory for good."""
        from distributed import fire_and_forget

        futures = self._client.map(
            self._task_fn,
            [self._run_id] * len(keys),
            messages,
            [self._topic] * len(keys),
            keys,
            key=keys,
            pure=False,
            retries=0,
        )
        # Dask runs each task once and frees it as it finishes; the futures go out of scope
        # here, so the wish for them is withdrawn in this same batch, not per attempt later,
        # and no finished result is kept to recompute
        fire_and_forget(futures)

    def _finish(self, task: StepTask, outcome: StepOutcome) -> None:
        self._done.append(outcome)
        for admitted in self._admission.release(task):
            self._launch(admitted)

    # -- collecting -------------------------------------------------------------------------

    def wait(self, timeout: float | None) -> list[StepOutcome]:
        self._send()
        if not self._done and self._pending:
            self._collect(None if timeout is None else time.monotonic() + timeout)
        self._send()
        done, self._done = self._done, []
        return done

    def _collect(self, deadline: float | None) -> None:
        """Block until some outcome is ready or ``deadline`` passes."""
        while not self._done:
            if time.monotonic() >= self._next_check:
                self._check_pending()
                self._next_check = time.monotonic() + self._poll_after
                self._poll_after = min(self._poll_after * 2, POLL_SECONDS[1])
            self._ask_about_suspects()
            if self._done:
                return
            now = time.monotonic()  # the checks above may have waited on the scheduler
            wake = min([self._next_check, *(due for due, _ in self._suspects.values())])
            if deadline is not None:
                if now >= deadline:
                    return
                wake = min(wake, deadline)
            try:
                items = [self._arrived.get(timeout=max(wake - now, 0.0))]
            except queue.Empty:
                continue
            with contextlib.suppress(queue.Empty):
                while True:
                    items.append(self._arrived.get_nowait())
            for kind, data in items:
                if kind == "outcome":
                    key, outcome = data
                    entry = self._pop(key)
                    if entry is not None:
                        task, started = entry
                        self._finish(task, load_outcome(task, started, outcome))
                        self._poll_after = POLL_SECONDS[0]
                elif kind == "refused":
                    # which batch is not said; its attempts never appear on the scheduler, and
                    # the checks fail them with this reason
                    self._refused = f"the Dask scheduler refused a batch (update-graph {data}; is memodag installed where the scheduler runs?)"
                else:
                    worker, keys = data
                    due = time.monotonic() + DEATH_GRACE_SECONDS
                    for key in keys:
                        if key in self._pending:
                            self._seen.add(key)  # it was running: the scheduler had it
                            self._suspects[key] = (due, worker)

    def _ask_about_suspects(self) -> None:
        """Attempts a dead worker was running whose outcomes did not come within the grace: those
        whose tasks Dask dropped failed; those it handed to another worker go on."""
        now = time.monotonic()
        due = [key for key, (when, _) in self._suspects.items() if when <= now]
        if not due:
            return
        workers = {key: self._suspects.pop(key)[1] for key in due}
        states = self._states(due)
        if states is None:
            return  # no answer: the clocked checks look at them again
        for key in due:
            if states.get(key, "") in LOST_STATES:
                self._lost(
                    [key],
                    f"Dask worker {workers[key]} died while it was running or queued on it; "
                    "nothing it was writing was stored",
                )

    def _states(self, keys: list[str]) -> dict[str, Any] | None:
        """The scheduler's state of each of ``keys`` (None: it does not know the key), or None
        if it did not answer in time."""
        keys = [key for key in keys if key in self._pending]
        if not keys:
            return {}
        try:
            states: dict[str, Any] = self._client.sync(
                self._client.scheduler.get_task_status, keys=keys, callback_timeout=CHECK_TIMEOUT
            )
        except Exception:  # unreachable or slow: the next check asks again
            return None
        return states

    def _check_pending(self) -> None:
        """Fail the attempts whose tasks can no longer send an outcome.

        A task found gone from the scheduler at two checks running, after a check had seen it
        there, has lost its outcome (one in flight at the first check has arrived by the
        second). One no check ever saw counts as gone at three checks running and once
        ``UNSEEN_GRACE_SECONDS`` have passed since it was handed over. A client that has lost the
        scheduler at two checks running ("connecting" while it retries, then "closed") fails
        them all: outcomes sent meanwhile are gone, and Dask may have dropped the tasks with it.
        """
        if not self._pending:
            return
        client = self._client
        status = client.status
        if status != "running":
            self._disconnected_checks += 1
            if self._disconnected_checks >= 2 or status == "closed":
                self._lost(
                    list(self._pending),
                    f"the driver lost its connection to the Dask scheduler (client {status})",
                )
            return
        self._disconnected_checks = 0
        if client.scheduler_comm is not self._comm:
            # the client reconnected, and Dask does not subscribe it to its topics again
            self._comm = client.scheduler_comm
            _shorten_send_interval(self._comm)
            with contextlib.suppress(Exception):
                client.subscribe_topic(self._topic, self._on_event)
                client.subscribe_topic("all", self._on_cluster_event)
        keys = self._sent_keys()
        states = self._states(keys)
        if states is None:
            return  # no answer: neither a sighting nor an absence
        now = time.time()
        lost = []
        for key in keys:
            if states.get(key) not in LOST_STATES:
                self._seen.add(key)
                self._missing.pop(key, None)
                continue
            count = self._missing[key] = self._missing.get(key, 0) + 1
            if key in self._seen:
                if count >= 2:
                    lost.append(key)
            elif count >= 3 and now - self._pending[key][1] >= UNSEEN_GRACE_SECONDS:
                lost.append(key)
        self._lost(
            lost,
            self._refused
            or "Dask ended it without an outcome (the task was lost, cancelled, or could not run on its worker)",
        )

    def _sent_keys(self) -> list[str]:
        """Keys of the pending attempts already handed to Dask."""
        unsent = {key for key, _ in self._unsent}
        return [key for key in self._pending if key not in unsent]

    def _pop(self, key: str) -> tuple[StepTask, float] | None:
        self._seen.discard(key)
        self._missing.pop(key, None)
        self._suspects.pop(key, None)
        return self._pending.pop(key, None)

    def _lost(self, keys: list[str], why: str) -> None:
        for key in keys:
            entry = self._pop(key)
            if entry is None:
                continue
            task, started = entry
            self._finish(
                task,
                lost_attempt_outcome(
                    task, started, f"step '{task.step_key}' (attempt {task.attempt}): {why}"
                ),
            )

    # -- ending -----------------------------------------------------------------------------

    def shutdown(self, cancel: bool = False) -> None:
        if self._closed or self._client is None:
            return
        self._closed = True
        self._admission.drain()
        client, cluster = self._client, self._cluster
        sent = self._sent_keys()
        # late events from Dask's event-loop thread are ignored from here on
        self._pending.clear()
        self._unsent.clear()
        steps: list[Any] = []
        if self._topic:
            for topic in (self._topic, "all"):
                steps.append(lambda topic=topic: client.unsubscribe_topic(topic))
        if sent:
            steps.append(lambda: _cancel_keys(client, sent))
        if self._plugin_name and not (cancel and cluster is not None):
            # tear the run's resources down on every worker (a cluster we close ends anyway);
            # a plugin left behind would be installed on every worker that joins later
            steps.append(lambda: client.unregister_worker_plugin(self._plugin_name))
        for step in steps:
            if client.status != "running":
                break  # no scheduler to tell: each call would wait out its timeout
            with contextlib.suppress(Exception):  # best effort, each on its own
                step()
        try:
            client.close(timeout=10)
        finally:
            if cluster is not None:
                cluster.close(timeout=10)


def _shorten_send_interval(comm: Any) -> None:
    """Set ``SEND_INTERVAL_SECONDS`` on the client's batched stream to the scheduler (a reconnect
    makes a new stream with Dask's default; a Dask without the attribute keeps its own)."""
    if isinstance(getattr(comm, "interval", None), int | float):
        comm.interval = SEND_INTERVAL_SECONDS


def _cancel_keys(client: Any, keys: list[str]) -> None:
    """Cancel fire-and-forget tasks: ``force`` releases them for every client that wants them."""
    from distributed import Future

    client.cancel([Future(key, client) for key in keys], force=True)


def create(config: Mapping[str, Any]) -> Executor:
    """The factory ``dask_executor`` names (definitions/executor.py)."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ExecutionError(
            "dask_executor needs Dask distributed: pip install 'memodag[dask]'"
        ) from exc
    return DaskExecutor(
        config.get("address"),
        config.get("n_workers"),
        config.get("threads_per_worker") or 1,
        config.get("max_concurrent"),
        parse_tag_limits(config.get("tag_concurrency_limits") or []),
    )


__all__ = ["SCHEDULER_CONFIG", "DaskExecutor", "create", "dask_executor"]
