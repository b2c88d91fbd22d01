"""``execute_job``: validate everything that can be validated, then run the engine.

Order matters: run config, plan, step selection, executor, storage compatibility and memoization
are all checked before the run is recorded or any step starts.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memodag.definitions.executor import ExecutorDefinition
from memodag.definitions.secrets import masked_config
from memodag.definitions.tables import TABLE_STORE_KEY
from memodag.engine.engine import AddressKey, Engine, Memoizer, SkipCause
from memodag.engine.events import EventLog
from memodag.engine.gc_threshold import with_fewer_collections
from memodag.engine.lifecycle import RunHooks
from memodag.engine.result import ExecuteInProcessResult
from memodag.errors import ExecutionError, StepExecutionError
from memodag.executors.base import Executor, RunPayload
from memodag.plan.dynamic import (
    drop_expansions_of,
    expand_from_addresses,
    parse_step_key,
    reexpanded_inputs,
)
from memodag.plan.plan import (
    ExecutionPlan,
    ExecutionStep,
    StepOutputHandle,
    build_plan,
    select_steps,
)
from memodag.plan.run_config import ResolvedRunConfig, resolve_run_config
from memodag.runtime.resources import initialized_resources
from memodag.runtime.step import StepRuntime
from memodag.storage.instance import Instance
from memodag.storage.instance.records import Event, EventType, RunRecord, RunStatus
from memodag.storage.io_manager import INLINE, Address, IOManager
from memodag.storage.liveness import heartbeat, process_identity
from memodag.versioning.fresh_input import CACHE_VALIDATION_TAG

if TYPE_CHECKING:
    from memodag.definitions.job import JobDefinition


@with_fewer_collections
def execute_job(
    job: JobDefinition,
    run_config: Mapping[str, Any] | None = None,
    instance: Instance | None = None,
    tags: Mapping[str, str] | None = None,
    raise_on_error: bool = True,
    parent_run_id: str | None = None,
    step_selection: Sequence[str] | None = None,
    run_id: str | None = None,
    listeners: Iterable[Callable[[Event], Any]] = (),
    plan: ExecutionPlan | None = None,
) -> ExecuteInProcessResult:
    """Run ``job`` and return its result (see ``JobDefinition.execute_in_process``).

    ``plan``: one already built from ``job`` and ``run_config`` (the CLI builds it first to size
    its progress display), so it is not built twice.
    """
    _refuse_in_starting_worker()
    if _importing:
        raise ExecutionError(_started_at_import(_importing[-1]))
    if run_id is not None:
        check_run_id(run_id)
    if plan is None:
        plan = build_plan(job, resolve_run_config(job, run_config))
    resolved = plan.run_config
    executor = _executor(resolved)  # before any storage is touched (its config: checked above)
    _check_storage_fits_executor(job, plan, executor, resolved)
    instance = instance or Instance.get()
    run_id = run_id or str(uuid.uuid4())
    run_tags = {**job.tags, **{str(k): str(v) for k, v in (tags or {}).items()}}
    if resolved.cache_validation != "normal":
        # io managers hear it at run start: a forced run writes anew what they hold
        run_tags[CACHE_VALIDATION_TAG] = resolved.cache_validation
    parent = _parent_run(instance, parent_run_id)
    try:
        steps, selected, external, absent, inherited = _selection(
            plan, instance, parent, step_selection, run_id
        )
        _check_external_addresses(job, external, executor)
        memoizer = _memoizer(job, plan, run_tags, instance, run_id)
    except BaseException:
        if parent is not None and step_selection:
            instance.release_run(run_id)  # the ancestors it pinned: no run will load them
        raise
    if parent is not None:
        # a re-execution runs what it selects, even when it is stored: that is what it is for
        # (its outputs are still versioned and indexed, so later memoized runs can reuse them)
        memoizer.enabled = False

    record = RunRecord(
        run_id=run_id,
        job_name=job.name,
        status=RunStatus.STARTED,
        tags=run_tags,
        # stored as written, with passwords in URLs masked and environment variables unread
        run_config=masked_config(resolved.raw),
        parent_run_id=parent.run_id if parent else None,
        root_run_id=(parent.root_run_id or parent.run_id) if parent else None,
        step_selection=list(step_selection) if step_selection else None,
        start_time=time.time(),
    )
    record.heartbeat = record.start_time  # its first heartbeat: no write of its own
    instance.add_run(record)
    event_log = EventLog(instance, listeners)
    event_log.append(
        Event(
            EventType.RUN_START,
            run_id,
            record.start_time or time.time(),
            None,
            f"job {job.name}",
            # how gc tells a run that died without recording its end (docs/storage.md)
            {"process": process_identity()},
        )
    )
    event_log.flush()  # durable now: gc tells a run killed mid-step by its process
    resource_keys = _resource_keys(job, plan, external)
    payload = RunPayload(
        run_id,
        job,
        resolved.resource_config,
        frozenset(resource_keys),
        instance.connection_url,  # with its password: workers reconnect with it
        str(instance.storage_dir),
        dict(run_tags),
    )
    canceled = False
    cancel_reason = ""
    io_managers: dict[str, IOManager] = {}
    engine: Engine | None = None
    run_error: BaseException | None = None
    hook_error: str | None = None
    try:
        # in-process: every resource the steps need; otherwise the io managers (and what they
        # require) only, which the driver needs for memoization, the lifecycle and results
        keys = resource_keys if executor.in_process else _driver_keys(job, plan, resource_keys)
        with (
            heartbeat(instance, run_id),
            _sigterm_cancels_run(),
            initialized_resources(
                job.resource_defs, resolved.resource_config, keys, instance, run_id
            ) as resources,
        ):
            runtime = (
                StepRuntime(
                    resources,
                    resolved.resource_config,
                    instance,
                    event_log.shown_now if event_log.listeners else None,
                )
                if executor.in_process
                else None
            )
            io_managers = {
                k: getattr(resources, k)
                for k in resource_keys
                if isinstance(getattr(resources, k, None), IOManager)
            }
            memoizer.attach_io_managers(io_managers)
            from memodag.tables.io_manager import TableIOManager

            for manager in io_managers.values():
                if isinstance(manager, TableIOManager):
                    # which table outputs may be handed over in memory (docs/tables.md)
                    manager.prepare_inline(plan, executor.in_process)
            memoizer.attach_resources(resources)
            hooks = RunHooks(run_id, job.name, run_tags, vars(resources), step_selection)
            runner = _with_hand_over(executor, io_managers, run_id, job.name, run_tags)
            if hooks.listens_for_outputs:
                event_log.on_stored.append(hooks.stored)
            ending: BaseException | None = None
            try:
                hooks.start()
                # what a re-execution keeps from its parent counts as this run's, as if
                # memoized: a table store commits each stage whole (docs/tables.md, "Commits")
                hooks.inherited(inherited)
                runner.start(payload, runtime)
                engine = Engine(
                    plan, run_id, runner, event_log, memoizer, selected, external, steps, absent
                )
                engine.add_steps(list(engine.steps.values()))
                engine.run()
            except BaseException as exc:
                ending = exc
                if isinstance(exc, KeyboardInterrupt):
                    executor.shutdown(cancel=True)
                raise
            finally:
                # the storage lifecycle's end: after every attempt ended and every outcome is
                # stored (so on_output_recorded came first), before the resources' teardown
                closing: BaseException | None = None
                try:
                    executor.shutdown()
                    event_log.flush()
                except BaseException as exc:
                    closing = exc  # e.g. the database locked: the hooks still hear the end
                cause = ending or closing
                if isinstance(cause, KeyboardInterrupt):
                    status = _run_status(engine, True, None, str(cause))
                else:
                    status = _run_status(engine, False, cause)
                hook_error = hooks.end(status[0].value, status[2])
                if closing is not None and ending is None:
                    raise closing
    except KeyboardInterrupt as exc:
        canceled = True
        cancel_reason = str(exc)  # "signal 15 (SIGTERM): ..." or empty for Ctrl-C
        executor.shutdown(cancel=True)
        raise
    except Exception as exc:
        run_error = exc
        raise
    finally:
        executor.shutdown()
        _finish_run(
            instance, event_log, run_id, engine, canceled, run_error, cancel_reason, hook_error
        )
    result = ExecuteInProcessResult(
        job,
        run_id,
        engine.result,
        instance,
        io_managers,
        canceled,
        resolved.resource_config,
        hook_error,
    )
    if raise_on_error and engine.result.failures:
        first = engine.result.failures[0]
        error = first.error
        if error is None:
            message = "failed"
        elif error.cls_name == "StepExecutionError" and isinstance(
            first.exception, StepExecutionError
        ):
            message = first.exception.reason
        else:
            message = f"{error.cls_name}: {error.message}"
        raise StepExecutionError(first.step_key, message) from first.exception
    if raise_on_error and hook_error is not None:
        raise ExecutionError(f"run {run_id[:8]} failed: {hook_error}")
    if raise_on_error and not engine.result.success:
        raise ExecutionError(f"run {run_id[:8]} failed: {_unaccounted_message(engine)}")
    return result


#: a run id names a folder in path io managers' layout: nothing that could leave it
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def check_run_id(run_id: object) -> None:
    """Refuse a run id that is not 1 to 128 letters, digits, ``-`` or ``_`` (a uuid4 passes).

    Io managers join the run id into paths (``<base>/<run_id>/...``): ``/abs`` or ``../x``
    would write outside their base folder.
    """
    if not isinstance(run_id, str) or _RUN_ID.fullmatch(run_id) is None:
        raise ExecutionError(
            f"run_id {run_id!r} is not valid: use 1 to 128 letters, digits, '-' and '_' "
            "(e.g. str(uuid.uuid4()), the default when run_id is not given)"
        )


#: what the CLI is importing to find its jobs (a run started meanwhile is a mistake)
_importing: list[str] = []


@contextlib.contextmanager
def runs_refused_while_importing(what: str) -> Iterator[None]:
    """While ``what`` (a job file or module) is imported to find its jobs, a run it starts is
    refused: a script that runs its job at import time, outside ``if __name__ == "__main__":``,
    would otherwise run it silently (defaults only, no progress) before the command's own run."""
    _importing.append(what)
    try:
        yield
    finally:
        _importing.pop()


