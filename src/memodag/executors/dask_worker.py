"""The Dask worker side of ``dask_executor``: a worker plugin that installs a run on every worker,
and the task function each attempt runs.

It is also a Dask preload module: ``dask worker --preload memodag.executors.dask_worker`` (or
``preload=[...]`` for a ``LocalCluster``) imports memodag as the worker starts, so the first run
on a new worker does not wait for the import. The executor's own ``LocalCluster`` does this.

This module imports Dask; ``executors/dask.py`` imports it only when a run starts on Dask.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from typing import Any

import dask
from distributed import get_worker
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from memodag.executors.worker import release_run, run_task, warm_run


class RunPlugin(WorkerPlugin):
    """Installs one run's payload on every worker of the cluster, including workers that join or
    are restarted during the run (the scheduler hands them its plugins as they register), and
    tears the run's resources down when the driver unregisters it at the end of the run.

    The payload travels once per worker with the plugin, so attempts carry no reference to it:
    the scheduler tracks no dependency per attempt and workers fetch nothing before running one.
    """

    def __init__(self, run_id: str, payload_bytes: bytes, client_id: str) -> None:
        self.run_id = run_id
        self.payload_bytes = payload_bytes
        # named after the driver's client too: ``OrphanGuard`` removes it if that driver vanishes
        self.name = f"memodag-run-{run_id}-{client_token(client_id)}"

    def setup(self, worker: Any) -> None:
        # runs on the worker's event loop: imports only; resources are built by the first
        # attempt, on the thread that runs attempts (a resource may be bound to its thread)
        warm_run(self.run_id, self.payload_bytes)

    def teardown(self, worker: Any) -> None:
        release_run(self.run_id)


def client_token(client_id: str) -> str:
    """A short mark of a driver's Dask client, in its attempts' keys and its run's plugin name."""
    return hashlib.sha1(client_id.encode()).hexdigest()[:12]


def key_prefix(client_id: str) -> str:
    """The Dask key prefix of the attempts a driver's client hands over, by which
    ``OrphanGuard`` finds them (Dask still puts every attempt in one task group, ``memodag-step``,
    and queues that large group on the scheduler)."""
    return f"memodag-step-{client_token(client_id)}-"


class OrphanGuard(SchedulerPlugin):
    """Cleans up after a driver that left the cluster without doing so (killed outright, or cut
    off for good): cancels its attempts, fire-and-forget tasks Dask would otherwise run to the
    end, and removes its run's worker plugin, which tears the run's resources down on the
    workers. A client counts as gone once it has been away ``memodag.orphan-grace`` of Dask
    config (default 60 s, longer than a client's 30 s of trying to reconnect) without coming back
    in between."""

    name = "memodag-orphan-guard"
    idempotent = True  # one per scheduler, whichever run installed it first

    def __init__(self) -> None:
        self._left: dict[str, float] = {}  # client -> when it last left, while away
        self._removals: set[asyncio.Task[None]] = set()  # held until done (the loop holds weakly)

    def add_client(self, scheduler: Any, client: str) -> None:
        self._left.pop(client, None)

    def remove_client(self, scheduler: Any, client: str) -> None:
        left = self._left[client] = time.monotonic()
        grace = dask.utils.parse_timedelta(dask.config.get("memodag.orphan-grace", "60s"))
        scheduler.loop.call_later(grace, self._cancel_if_gone, scheduler, client, left)

    def _cancel_if_gone(self, scheduler: Any, client: str, left: float) -> None:
        if self._left.get(client) != left:
            return  # it came back since (and may have left again: a later timer decides)
        del self._left[client]
        orphans = scheduler.clients.get("fire-and-forget")
        if scheduler.status.name != "running" or orphans is None:
            return
        prefix = key_prefix(client)
        keys = [ts.key for ts in orphans.wants_what if str(ts.key).startswith(prefix)]
        if keys:
            scheduler.client_releases_keys(
                keys=keys, client="fire-and-forget", stimulus_id=f"memodag-orphaned-{time.time()}"
            )
        token = client_token(client)
        for name in [n for n in scheduler.worker_plugins if n.startswith("memodag-run-")]:
            if name.endswith(f"-{token}"):
                removal = asyncio.get_running_loop().create_task(_unregister(scheduler, name))
                self._removals.add(removal)
                removal.add_done_callback(self._removals.discard)


async def _unregister(scheduler: Any, name: str) -> None:
    with contextlib.suppress(Exception):  # gone already, or a worker did not answer
        await scheduler.unregister_worker_plugin(None, name)


PRELOAD = __name__
"""The name to give Dask's ``preload`` option (see the module docstring)."""


EVENT_BYTES = 16 * 1024
"""An outcome travels in events of at most this many bytes (see ``run_dask_task``): the scheduler
keeps a topic's last 1,000 events, so what it holds for a run stays bounded."""


def run_dask_task(run_id: str, task_bytes: bytes, topic: str, key: str) -> None:
    """What a Dask worker runs per attempt: one pickled ``StepTask`` of a run its plugin
    installed (``run_task`` never raises: every failure of the step is in its outcome).

    The pickled outcome goes to the driver as events on ``topic`` (the driver's client), in
    order, split into parts of ``EVENT_BYTES``. The worker sends them in the same stream, ahead of
    the message that the task finished, and the scheduler forwards them at once: the driver reads
    the outcome without fetching a result from the worker, and holds no future, so Dask frees
    the task as soon as it finishes and has nothing to recompute if this worker dies later.
    """
    outcome = run_task(run_id, task_bytes)
    worker = get_worker()
    parts = [outcome[i : i + EVENT_BYTES] for i in range(0, len(outcome), EVENT_BYTES)]
    # marks this run of the task: a scheduler that allows failures may run it again elsewhere
    # after a death mid-send, and the driver must not mix the two runs' parts
    run = uuid.uuid4().hex[:12] if len(parts) > 1 else ""
    for part in parts:
        worker.log_event(
            topic, {"memodag_key": key, "outcome": part, "parts": len(parts), "run": run}
        )
