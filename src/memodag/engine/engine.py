"""The engine loop: the one place that decides what runs, for real runs and dry runs alike.

Single-threaded in the driver. For each ready step it asks the memoizer whether every output is
stored at its current version (then it records the stored addresses and moves on) or builds a
``StepTask`` and hands it to the executor. Outcomes come back through ``executor.wait``; each
success releases its consumers, each failure is retried per policy or skips everything downstream.
When the loop ends every step must be accounted for (``Engine.account``): a step neither run,
memoized, loaded from the parent run, nor skipped for an optional output or a failure fails the
run, named, so a gap anywhere can never pass as a success (docs/dynamic.md, "No silent drops").
A step another live run is computing at the same version (the memoizer's ``claim``) waits aside,
looked at again every ``WAIT_POLL_SECONDS``, and is reused once stored (docs/reliability.md).
``list-versions``/``explain`` run this same loop with an executor that predicts outcomes instead
of running ops (``engine.dry_run``), so what they report cannot drift from what a run does.
Per-step work is O(1) in the size of the job: counters, not scans. Fan-out clones are run state
(``Engine.steps``): the shared ``ExecutionPlan`` is never changed.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memodag.engine.events import Commit, EventLog
from memodag.executors.base import Executor
from memodag.plan.dynamic import expand_mapped, made_by, never_made, pieces_from_addresses
from memodag.plan.plan import (
    ExecutionPlan,
    ExecutionStep,
    ListSource,
    NodeSource,
    StepOutputHandle,
)
from memodag.runtime.step import InputLoad, StepOutcome, StepTask
from memodag.storage.instance.records import Event, EventType
from memodag.storage.io_manager import INLINE, Address
from memodag.versioning.memoizer import AddressKey, Memoizer

__all__ = ["AddressKey", "Engine", "EngineResult", "Memoizer", "SkipCause", "StepStatus"]

#: how often a run looks again at steps another run is computing
WAIT_POLL_SECONDS = 0.2
#: ready steps claimed in one transaction
CLAIM_AHEAD = 256
#: a step found stored when the engine claimed ahead (no lease needed)
STORED = "\x00stored"


class StepStatus:
    SUCCESS = "success"
    MEMOIZED = "memoized"
    FAILED = "failed"
    SKIPPED = "skipped"
    EXTERNAL = "external"  # not selected: its outputs come from the parent run

    DONE_OK = frozenset({SUCCESS, MEMOIZED, EXTERNAL})


class SkipCause:
    """Why a step was skipped; only ``LOST`` makes a run fail by itself (``FAILED`` already did)."""

    OPTIONAL = "optional"  # an optional output was not yielded upstream: a success, as in Dagster
    FAILED = "failed"  # an upstream step failed
    LOST = "lost"  # an input had no source the run could find: never a success


@dataclass
class EngineResult:
    status: dict[str, str]
    addresses: dict[AddressKey, Address]
    failures: list[StepOutcome] = field(default_factory=list)
    executed: int = 0
    memoized: int = 0
    #: steps still waiting when the loop ended (an upstream never came to exist)
    unfinished: list[str] = field(default_factory=list)
    #: steps neither executed, memoized, loaded from the parent run, nor skipped for an optional
    #: output or a failure, with why (``Engine.account``): each one fails the run
    unaccounted: dict[str, str] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        # steps skipped only because an optional output was not yielded leave the run a success
        # (as in Dagster); skips caused by a failure already count through ``failures``
        return not self.failures and not self.unfinished and not self.unaccounted


class Engine:
    """Walks one run's plan. Not reusable across runs.

    Invariants: ``steps`` starts as a copy of the plan's steps (or the steps a re-execution
    expanded) and grows as fan-outs finish; a step is decided (memoized or submitted) only once
    every upstream has a status; ``status`` records each step once.
    """

    def __init__(
        self,
        plan: ExecutionPlan,
        run_id: str,
        executor: Executor,
        event_log: EventLog,
        memoizer: Memoizer,
        selected: set[str] | None = None,
        external_addresses: Mapping[AddressKey, Address] | None = None,
        steps: Mapping[str, ExecutionStep] | None = None,
        absent: Iterable[AddressKey] = (),
    ) -> None:
        self.plan = plan
        #: this run's steps: the plan's, plus the clones and collectors of fan-outs as they end
        self.steps: dict[str, ExecutionStep] = dict(plan.steps if steps is None else steps)
        #: ``(step key, output)`` fan-outs whose pieces an outcome could not tell (a dry run's
        #: prediction of a fan-out that must run): what they would create is not expanded
        self.unexpanded: list[tuple[str, str]] = []
        self.run_id = run_id
        self.executor = executor
        self.log = event_log
        self.memoizer = memoizer
        self.selected = selected
        self.addresses: dict[AddressKey, Address] = dict(external_addresses or {})
        #: outputs the parent run did not produce (optional, not yielded): left out, as there
        self._absent: frozenset[AddressKey] = frozenset(absent)
        self.status: dict[str, str] = {}
        #: why each skipped step was skipped (``SkipCause``) and, for ``LOST``, the message
        self._skip_cause: dict[str, str] = {}
        self._lost: dict[str, str] = {}
        self._waiting_on: dict[str, int] = {}
        self._consumers: dict[str, list[str]] = {}
        self._ready: deque[str] = deque()
        self._arrived: deque[StepOutcome] = deque()  # outcomes read from the executor, not recorded
        self._retries: list[tuple[float, int, StepTask]] = []
        #: steps another live run is computing at the same version: looked at again when due
        self._waiting: dict[str, str] = {}
        self._told_waiting: set[str] = set()
        #: ready steps claimed ahead: their holder, "" (taken by this run) or STORED
        self._claims: dict[str, str] = {}
        self._next_look = 0.0
        self._seq = itertools.count()
        #: memoized steps recomputed because a consumer could not load what they stored
        self._recomputed: set[str] = set()
        #: memoized steps whose inline tables a consumer needs: recomputed (once) in this run
        self._inline_reruns: set[str] = set()
        self.result = EngineResult(self.status, self.addresses)
        # a dry run's log keeps nothing: building its events would be wasted work
        self._records_events: bool = getattr(event_log, "stores_events", True)
        memoizer.note_addresses(self.addresses)
        for step_key, output, _ in self._absent:
            memoizer.not_produced(self.steps[step_key], (output,))

    # -- registering steps ----------------------------------------------------------------

    def add_steps(self, steps: Iterable[ExecutionStep]) -> None:
        """Enter steps into the run, in topological order (a step after its upstreams)."""
        steps = list(steps)
        self.memoizer.prepare(steps)
        self._log_notices()
        for step in steps:
            key = step.key
            if self.selected is not None and key not in self.selected:
                self.status[key] = StepStatus.EXTERNAL
                # consumers entered before it (a re-execution's pre-expanded collectors) go on
                self._release_consumers(key)
                continue
            waiting = 0
            blocked = None
            for upstream in step.upstream_step_keys:
                state = self.status.get(upstream)
                if state is None:
                    waiting += 1
                    self._consumers.setdefault(upstream, []).append(key)
                elif state not in StepStatus.DONE_OK and not self._gathers_past(step, upstream):
                    blocked = upstream
            if blocked is not None:
                self._skip(
                    key,
                    f"upstream step '{blocked}' did not succeed",
                    self._cause_from(blocked),
                )
                continue
            self._waiting_on[key] = waiting
            if waiting == 0:
                self._ready.append(key)

    def _log_notices(self) -> None:
        for notice in self.memoizer.notices():
            self.log.append(
                Event(EventType.LOG, self.run_id, time.time(), None, notice, {"level": "WARNING"})
            )

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> EngineResult:
        executor = self.executor
        try:
            while True:
                if self._ready and self.memoizer.shares_work and self._ready[0] not in self._claims:
                    self._claim_ahead()
                while self._ready and executor.can_submit():
                    self._start(self._ready.popleft())
                if self._retries:
                    self._submit_due_retries()
                if self._waiting:
                    self._look_at_waiting()
                    if self._ready:
                        continue
                if (
                    not self._ready
                    and not executor.in_flight
                    and not self._retries
                    and not self._waiting
                ):
                    break
                timeout = None
                if self._retries:
                    timeout = max(0.0, self._retries[0][0] - time.monotonic())
                if self._waiting:
                    until = max(0.0, self._next_look - time.monotonic())
                    timeout = until if timeout is None else min(timeout, until)
                # memoized steps and skips recorded before waiting on a step that may run for hours
                again = self.memoizer.settle()
                if again is not None:
                    timeout = again if timeout is None else min(timeout, again)
                self.log.flush_buffered()
                self._arrived.extend(executor.wait(timeout))
                while self._arrived:
                    self._finish(self._arrived.popleft())
        except KeyboardInterrupt:
            # Ctrl-C, SIGTERM: attempts that ended before it keep their outcome (and a memoized
            # rerun skips them); the caller then cancels the rest
            with contextlib.suppress(Exception):
                self.record_finished()
            raise
        not_made = self._skip_never_made()
        for key, waiting in self._waiting_on.items():
            if waiting and key not in self.status:
                missing = [u for u in self.steps[key].upstream_step_keys if u in not_made]
                if missing:  # its fan-out failed or was skipped: that failure says why (and
                    # its consumers are skipped for it)
                    why = f"upstream step '{missing[0]}' was not made ({not_made[missing[0]]})"
                    self._skip(key, why, SkipCause.FAILED)
        for key, waiting in self._waiting_on.items():
            if waiting and key not in self.status:
                # an upstream never came to exist: the run did not do all it was asked to
                self._skip(key, "an upstream step was never produced", SkipCause.LOST)
                self.result.unfinished.append(key)
        self.account()
        return self.result

    def account(self) -> None:
        """The final check: every step of the run is executed, memoized, loaded from the parent
        run, failed, or skipped for an optional output not yielded or a failure upstream. Any
        other step (never decided, or skipped for want of an input) is recorded in
        ``result.unaccounted`` and fails the run, so no future silent drop passes as success."""
        unaccounted = self.result.unaccounted
        # the steps that lost an input first: their consumers were skipped because of them
        for key, why in self._lost.items():
            if not why.startswith("upstream step"):
                unaccounted[key] = why
        for key in self.steps:
            if key in unaccounted:
                continue
            state = self.status.get(key)
            if state is None:
                unaccounted[key] = "never decided"
            elif state == StepStatus.SKIPPED and self._skip_cause.get(key) == SkipCause.LOST:
                unaccounted[key] = self._lost.get(key, "skipped without a cause")
        self._account_templates(unaccounted)

    def _account_templates(self, unaccounted: dict[str, str]) -> None:
        """A mapped node or collector with no step at all, although the fan-out that creates
        it ran here (with pieces, for a clone): its expansion was silently dropped."""
        present = {step.node.path for step in self.steps.values()}
        missing = [n for n in self.plan.nodes.values() if n.path not in present]
        if not missing:
            return
        ran: dict[tuple[str, str], bool] = {}  # fan-out (path, output) -> yielded a piece
        for key, state in self.status.items():
            if state in (StepStatus.SUCCESS, StepStatus.MEMOIZED):
                step = self.steps[key]
                for name, out in step.op_def.outs.items():
                    if out.is_dynamic:
                        ran.setdefault((step.node.path, name), False)
        for key, output, mapping_key in self.addresses:
            if mapping_key is not None and self.status.get(key) in (
                StepStatus.SUCCESS,
                StepStatus.MEMOIZED,
            ):
                ran[(self.steps[key].node.path, output)] = True
        for source, output in self.unexpanded:  # a dry run could not tell the pieces
            ran.pop((self.steps[source].node.path, output), None)
        for node in missing:
            creation = made_by(self.plan, node)
            if creation is None:
                continue
            fan_outs, needs_piece = creation
            if all(f in ran and (ran[f] or not needs_piece) for f in fan_outs):
                named = ", ".join(f"'{path}' (output '{output}')" for path, output in fan_outs)
                unaccounted[node.path] = f"no step was made for it, although fan-out {named} ran"

    def _start(self, key: str) -> None:
        step = self.steps[key]
        claimed = self._claims.pop(key, None)
        # a step claimed ahead was not stored then: the claim's own read is looked at below
        stored = self.memoizer.stored(step) if self.memoizer.enabled and claimed != "" else None
        if stored is None and self.memoizer.shares_work:
            taken = claimed is not None and claimed != STORED
            holder = claimed if taken else self.memoizer.claim(step)
            if holder:
                self._wait_for(key, holder)
                return
            # the claim read the index again: another run may have stored it just before
            stored = self.memoizer.stored(step)
            if stored is not None:
                self.memoizer.release(step)
        if stored is not None:
            for address in stored:
                self.addresses[(key, address.output_name, address.mapping_key)] = address
            if self._records_events:
                self.log.append(
                    Event(
                        EventType.STEP_MEMOIZED,
                        self.run_id,
                        time.time(),
                        key,
                        "stored at current version",
                        {"addresses": [a.to_dict() for a in stored]},
                    )
                )
            self.status[key] = StepStatus.MEMOIZED
            self.result.memoized += 1
            self._after_success(step, stored)
            return
        if self.memoizer.enabled:
            self._log_notices()  # a stored output found gone or altered says so
        if self._inline_producers_first(step):
            return
        task = self._task(step)
        if task is None:
            self.memoizer.release(step)  # skipped: nothing to compute
        else:
            if self.log.listeners:
                self.log.notify(
                    Event(EventType.STEP_START, self.run_id, time.time(), key, "", {"attempt": 0})
                )
            self.memoizer.settle()
            self.log.flush_buffered()  # an in-process submit runs the step before it returns
            self.executor.submit(task)

    def _task(self, step: ExecutionStep, attempt: int = 0) -> StepTask | None:
        loads = []
        for spec in step.inputs:
            if not spec.upstream and not spec.collect:
                loads.append(InputLoad(spec.name, None, default=spec.default))
                continue
            addresses = []
            outs = []
            for handle in spec.upstream:
                address = self.addresses.get(
                    (handle.step_key, handle.output_name, handle.mapping_key)
                )
                if address is None:
                    not_yielded = self._not_yielded(handle)
                    if spec.collect and not_yielded:
                        continue  # a collector gathers the pieces that exist (as in Dagster)
                    if not_yielded:
                        self._skip(
                            step.key,
                            f"input '{spec.name}' needs {handle}, which was not produced (optional output not yielded)",
                            SkipCause.OPTIONAL,
                        )
                    else:
                        state = self.status.get(handle.step_key, "not in the run")
                        self._skip(
                            step.key,
                            f"input '{spec.name}' needs {handle}, which the run has no address "
                            f"for (step '{handle.step_key}': {state})",
                            SkipCause.LOST,
                        )
                    return None
                addresses.append(address)
                outs.append(self._out_def(handle))
            load = InputLoad(spec.name, tuple(addresses), tuple(outs), spec.collect)
            if spec.collect:
                load.collected_out, load.collected_node = self._collected(step, spec.name)
            loads.append(load)
        return StepTask(
            self.run_id,
            step.key,
            step.op_def,
            step.node.tags,
            step.config,
            tuple(loads),
            self.memoizer.versions(step),
            step.mapping_keys[-1] if step.mapping_keys else None,
            attempt,
            self.memoizer.hash_outputs(step),
        )

    def _collected(self, step: ExecutionStep, name: str) -> tuple[Any, str]:
        """The ``Out`` a collected input gathers (the mapped node's, or a fan-in list's first
        member's) and its node: its io manager hands the list over, even with no pieces."""
        source = step.node.inputs.get(name)
        if isinstance(source, ListSource):
            source = source.members[0] if source.members else None
        node = self.plan.nodes.get(source.node) if isinstance(source, NodeSource) else None
        if node is None or not isinstance(source, NodeSource):
            return None, ""
        return node.op_def.outs.get(source.output), node.path

    def _out_def(self, handle: StepOutputHandle) -> Any:
        step = self.steps.get(handle.step_key)
        return step.op_def.outs.get(handle.output_name) if step is not None else None

    def _not_yielded(self, handle: StepOutputHandle) -> bool:
        """Whether a missing output is an optional one its step, run here, chose not to yield
        (or a piece of a clone skipped for that reason), rather than an output that was lost."""
        state = self.status.get(handle.step_key)
        if state == StepStatus.EXTERNAL:
            return (handle.step_key, handle.output_name, handle.mapping_key) in self._absent
        if state == StepStatus.SKIPPED:
            return self._skip_cause.get(handle.step_key) == SkipCause.OPTIONAL
        if state in (StepStatus.SUCCESS, StepStatus.MEMOIZED):
            out = self._out_def(handle)
            return out is not None and not out.is_required
        return False

    def _gathers_past(self, step: ExecutionStep, upstream: str) -> bool:
        """Whether ``step`` only collects from ``upstream`` and ``upstream`` was skipped for an
        optional output: the collector then goes on without that piece."""
        if self._skip_cause.get(upstream) != SkipCause.OPTIONAL:
            return False
        return all(
            spec.collect
            for spec in step.inputs
            if any(h.step_key == upstream for h in spec.upstream)
        )

    def _cause_from(self, upstream: str) -> str:
        if self.status.get(upstream) == StepStatus.FAILED:
            return SkipCause.FAILED
        return self._skip_cause.get(upstream, SkipCause.FAILED)

    def _finish(self, outcome: StepOutcome) -> None:
        key = outcome.step_key
        step = self.steps[key]
        commit = None
        if outcome.success:
            entries = self.memoizer.record(step, outcome)
            # its lease goes with the next write after its index entries: waiters find it stored
            self.memoizer.release(step)
            if self.memoizer.shares_work:
                commit = self._claiming(step)
        else:
            entries = []
        # durable before anything builds on it: a run killed from here on keeps this step
        self.log.record_outcome(outcome.events, entries, commit)
        if outcome.success:
            self.status[key] = StepStatus.SUCCESS
            self.result.executed += 1
            for stored in outcome.outputs:
                self.addresses[(key, stored.output_name, stored.mapping_key)] = stored.address
            self._after_success(step, [o.address for o in outcome.outputs], outcome.unknown_pieces)
            return
        if outcome.lost_inputs and self._recompute_lost(step, outcome):
            return
        policy = step.op_def.retry_policy
        if policy is not None and outcome.attempt < policy.max_retries:
            attempt = outcome.attempt + 1
            delay = policy.delay_for(attempt)
            self.log.append(
                Event(
                    EventType.STEP_RETRY,
                    self.run_id,
                    time.time(),
                    key,
                    f"retry {attempt} of {policy.max_retries} in {delay:g}s",
                    {"attempt": attempt, "delay": delay},
                )
            )
            task = self._task(step, attempt)
            if task is not None:
                heapq.heappush(self._retries, (time.monotonic() + delay, next(self._seq), task))
            return
        self.memoizer.release(step)
        self.status[key] = StepStatus.FAILED
        self.result.failures.append(outcome)
        self._skip_consumers(key, f"upstream step '{key}' failed", SkipCause.FAILED)

    def _recompute_lost(self, step: ExecutionStep, outcome: StepOutcome) -> bool:
        """An attempt could not load inputs that memoized steps of this run reused (gone,
        unreadable, altered): recompute those steps, once each, and run ``step`` again after
        them. False if that cannot help (an input this run computed itself, a fan-out)."""
        waits: set[str] = set()
        restart: list[str] = []
        for address in outcome.lost_inputs:
            producer = address.step_key
            current = self.addresses.get((producer, address.output_name, address.mapping_key))
            if producer in self._recomputed:
                if producer not in self.status:
                    waits.add(producer)  # still being recomputed
                elif current is None or current == address:
                    return False  # recomputed, and what it stored cannot be loaded either
                continue
            state = self.status.get(producer)
            source = self.steps.get(producer)
            if state != StepStatus.MEMOIZED or source is None:
                return False
            if source.op_def.has_dynamic_output:
                # its clones exist already and cannot be made twice in one run: this run fails,
                # the next memoized one computes the fan-out again instead of failing the same way
                self.memoizer.forget(source)
                self.log.append(
                    Event(
                        EventType.LOG,
                        self.run_id,
                        time.time(),
                        step.key,
                        f"a piece of fan-out '{producer}' that step '{step.key}' reads cannot be "
                        "loaded; its stored pieces are forgotten: the next memoized run "
                        "computes the fan-out again",
                        {"level": "WARNING"},
                    )
                )
                return False
            restart.append(producer)
            waits.add(producer)
        key = step.key
        for producer in restart:
            self._recomputed.add(producer)
            for output_key in [k for k in self.addresses if k[0] == producer]:
                del self.addresses[output_key]
            self._recompute_memoized(
                producer,
                key,
                f"step '{key}' could not load what memoized step '{producer}' stored "
                f"({outcome.error.message if outcome.error else 'unreadable'}); "
                f"recomputing step '{producer}'",
                "WARNING",
            )
        for address in outcome.lost_inputs:
            self.memoizer.distrust(address.step_key, (key,))
        self._waiting_on[key] = len(waits)
        for producer in waits:
            self._consumers.setdefault(producer, []).append(key)
        if not waits:
            self._ready.append(key)
        return True

    def _recompute_memoized(self, producer: str, consumer: str, why: str, level: str) -> None:
        """Run memoized step ``producer`` after all, before ``consumer`` (logged there, why)."""
        self.log.append(
            Event(EventType.LOG, self.run_id, time.time(), consumer, why, {"level": level})
        )
        del self.status[producer]
        self.result.memoized -= 1
        self._waiting_on[producer] = 0
        self._ready.append(producer)

    def _inline_producers_first(self, step: ExecutionStep) -> bool:
        """``step`` must run and reads outputs that memoized steps handed over in memory
        (``INLINE``: a version, no stored data): run those producers first, then ``step``
        (a chain of them runs from its first stored ancestor, as each asks the same here).
        False when nothing needs to run first. docs/tables.md, "Inline hand-over"."""
        producers: dict[str, None] = {}
        waits: dict[str, None] = {}
        for spec in step.inputs:
            for handle in spec.upstream:
                producer = handle.step_key
                if producer in self._inline_reruns and producer not in self.status:
                    waits[producer] = None  # another consumer asked first: it is running
                    continue
                address = self.addresses.get((producer, handle.output_name, handle.mapping_key))
                if (
                    address is not None
                    and address.serializer == INLINE
                    and self.status.get(producer) == StepStatus.MEMOIZED
                ):
                    producers[producer] = None
                    waits[producer] = None
        if not waits:
            return False
        key = step.key
        for producer in producers:
            self._inline_reruns.add(producer)
            for name in self.steps[producer].op_def.outs:
                self.addresses.pop((producer, name, None), None)
            # never served from the index again in this run; ``step`` is versioned anew from
            # what it computes (the same version, unless its data hash differs)
            self.memoizer.distrust(producer, (key,))
            self._recompute_memoized(
                producer,
                key,
                f"step '{key}' runs and reads the inline table of step '{producer}', "
                f"which is not stored: recomputing step '{producer}' first",
                "INFO",
            )
        for producer in waits:
            self._consumers.setdefault(producer, []).append(key)
        self._waiting_on[key] = len(waits)
        return True

    def _claim_ahead(self) -> None:
        """Claim the next ready steps that are not stored in one transaction (a write per
        ``CLAIM_AHEAD`` steps, not per step): ``_claims`` maps each to its holder ("": taken by
        this run; ``STORED``: stored, nothing to claim)."""
        batch = []
        for key in itertools.islice(self._ready, CLAIM_AHEAD):
            if key in self._claims:
                continue
            step = self.steps[key]
            if self.memoizer.stored(step) is not None:
                self._claims[key] = STORED
            else:
                batch.append(step)
        holders = self.memoizer.claim_many(batch) if batch else {}
        for step in batch:
            self._claims[step.key] = holders.get(step.key, "")

    def _claiming(self, step: ExecutionStep) -> Commit | None:
        """How to commit ``step``'s outcome so that the consumers it makes ready are claimed
        in the same transaction (a chain's step then costs one commit, not two), or None when
        it makes none ready that needs a claim. A fan-out's consumers are made when it ends."""
        if step.op_def.has_dynamic_output:
            return None
        batch: list[ExecutionStep] = []
        for key in self._consumers.get(step.key, ()):
            if len(batch) == CLAIM_AHEAD:
                break  # a wide fan-in's others: claimed ahead as they reach the ready queue
            if self._waiting_on.get(key) != 1 or key in self._claims or key in self.status:
                continue  # not made ready by this step, or claimed already
            consumer = self.steps[key]
            if self.memoizer.stored(consumer) is not None:
                self._claims[key] = STORED
            else:
                batch.append(consumer)
        if not batch:
            return None

        def commit(events: list[Event], index: list[Any]) -> None:
            holders = self.memoizer.claim_many(batch, events, index)
            for consumer in batch:
                self._claims[consumer.key] = holders.get(consumer.key, "")

        return commit

    def _wait_for(self, key: str, holder: str) -> None:
        """Another live run computes ``key`` at the same version: wait for it, then reuse it."""
        self._waiting[key] = holder
        if key in self._told_waiting:
            return
        self._told_waiting.add(key)
        self.log.append(
            Event(
                EventType.LOG,
                self.run_id,
                time.time(),
                key,
                f"waiting for {holder}, which is computing this step at the same version",
                {"level": "INFO"},
            )
        )

    def _look_at_waiting(self) -> None:
        """Steps other runs were computing: stored now (memoized), or free to take (their
        holder ended without storing them, or died): back to ready, where ``_start`` decides."""
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + WAIT_POLL_SECONDS
        waiting, self._waiting = self._waiting, {}
        for key in waiting:
            self.memoizer.refresh(self.steps[key])
            self._ready.append(key)

    def record_finished(self) -> None:
        """Record the attempts that ended but were not recorded yet (the run is being canceled)."""
        self._arrived.extend(self.executor.wait(0))
        while self._arrived:
            self._finish(self._arrived.popleft())

    def _submit_due_retries(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now and self.executor.can_submit():
            _, _, task = heapq.heappop(self._retries)
            self.log.flush_buffered()  # as in _start: an in-process submit runs the attempt
            self.executor.submit(task)

    def _after_success(
        self,
        step: ExecutionStep,
        addresses: list[Address],
        unknown_pieces: frozenset[str] = frozenset(),
    ) -> None:
        if step.op_def.has_dynamic_output:
            pieces = pieces_from_addresses(step, addresses)
            for output in unknown_pieces:
                # a prediction that cannot say which pieces will come: clones, collectors and
                # their consumers stay undecided (the run ends with them waiting)
                pieces.pop(output, None)
                self.unexpanded.append((step.key, output))
            new_steps = expand_mapped(self.plan, self.steps, step, pieces)
            if self.selected is not None:
                # pieces this run produced: everything made from them runs here
                self.selected.update(s.key for s in new_steps)
            self.add_steps(new_steps)
        self._release_consumers(step.key)

    def _release_consumers(self, key: str) -> None:
        for consumer in self._consumers.pop(key, ()):
            remaining = self._waiting_on[consumer] - 1
            self._waiting_on[consumer] = remaining
            if remaining == 0:
                self._ready.append(consumer)

    def _skip_never_made(self) -> dict[str, str]:
        """Clones and collectors of fan-out steps that failed or were skipped (so they were
        never made) are recorded as skipped, under keys with ``*`` for the pieces never known
        (``double[*]``, ``scale[k0,*]``, ``total``), so a run's summary lists every step it did
        not run. Returns each such step key -> why it was not made (consumers waiting on one
        are skipped for that reason)."""
        if not self._records_events:
            return {}
        failed: dict[tuple[str, tuple[str, ...]], str] = {}  # fan-out (path, keys) -> why
        for key, state in self.status.items():
            step = self.steps.get(key)
            ended_without_pieces = state in (StepStatus.FAILED, StepStatus.SKIPPED)
            if ended_without_pieces and step is not None and step.op_def.has_dynamic_output:
                failed[(step.node.path, step.mapping_keys)] = f"fan-out '{key}' did not succeed"
        not_made = never_made(self.plan, self.steps, failed) if failed else {}
        for key, why in not_made.items():
            self.log.append(
                Event(
                    EventType.STEP_SKIPPED,
                    self.run_id,
                    time.time(),
                    key,
                    f"not made: {why}",
                    {"cause": SkipCause.FAILED},
                )
            )
        return not_made

    def _skip(self, key: str, reason: str, cause: str) -> None:
        if key in self.status:
            return
        self.status[key] = StepStatus.SKIPPED
        self._skip_cause[key] = cause
        if cause == SkipCause.LOST:
            self._lost[key] = reason
        elif cause == SkipCause.OPTIONAL:
            self.memoizer.not_produced(self.steps[key])
        self.log.append(
            Event(EventType.STEP_SKIPPED, self.run_id, time.time(), key, reason, {"cause": cause})
        )
        self._skip_consumers(key, f"upstream step '{key}' was skipped", cause)

    def _skip_consumers(self, key: str, reason: str, cause: str) -> None:
        stack = [(key, c, reason) for c in self._consumers.pop(key, ())]
        while stack:
            upstream, consumer, why = stack.pop()
            if consumer in self.status:
                continue
            if cause == SkipCause.OPTIONAL and self._gathers_past(self.steps[consumer], upstream):
                # a collector missing one piece still runs, with the pieces that exist
                remaining = self._waiting_on[consumer] - 1
                self._waiting_on[consumer] = remaining
                if remaining == 0:
                    self._ready.append(consumer)
                continue
            self.status[consumer] = StepStatus.SKIPPED
            self._skip_cause[consumer] = cause
            if cause == SkipCause.LOST:
                self._lost[consumer] = why
            elif cause == SkipCause.OPTIONAL:
                self.memoizer.not_produced(self.steps[consumer])
            self.log.append(
                Event(
                    EventType.STEP_SKIPPED,
                    self.run_id,
                    time.time(),
                    consumer,
                    why,
                    {"cause": cause},
                )
            )
            stack.extend(
                (consumer, c, f"upstream step '{consumer}' was skipped")
                for c in self._consumers.pop(consumer, ())
            )