def _started_at_import(what: str) -> str:
    package = str(Path(__file__).resolve().parents[1])
    frame = sys._getframe(2)
    while frame is not None and (
        frame.f_code.co_name != "<module>" or frame.f_code.co_filename.startswith(package)
    ):
        frame = frame.f_back  # type: ignore[assignment]
    where = f" (line {frame.f_lineno} of {frame.f_code.co_filename})" if frame is not None else ""
    return (
        f"{what} starts a run when it is imported{where}; memodag imports it to find its jobs "
        'and runs them itself. Put the code that runs it under `if __name__ == "__main__":`'
    )


def _refuse_in_starting_worker() -> None:
    """Exit quietly if this process is a worker still being started by ``multiprocessing``.

    Such a process imports the driver's script as ``__mp_main__``; a script that starts a run
    outside ``if __name__ == "__main__":`` would start (and record) a run in every worker. The
    worker leaves instead; the driver reports its death once, with the cause. (Here, not in
    ``executors.worker``: a run must not import executor code before it creates its executor.)
    """
    process = sys.modules.get("multiprocessing.process")
    if process is not None and getattr(process.current_process(), "_inheriting", False):
        raise SystemExit(1)


@contextlib.contextmanager
def _sigterm_cancels_run() -> Iterator[None]:
    """While the run lasts, SIGTERM acts like Ctrl-C: in-flight steps are canceled and the run is
    recorded as CANCELED. Only where nobody else handles SIGTERM (default handler, main thread)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        # a second SIGTERM during cleanup terminates the process as usual
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt(f"signal {signum} (SIGTERM): canceling the run")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_status(
    engine: Engine | None,
    canceled: bool,
    run_error: BaseException | None,
    cancel_reason: str = "",
) -> tuple[RunStatus, EventType, str]:
    """The run's final status, event type and message, from how it ended."""
    if canceled:
        message = f"run canceled: {cancel_reason}" if cancel_reason else "run canceled (Ctrl-C)"
        return RunStatus.CANCELED, EventType.RUN_CANCELED, message
    if run_error is not None or engine is None or not engine.result.success:
        failed = engine.result.failures if engine else []
        if run_error:
            message = f"{type(run_error).__name__}: {run_error}"
        elif failed or engine is None:
            message = f"steps failed: {[f.step_key for f in failed][:10]}"
        else:
            message = _unaccounted_message(engine)
        return RunStatus.FAILURE, EventType.RUN_FAILURE, message
    return RunStatus.SUCCESS, EventType.RUN_SUCCESS, ""


