"""Worker-side code shared by the multiprocess and Dask executors, and how runs are shipped.

A worker process serves step attempts of one or more runs. It receives a run's ``RunPayload``
once, builds the run's resources on first use (cached per run id), runs ``StepTask``s with
``run_step`` and sends back ``StepOutcome``s that unpickle in the driver. It decides nothing.
The driver side uses ``dumps_payload``/``dumps_task`` to ship and ``lost_attempt_outcome`` to
report an attempt whose worker died.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.machinery
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from memodag.errors import ExecutionError
from memodag.executors.base import RunPayload
from memodag.plan.dynamic import parse_step_key
from memodag.plan.plan import flatten_graph
from memodag.runtime.resources import initialized_resources
from memodag.runtime.step import ErrorInfo, StepOutcome, StepRuntime, StepTask, run_step
from memodag.storage.instance import Instance
from memodag.storage.instance.base import InstanceStorage
from memodag.storage.instance.records import (
    Event,
    EventType,
    IndexEntry,
    Lease,
    Pin,
    RunRecord,
    RunStatus,
)
from memodag.storage.io_manager import IOManager, RunInfo

if TYPE_CHECKING:
    from memodag.definitions.job import JobDefinition


class WorkerDiedError(ExecutionError):
    """The process running a step attempt died (killed by a signal, out of memory, ``os._exit``)."""


# -- shipping (driver side) -----------------------------------------------------------------


def dumps_payload(payload: RunPayload) -> bytes:
    """Pickle a run's payload for workers, shipping by value the job's modules workers can't import.

    Modules defined in ``__main__`` are shipped by value by cloudpickle itself; modules loaded from
    a file path that is not on ``sys.path`` would otherwise be pickled as an import that fails.
    """
    import cloudpickle

    for module in _unimportable_modules(payload.job):
        cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps(payload)


def dumps_task(task: StepTask) -> bytes:
    """Pickle one attempt without its op: every worker already holds the job (the run's payload)
    and finds the op by the step's node path, so the op's body is not shipped per attempt."""
    import cloudpickle

    return cloudpickle.dumps(replace(task, op_def=None))  # type: ignore[arg-type]  # restored in run_task


def _unimportable_modules(job: JobDefinition) -> list[Any]:
    names: set[str] = set()
    stack = [job.graph]
    while stack:
        graph = stack.pop()
        for node in graph.nodes.values():
            definition = node.definition
            if hasattr(definition, "nodes"):
                stack.append(definition)
            else:
                names.add(getattr(definition.compute_fn, "__module__", None) or "")
    for rdef in job.resource_defs.values():
        names.add(getattr(rdef.resource_fn, "__module__", None) or "")
    if job.version_strategy is not None:
        names.add(type(job.version_strategy).__module__)
    found = []
    for name in sorted(names):
        module = sys.modules.get(name)
        if module is None or name == "__main__" or module.__spec__ is None:
            continue  # cloudpickle already ships these by value
        if not _importable_by_name(module):
            found.append(module)
    return found


def _importable_by_name(module: Any) -> bool:
    """Whether a fresh process with this ``sys.path`` would import the same file under this name."""
    top = module.__name__.partition(".")[0]
    parent = sys.modules.get(top)
    spec = importlib.machinery.PathFinder.find_spec(top, sys.path)
    if spec is None or parent is None:
        return False
    origin = getattr(parent, "__file__", None)
    if spec.origin is None or origin is None:
        return spec.submodule_search_locations is not None  # a namespace package
    return os.path.realpath(spec.origin) == os.path.realpath(origin)


# -- scripts that start runs when imported --------------------------------------------------


def unguarded_main_call() -> tuple[str, int] | None:
    """Where the ``__main__`` script starts the current call at import time, outside any
    ``if __name__ ...:`` block, as (file, line); None if it does not (or it cannot be known).

    Worker processes started by ``spawn`` or ``forkserver`` import that script again, so such a
    call would run again in each of them.
    """
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not (
        frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__"
    ):
        frame = frame.f_back
    if frame is None or not main_file:
        return None
    filename, line = frame.f_code.co_filename, frame.f_lineno
    try:
        if os.path.realpath(filename) != os.path.realpath(main_file):
            return None  # exec'd code, not the script workers import
        tree = ast.parse(Path(filename).read_text(), filename)
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and node.lineno <= line <= (node.end_lineno or node.lineno)
            and any(isinstance(n, ast.Name) and n.id == "__name__" for n in ast.walk(node.test))
        ):
            return None
    return filename, line


# -- reading results and lost attempts (driver side) ----------------------------------------


def load_outcome(task: StepTask, started: float, result: bytes) -> StepOutcome:
    """The outcome a worker sent for ``task`` (a failed one if the worker could not run it)."""
    try:
        loaded = pickle.loads(result)
    except Exception as exc:
        return lost_attempt_outcome(
            task,
            started,
            f"the outcome of step '{task.step_key}' could not be read in the driver: {type(exc).__name__}: {exc}",
            ExecutionError(str(exc)),
        )
    if isinstance(loaded, TaskNotRun):
        return lost_attempt_outcome(task, started, loaded.message, ExecutionError(loaded.message))
    return loaded


def lost_attempt_outcome(
    task: StepTask, started: float, message: str, error: BaseException | None = None
) -> StepOutcome:
    """A failed outcome for an attempt whose worker never reported back (it died or was lost)."""
    exc = error or WorkerDiedError(message)
    return _failed_outcome(task, started, type(exc).__name__, message, exc, "")


def describe_exit(exitcode: int | None) -> str:
    """``signal 9 (SIGKILL)`` or ``exit code 3``: how a worker process ended."""
    if exitcode is None:
        return "unknown exit status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
        return f"signal {-exitcode}, {name}"
    return f"exit code {exitcode}"


def _failed_outcome(
    task: StepTask,
    started: float,
    cls_name: str,
    message: str,
    exc: BaseException | None,
    stack: str,
) -> StepOutcome:
    ended = time.time()
    info = ErrorInfo(cls_name, message, stack)
    events = [
        Event(
            EventType.STEP_START,
            task.run_id,
            started,
            task.step_key,
            "",
            {"attempt": task.attempt},
        ),
        Event(
            EventType.STEP_FAILURE,
            task.run_id,
            ended,
            task.step_key,
            f"{cls_name}: {message}",
            {"error": info.to_dict(), "attempt": task.attempt, "duration": ended - started},
        ),
    ]
    return StepOutcome(task.step_key, False, events, [], info, exc, task.attempt, ended - started)


# -- the worker-side run cache --------------------------------------------------------------


@dataclass
class _WorkerRun:
    run_id: str
    payload_bytes: bytes
    lock: threading.Lock = field(default_factory=threading.Lock)
    runtime: StepRuntime | None = None
    ops: dict[str, Any] = field(default_factory=dict)  # node path -> OpDefinition, from the payload
    payload: RunPayload | None = None  # unpickled ahead of the first attempt (``warm_run``)
    stack: contextlib.ExitStack | None = None
    error: tuple[str, str, str] | None = None  # why the run could not be prepared here


_RUNS: dict[str, _WorkerRun] = {}
_RUNS_LOCK = threading.Lock()


def install_run(run_id: str, payload_bytes: bytes) -> None:
    """Make a run known in this process; its resources are built by its first attempt."""
    with _RUNS_LOCK:
        if run_id not in _RUNS:
            _RUNS[run_id] = _WorkerRun(run_id, payload_bytes)


def prepare_run(run_id: str, payload_bytes: bytes) -> None:
    """Install a run and build its resources now, on the thread that will run its attempts (a
    multiprocess worker as it starts); a failure is reported by the first attempt, not raised."""
    install_run(run_id, payload_bytes)
    with contextlib.suppress(_PrepareError):
        _runtime(_RUNS[run_id])


def warm_run(run_id: str, payload_bytes: bytes) -> None:
    """Install a run and import what its job needs, without building resources: Dask calls this
    on the worker's event-loop thread, and a resource may be bound to the thread that made it
    (a SQLite connection), so resources are built by the first attempt, on a task thread."""
    install_run(run_id, payload_bytes)
    run = _RUNS[run_id]
    with contextlib.suppress(Exception), run.lock:
        if run.payload is None and run.runtime is None:
            run.payload = pickle.loads(payload_bytes)


def release_run(run_id: str) -> None:
    """Tear down a run's resources in this process (generator resources run their cleanup)."""
    with _RUNS_LOCK:
        run = _RUNS.pop(run_id, None)
    if run is not None and run.stack is not None:
        with contextlib.suppress(Exception):
            run.stack.close()


def release_all() -> None:
    for run_id in list(_RUNS):
        release_run(run_id)


def _runtime(run: _WorkerRun) -> StepRuntime:
    with run.lock:
        if run.runtime is not None:
            return run.runtime
        if run.error is not None:
            raise _PrepareError(*run.error)
        try:
            payload: RunPayload = run.payload or pickle.loads(run.payload_bytes)
            run.payload = None
            stack = contextlib.ExitStack()
            instance = worker_instance(payload.instance_url, payload.storage_dir)
            stack.callback(instance.close)
            resources = stack.enter_context(
                initialized_resources(
                    payload.job.resource_defs,
                    payload.resource_config,
                    set(payload.resource_keys),
                    instance,
                    payload.run_id,
                )
            )
            _serve_io_managers(payload, resources, stack)
        except Exception as exc:
            run.error = (
                type(exc).__name__,
                f"worker process {os.getpid()} could not prepare run {run.run_id[:8]}: {type(exc).__name__}: {exc}",
                "".join(traceback.format_exception(exc)),
            )
            raise _PrepareError(*run.error) from exc
        run.stack = stack
        run.ops = {path: node.op_def for path, node in flatten_graph(payload.job.graph).items()}
        run.runtime = StepRuntime(resources, payload.resource_config, instance)
        return run.runtime


def _serve_io_managers(payload: RunPayload, resources: Any, stack: contextlib.ExitStack) -> None:
    """Tell the run's io managers they serve it in this worker (``IOManager.serve_worker``),
    and that they stop when its resources are torn down."""
    for key in sorted(payload.resource_keys):
        manager = getattr(resources, key, None)
        if isinstance(manager, IOManager):
            info = RunInfo(payload.run_id, payload.job.name, key, dict(payload.run_tags))
            manager.serve_worker(info)
            stack.callback(manager.release_worker, info)


class _PrepareError(Exception):
    def __init__(self, cls_name: str, message: str, stack: str) -> None:
        super().__init__(message)
        self.cls_name, self.message, self.stack = cls_name, message, stack


@dataclass(frozen=True)
class TaskNotRun:
    """What a worker sends back instead of an outcome when it could not even read the task."""

    message: str


def run_task(run_id: str, task_bytes: bytes) -> bytes:
    """Run one pickled attempt of an installed run; return the pickled outcome (or ``TaskNotRun``).

    Never raises: user errors, resource errors and even ``SystemExit`` become a failed outcome.
    """
    started = time.time()
    try:
        task: StepTask = pickle.loads(task_bytes)
    except Exception as exc:
        # without the task there is no step key to report: the driver, which knows it, reports it
        return pickle.dumps(
            TaskNotRun(
                f"worker process {os.getpid()} could not unpickle the step task: {type(exc).__name__}: {exc}"
            )
        )
    run = _RUNS.get(run_id)
    if run is None:
        outcome = _failed_outcome(
            task,
            started,
            "ExecutionError",
            f"run {run_id[:8]} was not installed in worker process {os.getpid()}",
            None,
            "",
        )
        return _dumps_outcome(outcome)
    try:
        runtime = _runtime(run)
        if task.op_def is None:
            task.op_def = run.ops[parse_step_key(task.step_key)[0]]
        outcome = run_step(task, runtime)
    except _PrepareError as exc:
        outcome = _failed_outcome(task, started, exc.cls_name, exc.message, None, exc.stack)
    except (KeyboardInterrupt, SystemExit) as exc:
        # in a worker these would only kill the process; report them as the step's failure
        outcome = _failed_outcome(
            task,
            started,
            type(exc).__name__,
            f"step '{task.step_key}' raised {type(exc).__name__}({exc})",
            None,
            "".join(traceback.format_exception(exc)),
        )
    return _dumps_outcome(outcome)


def _dumps_outcome(outcome: StepOutcome) -> bytes:
    import cloudpickle

    if outcome.exception is not None:
        # the exception travels only if the driver can rebuild it; ErrorInfo always travels
        try:
            pickle.loads(cloudpickle.dumps(outcome.exception))
        except Exception:
            outcome.exception = None
    try:
        return cloudpickle.dumps(outcome)
    except Exception as exc:
        outcome.exception = None
        outcome.events = [e for e in outcome.events if _picklable(e)]
        if outcome.error is None:
            outcome.error = ErrorInfo(type(exc).__name__, str(exc), "")
        return cloudpickle.dumps(outcome)


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


class WorkerInstanceStorage(InstanceStorage):
    """The run's instance storage as a worker sees it: the database is opened on first use.

    Most steps only need the instance's storage directory (the default output location), so a
    worker opens the database only when an op or resource calls one of these verbs. A run whose
    instance lives in the driver's memory has no database a worker can open: every verb then
    raises ``ExecutionError`` saying so.
    """

    def __init__(self, connection_url: str | None) -> None:
        self._connection_url = connection_url or ""
        self._opened: InstanceStorage | None = None

    def _storage(self, verb: str) -> InstanceStorage:
        if self._opened is None:
            from memodag.storage.instance.sql import storage_from_url

            url = self._connection_url
            if url in ("", ":memory:") or url.endswith(":memory:"):
                raise ExecutionError(
                    f"instance.{verb} is not available in a worker process: the run's instance "
                    "is in the driver's memory; use a SQLite file or PostgreSQL instance"
                )
            self._opened = storage_from_url(url if "://" in url else f"sqlite:///{url}")
        return self._opened

    @property
    def url(self) -> str:
        from memodag.storage.instance.sql import redact_url

        return redact_url(self._connection_url)

    @property
    def connection_url(self) -> str:
        return self._connection_url

    def add_run(self, run: RunRecord) -> None:
        self._storage("add_run").add_run(run)

    def update_run_status(self, run_id: str, status: RunStatus, end_time: float | None) -> None:
        self._storage("update_run_status").update_run_status(run_id, status, end_time)

    def get_run(self, run_id: str) -> RunRecord | None:
        return self._storage("get_run").get_run(run_id)

    def get_runs(
        self, limit: int = 20, job_name: str | None = None, status: RunStatus | None = None
    ) -> list[RunRecord]:
        return self._storage("get_runs").get_runs(limit, job_name, status)

    def store_events(self, events: Sequence[Event], index_entries: Sequence[IndexEntry]) -> None:
        self._storage("store_events").store_events(events, index_entries)

    def get_events(
        self, run_id: str, event_types: Sequence[EventType] | None = None
    ) -> list[Event]:
        return self._storage("get_events").get_events(run_id, event_types)

    def index_entries(self, output_keys: Iterable[str] | None = None) -> list[IndexEntry]:
        return self._storage("index_entries").index_entries(output_keys)

    def delete_index_entries(self, keys: Iterable[tuple[str, str]]) -> None:
        self._storage("delete_index_entries").delete_index_entries(keys)

    def pinned_index_entries(self, output_keys: Iterable[str], run_id: str) -> list[IndexEntry]:
        return self._storage("pinned_index_entries").pinned_index_entries(output_keys, run_id)

    def add_pins(
        self, run_id: str, kind: str, targets: Iterable[str], unless_held: str | None = None
    ) -> Lease | None:
        return self._storage("add_pins").add_pins(run_id, kind, targets, unless_held)

    def settle_pins(
        self,
        run_id: str,
        entries: Iterable[tuple[str, str]],
        release_keys: Iterable[str],
        release_leases: Iterable[str] = (),
    ) -> None:
        storage = self._storage("settle_pins")
        storage.settle_pins(run_id, entries, release_keys, release_leases)

    def pins(self) -> list[Pin]:
        return self._storage("pins").pins()

    def delete_unpinned_index_entries(
        self,
        entries: Sequence[tuple[str, str, float]],
        spare: Callable[[list[Pin]], Collection[tuple[str, str]]],
        lease: Lease | None = None,
    ) -> list[tuple[str, str]]:
        storage = self._storage("delete_unpinned_index_entries")
        return storage.delete_unpinned_index_entries(entries, spare, lease)

    def acquire_lease(self, lease: Lease, expired: Callable[[Lease], bool]) -> Lease | None:
        return self._storage("acquire_lease").acquire_lease(lease, expired)

    def claim_steps(
        self,
        leases: Sequence[Lease],
        expired: Callable[[Lease], bool],
        output_keys: Sequence[str],
        release_leases: Sequence[str] = (),
        events: Sequence[Event] = (),
        index_entries: Sequence[IndexEntry] = (),
    ) -> tuple[dict[str, Lease], list[IndexEntry]]:
        storage = self._storage("claim_steps")
        return storage.claim_steps(
            leases, expired, output_keys, release_leases, events, index_entries
        )

    def release_lease(self, lease_key: str, run_id: str) -> None:
        self._storage("release_lease").release_lease(lease_key, run_id)

    def release_run(self, run_ids: Iterable[str]) -> None:
        self._storage("release_run").release_run(run_ids)

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()


def worker_instance(connection_url: str | None, storage_dir: str | None) -> Instance:
    """The run's ``Instance`` in a worker: its storage directory now, its database on demand."""
    base = Path(storage_dir) if storage_dir else Path(".memodag/storage").resolve()
    return Instance(WorkerInstanceStorage(connection_url), base)


# -- the multiprocess executor's worker loop ------------------------------------------------


def serve_pipe(
    conn: Any, run_id: str, payload_bytes: bytes, environ: Mapping[str, str] | None = None
) -> None:
    """Main loop of a multiprocess worker: one pickled task in, one pickled outcome out.

    ``environ`` is the driver's environment when it started this worker. An empty message or a
    closed pipe ends the loop; the run's resources are torn down then.
    """
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    # Ctrl-C reaches the whole process group: the driver cancels; workers must not die noisily
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    prepare_run(run_id, payload_bytes)  # while the driver is still busy with earlier steps
    try:
        for message in _messages(conn):
            conn.send_bytes(run_task(run_id, message))
    finally:
        release_all()


def _messages(conn: Any) -> Iterator[bytes]:
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not message:
            return
        yield message
