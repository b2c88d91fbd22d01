"""One step attempt: load inputs by address, run the op body, store outputs, report events.

Runs wherever the executor puts it (the driver, a worker process, a Dask worker) and decides
nothing: the engine has already chosen to run it. Everything it needs arrives in a ``StepTask``;
everything it did goes back in a ``StepOutcome``.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memodag.definitions.config import NO_DEFAULT
from memodag.definitions.io import Out, valid_mapping_key
from memodag.definitions.op import OpDefinition, iterate_outputs
from memodag.errors import MemodagError, OutputLostError, StepExecutionError, StorageError
from memodag.hashing import piece_version
from memodag.runtime.context import OpExecutionContext, Resources, RunLogger
from memodag.storage.instance.records import Event, EventType
from memodag.storage.io_manager import (
    Address,
    InputContext,
    IOManager,
    OutputContext,
    StoredData,
)
from memodag.storage.jsonenc import quote


@dataclass(slots=True)
class InputLoad:
    """How to get one input: load ``addresses`` (a list if ``collect``) or use ``default``."""

    name: str
    addresses: tuple[Address, ...] | None
    upstream_outs: tuple[Out | None, ...] = ()
    collect: bool = False
    default: Any = NO_DEFAULT
    #: for a collect: the ``Out`` gathered, whose io manager hands the list over
    #: (``IOManager.combine_collected``), pieces or none
    collected_out: Out | None = None
    #: for a collect: the node path of the output gathered (names it when there are no pieces)
    collected_node: str = ""


@dataclass(slots=True)
class StepTask:
    """Everything a step attempt needs, picklable (for worker processes)."""

    run_id: str
    step_key: str
    op_def: OpDefinition
    tags: Mapping[str, str]
    config: Any
    inputs: tuple[InputLoad, ...]
    versions: Mapping[str, str] | None = None
    mapping_key: str | None = None
    attempt: int = 0
    hash_outputs: frozenset[str] = frozenset()


@dataclass(slots=True)
class StoredOutput:
    output_name: str
    address: Address
    mapping_key: str | None = None


@dataclass(slots=True)
class ErrorInfo:
    cls_name: str
    message: str
    stack: str

    def to_dict(self) -> dict[str, str]:
        return {"class": self.cls_name, "message": self.message, "stack": self.stack}


@dataclass(slots=True)
class StepOutcome:
    """What a step attempt did. ``exception`` is set only in the process that ran it."""

    step_key: str
    success: bool
    events: list[Event]
    outputs: list[StoredOutput] = field(default_factory=list)
    error: ErrorInfo | None = None
    exception: BaseException | None = None
    attempt: int = 0
    duration: float = 0.0
    #: dynamic outputs whose pieces the outcome cannot tell: only a dry run's prediction of a
    #: fan-out that must run has any (the engine then expands nothing from them)
    unknown_pieces: frozenset[str] = frozenset()
    #: inputs whose stored data could not be loaded (gone, unreadable, altered): the engine may
    #: recompute their producer and run this step again (docs/reliability.md)
    lost_inputs: tuple[Address, ...] = ()


@dataclass(slots=True)
class StepRuntime:
    """What a process offers step attempts: initialized resources and the instance."""

    resources: Resources
    resource_config: Mapping[str, Any]
    instance: Any = None
    #: where ``context.log`` messages go as they are logged (the driver's listeners, for
    #: attempts run in the driver); they are stored with the attempt's outcome either way
    live_log: Callable[[Event], Any] | None = None
    _scoped: dict[frozenset[str], Resources] = field(default_factory=dict)
    _managers: dict[str, IOManager] = field(default_factory=dict)

    def io_manager(self, key: str, step_key: str) -> IOManager:
        # looked up per input and output of every step: checked once per key (resources are
        # fixed for the run)
        manager = self._managers.get(key)
        if manager is not None:
            return manager
        found = getattr(self.resources, key, None) if key in self.resources else None
        if not isinstance(found, IOManager):
            raise StorageError(
                f"step '{step_key}': io manager '{key}' is not available in this run (is it in the job's resource_defs?)"
            )
        self._managers[key] = found
        return found

    def scoped(self, keys: frozenset[str]) -> Resources:
        """Only the resources an op declared, built once per distinct key set."""
        found = self._scoped.get(keys)
        if found is None:
            found = Resources(**{k: self.resources[k] for k in keys if k in self.resources})
            self._scoped[keys] = found
        return found


def run_step(task: StepTask, runtime: StepRuntime) -> StepOutcome:
    """Run one attempt of a step. Never raises for user or storage errors: they become a failed outcome."""
    started = time.time()
    run_id, step_key, op_def = task.run_id, task.step_key, task.op_def
    attempt = task.attempt
    # each event's data is also written as JSON text here, where its shape is known: the
    # instance stores it as is (a JSON encoder call per event is a measurable part of a step)
    events: list[Event] = [
        Event(
            EventType.STEP_START,
            run_id,
            started,
            step_key,
            "",
            {"attempt": attempt},
            f'{{"attempt": {attempt:d}}}',
        )
    ]
    log = RunLogger(run_id, step_key, events, runtime.live_log)
    stored: list[StoredOutput] = []
    lost: list[Address] = []
    try:
        kwargs = _load_inputs(task, runtime, events, log, lost)
        if op_def.takes_context:
            context = OpExecutionContext(
                task.config,
                runtime.scoped(op_def.required_resource_keys),
                log,
                run_id,
                step_key,
                op_def,
                task.mapping_key,
                runtime.instance,
                task.attempt,
                task.tags,
            )
            result = op_def.compute_fn(context, **kwargs)
        else:
            result = op_def.compute_fn(**kwargs)
        _store_outputs(task, runtime, result, events, stored, log)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        ended = time.time()
        info = ErrorInfo(type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))
        events.append(
            Event(
                EventType.STEP_FAILURE,
                run_id,
                ended,
                step_key,
                f"{info.cls_name}: {info.message}",
                {"error": info.to_dict(), "attempt": task.attempt, "duration": ended - started},
            )
        )
        return StepOutcome(
            step_key,
            False,
            events,
            stored,
            info,
            exc,
            task.attempt,
            ended - started,
            lost_inputs=tuple(lost),
        )
    ended = time.time()
    duration = ended - started
    events.append(
        Event(
            EventType.STEP_SUCCESS,
            run_id,
            ended,
            step_key,
            "",
            {"duration": duration, "attempt": attempt},
            f'{{"duration": {float.__repr__(duration)}, "attempt": {attempt:d}}}',
        )
    )
    return StepOutcome(step_key, True, events, stored, None, None, attempt, duration)


def _load_inputs(
    task: StepTask,
    runtime: StepRuntime,
    events: list[Event],
    log: RunLogger,
    lost: list[Address],
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for load in task.inputs:
        if load.addresses is None:
            kwargs[load.name] = load.default
            continue
        values = []
        combiner = _combiner(load, runtime, task.step_key)
        metadata = _COLLECTED if combiner is not None else {}
        for address, out in zip(
            load.addresses, load.upstream_outs or (None,) * len(load.addresses), strict=True
        ):
            manager = runtime.io_manager(address.io_manager_key, task.step_key)
            upstream = OutputContext.of_address(address, out)
            context = InputContext(
                load.name,
                task.step_key,
                upstream,
                address,
                task.op_def,
                metadata,
                runtime.resource_config.get(address.io_manager_key),
                runtime.resources,
                log,
                task.tags,
            )
            try:
                values.append(manager.load_input(context))
            except OutputLostError as exc:
                lost.append(address)
                raise OutputLostError(
                    f"step '{task.step_key}' could not load input '{load.name}' (io manager "
                    f"'{address.io_manager_key}'): {exc}",
                    address,
                ) from exc
            except MemodagError:
                raise
            except Exception as exc:
                # gone or unreadable (FileNotFoundError, a truncated pickle): the engine may
                # recompute it, as for an output found altered
                lost.append(address)
                raise StorageError(
                    f"step '{task.step_key}' could not load input '{load.name}' from {address.uri or address.step_key + '.' + address.output_name} "
                    f"(io manager '{address.io_manager_key}'): {type(exc).__name__}: {exc}"
                ) from exc
            events.append(
                Event(
                    EventType.LOADED_INPUT,
                    task.run_id,
                    time.time(),
                    task.step_key,
                    "",
                    {"input": load.name, "address": address.to_dict()},
                    f'{{"input": {quote(load.name)}, "address": {address.to_json()}}}',
                )
            )
        if combiner is not None:
            values = _combine(task, runtime, load, combiner, values, log)
        kwargs[load.name] = values if load.collect else values[0]
    return kwargs


#: ``InputContext.metadata`` of a collected input's members and of its ``combine_collected``
_COLLECTED = {"collected": True}


def _combiner(load: InputLoad, runtime: StepRuntime, step_key: str) -> IOManager | None:
    """The io manager that hands a collected input over: the collected output's, when it
    stored every member (a fan-in list mixing managers stays a plain list)."""
    out = load.collected_out
    if not load.collect or out is None or load.addresses is None:
        return None
    key = out.io_manager_key
    if any(a.io_manager_key != key for a in load.addresses):
        return None
    manager = runtime.io_manager(key, step_key)
    if type(manager).combine_collected is IOManager.combine_collected:
        return None  # the default keeps the list: nothing to call
    return manager


def _combine(
    task: StepTask,
    runtime: StepRuntime,
    load: InputLoad,
    manager: IOManager,
    values: list[Any],
    log: RunLogger,
) -> Any:
    out = load.collected_out
    assert out is not None  # _combiner returns a manager only then
    first = load.addresses[0] if load.addresses else None
    upstream = OutputContext(
        load.collected_node,
        first.output_name if first else "",
        first.run_id if first else task.run_id,
        out=out,
    )
    key = out.io_manager_key
    context = InputContext(
        load.name,
        task.step_key,
        upstream,
        None,
        task.op_def,
        _COLLECTED,
        runtime.resource_config.get(key),
        runtime.resources,
        log,
    )
    return manager.combine_collected(context, values)


def _store_outputs(
    task: StepTask,
    runtime: StepRuntime,
    result: Any,
    events: list[Event],
    stored: list[StoredOutput],
    log: RunLogger,
) -> None:
    op_def, step_key = task.op_def, task.step_key
    seen: set[str] = set()
    piece_keys: dict[str, set[str]] = {}
    for produced in iterate_outputs(op_def, result, step_key):
        name = produced.output_name
        out = op_def.outs[name]
        if out.is_dynamic:
            key = produced.mapping_key
            if not valid_mapping_key(key):
                raise StepExecutionError(
                    step_key,
                    f"op '{op_def.name}' output '{name}': mapping_key {key!r} is not valid; use letters, digits and '_' only (^[A-Za-z0-9_]+$)",
                )
            keys = piece_keys.setdefault(name, set())
            if key in keys:
                raise StepExecutionError(
                    step_key,
                    f"op '{op_def.name}' output '{name}': mapping_key '{key}' was yielded twice; keys must be unique per output",
                )
            keys.add(str(key))
        else:
            if name in seen:
                raise StepExecutionError(
                    step_key, f"op '{op_def.name}' yielded output '{name}' twice"
                )
            key = None
        seen.add(name)
        version = task.versions.get(name) if task.versions else None
        if version is not None and key is not None:
            version = piece_version(version, key)
        manager = runtime.io_manager(out.io_manager_key, step_key)
        context = OutputContext(
            step_key,
            name,
            task.run_id,
            op_def,
            out,
            key,
            version,
            produced.metadata,
            runtime.resource_config.get(out.io_manager_key),
            runtime.resources,
            log,
            task.tags,
            name in task.hash_outputs,
        )
        size = content_hash = data_hash = schema = None
        try:
            uri = manager.handle_output(context, produced.value)
            if isinstance(uri, StoredData):
                written: StoredData = uri
                size, content_hash, data_hash = (
                    written.size,
                    written.content_hash,
                    written.data_hash,
                )
                uri = str(written)
                schema = written.schema
        except StorageError as exc:
            # a user's own exception (a custom write function's) keeps its class; memodag's
            # storage errors gain the op, output and io manager they happened in
            raise _output_error(task, out, key, manager, context, exc) from exc
        address = Address(
            out.io_manager_key,
            uri,
            manager.serializer_name(context),
            task.run_id,
            step_key,
            name,
            key,
            version,
            data_hash
            if data_hash is not None
            else _data_hash(produced.value)
            if name in task.hash_outputs
            else None,
            size,
            content_hash,
            schema,
        )
        stored.append(StoredOutput(name, address, key))
        events.append(
            Event(
                EventType.HANDLED_OUTPUT,
                task.run_id,
                time.time(),
                step_key,
                "",
                {"output": name, "address": address.to_dict()},
                f'{{"output": {quote(name)}, "address": {address.to_json()}}}',
            )
        )
    if len(seen) == len(op_def.outs):
        return  # every output was produced
    missing = [
        n for n, o in op_def.outs.items() if o.is_required and not o.is_dynamic and n not in seen
    ]
    if missing:
        raise StepExecutionError(
            step_key,
            f"op '{op_def.name}' did not produce required output(s) {missing}; yield them or declare Out(is_required=False)",
        )


def _output_error(
    task: StepTask,
    out: Out,
    mapping_key: str | None,
    manager: IOManager,
    context: OutputContext,
    exc: StorageError,
) -> StorageError:
    """An io manager's failure to store an output, naming the op, output, io manager and format."""
    piece = f" piece '{mapping_key}'" if mapping_key is not None else ""
    try:
        serializer = manager.serializer_name(context)
    except Exception:
        serializer = None
    how = f"io manager '{out.io_manager_key}'" + (
        f", serializer '{serializer}'" if serializer else ""
    )
    step = f" in step '{task.step_key}'" if task.step_key != task.op_def.name else ""
    return StorageError(
        f"op '{task.op_def.name}'{step} could not store output '{context.name}'{piece} "
        f"({how}): {exc}"
    )


def _data_hash(value: Any) -> str | None:
    """The output's content hash for early cutoff; None when its content cannot be seen (then
    consumers are versioned by the code-derived version, as without cutoff)."""
    from memodag.definitions.tables import Table
    from memodag.hashing import UnhashableValue, hash_value

    try:
        if isinstance(value, Table):
            # the frame's content hash (a pickle of the wrapper would not be one), with what
            # else decides the stored table
            options = [
                value.name,
                list(value.primary_key),
                [list(i) for i in value.indexes],
                {k: str(v) for k, v in value.type_map.items()},
                value.nullable and list(value.nullable),
                value.non_nullable and list(value.non_nullable),
                repr(value.materialization_details),
            ]
            return hash_value(["table", hash_value(value.obj), options])
        return hash_value(value)
    except UnhashableValue:
        return None