def _unaccounted_message(engine: Engine) -> str:
    """Names the steps the run did not do, nor skip for a reason that leaves it a success."""
    unaccounted = engine.result.unaccounted
    lines = [f"  - {key}: {why}" for key, why in list(unaccounted.items())[:10]]
    more = f"\n  ... and {len(unaccounted) - 10} more" if len(unaccounted) > 10 else ""
    return (
        f"{len(unaccounted)} step(s) neither ran, were memoized, were loaded from the parent "
        "run, nor were skipped for an optional output (a bug in memodag: please report it):\n"
        + "\n".join(lines)
        + more
    )


def _finish_run(
    instance: Instance,
    event_log: EventLog,
    run_id: str,
    engine: Engine | None,
    canceled: bool,
    run_error: BaseException | None,
    cancel_reason: str = "",
    hook_error: str | None = None,
) -> None:
    now = time.time()
    status, event_type, message = _run_status(engine, canceled, run_error, cancel_reason)
    if hook_error is not None:
        # a lifecycle hook that raised fails a run that would have succeeded; its stored
        # outputs stay stored and indexed (a memoized rerun reuses them)
        if status is RunStatus.SUCCESS:
            status, event_type, message = RunStatus.FAILURE, EventType.RUN_FAILURE, hook_error
        else:
            message = f"{message}; {hook_error}"
    data: dict[str, Any] = {}
    if engine is not None:
        data = {"executed": engine.result.executed, "memoized": engine.result.memoized}
    recorded = False
    try:
        event_log.append(Event(event_type, run_id, now, None, message, data))
        try:
            event_log.flush()
        except Exception as exc:
            # the run's events cannot be stored (a full disk, a database gone): its status must
            # still say that it ended, and why, wherever that can be recorded
            lost = event_log.discard()
            status = RunStatus.FAILURE
            message = (
                f"{message + '; ' if message else ''}{lost} event(s) of the run could not be "
                f"recorded: {type(exc).__name__}: {exc}"
            )
            with contextlib.suppress(Exception):
                event_log.append(Event(EventType.RUN_FAILURE, run_id, now, None, message, data))
                event_log.flush()
            event_log.discard()
            instance.update_run_status(run_id, status, now)
            recorded = True
            raise
        instance.update_run_status(run_id, status, now)
        recorded = True
    except BaseException:
        # a listener that raised, a second Ctrl-C: the run has ended all the same, and a run
        # left STARTED would hold its leases (other runs wait on them) while its process lives
        if not recorded:
            with contextlib.suppress(Exception):
                event_log.flush()
            with contextlib.suppress(Exception):
                event_log.discard()
                instance.update_run_status(run_id, status, now)
        raise
    finally:
        # what it pinned (gc keeps it) and the steps it held are free once it has ended
        with contextlib.suppress(Exception):
            instance.release_run(run_id)


