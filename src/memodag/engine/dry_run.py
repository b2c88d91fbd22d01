"""Dry runs: ``list_versions``/``explain`` walk the engine's own loop with predicted outcomes.

The ``Engine`` decides memoized-or-run exactly as in a real run; only the executor differs: it
runs no op and answers each attempt with the outputs the op would store at its current version.
What it cannot know without running is said, never guessed: the pieces of a fan-out that must run
(unless the index holds its manifest at this very version) and the data hash of an early-cutoff
output that must run (its consumers then "depend on data"). Nothing is written anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from memodag.definitions.tables import LAZY_TAG
from memodag.engine.engine import Engine
from memodag.engine.events import Commit, EventLog
from memodag.engine.gc_threshold import with_fewer_collections
from memodag.executors.base import Executor
from memodag.runtime.step import StepOutcome, StepTask, StoredOutput
from memodag.storage.instance.records import Event, IndexEntry
from memodag.storage.io_manager import Address
from memodag.versioning.report import DECIDED_AT_RUN_TIME, OutputVersion, WalkState, report_rows

#: the serializer of a predicted address: nothing is stored there
PREDICTED = "predicted"

PiecesAt = Callable[[str, Any, str, str], "list[tuple[str, str]] | None"]


@dataclass(frozen=True)
class LazyVersion:
    """What evaluating a lazy task's body told about one output: its version and whether a
    table of it is stored, or (``version`` None) that only the run can tell, and why."""

    version: str | None
    stored: bool = False
    why: str = ""
    #: where users query the stored table (its io manager's ``location``)
    location: str | None = None


EvaluateLazy = Callable[[StepTask], "dict[str, LazyVersion] | None"]


class _DiscardingLog(EventLog):
    """A dry run records nothing: events and index entries are dropped."""

    stores_events = False

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]

    def append(self, event: Event) -> None:
        pass

    def extend(self, events: Iterable[Event]) -> None:
        pass

    def add_index_entries(self, entries: Iterable[IndexEntry]) -> None:
        pass

    def flush(self, commit: Commit | None = None) -> None:
        pass


class PredictingExecutor(Executor):
    """Answers each attempt at once with the outputs it would store, running nothing.

    ``pieces_at(step_key, op_def, output, version)`` gives a fan-out's ``(mapping key, piece version)``
    pairs from a manifest stored at that version (a deterministic op yields them again), or None.
    """

    in_process = True

    def __init__(
        self,
        pieces_at: PiecesAt,
        evaluate_lazy: EvaluateLazy | None = None,
        auto_pending: Callable[[str], bool] | None = None,
    ) -> None:
        self._pieces_at = pieces_at
        self._evaluate_lazy = evaluate_lazy
        self._is_auto_pending = auto_pending
        #: AUTO_VERSION steps whose plan waits on an input not stored yet: no version to show
        self.auto_pending: set[str] = set()
        #: ``(step key, output)`` of lazy tasks -> what evaluating the body told
        self.lazy: dict[tuple[str, str], LazyVersion] = {}
        self._done: list[StepOutcome] = []
        #: steps whose version waits on data an early-cutoff upstream has yet to produce
        self.data_pending: set[str] = set()
        #: ``(step key, output)`` whose effective version will be its data hash, unknown now
        self.pending_outputs: set[tuple[str, str]] = set()

    def submit(self, task: StepTask) -> None:
        versions = task.versions
        if versions is None and any(
            (address.step_key, address.output_name) in self.pending_outputs
            for load in task.inputs
            for address in load.addresses or ()
        ):
            self.data_pending.add(task.step_key)
        outputs: list[StoredOutput] = []
        unknown: set[str] = set()
        lazy = None
        if self._evaluate_lazy is not None and task.op_def.tags.get(LAZY_TAG) == "true":
            lazy = self._evaluate_lazy(task)
        if (
            versions is not None
            and self._is_auto_pending is not None
            and self._is_auto_pending(task.step_key)
        ):
            # its version now is made from a placeholder plan: the run's will differ, so
            # neither it nor its consumers are shown one
            self.auto_pending.add(task.step_key)
            versions = None
        for name, out in task.op_def.outs.items():
            version = versions.get(name) if versions is not None else None
            predicted = lazy.get(name) if lazy is not None else None
            if predicted is not None:
                self.lazy[(task.step_key, name)] = predicted
                if predicted.version is not None:
                    # the body told its version: consumers are versioned by it, as in a run
                    address = self._address(task, out, name, None, version, predicted.version)
                    outputs.append(StoredOutput(name, address))
                    continue
            cutoff = name in task.hash_outputs
            if cutoff or (
                version is None
                and (task.step_key in self.data_pending or task.step_key in self.auto_pending)
            ):
                self.pending_outputs.add((task.step_key, name))
            if out.is_dynamic:
                pieces = (
                    self._pieces_at(task.step_key, task.op_def, name, version) if version else None
                )
                if pieces is None:
                    unknown.add(name)
                    continue
                for key, piece_version in pieces:
                    address = self._address(task, out, name, key, None if cutoff else piece_version)
                    outputs.append(StoredOutput(name, address, key))
                continue
            address = self._address(task, out, name, None, None if cutoff else version)
            outputs.append(StoredOutput(name, address))
        self._done.append(
            StepOutcome(task.step_key, True, [], outputs, unknown_pieces=frozenset(unknown))
        )

    @staticmethod
    def _address(
        task: StepTask,
        out: Any,
        name: str,
        mapping_key: str | None,
        version: str | None,
        data_hash: str | None = None,
    ) -> Address:
        # version None: what consumers see is a data hash only the real run will know
        return Address(
            out.io_manager_key,
            None,
            PREDICTED,
            task.run_id,
            task.step_key,
            name,
            mapping_key,
            version,
            data_hash,
        )

    @property
    def in_flight(self) -> int:
        return len(self._done)

    def wait(self, timeout: float | None) -> list[StepOutcome]:
        done, self._done = self._done, []
        return done


@with_fewer_collections
def list_versions(
    job: Any,
    run_config: Mapping[str, Any] | None = None,
    instance: Any = None,
    explain: bool = False,
) -> list[OutputVersion]:
    """Each output's version and status for a memoized run of ``job`` with ``run_config``, in
    the order the run would decide them: ``stored``, ``to-be-recomputed``, ``depends-on-data``
    (an early-cutoff upstream re-runs: the data it yields decides) or ``unversioned``.

    Runs no op and writes nothing; reads the instance's index. With ``explain``, each output that
    will be recomputed says why, against what is stored for the closest recipe.
    """
    from memodag.plan.plan import build_plan
    from memodag.plan.run_config import resolve_run_config
    from memodag.runtime.resources import initialized_resources
    from memodag.storage.instance import Instance
    from memodag.versioning.memoize import IndexMemoizer

    instance = instance or Instance.get()
    resolved = resolve_run_config(job, run_config)
    plan = build_plan(job, resolved)
    memoizer = IndexMemoizer(job, plan, instance, enabled=True, run_id="list-versions")
    io_keys = {
        out.io_manager_key for node in plan.nodes.values() for out in node.op_def.outs.values()
    }
    # declared data versions run here as in a run: they see the resources their op requires
    data_keys = {
        k
        for node in plan.nodes.values()
        if node.op_def.data_version is not None
        for k in node.op_def.required_resource_keys
    }
    with initialized_resources(
        job.resource_defs, resolved.resource_config, io_keys | data_keys, instance, "list-versions"
    ) as resources:
        memoizer.attach_io_managers({k: getattr(resources, k) for k in io_keys})
        memoizer.attach_resources(resources)
        evaluate = _lazy_evaluator(resources, resolved.resource_config, instance, io_keys, memoizer)
        steps: dict[str, Any] = {}
        executor = PredictingExecutor(
            memoizer.manifest_pieces, evaluate, lambda key: memoizer.auto_pending(steps[key])
        )
        engine = Engine(plan, "list-versions", executor, _DiscardingLog(), memoizer)
        steps = engine.steps
        engine.add_steps(list(engine.steps.values()))
        engine.run()
        state = WalkState(
            engine.steps,
            engine.status,
            engine.unexpanded,
            executor.data_pending,
            executor.pending_outputs,
            engine.result.unfinished,
            executor.lazy,
            executor.auto_pending,
        )
        return report_rows(plan, state, memoizer, explain)


def _lazy_evaluator(
    resources: Any,
    resource_config: Mapping[str, Any],
    instance: Any,
    io_keys: set[str],
    memoizer: Any,
) -> EvaluateLazy:
    """What a lazy task's outputs would be versioned as (docs/tables.md, "Lazy SQL tasks").

    A query or script the task returned at this very code version (code, config, resources,
    inputs' versions) is in the index: the body is deterministic there, so its recorded version
    is the answer, and no store is opened. Otherwise the body runs the way a run runs it, with
    its table store predicting: inputs are ``sqlalchemy.Table`` references, the query is
    versioned, nothing is written or executed. A frame (recorded, or returned), or a body that
    reads data, is "decided at run time".
    """
    from memodag.runtime.step import StepRuntime, run_step
    from memodag.tables.io_manager import RAWSQL, DecidedAtRunTime, TableAddress, TableIOManager

    managers = [m for k in io_keys if isinstance(m := getattr(resources, k), TableIOManager)]
    runtime = StepRuntime(resources, resource_config, instance)

    def recorded(task: StepTask) -> dict[str, LazyVersion] | None:
        found = {}
        for name in task.op_def.outs:
            version = task.versions.get(name) if task.versions else None
            entry = (
                memoizer.entry_at(task.step_key, task.op_def, name, version) if version else None
            )
            if entry is None or not entry.address.data_hash:
                return None
            address = entry.address
            kind = TableAddress.parse(address.uri).kind
            if kind not in ("sql", RAWSQL):  # a frame: its content may differ on the next run
                why = f"{DECIDED_AT_RUN_TIME}: it returned a frame"
                found[name] = LazyVersion(None, False, why)
                continue
            store = runtime.io_manager(address.io_manager_key, task.step_key)
            stored = store.verify(address) is None
            where = store.location(address) if stored else None
            found[name] = LazyVersion(address.data_hash, stored, location=where)
        return found

    def evaluate(task: StepTask) -> dict[str, LazyVersion] | None:
        known = recorded(task)
        if known is not None:
            return known
        rerun = [
            f"{a.step_key}.{a.output_name}"
            for load in task.inputs
            for a in load.addresses or ()
            if a.serializer == PREDICTED
        ]
        if rerun:  # the body would read tables this run makes first
            why = f"decided at run time: its input {', '.join(rerun[:3])} runs first"
            return {name: LazyVersion(None, False, why) for name in task.op_def.outs}
        with contextlib.ExitStack() as stack:
            for manager in managers:
                stack.enter_context(manager.predicting())
            outcome = run_step(task, runtime)
            if outcome.success:
                found = {}
                for stored in outcome.outputs:
                    address = stored.address
                    store = runtime.io_manager(address.io_manager_key, task.step_key)
                    exists = bool(store.exists(address))
                    found[stored.output_name] = LazyVersion(
                        address.data_hash,
                        exists,
                        location=store.location(address) if exists else None,
                    )
                return found
        if isinstance(outcome.exception, DecidedAtRunTime):
            why = f"{DECIDED_AT_RUN_TIME}: {outcome.exception}"
        else:  # a failing body, an input gone from the store: the run will tell
            error = outcome.error.message if outcome.error is not None else "failed"
            why = f"decided at run time: its body could not be evaluated ({error})"
        return {name: LazyVersion(None, False, why) for name in task.op_def.outs}

    return evaluate


__all__ = ["PREDICTED", "PredictingExecutor", "list_versions"]
