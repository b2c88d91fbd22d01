"""Memoization: the adapter the engine asks "is this step stored at its current version?".

Versions are computed lazily, when a step becomes ready, from its upstreams' *effective* versions
(the data hash where early cutoff applies, else the code-derived version). Stored outputs are
found in the instance's index, fetched in one batched query per batch of steps entering the run;
custom ``MemoizableIOManager``s answer ``has_output`` themselves. See docs/versioning.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from memodag.definitions.config import config_to_plain
from memodag.definitions.secrets import redact_text
from memodag.definitions.tables import LAZY_TAG
from memodag.errors import MemoizationError
from memodag.hashing import hash_strings, piece_version
from memodag.plan.dynamic import parse_step_key
from memodag.plan.plan import (
    ExecutionPlan,
    ExecutionStep,
    ListSource,
    NodeSource,
    StepOutputHandle,
)
from memodag.runtime.context import RunLogger
from memodag.runtime.step import StepOutcome
from memodag.storage.instance.records import Event, IndexEntry
from memodag.storage.io_manager import (
    INLINE,
    Address,
    IOManager,
    MemoizableIOManager,
    OutputContext,
)
from memodag.versioning import scheme
from memodag.versioning.auto_inputs import TableSchemas
from memodag.versioning.fresh_input import FreshInput, effective_version, ignoring_data_version
from memodag.versioning.memoizer import AddressKey, Memoizer
from memodag.versioning.resolve import (
    AUTO_PENDING,
    Recipe,
    StepVersion,
    VersionResolver,
    is_auto_version,
)
from memodag.versioning.strategy import MEMOIZED_RUN_TAG

ABSENT = "absent"  # the serializer of an index entry recording an optional output not yielded
CODE_PARTS = "code-parts"  # the serializer of an entry naming what a mapped op's code hashes
MANIFEST = "manifest"  # the serializer of a dynamic output's manifest entry
#: the serializer of an entry ``memodag verify --repair`` found missing or altered: not stored,
#: kept so ``explain`` says what happened (its recipe's ``lost`` says why and when)
LOST = "lost"
#: bytes up to which a memoized run reads and hashes a stored output that nothing in the job reads
FINAL_HASH_LIMIT = 16 << 20
#: index entries that name no stored data (an inlined table: recomputed if a consumer runs)
_NO_DATA = frozenset({ABSENT, CODE_PARTS, MANIFEST, LOST, INLINE})

#: how often a run narrows its pins, and gives up the leases of steps it has finished
#: (``IndexMemoizer.settle``), in seconds
NARROW_PINS_SECONDS = 2.0
RELEASE_LEASES_SECONDS = 0.2

# resource config fields whose values ``explain`` must never keep in the index
_SECRET_FIELD = re.compile(r"pass|secret|token|credential|private|api_?key", re.IGNORECASE)


def memoization_enabled(job: Any, tags: Mapping[str, str]) -> bool:
    """The run's ``MEMOIZED_RUN_TAG`` (run tags override job tags), else whether the job has a
    version strategy."""
    tag = tags.get(MEMOIZED_RUN_TAG)
    if tag is not None:
        return str(tag).strip().lower() in ("true", "1", "yes")
    return job.version_strategy is not None


def output_key(job_name: str, step_key: str, output: str, mapping_key: str | None = None) -> str:
    """The index key of a stored output: job-scoped, so two jobs never share a storage decision."""
    base = f"{job_name}/{step_key}.{output}"
    return f"{base}[{mapping_key}]" if mapping_key is not None else base


class IndexMemoizer(Memoizer):
    """Versions every versionable step; with memoization on, skips steps stored at their version."""

    def __init__(
        self,
        job: Any,
        plan: ExecutionPlan,
        instance: Any,
        enabled: bool,
        run_id: str = "",
        pin: bool = False,
    ) -> None:
        self.job = job
        #: a real run pins what it reads from the index, in the reading transaction, so gc
        #: keeps it until the run ends (dry runs and benchmarks read without pinning)
        self.pin = pin
        #: step key -> lease key, for the steps whose computation this run holds
        self._leases: dict[str, str] = {}
        self._identity: dict[str, Any] | None = None
        #: output keys of steps that run: their pins go with the next narrowing
        self._unpin: dict[str, None] = {}
        #: leases of steps whose outcome is recorded, given up with the next write
        self._released_leases: list[str] = []
        # narrowed once the first decisions are made (before the first step runs), then at
        # most every NARROW_PINS_SECONDS: a bounded cost per run, not one write per step
        self._next_narrowing = 0.0
        self._next_release = 0.0
        self.plan = plan
        self.instance = instance
        self.enabled = enabled
        self.run_id = run_id
        self.resolver = VersionResolver(job, plan.run_config.resource_config, job.version_strategy)
        self.resolver.run_id = run_id
        self.resolver.instance = instance
        self.io_managers: Mapping[str, IOManager] = {}
        self.resources: Any = None
        self._entries: dict[tuple[str, str], IndexEntry] = {}
        self._fetched_entries: list[IndexEntry] = []  # in fetch order; only explain groups them
        self._by_key: dict[str, list[IndexEntry]] = {}
        self._grouped = 0  # how many of ``_fetched_entries`` ``_by_key`` holds
        self._code_parts_recorded: set[tuple[str, str]] = set()
        self._fetched: set[str] = set()
        self._made: dict[str, StepVersion | None] = {}
        self._recipes: dict[str, Recipe | None] = {}
        self._versions: dict[str, dict[str, str] | None] = {}
        self._effective: dict[AddressKey, str] = {}
        self._cutoff: dict[str, frozenset[str]] = {}
        #: step key -> ``(output name, Out, index key)`` per output, worked out once per step
        self._outputs: dict[str, tuple[tuple[str, Any, str], ...]] = {}
        self._manager_ids: dict[str, str] = {}
        #: (step key, output name) -> (its ``output_key`` without mapping key, io manager identity)
        self._key_parts: dict[tuple[str, str], tuple[str, str]] = {}
        self._older_scheme: set[str] = set()  # output keys with entries of another version scheme
        self._resource_configs: dict[frozenset[str], dict[str, Any]] = {}
        self._current_keys: set[str] = set()  # output keys with an entry of this version scheme
        self._noticed = False
        #: steps whose stored outputs this run found gone or altered: never served again here
        self._distrusted: set[str] = set()
        self._lost_notices: list[str] = []
        self._consumed: frozenset[str] | None = None  # node paths some step reads from
        #: outputs known not produced, versioned as absent when a consumer first asks
        self._not_produced: dict[tuple[str, str], ExecutionStep] = {}
        #: table outputs seen in this run (their schemas version AUTO_VERSION consumers)
        self._tables = TableSchemas()
        #: the run's ``cache_validation`` mode (docs/tables.md, "External tables and fresh input")
        self.fresh = FreshInput(getattr(plan.run_config, "cache_validation", "normal"))
        self._external_possible = False

    # -- set-up --------------------------------------------------------------------------------

    def check(self) -> None:
        """With memoization on, every op needs a version: raise naming all that lack one.
        AUTO_VERSION ops must take LazyFrames (checked before any step runs)."""
        from memodag.tables.auto_version import check_input_types

        for node in self.plan.nodes.values():
            if is_auto_version(node.op_def):
                check_input_types(node.op_def)
        if not self.enabled:
            return
        missing = self.resolver.unversioned_ops(self.plan.nodes.values())
        if missing:
            raise MemoizationError(
                f"memoized run of job '{self.job.name}': ops without a version: {missing}. Give each "
                "@op(version=...) or the job a version_strategy (e.g. SourceHashVersionStrategy())"
            )

    def attach_io_managers(self, io_managers: Mapping[str, IOManager]) -> None:
        from memodag.tables.io_manager import TableIOManager

        self.io_managers = io_managers
        # only table stores hold external tables: other runs skip looking for them per step
        self._external_possible = self.fresh.mode != "ignore_fresh_input" and any(
            isinstance(m, TableIOManager) for m in io_managers.values()
        )

    def attach_resources(self, resources: Any) -> None:
        self.resources = resources
        self.resolver.resources = resources

    def note_addresses(self, addresses: Mapping[AddressKey, Address]) -> None:
        """Outputs this run did not compute (re-execution): their versions feed consumers."""
        for key, address in addresses.items():
            self._tables.note(key, address)
            effective = self._effective_version(key[0], address)
            if effective is not None:
                self._effective[key] = effective

    def prepare(self, steps: Iterable[ExecutionStep]) -> None:
        if not self.enabled:
            return
        self._fetch(key for s in steps for _, _, key in self._outputs_of(s))

    def _outputs_of(self, step: ExecutionStep) -> tuple[tuple[str, Any, str], ...]:
        found = self._outputs.get(step.key)
        if found is None:
            found = self._outputs[step.key] = tuple(
                (name, out, self._key(step, name)) for name, out in step.op_def.outs.items()
            )
        return found

    def _fetch(self, keys: Iterable[str], again: bool = False) -> None:
        wanted = list(keys) if again else [k for k in keys if k not in self._fetched]
        if not wanted:
            return
        self._fetched.update(wanted)
        if self.pin:
            found = self.instance.pinned_entries_for_keys(wanted, self.run_id)
        else:
            found = self.instance.entries_for_keys(wanted)
        for entry in found:
            if entry.version_scheme != scheme.VERSION_SCHEME:
                # computed another way: its version may mean something else now (scheme.py)
                self._older_scheme.add(entry.output_key)
                continue
            self._remember(entry)

    def _remember(self, entry: IndexEntry, fetched: bool = True) -> None:
        pair = (entry.output_key, entry.version)
        # ``stored_versions_of`` answers with what the index held before this walk only
        if fetched and pair not in self._entries:
            self._fetched_entries.append(entry)
        self._entries[pair] = entry
        self._current_keys.add(entry.output_key)

    def notices(self) -> list[str]:
        """Stored outputs found gone or altered (each once), and, once per run, that some
        outputs seen so far are stored only by an older version scheme."""
        if self._lost_notices:
            lost, self._lost_notices = self._lost_notices, []
            return lost + self.notices()
        if self._noticed or not self._older_scheme:
            return []
        # keys stored by this scheme too are fine; only what is left can make the notice
        self._older_scheme = {k for k in self._older_scheme if k not in self._current_keys}
        if not self._older_scheme:
            return []
        self._noticed = True
        return [scheme.older_scheme_notice(self.job.name)]

    # -- versions ------------------------------------------------------------------------------

    def cutoff_outputs(self, step_key: str) -> frozenset[str]:
        return self._cutoff_of(parse_step_key(step_key)[0])

    def _cutoff_of(self, path: str) -> frozenset[str]:
        found = self._cutoff.get(path)
        if found is None:
            node = self.plan.nodes.get(path)
            outs = node.op_def.outs if node is not None else {}
            default = bool(self.job.early_cutoff)
            found = frozenset(
                n
                for n, o in outs.items()
                if (o.early_cutoff if o.early_cutoff is not None else default)
            )
            self._cutoff[path] = found
        return found

    def _effective_version(self, step_key: str, address: Address) -> str | None:
        """What consumers see of an output: its data hash under early cutoff, else its version
        (None: it has neither, so its consumers have no version either). ``stored`` inlines
        this rule."""
        # the external rule first: a reference's data hash (if any) says nothing of the
        # table's content, which may change between runs (docs/tables.md, "External tables")
        if address.uri is not None and address.uri.startswith("table:external:"):
            node = self.plan.nodes.get(parse_step_key(step_key)[0])
            fresh = effective_version(address, node.op_def if node is not None else None)
            if fresh is not None:
                return fresh
        if address.data_hash and address.output_name in self.cutoff_outputs(step_key):
            return "data:" + address.data_hash
        return address.version

    def _upstream_schema(self, handle: StepOutputHandle) -> str:
        return self._tables.schema(handle, self.io_managers)

    def _upstream(self, handle: StepOutputHandle) -> str | None:
        found = self._effective.get((handle.step_key, handle.output_name, handle.mapping_key))
        if found is None and handle.mapping_key is None:
            step = self._not_produced.get((handle.step_key, handle.output_name))
            if step is not None:
                # asked late on purpose: by the time a consumer starts, the step's own upstreams
                # are known, so its version (what "absent" is pinned to) can be worked out
                found = self._absent_version(step, handle.output_name, self.versions(step))
                if found is not None:
                    self._effective[(handle.step_key, handle.output_name, None)] = found
        return found

    def not_produced(self, step: ExecutionStep, outputs: Iterable[str] | None = None) -> None:
        for name in step.op_def.outs if outputs is None else outputs:
            if not step.op_def.outs[name].is_dynamic:
                self._not_produced[(step.key, name)] = step

    def _absent_version(
        self, step: ExecutionStep, name: str, versions: Mapping[str, str] | None
    ) -> str | None:
        """What consumers see of an output not produced (docs/dynamic.md): absent at the
        output's version, so a fan-in list or collector leaving it out has a version too. Under
        early cutoff, absent whatever the version (no data, so no data changed)."""
        if versions is None:
            return None
        if name in self._cutoff_of(step.node.path):
            return "data:absent"
        return "absent:" + versions[name]

    def _step_version(self, step: ExecutionStep) -> StepVersion | None:
        key = step.key
        if key in self._made:
            return self._made[key]
        made = self._made[key] = self.resolver.step_version(
            step, self._upstream, self._upstream_schema
        )
        return made

    def auto_pending(self, step: ExecutionStep) -> bool:
        """Whether ``step`` is an AUTO_VERSION op whose plan waits on an input's schema (a dry
        run, before that input is stored): its version now is no version any run will store."""
        made = self._step_version(step)
        return made is not None and made.node.code == AUTO_PENDING

    def recipe(self, step: ExecutionStep) -> Recipe | None:
        # built only when asked (recording an executed step, explain): a memoized step never is
        if step.key not in self._recipes:
            made = self._step_version(step)
            self._recipes[step.key] = made.recipe() if made is not None else None
        return self._recipes[step.key]

    def versions(self, step: ExecutionStep) -> dict[str, str] | None:
        key = step.key
        if key in self._versions:
            return self._versions[key]
        made = self._step_version(step)
        found = made.output_versions(tuple(step.op_def.outs)) if made is not None else None
        if (
            found is not None
            and self.enabled
            and self.fresh.mode == "ignore_fresh_input"
            and step.op_def.data_version is not None
        ):
            found = self._ignoring_data_version(step, made) or found
        self._versions[key] = found
        return found

    def _ignoring_data_version(self, step: ExecutionStep, made: Any) -> dict[str, str] | None:
        """``ignore_fresh_input``: the versions of the newest stored output of ``step`` whose
        recipe differs at most in its declared data version."""
        outputs = self._outputs_of(step)
        if not outputs:
            return None
        keys = {name: key for name, _, key in outputs}
        return ignoring_data_version(
            made,
            tuple(keys),
            self.stored_versions_of(step, outputs[0][0]),
            lambda name, version: (keys[name], version) in self._entries,
        )

    def hash_outputs(self, step: ExecutionStep) -> frozenset[str]:  # type: ignore[override]
        if self.versions(step) is None:
            return frozenset()
        return self._cutoff_of(step.node.path)

    # -- stored? -------------------------------------------------------------------------------

    def stored(self, step: ExecutionStep) -> list[Address] | None:
        versions = self.versions(step)
        if versions is None or step.key in self._distrusted:
            return None
        if self.fresh.forced(step):
            if self.pin:
                self._decided(step, versions, None)
            return None
        if step.op_def.tags.get(LAZY_TAG) == "true":
            # a lazy task's body always runs: its table store decides from what it returns
            # whether anything executes (docs/tables.md, "Lazy SQL tasks")
            return None
        found: list[Address] = []
        absent: list[str] = []
        for name, out, key in self._outputs_of(step):
            addresses = self._stored_output(step, name, out, versions[name], key)
            if addresses is None:
                if self.pin:
                    self._decided(step, versions, None)
                return None
            if not addresses and not out.is_dynamic:
                absent.append(name)  # stored as not yielded at this version
            found.extend(addresses)
        if found and (
            not self._verified(step, found)
            or (
                self._external_possible
                and any(self.fresh.changed_outside(a, step.op_def) for a in found)
            )
        ):
            if self.pin:
                self._decided(step, versions, None)
            return None
        if self.pin:
            self._decided(step, versions, found)
        cutoff = self._cutoff_of(step.node.path)
        effective = self._effective
        step_key = step.key
        for name in absent:
            marker = self._absent_version(step, name, versions)
            if marker is not None:
                effective[(step_key, name, None)] = marker
        for address in found:
            out_key = (step_key, address.output_name, address.mapping_key)
            if address.serializer == "table" or address.serializer == INLINE:
                self._tables.note(out_key, address)
                table_version = self._effective_version(step_key, address)
                if table_version is not None:
                    effective[out_key] = table_version
            elif address.data_hash and address.output_name in cutoff:
                effective[out_key] = "data:" + address.data_hash
            elif address.version is not None:
                effective[out_key] = address.version
        return found

    def _verified(self, step: ExecutionStep, found: list[Address]) -> bool:
        """Whether every indexed output in ``found`` is still there as written: one stat each
        (``IOManager.verify``); outputs nothing in the job reads are also read and hashed, since
        no consumer's load would notice they were altered. A failure is noted for the run's log."""
        leaf = step.node.path not in self._consumed_paths()
        for address in found:
            if address.serializer in _NO_DATA:
                continue
            manager = self.io_managers.get(address.io_manager_key)
            if not _indexed(manager):
                continue
            # a final output's hash is checked only up to a bound: a memoized run stays cheap,
            # and larger ones are checked when they are loaded (``output_for_node``)
            deep = leaf and address.size is not None and address.size <= FINAL_HASH_LIMIT
            try:
                problem = manager.verify(address, read=deep)  # type: ignore[union-attr]
            except Exception as exc:  # an unreachable store: not something a run may reuse
                problem = f"cannot be checked: {type(exc).__name__}: {exc}"
            if problem:
                self._lost_notices.append(
                    f"{address.describe()} cannot be reused ({problem}); "
                    f"recomputing step '{step.key}'"
                )
                self._distrusted.add(step.key)
                return False
        return True

    def _consumed_paths(self) -> frozenset[str]:
        """The node paths some node reads from: taken from the nodes' wiring, since clones and
        collectors are made at run time and never are in ``plan.steps``."""
        found = self._consumed
        if found is None:
            paths: set[str] = set()
            for node in self.plan.nodes.values():
                for source in node.inputs.values():
                    if isinstance(source, NodeSource):
                        paths.add(source.node)
                    elif isinstance(source, ListSource):
                        paths.update(member.node for member in source.members)
            found = self._consumed = frozenset(paths)
        return found

    def forget(self, step: ExecutionStep) -> None:
        versions = self.versions(step)
        if versions is None:
            return
        pairs = [(key, versions[name]) for name, _, key in self._outputs_of(step)]
        self.instance.delete_index_entries(pairs)
        for pair in pairs:
            self._entries.pop(pair, None)

    def distrust(self, step_key: str, consumers: Iterable[str] = ()) -> None:
        self._distrusted.add(step_key)
        for key in consumers:
            self._made.pop(key, None)
            self._versions.pop(key, None)
            self._recipes.pop(key, None)

    def _decided(
        self, step: ExecutionStep, versions: Mapping[str, str], found: list[Address] | None
    ) -> None:
        """Note for the next ``settle`` whether ``step`` runs (``found`` None: its pins on the
        old versions can go) or reuses what it found (they stay until the run ends: a memoized
        step costs no pin write beyond the read's)."""
        keys = []
        for name, out, key in self._outputs_of(step):
            keys.append(key)
            entry = self._entries.get((key, versions[name]))
            if out.is_dynamic and entry is not None:
                pieces = (entry.recipe or {}).get("manifest", [])
                keys.extend(self._key(step, name, k) for k, _ in pieces)
        for key in keys:
            if found is None:
                self._unpin[key] = None
            else:
                self._unpin.pop(key, None)  # decided again (the claim read it): it is reused

    def settle(self) -> float | None:
        """Give up, at most every ``RELEASE_LEASES_SECONDS``, the leases of steps whose outcome
        is recorded (runs waiting for them look again as often), and at the run's first
        decisions, then every ``NARROW_PINS_SECONDS``, the pins on outputs of steps that run
        (gc may take their old versions while a long run goes on): one transaction for both,
        none when nothing is due. A claim gives released leases up on its way, too.

        Returns:
            Seconds until leases given up meanwhile are due (the engine waits no longer).
        """
        now = time.monotonic()
        narrow = bool(self._unpin) and now >= self._next_narrowing
        release = bool(self._released_leases) and now >= self._next_release
        if narrow or release:
            unpin = list(self._unpin) if narrow else []
            leases = self._released_leases if release else []
            if narrow:
                self._unpin = {}
                self._next_narrowing = now + NARROW_PINS_SECONDS
            if release:
                self._released_leases = []
                self._next_release = now + RELEASE_LEASES_SECONDS
            self.instance.settle_pins(self.run_id, [], unpin, leases)
        return max(0.0, self._next_release - now) if self._released_leases else None

    # -- leases: one live run computes a version, the others wait for it -----------------------

    @property
    def shares_work(self) -> bool:  # type: ignore[override]
        return self.pin and self.enabled

    def claim(self, step: ExecutionStep) -> str | None:
        return self.claim_many([step]).get(step.key)

    def claim_many(
        self,
        steps: list[ExecutionStep],
        events: Sequence[Event] = (),
        index_entries: Sequence[IndexEntry] = (),
    ) -> dict[str, str]:
        """``claim`` for several ready steps in one transaction (the engine claims its ready
        queue ahead, not one write per step); the holders of those another run computes.
        ``events`` and ``index_entries`` are stored in that transaction (a chain step's outcome
        and its consumer's claim: one commit per step)."""
        if not (self.pin and self.enabled):
            if events or index_entries:
                self.instance.store_events(events, index_entries)
            return {}
        from memodag.storage.instance.records import Lease
        from memodag.storage.liveness import process_identity
        from memodag.versioning.leases import lease_expired

        if self._identity is None:
            self._identity = process_identity()
        now = time.time()
        leases: dict[str, tuple[ExecutionStep, Lease]] = {}
        keys: list[str] = []
        for step in steps:
            versions = self.versions(step)
            if versions is None or step.key in self._leases:
                continue
            outputs = self._outputs_of(step)
            lease_key = "step:" + hash_strings(*(f"{k}={versions[n]}" for n, _, k in outputs))
            leases[lease_key] = (
                step,
                Lease(lease_key, self.run_id, step.key, self._identity, now, now),
            )
            keys.extend(k for _, _, k in outputs)
        if not leases:
            if events or index_entries:
                self.instance.store_events(events, index_entries)
            return {}
        # leases of steps that ended since are given up in the same transaction
        released, self._released_leases = self._released_leases, []
        try:
            holders, entries = self.instance.claim_steps(
                [lease for _, lease in leases.values()],
                lease_expired,
                keys,
                released,
                events,
                index_entries,
            )
        except BaseException:
            self._released_leases[:0] = released  # not given up: the next write does
            raise
        # read with the leases: what a run stored before giving one up is seen now
        self._fetched.update(keys)
        for entry in entries:
            if entry.version_scheme == scheme.VERSION_SCHEME:
                self._remember(entry)
        waiting: dict[str, str] = {}
        for lease_key, (step, _) in leases.items():
            holder = holders.get(lease_key)
            if holder is None:
                self._leases[step.key] = lease_key
                if step.op_def.has_dynamic_output:
                    self._refresh_pieces(step)
            else:
                process = holder.process
                waiting[step.key] = (
                    f"run {holder.run_id[:8]} (pid {process.get('pid')} on {process.get('host')})"
                )
        return waiting

    def refresh(self, step: ExecutionStep) -> None:
        if not self.enabled:
            return
        self._fetch((key for _, _, key in self._outputs_of(step)), again=True)
        self._refresh_pieces(step)

    def _refresh_pieces(self, step: ExecutionStep) -> None:
        """Read again the pieces the stored manifests of ``step``'s fan-outs name."""
        for name, out, key in self._outputs_of(step):
            versions = self.versions(step) or {}
            entry = self._entries.get((key, versions.get(name, "")))
            if out.is_dynamic and entry is not None and entry.recipe:
                manifest = entry.recipe.get("manifest", [])
                self._fetch((self._key(step, name, k) for k, _ in manifest), again=True)

    def release(self, step: ExecutionStep) -> None:
        lease_key = self._leases.pop(step.key, None)
        if lease_key is not None:
            self._released_leases.append(lease_key)  # given up with the next ``settle``

    def stored_entry(self, step: ExecutionStep, name: str) -> IndexEntry | None:
        versions = self.versions(step)
        if versions is None:
            return None
        return self._entries.get((self._key(step, name), versions[name]))

    def _stored_output(
        self, step: ExecutionStep, name: str, out: Any, version: str, key: str
    ) -> list[Address] | None:
        manager = self.io_managers.get(out.io_manager_key)
        if out.is_dynamic:
            entry = self._entries.get((key, version))
            if entry is None or not entry.recipe or "manifest" not in entry.recipe:
                return None
            manifest = entry.recipe["manifest"]
            self._fetch(self._key(step, name, k) for k, _ in manifest)
            pieces = []
            for piece_key, piece in manifest:
                piece_entry = self._entries.get((self._key(step, name, piece_key), piece))
                if (
                    piece_entry is None
                    or piece_entry.address.io_manager_key != out.io_manager_key
                    or piece_entry.address.serializer == LOST
                ):
                    return None
                pieces.append(piece_entry.address)
            return pieces
        if _indexed(manager):
            entry = self._entries.get((key, version))
            if (
                entry is None
                or entry.address.io_manager_key != out.io_manager_key
                or entry.address.serializer == LOST
            ):
                return None
            if entry.address.serializer == ABSENT:
                return []  # an optional output the step chose not to yield at this version
            return [entry.address]
        if isinstance(manager, MemoizableIOManager):
            # what handle_output gets too: the manager's config, the run's resources, a log
            context = OutputContext(
                step.key,
                name,
                self.run_id,
                step.op_def,
                out,
                None,
                version,
                {},
                self.plan.run_config.resource_config.get(out.io_manager_key),
                self.resources,
                RunLogger(self.run_id, step.key, None),
            )
            if manager.has_output(context):
                return [
                    Address(
                        out.io_manager_key,
                        None,
                        manager.serializer_name(context),
                        self.run_id,
                        step.key,
                        name,
                        None,
                        version,
                    )
                ]
        return None

    def assume_recomputed(self, step: ExecutionStep) -> None:
        """Treat ``step`` as about to run: consumers see its code-derived versions (benchmarks
        time version computation alone with it; dry runs go through the engine instead)."""
        for name, version in (self.versions(step) or {}).items():
            self._effective[(step.key, name, None)] = version

    def manifest_pieces(
        self, step_key: str, op_def: Any, name: str, version: str
    ) -> list[tuple[str, str]] | None:
        """``(mapping key, piece version)`` of a dynamic output from the manifest stored at
        ``version``, if any: the pieces a re-run of a deterministic op yields (dry runs)."""
        key = self._key_for(step_key, op_def, name)
        self._fetch((key,))
        entry = self._entries.get((key, version))
        if entry is None or not entry.recipe or "manifest" not in entry.recipe:
            return None
        return [(piece_key, piece) for piece_key, piece in entry.recipe["manifest"]]

    def entry_at(self, step_key: str, op_def: Any, name: str, version: str) -> IndexEntry | None:
        """The index entry of one output at ``version``, if a run recorded one (dry runs read
        what a lazy task's body returned at this very version)."""
        key = self._key_for(step_key, op_def, name)
        self._fetch((key,))
        return self._entries.get((key, version))

    def stored_versions_of(self, step: ExecutionStep, name: str) -> list[IndexEntry]:
        """Every stored version of one output (``explain`` picks the closest recipe)."""
        fetched = self._fetched_entries
        for entry in fetched[self._grouped :]:
            self._by_key.setdefault(entry.output_key, []).append(entry)
        self._grouped = len(fetched)
        return list(self._by_key.get(self._key(step, name), ()))

    def resource_configs(self, step: ExecutionStep) -> dict[str, Any]:
        """The configs of the resources ``step`` requires, as kept in its recipe for ``explain``
        (secret-looking fields masked)."""
        keys = step.op_def.required_resource_keys
        found = self._resource_configs.get(keys)
        if found is None:  # once per run and set of keys: the same for every step needing them
            config = self.plan.run_config.resource_config
            found = {k: _masked(config_to_plain(config.get(k))) for k in sorted(keys)}
            self._resource_configs[keys] = found
        return found

    def code_parts_at(self, step: ExecutionStep, code: str) -> dict[str, str]:
        """What the op of a mapped ``step`` hashed at code version ``code``, if a run recorded
        it (one entry per mapped node and code version, not one per clone)."""
        key = self._code_parts_key(step)
        self._fetch((key,))
        entry = self._entries.get((key, code))
        parts = (entry.recipe or {}).get("code_parts") if entry is not None else None
        return dict(parts) if isinstance(parts, dict) else {}

    def _code_parts_key(self, step: ExecutionStep) -> str:
        return f"{self.job.name}/{step.node.path}#code"

    def _key(self, step: ExecutionStep, name: str, mapping_key: str | None = None) -> str:
        return self._key_for(step.key, step.op_def, name, mapping_key)

    def _key_for(
        self, step_key: str, op_def: Any, name: str, mapping_key: str | None = None
    ) -> str:
        """The index key of an output: job-scoped, and scoped by the identity of the io manager
        that stores it (definition, version, config), so changing where an output goes never
        finds what the old storage holds."""
        # a fan-out's pieces ask for one output's key thousands of times: its parts once
        parts = self._key_parts.get((step_key, name))
        if parts is None:
            io_key = op_def.outs[name].io_manager_key
            identity = self._manager_ids.get(io_key)
            if identity is None:
                manager = self.io_managers.get(io_key)
                where = manager.storage_identity() if manager is not None else ""
                identity = hash_strings(self.resolver.io_manager_identity(io_key), where)[:10]
                self._manager_ids[io_key] = identity
            parts = self._key_parts[(step_key, name)] = (
                output_key(self.job.name, step_key, name),
                identity,
            )
        base, identity = parts
        if mapping_key is None:
            return f"{base}@{identity}"
        return f"{base}[{mapping_key}]@{identity}"  # as ``output_key`` writes it

    # -- after a run ---------------------------------------------------------------------------

    def record(self, step: ExecutionStep, outcome: StepOutcome) -> list[IndexEntry]:
        versions = self._versions.get(step.key)
        now = time.time()
        entries: list[IndexEntry] = []
        recipe = self.recipe(step) if versions is not None else None
        recipe_dict = recipe.to_dict() if recipe is not None else None
        if recipe_dict is not None and step.op_def.required_resource_keys:
            recipe_dict["resource_configs"] = self.resource_configs(step)
        manifests: dict[str, list[list[str]]] = {}
        for stored in outcome.outputs:
            address = stored.address
            self._tables.note((step.key, address.output_name, address.mapping_key), address)
            effective = self._effective_version(step.key, address)
            if effective is not None:
                self._effective[(step.key, address.output_name, address.mapping_key)] = effective
            if versions is None or address.version is None:
                continue
            manager = self.io_managers.get(address.io_manager_key)
            persistent = _indexed(manager)
            if address.mapping_key is not None:
                manifests.setdefault(address.output_name, []).append(
                    [address.mapping_key, address.version]
                )
                if persistent:
                    entries.append(
                        IndexEntry(
                            self._key(step, address.output_name, address.mapping_key),
                            address.version,
                            address,
                            now,
                        )
                    )
            elif persistent:
                entries.append(
                    IndexEntry(
                        self._key(step, address.output_name),
                        address.version,
                        address,
                        now,
                        None,
                        recipe_dict,
                    )
                )
        produced = {stored.output_name for stored in outcome.outputs}
        for name, out in step.op_def.outs.items():
            if not out.is_dynamic and name not in produced:
                marker = self._absent_version(step, name, versions)
                if marker is not None:
                    self._effective[(step.key, name, None)] = marker
        if versions is not None:
            for name, out in step.op_def.outs.items():
                if (
                    not out.is_dynamic
                    and name not in produced
                    and _indexed(self.io_managers.get(out.io_manager_key))
                ):
                    # remember that this version yields nothing here, or the step never memoizes
                    absent = Address(
                        out.io_manager_key,
                        None,
                        ABSENT,
                        self.run_id,
                        step.key,
                        name,
                        None,
                        versions[name],
                    )
                    entries.append(IndexEntry(self._key(step, name), versions[name], absent, now))
                if out.is_dynamic and _indexed(self.io_managers.get(out.io_manager_key)):
                    manifest_address = Address(
                        out.io_manager_key,
                        None,
                        "manifest",
                        self.run_id,
                        step.key,
                        name,
                        None,
                        versions[name],
                    )
                    entries.append(
                        IndexEntry(
                            self._key(step, name),
                            versions[name],
                            manifest_address,
                            now,
                            None,
                            {**(recipe_dict or {}), "manifest": manifests.get(name, [])},
                        )
                    )
        if recipe is not None and step.mapping_keys and entries:
            entries.extend(self._code_parts_entry(step, recipe.code, now))
        for entry in entries:
            entry.version_scheme = scheme.VERSION_SCHEME
            self._remember(entry, fetched=False)
        return entries

    def _code_parts_entry(self, step: ExecutionStep, code: str, now: float) -> list[IndexEntry]:
        """Once per mapped node and code version: what its code hashes, so ``explain`` names
        the edited helper for clones too without a copy in every clone's recipe."""
        seen = (step.node.path, code)
        if seen in self._code_parts_recorded:
            return []
        self._code_parts_recorded.add(seen)
        parts = self.resolver.code_parts(step.op_def)
        if not parts:
            return []
        first = next(iter(step.op_def.outs.values()))
        address = Address(
            first.io_manager_key, None, CODE_PARTS, self.run_id, step.key, "", None, code
        )
        return [
            IndexEntry(
                self._code_parts_key(step), code, address, now, None, {"code_parts": dict(parts)}
            )
        ]


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "<masked>" if _SECRET_FIELD.search(str(k)) else _masked(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return redact_text(value) if isinstance(value, str) else value


def _indexed(manager: IOManager | None) -> bool:
    return manager is not None and manager.uses_instance_index


def build_memoizer(
    job: Any, plan: ExecutionPlan, tags: Mapping[str, str], instance: Any, run_id: str = ""
) -> IndexMemoizer:
    memoizer = IndexMemoizer(
        job, plan, instance, memoization_enabled(job, tags), run_id, pin=bool(run_id)
    )
    memoizer.check()
    return memoizer


__all__ = ["IndexMemoizer", "build_memoizer", "memoization_enabled", "output_key", "piece_version"]