def _parent_run(instance: Instance, parent_run_id: str | None) -> RunRecord | None:
    if parent_run_id is None:
        return None
    parent = instance.get_run(parent_run_id)
    if parent is None:
        raise ExecutionError(
            f"parent run '{parent_run_id}' is not in the instance {instance.url}; `memodag runs list` shows the runs"
        )
    return parent


def _selection(
    plan: ExecutionPlan,
    instance: Instance,
    parent: RunRecord | None,
    step_selection: Sequence[str] | None,
    run_id: str = "",
) -> tuple[
    dict[str, ExecutionStep],
    set[str] | None,
    dict[AddressKey, Address],
    set[AddressKey],
    list[Address],
]:
    """The run's steps (the plan's, plus the parent's fan-outs expanded so their clones can be
    selected), the selected step keys, the outputs taken from the parent run, those the
    parent run did not produce (an optional output not yielded, or a step skipped for one):
    fan-in lists and collectors leave them out, other consumers are skipped, as in the parent;
    and every output of the lineage's steps this run does not select (what it keeps of them)."""
    steps = dict(plan.steps)
    if not step_selection:
        return steps, None, {}, set(), []
    lineage = _lineage(instance, parent, run_id) if parent else _Lineage({}, set(), {})
    parent_addresses, completed = lineage.addresses, lineage.completed
    # clones of the parent's fan-outs become selectable ("double[k7]"); fan-outs that re-run
    # are expanded afresh by the engine from their new pieces
    created_by = expand_from_addresses(plan, steps, parent_addresses, completed)
    selected = select_steps(plan, step_selection, steps)
    _add_inline_producers(steps, selected, parent_addresses)
    dropped = drop_expansions_of(steps, created_by, selected)
    _refuse_clones_of_rerun_fan_outs(step_selection, dropped)
    external: dict[AddressKey, Address] = {}
    rerun = {steps[k].node.path for k in selected if steps[k].op_def.has_dynamic_output}
    if rerun:
        # what the fan-outs' fresh clones and collectors will read beside their pieces
        feeding = reexpanded_inputs(plan, rerun)
        for address_key, address in parent_addresses.items():
            step_key, output, _ = address_key
            if (
                step_key not in selected
                and step_key in steps
                and (parse_step_key(step_key)[0], output) in feeding
            ):
                external[address_key] = address
    missing: list[str] = []
    absent: set[AddressKey] = set()
    for key in sorted(selected):
        for spec in steps[key].inputs:
            for handle in spec.upstream:
                if handle.step_key in selected:
                    continue
                address_key = (handle.step_key, handle.output_name, handle.mapping_key)
                if address_key in parent_addresses:
                    external[address_key] = parent_addresses[address_key]
                    continue
                why = lineage.not_produced(steps.get(handle.step_key), handle)
                if why is None:
                    absent.add(address_key)
                else:
                    missing.append(f"step '{key}' input '{spec.name}' needs {handle}{why}")
    if missing:
        where = (
            f"parent run {parent.run_id[:8]} did not store them"
            if parent
            else "give parent_run_id to load them from an earlier run"
        )
        raise ExecutionError(
            "step selection leaves inputs without a source ("
            + where
            + "):\n"
            + "\n".join(f"  - {m}" for m in missing)
        )
    inherited = [a for k, a in parent_addresses.items() if k[0] in steps and k[0] not in selected]
    return steps, selected, external, absent, inherited


