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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from memodag.engine.resources import initialized_resources
from memodag.engine.step import ErrorInfo, StepOutcome, StepRuntime, StepTask, run_step
from memodag.errors import ExecutionError
from memodag.executors.base import RunPayload
from memodag.plan.dynamic import parse_step_key
from memodag.plan.plan import flatten_graph
from memodag.storage.instance.records import Event, EventType


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


def _unimportable_modules(job: Any) -> list[Any]:
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


def refuse_run_in_starting_worker() -> None:
    """Exit quietly if this process is a worker still being started by ``multiprocessing``.

    Such a process imports the driver's script as ``__mp_main__``; a script that starts a run
    outside ``if __name__ == "__main__":`` would start (and record) a run in every worker. The
    worker leaves instead; the driver reports its death once, with the cause.
    """
    process = sys.modules.get("multiprocessing.process")
    if process is not None and getattr(process.current_process(), "_inheriting", False):
        raise SystemExit(1)


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
            instance = WorkerInstance(payload.instance_url, payload.storage_dir)
            resources = stack.enter_context(
                initialized_resources(
                    payload.job.resource_defs,
                    payload.resource_config,
                    set(payload.resource_keys),
                    instance,
                    payload.run_id,
                )
            )
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


class WorkerInstance:
    """The run's instance as a worker sees it: its storage directory now, a connection on demand.

    Most steps only need ``storage_dir`` (the default output location), so workers do not open the
    instance database unless an op or resource asks for more.
    """

    def __init__(self, url: str | None, storage_dir: str | None) -> None:
        self.url = url
        self.storage_dir = Path(storage_dir) if storage_dir else Path(".memodag/storage").resolve()
        self._opened: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._opened is None:
            from memodag.storage.instance import Instance

            url = self.url or ""
            if url.endswith(":memory:") or "://" not in url:
                if url in ("", ":memory:") or url.endswith(":memory:"):
                    raise ExecutionError(
                        f"instance.{name} is not available in a worker process: the run's instance is in the driver's memory; use a SQLite file or PostgreSQL instance"
                    )
                url = f"sqlite:///{url}"
            self._opened = Instance.from_url(url, storage_dir=self.storage_dir)
        return getattr(self._opened, name)


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
