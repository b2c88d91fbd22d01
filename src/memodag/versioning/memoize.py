"""Memoization: the adapter the engine asks "is this step stored at its current version?".

Versions are computed lazily, when a step becomes ready, from its upstreams' *effective* versions
(the data hash where early cutoff applies, else the code-derived version). Stored outputs are
found in the instance's index, fetched in one batched query per batch of steps entering the run;
custom ``MemoizableIOManager``s answer ``has_output`` themselves. See docs/versioning.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from memodag.engine.engine import Memoizer
from memodag.errors import MemoizationError
from memodag.hashing import hash_strings, piece_version
from memodag.plan.dynamic import parse_step_key
from memodag.plan.plan import ExecutionPlan, ExecutionStep, StepOutputHandle
from memodag.runtime.step import StepOutcome
from memodag.storage.instance.records import IndexEntry
from memodag.storage.io_manager import Address, IOManager, MemoizableIOManager, OutputContext
from memodag.versioning import scheme
from memodag.versioning.resolve import Recipe, VersionResolver, output_version
from memodag.versioning.strategy import MEMOIZED_RUN_TAG

AddressKey = tuple[str, str, "str | None"]

ABSENT = "absent"  # the serializer of an index entry recording an optional output not yielded


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
        self, job: Any, plan: ExecutionPlan, instance: Any, enabled: bool, run_id: str = ""
    ) -> None:
        self.job = job
        self.plan = plan
        self.instance = instance
        self.enabled = enabled
        self.run_id = run_id
        self.resolver = VersionResolver(job, plan.run_config.resource_config, job.version_strategy)
        self.io_managers: Mapping[str, IOManager] = {}
        self._entries: dict[tuple[str, str], IndexEntry] = {}
        self._fetched: set[str] = set()
        self._recipes: dict[str, Recipe | None] = {}
        self._versions: dict[str, dict[str, str] | None] = {}
        self._effective: dict[AddressKey, str] = {}
        self._cutoff: dict[str, frozenset[str]] = {}
        self._manager_ids: dict[str, str] = {}
        self._older_scheme: set[str] = set()  # output keys with entries of another version scheme
        self._noticed = False

    # -- set-up --------------------------------------------------------------------------------

    def check(self) -> None:
        """With memoization on, every op needs a version: raise naming all that lack one."""
        if not self.enabled:
            return
        missing = self.resolver.unversioned_ops(self.plan.nodes.values())
        if missing:
            raise MemoizationError(
                f"memoized run of job '{self.job.name}': ops without a version: {missing}. Give each "
                "@op(version=...) or the job a version_strategy (e.g. SourceHashVersionStrategy())"
            )

    def attach_io_managers(self, io_managers: Mapping[str, IOManager]) -> None:
        self.io_managers = io_managers

    def note_addresses(self, addresses: Mapping[AddressKey, Address]) -> None:
        """Outputs this run did not compute (re-execution): their versions feed consumers."""
        for key, address in addresses.items():
            if address.version is not None:
                self._effective[key] = self._effective_version(key[0], address)

    def prepare(self, steps: Iterable[ExecutionStep]) -> None:
        if not self.enabled:
            return
        self._fetch(self._key(s, name) for s in steps for name in s.op_def.outs)

    def _fetch(self, keys: Iterable[str]) -> None:
        wanted = [k for k in keys if k not in self._fetched]
        if not wanted:
            return
        self._fetched.update(wanted)
        for entry in self.instance.entries_for_keys(wanted):
            if entry.version_scheme != scheme.VERSION_SCHEME:
                # computed another way: its version may mean something else now (scheme.py)
                self._older_scheme.add(entry.output_key)
                continue
            self._entries[(entry.output_key, entry.version)] = entry

    def notices(self) -> list[str]:
        """Once per run: some outputs seen so far are stored only by an older version scheme."""
        if self._noticed or not self._older_scheme:
            return []
        current = {key for key, _ in self._entries}
        if self._older_scheme <= current:
            return []
        self._noticed = True
        return [scheme.older_scheme_notice(self.job.name)]

    # -- versions ------------------------------------------------------------------------------

    def cutoff_outputs(self, step_key: str) -> frozenset[str]:
        path = parse_step_key(step_key)[0]
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

    def _effective_version(self, step_key: str, address: Address) -> str:
        if address.data_hash and address.output_name in self.cutoff_outputs(step_key):
            return "data:" + address.data_hash
        return address.version or ""

    def _upstream(self, handle: StepOutputHandle) -> str | None:
        return self._effective.get((handle.step_key, handle.output_name, handle.mapping_key))

    def recipe(self, step: ExecutionStep) -> Recipe | None:
        if step.key not in self._recipes:
            self._recipes[step.key] = self.resolver.recipe(step, self._upstream)
        return self._recipes[step.key]

    def versions(self, step: ExecutionStep) -> dict[str, str] | None:
        if step.key not in self._versions:
            recipe = self.recipe(step)
            if recipe is None:
                self._versions[step.key] = None
            else:
                step_version = recipe.step_version
                self._versions[step.key] = {
                    name: output_version(step_version, name) for name in step.op_def.outs
                }
        return self._versions[step.key]

    def hash_outputs(self, step: ExecutionStep) -> frozenset[str]:  # type: ignore[override]
        if self.versions(step) is None:
            return frozenset()
        return self.cutoff_outputs(step.key)

    # -- stored? -------------------------------------------------------------------------------

    def stored(self, step: ExecutionStep) -> list[Address] | None:
        versions = self.versions(step)
        if versions is None:
            return None
        found: list[Address] = []
        for name, out in step.op_def.outs.items():
            addresses = self._stored_output(step, name, out, versions[name])
            if addresses is None:
                return None
            found.extend(addresses)
        for address in found:
            self._effective[(step.key, address.output_name, address.mapping_key)] = (
                self._effective_version(step.key, address)
            )
        return found

    def stored_entry(self, step: ExecutionStep, name: str) -> IndexEntry | None:
        versions = self.versions(step)
        if versions is None:
            return None
        return self._entries.get((self._key(step, name), versions[name]))

    def _stored_output(
        self, step: ExecutionStep, name: str, out: Any, version: str
    ) -> list[Address] | None:
        key = self._key(step, name)
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
                if piece_entry is None or piece_entry.address.io_manager_key != out.io_manager_key:
                    return None
                pieces.append(piece_entry.address)
            return pieces
        if _indexed(manager):
            entry = self._entries.get((key, version))
            if entry is None or entry.address.io_manager_key != out.io_manager_key:
                return None
            if entry.address.serializer == ABSENT:
                return []  # an optional output the step chose not to yield at this version
            return [entry.address]
        if isinstance(manager, MemoizableIOManager):
            context = OutputContext(step.key, name, self.run_id, step.op_def, out, None, version)
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
        """Treat ``step`` as about to run (``list_versions``): consumers see its code versions."""
        for name, version in (self.versions(step) or {}).items():
            self._effective[(step.key, name, None)] = version

    def stored_versions_of(self, step: ExecutionStep, name: str) -> list[IndexEntry]:
        """Every stored version of one output (``explain`` compares with the newest)."""
        key = self._key(step, name)
        return [entry for (k, _), entry in self._entries.items() if k == key]

    def _key(self, step: ExecutionStep, name: str, mapping_key: str | None = None) -> str:
        """The index key of an output: job-scoped, and scoped by the identity of the io manager
        that stores it (definition, version, config), so changing where an output goes never
        finds what the old storage holds."""
        io_key = step.op_def.outs[name].io_manager_key
        identity = self._manager_ids.get(io_key)
        if identity is None:
            manager = self.io_managers.get(io_key)
            where = manager.storage_identity() if manager is not None else ""
            identity = hash_strings(self.resolver.io_manager_identity(io_key), where)[:10]
            self._manager_ids[io_key] = identity
        return f"{output_key(self.job.name, step.key, name, mapping_key)}@{identity}"

    # -- after a run ---------------------------------------------------------------------------

    def record(self, step: ExecutionStep, outcome: StepOutcome) -> list[IndexEntry]:
        versions = self._versions.get(step.key)
        now = time.time()
        entries: list[IndexEntry] = []
        recipe = self._recipes.get(step.key)
        recipe_dict = recipe.to_dict() if recipe is not None else None
        manifests: dict[str, list[list[str]]] = {}
        for stored in outcome.outputs:
            address = stored.address
            self._effective[(step.key, address.output_name, address.mapping_key)] = (
                self._effective_version(step.key, address)
            )
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
        if versions is not None:
            produced = {stored.output_name for stored in outcome.outputs}
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
        for entry in entries:
            entry.version_scheme = scheme.VERSION_SCHEME
            self._entries[(entry.output_key, entry.version)] = entry
        return entries


def _indexed(manager: IOManager | None) -> bool:
    return manager is not None and manager.uses_instance_index


def build_memoizer(
    job: Any, plan: ExecutionPlan, tags: Mapping[str, str], instance: Any, run_id: str = ""
) -> IndexMemoizer:
    memoizer = IndexMemoizer(job, plan, instance, memoization_enabled(job, tags), run_id)
    memoizer.check()
    return memoizer


__all__ = ["IndexMemoizer", "build_memoizer", "memoization_enabled", "output_key", "piece_version"]