def _add_inline_producers(
    steps: Mapping[str, ExecutionStep],
    selected: set[str],
    parent_addresses: Mapping[AddressKey, Address],
) -> None:
    """Select the producers of inline tables (``INLINE``: a version, no stored data) that
    selected steps read, and theirs in turn: the parent run's memory is gone, so they must be
    in this run, where memoization keeps them unless a consumer runs (docs/tables.md)."""
    pending = list(selected)
    while pending:
        for spec in steps[pending.pop()].inputs:
            for handle in spec.upstream:
                producer = handle.step_key
                address = parent_addresses.get((producer, handle.output_name, handle.mapping_key))
                if (
                    producer not in selected
                    and producer in steps
                    and address is not None
                    and address.serializer == INLINE
                ):
                    selected.add(producer)
                    pending.append(producer)


def _refuse_clones_of_rerun_fan_outs(
    step_selection: Sequence[str], dropped: Mapping[str, str]
) -> None:
    """A clone named in the selection beside its fan-out's source (``["emit", "double[1]"]``)
    is refused, as Dagster does: the source re-runs and yields new pieces, so the parent's
    clone no longer exists, and every clone of the new pieces runs anyway."""
    # a collector outside the fan-out keeps its key: it is made afresh and runs, no conflict
    named = sorted(
        key
        for key in {item.strip().strip("*+") for item in step_selection} & dropped.keys()
        if parse_step_key(key)[1]
    )
    if not named:
        return
    sources = sorted({dropped[key] for key in named})
    raise ExecutionError(
        f"step selection names {named}, made from the parent run's pieces of fan-out "
        f"{sources}, and that fan-out too: it re-runs, its new pieces are cloned afresh and "
        "every new clone runs, so the parent's clones no longer exist. "
        f"Select {[s + '*' for s in sources]} to re-run the fan-out and what follows it, or leave "
        f"{sources} out to re-run the clone(s) from the parent run's pieces"
    )


def _kept_in_process(job: JobDefinition, resolved: ResolvedRunConfig, key: str) -> bool:
    definition = job.resource_defs.get(key)
    return definition is not None and definition.keeps_values_in_process(
        resolved.resource_config.get(key)
    )


def _check_external_addresses(
    job: JobDefinition, external: Mapping[AddressKey, Address], executor: Executor
) -> None:
    """Outputs a parent run kept in its own process memory are gone, and a memory:// store is
    out of worker processes' reach: say so before running."""
    gone = sorted(
        f"{a.step_key}.{a.output_name}"
        for a in external.values()
        if a.io_manager_key in job.resource_defs
        and job.resource_defs[a.io_manager_key].in_process_only
    )
    if gone:
        raise ExecutionError(
            f"re-execution needs outputs the parent run kept in memory, which ended with it: {gone[:10]}; "
            "select those steps too, or store them with fs_io_manager or object_store_io_manager"
        )
    if executor.in_process:
        return  # fsspec's memory:// store lives as long as this process
    unreachable = sorted(
        f"{a.step_key}.{a.output_name}"
        for a in external.values()
        if (a.uri or "").startswith("memory:")
    )
    if unreachable:
        raise ExecutionError(
            f"re-execution on several processes needs outputs the parent run stored on memory://, "
            f"in this process only: {unreachable[:10]}; run it in process, select those steps "
            "too, or store them on file:// or s3://"
        )


@dataclass
class _Lineage:
    """What a re-execution takes from its parent run and the parent's own ancestors."""

    #: outputs stored (nearest run wins)
    addresses: dict[AddressKey, Address]
    #: steps that completed (a fan-out that yielded no piece, a step that yielded no optional
    #: output, left no address)
    completed: set[str]
    #: steps skipped in the nearest run that decided them: ``(run id, why, cause)``; the cause is
    #: a ``SkipCause``, or "" for runs recorded before skips said theirs
    skipped: dict[str, tuple[str, str, str]]

    def not_produced(self, step: ExecutionStep | None, handle: StepOutputHandle) -> str | None:
        """None if the lineage did not produce ``handle`` for a reason a run may go on with (an
        optional output not yielded, or its step skipped for one); else why it is missing,
        for the error message."""
        if step is not None and handle.step_key in self.completed and handle.mapping_key is None:
            out = step.op_def.outs.get(handle.output_name)
            if out is not None and not out.is_required and not out.is_dynamic:
                return None
        found = self.skipped.get(handle.step_key)
        if found is None:
            return ""
        run_id, why, cause = found
        if cause == SkipCause.OPTIONAL:
            return None
        return f" (step '{handle.step_key}' was skipped in run {run_id[:8]}: {why})"


def _lineage(instance: Instance, parent: RunRecord, run_id: str = "") -> _Lineage:
    addresses, completed, skipped = _lineage_addresses(instance, parent, run_id)
    return _Lineage(addresses, completed, skipped)


def _lineage_addresses(
    instance: Instance, parent: RunRecord, run_id: str = ""
) -> tuple[dict[AddressKey, Address], set[str], dict[str, tuple[str, str, str]]]:
    """Outputs stored by the parent run or, for what it did not re-run, by its own ancestors
    (nearest run wins), so a re-execution of a re-execution still finds every input; the
    steps that completed in that lineage (a fan-out that yielded no piece left no address);
    and the steps skipped there (``_Lineage.skipped``)."""
    chain: list[RunRecord] = []
    run: RunRecord | None = parent
    while run is not None and run.run_id not in {r.run_id for r in chain}:
        chain.append(run)
        run = instance.get_run(run.parent_run_id) if run.parent_run_id else None
    if run_id:
        # before reading what they stored: gc keeps it until this run ends (or dies)
        from memodag.versioning.gc_pins import pin_runs

        pin_runs(instance, run_id, [r.run_id for r in chain])
    addresses: dict[AddressKey, Address] = {}
    completed: set[str] = set()
    skipped: dict[str, tuple[str, str, str]] = {}
    for ancestor in reversed(chain):
        newer = instance.get_output_addresses(ancestor.run_id)
        # a fan-out this run completed again replaces the older pieces whole: an older piece the
        # new run did not yield is gone, not inherited, even when it yielded none at all
        done = [EventType.STEP_SUCCESS, EventType.STEP_MEMOIZED]
        rerun = {e.step_key for e in instance.get_events(ancestor.run_id, done) if e.step_key}
        completed |= rerun
        addresses = {k: a for k, a in addresses.items() if k[2] is None or k[0] not in rerun}
        addresses.update(newer)
        for key in rerun:
            skipped.pop(key, None)
        for event in instance.get_events(ancestor.run_id, [EventType.STEP_SKIPPED]):
            if event.step_key:
                cause = str((event.data or {}).get("cause", ""))
                if not cause and ancestor.status is RunStatus.SUCCESS:
                    cause = SkipCause.OPTIONAL  # a successful run skips for no other reason
                skipped[event.step_key] = (ancestor.run_id, event.message, cause)
    return addresses, completed, skipped


def _executor(resolved: ResolvedRunConfig) -> Executor:
    definition = resolved.executor_def
    assert isinstance(definition, ExecutorDefinition)
    return definition.create(resolved.executor_config)  # its config was checked with the rest


def _check_storage_fits_executor(
    job: JobDefinition, plan: ExecutionPlan, executor: Executor, resolved: ResolvedRunConfig
) -> None:
    if executor.in_process:
        return
    bad = sorted(
        {
            f"{node.path}.{name} (io manager '{out.io_manager_key}')"
            for node in plan.nodes.values()
            for name, out in node.op_def.outs.items()
            if _kept_in_process(job, resolved, out.io_manager_key)
        }
    )
    from memodag.tables.handover import refused_on_workers

    refused = refused_on_workers(job, plan, resolved.resource_config.get(TABLE_STORE_KEY))
    if refused:
        # refused before the run, not by each worker after its upstream's work is done
        raise ExecutionError(
            f"job '{job.name}' on "
            f"{resolved.executor_def.name if resolved.executor_def else 'this executor'}: "
            "these ops need the DuckDB file itself, which only the run's driver process may "
            f"open: {', '.join(refused[:10])}. Worker processes receive tables as data: ask "
            "for pyarrow.Table, pandas or polars (input_type=...) instead of a table "
            "reference; a lazy task (lazy=True) runs its query in the database, so drop "
            "lazy=True or run the job on in_process_executor (or with a PostgreSQL table "
            "store, which every worker reaches)"
        )
    if bad:
        raise ExecutionError(
            "outputs kept in process memory cannot cross to worker processes: "
            + ", ".join(bad[:10])
            + "; use fs_io_manager, or object_store_io_manager on file:// or s3:// (memory:// is "
            "one process's memory too), for runs on several processes"
        )


def _with_hand_over(
    executor: Executor,
    io_managers: Mapping[str, IOManager],
    run_id: str,
    job_name: str,
    tags: Mapping[str, str],
) -> Executor:
    """``executor``, wrapped so the driver completes what workers hand over (a DuckDB table
    store's tables: engine/handover.py) when an io manager of the run needs it."""
    if executor.in_process:
        return executor
    from memodag.engine.handover import HandOverExecutor, hands_over

    if not any(hands_over(m) for m in io_managers.values()):
        return executor
    return HandOverExecutor(executor, io_managers, run_id, job_name, tags)


def _memoizer(
    job: JobDefinition,
    plan: ExecutionPlan,
    tags: Mapping[str, str],
    instance: Instance,
    run_id: str,
) -> Memoizer:
    from memodag.versioning.memoize import build_memoizer

    return build_memoizer(job, plan, tags, instance, run_id)


def _resource_keys(
    job: JobDefinition, plan: ExecutionPlan, external: Mapping[AddressKey, Address]
) -> set[str]:
    keys: set[str] = set()
    for node in plan.nodes.values():
        keys |= node.op_def.required_resource_keys
        keys |= {out.io_manager_key for out in node.op_def.outs.values()}
    keys |= {a.io_manager_key for a in external.values() if a.io_manager_key in job.resource_defs}
    return keys


def _driver_keys(job: JobDefinition, plan: ExecutionPlan, keys: set[str]) -> set[str]:
    """What the driver builds when steps run elsewhere: io managers, and the resources of ops
    with a declared data version (computed in the driver, with versions)."""
    found = {k for k in keys if job.resource_defs[k].is_io_manager}
    for node in plan.nodes.values():
        if node.op_def.data_version is not None:
            found |= node.op_def.required_resource_keys
    return found
