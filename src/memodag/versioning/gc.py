"""``collect_garbage``: drop stored outputs no run worth keeping still points at, and the files
runs never recorded (orphans), through the io manager that stored each of them.

An output is kept when one of the newest ``keep_runs`` runs produced or reused it (its address
is in that run's events), or when it was stored after ``older_than``. Everything else goes: its
index entry, then its data, deleted by ``IOManager.delete``. Dry run by default. The index entry
is deleted before the data, so a crash in between leaves an orphan, never a dangling entry.

Which io manager: one built from a job the caller supplies (``jobs``: the run's job, its
resource definition for the address's key, the run's resource config), else a built-in path
manager rebuilt from the address (a file path, ``memory://`` or ``s3://`` URI recorded with a
serializer, which only path managers record). An output whose manager cannot be had is reported
in ``GcReport.unavailable`` and kept: gc never unlinks what it cannot attribute to a manager.

Orphans are files under a run's folder (the run-keyed layout of the path managers) that no
recorded address names: attempts killed before their outcome was recorded, attempts that
failed, temporary files of interrupted writes. They go once their run has ended or its process
is known dead, never while it may still be writing. See docs/storage.md, "Garbage collection".
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from memodag.storage.io_manager import Address, IOManager, can_delete
from memodag.storage.io_managers.files import (
    LocalFileStore,
    PathIOManager,
    base_of,
)
from memodag.storage.liveness import process_alive
from memodag.versioning.memoize import ABSENT, CODE_PARTS

_OBJECT_STORE_PROTOCOLS = ("s3", "s3a")
#: index rows the memoizer writes that hold no data (a dynamic output's manifest, an optional
#: output not yielded, what a mapped op's code hashes: ``versioning.memoize``): left as they are
_METADATA_SERIALIZERS = frozenset({"manifest", ABSENT, CODE_PARTS})


@dataclass(frozen=True)
class GcItem:
    """One stored output (or orphan file) that gc drops, would drop, or must keep (``reason``)."""

    uri: str | None
    step_key: str
    output_name: str
    run_id: str
    created_at: float | None
    size_bytes: int | None
    index_key: tuple[str, str] | None = None
    io_manager_key: str = ""
    #: a file under a run's folder that no recorded address names
    orphan: bool = False
    #: for an item gc keeps: why it cannot delete it
    reason: str = ""


@dataclass
class GcReport:
    items: list[GcItem] = field(default_factory=list)
    kept: int = 0
    dry_run: bool = True
    errors: list[str] = field(default_factory=list)
    #: outputs gc would drop but keeps: their io manager cannot be had, or cannot delete
    unavailable: list[GcItem] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(i.size_bytes or 0 for i in self.items)


class _Gone(IOManager):
    """What a ``memory://`` address points at after its process ended: nothing to delete."""

    def handle_output(self, context: Any, obj: Any) -> None:
        raise NotImplementedError

    def load_input(self, context: Any) -> Any:
        raise NotImplementedError

    def exists(self, address: Address) -> bool:
        return False

    def delete(self, address: Address) -> None:
        pass


class _Managers:
    """Finds the io manager that stored an address, building each one once for the whole gc."""

    def __init__(self, instance: Any, jobs: Mapping[str, Any], stack: contextlib.ExitStack):
        self.instance = instance
        self.jobs = jobs
        self.stack = stack
        self._built: dict[str, IOManager | str] = {}
        #: path managers seen, by (kind, base): whose run folders gc scans for orphans
        self.path_managers: dict[tuple[str, str], PathIOManager] = {}
        # the default fs_io_manager's folder: a run killed before recording any output of its
        # own is found there
        self._remember(PathIOManager(LocalFileStore(), str(instance.storage_dir)))

    def for_address(self, address: Address, run: Any) -> IOManager | str:
        """The manager, or why there is none (a message naming the key and the way out)."""
        job = self.jobs.get(run.job_name) if run is not None else None
        key = address.io_manager_key
        if job is not None and key in job.resource_defs:
            return self._from_job(job, key, run)
        uri = address.uri or ""
        if uri.startswith("memory://"):
            return _GONE  # its process ended: nothing is left to delete
        if address.serializer is None or not uri:
            job_name = run.job_name if run is not None else "?"
            return (
                f"io manager '{key}' of job '{job_name}' is not a built-in path io manager; "
                "give gc the job that defines it: memodag gc -f FILE.py"
            )
        protocol = uri.split("://", 1)[0].lower() if "://" in uri else "file"
        if protocol == "file":
            path = uri.removeprefix("file://")
            found = base_of(address, path)
            base, versioned = found if found else ("", False)
            return self._path_manager(
                f"file:{base}:{versioned}",
                lambda: PathIOManager(LocalFileStore(), base, versioned=versioned),
            )
        if protocol in _OBJECT_STORE_PROTOCOLS:
            return self._object_store(address, run, protocol, uri)
        return (
            f"io manager '{key}' stored {uri!r}, a {protocol}:// URI gc does not know; "
            "give gc the job that defines it: memodag gc -f FILE.py"
        )

    def _path_manager(self, cache_key: str, make: Any) -> IOManager | str:
        built = self._built.get(cache_key)
        if built is None:
            try:
                built = make()
            except Exception as exc:
                built = f"cannot rebuild the io manager: {type(exc).__name__}: {exc}"
            self._built[cache_key] = built
            self._remember(built)
        return built

    def _remember(self, manager: Any) -> None:
        if isinstance(manager, PathIOManager) and not manager.versioned and manager.base:
            if isinstance(manager.store, LocalFileStore):
                key = ("file", os.path.realpath(manager.base))
            else:
                key = (getattr(manager.store, "protocol", "object"), manager.base)
            self.path_managers.setdefault(key, manager)

    def _object_store(self, address: Address, run: Any, protocol: str, uri: str) -> Any:
        from memodag.storage.io_managers.object_store import make_object_store_manager

        bucket = uri.split("://", 1)[1].split("/", 1)[0]
        # the run's own config for this key carries the endpoint and credentials, if any
        config = _run_resource_config(run, address.io_manager_key)
        options = config.get("storage_options") if isinstance(config, Mapping) else None
        options = dict(options) if isinstance(options, Mapping) else {}
        path = uri.split("://", 1)[1]
        found = base_of(address, "/" + path)
        base, versioned = found if found else ("/" + bucket, False)
        base_url = f"{protocol}://{base.lstrip('/')}"
        cache_key = f"{base_url}:{versioned}:{json.dumps(options, sort_keys=True, default=str)}"
        return self._path_manager(
            cache_key,
            lambda: make_object_store_manager(base_url, options, versioned=versioned),
        )

    def _from_job(self, job: Any, key: str, run: Any) -> IOManager | str:
        from memodag.plan.run_config import _resolve_resources
        from memodag.runtime.resources import initialized_resources

        errors: list[str] = []
        section = (run.run_config or {}).get("resources") or {}
        config = _resolve_resources(job, section, errors)
        cache_key = f"job:{job.name}:{key}:{json.dumps(config, sort_keys=True, default=str)}"
        built = self._built.get(cache_key)
        if built is not None:
            return built
        mine = [e for e in errors if e.startswith(f"resources.{key}")]
        if mine:
            built = f"io manager '{key}' of job '{job.name}': run config no longer valid: {mine[0]}"
        else:
            try:
                resources = self.stack.enter_context(
                    initialized_resources(
                        job.resource_defs, config, {key}, self.instance, run.run_id
                    )
                )
                value = getattr(resources, key)
                built = (
                    value
                    if isinstance(value, IOManager)
                    else f"resource '{key}' of job '{job.name}' is not an io manager"
                )
            except Exception as exc:
                built = f"io manager '{key}' of job '{job.name}' failed to build: {exc}"
        self._built[cache_key] = built
        self._remember(built)
        return built


_GONE = _Gone()


def _run_resource_config(run: Any, key: str) -> Any:
    if run is None:
        return None
    resources = (run.run_config or {}).get("resources") or {}
    entry = resources.get(key) if isinstance(resources, Mapping) else None
    return entry.get("config") if isinstance(entry, Mapping) else None


def _identity(address: Address) -> tuple[Any, ...]:
    """What names one stored thing: its URI, or for managers that give none, the output."""
    if address.uri:
        return (address.uri,)
    return (
        address.io_manager_key,
        address.run_id,
        address.step_key,
        address.output_name,
        address.mapping_key,
    )


def _size(manager: IOManager, uri: str | None) -> int | None:
    """The stored size, for the report only: None when the store cannot say."""
    if not isinstance(manager, PathIOManager) or not uri:
        return None
    try:
        return manager.store.size(manager.store.path_of(uri))
    except Exception:  # a report detail must not stop gc (an object store's own errors)
        return None


def run_is_over(instance: Any, run: Any) -> bool:
    """Whether ``run`` has ended, or is recorded as started by a process known to be gone.

    A started run whose process cannot be checked (another host, a run recorded before memodag
    kept its process) counts as live: gc leaves its files alone.
    """
    from memodag.storage.instance.records import EventType, RunStatus

    if run.status is not RunStatus.STARTED:
        return True
    starts = instance.get_events(run.run_id, [EventType.RUN_START])
    identity = starts[0].data.get("process") if starts else None
    return process_alive(identity) is False


def collect_garbage(
    instance: Any,
    keep_runs: int | None = None,
    older_than: float | None = None,
    dry_run: bool = True,
    jobs: Mapping[str, Any] | None = None,
) -> GcReport:
    """Find (and unless ``dry_run``, delete) stored outputs not reachable from the newest
    ``keep_runs`` runs, or stored before ``older_than`` (a UNIX timestamp), and orphan files of
    runs that are over. With both, an output must fail both tests to go.

    Args:
        jobs: job name -> ``JobDefinition``; outputs of runs of these jobs are deleted through
            the job's own io managers (custom managers, table stores), built with the run's
            resource config. Without them, only built-in path managers are rebuilt.
    """
    if keep_runs is None and older_than is None:
        raise ValueError("collect_garbage needs keep_runs and/or older_than")
    with contextlib.ExitStack() as stack:
        managers = _Managers(instance, jobs or {}, stack)
        return _collect(instance, managers, keep_runs, older_than, dry_run)


def _collect(
    instance: Any,
    managers: _Managers,
    keep_runs: int | None,
    older_than: float | None,
    dry_run: bool,
) -> GcReport:
    runs = instance.get_runs(limit=1_000_000)
    runs.sort(key=lambda r: r.start_time or 0, reverse=True)
    runs_by_id = {r.run_id: r for r in runs}
    addresses_of = {r.run_id: instance.get_output_addresses(r.run_id) for r in runs}
    kept_runs = runs[:keep_runs] if keep_runs is not None else []
    keep: set[tuple[Any, ...]] = set()
    for run in kept_runs:
        keep.update(_identity(a) for a in addresses_of[run.run_id].values())

    def reachable(address: Address, created_at: float | None) -> bool:
        if keep_runs is not None and _identity(address) in keep:
            return True
        return bool(older_than is not None and (created_at is None or created_at >= older_than))

    report = GcReport(dry_run=dry_run)
    # (item, its address, its manager), for what gc drops
    dropping: dict[tuple[Any, ...], tuple[GcItem, Address, IOManager]] = {}
    indexed: set[tuple[Any, ...]] = set()  # judged by their index entry's time, not a run's

    def consider(address: Address, created_at: float | None, index_key: Any) -> None:
        ident = _identity(address)
        run = runs_by_id.get(address.run_id)
        manager = managers.for_address(address, run)
        item = GcItem(
            address.uri,
            address.step_key,
            address.output_name,
            address.run_id,
            created_at,
            None,
            index_key,
            address.io_manager_key,
        )
        if isinstance(manager, str) or not can_delete(manager):
            reason = (
                manager
                if isinstance(manager, str)
                else f"io manager '{address.io_manager_key}' ({type(manager).__name__}) "
                "does not implement delete()"
            )
            report.unavailable.append(_replace(item, reason=reason))
            return
        if index_key is None:
            # an address only a run's events name: drop it only if something is there
            try:
                if not manager.exists(address):
                    return
            except NotImplementedError:
                pass
            except Exception as exc:
                report.errors.append(f"{address.uri or ident}: {type(exc).__name__}: {exc}")
                return
        dropping[ident] = (_replace(item, size_bytes=_size(manager, address.uri)), address, manager)

    for entry in instance.index_entries():
        if entry.address.uri is None and entry.address.serializer in _METADATA_SERIALIZERS:
            continue
        ident = _identity(entry.address)
        indexed.add(ident)
        if reachable(entry.address, entry.created_at):
            report.kept += 1
            continue
        consider(entry.address, entry.created_at, (entry.output_key, entry.version))
    kept_ids = {r.run_id for r in kept_runs}
    for run in runs:
        if run.run_id in kept_ids:
            continue
        for address in addresses_of[run.run_id].values():
            ident = _identity(address)
            if ident in indexed or ident in dropping or reachable(address, run.start_time):
                continue
            consider(address, run.start_time, None)
    report.unavailable = _unique(report.unavailable)

    orphans = _orphans(instance, runs, addresses_of, indexed, managers)
    items = sorted((i for i, _, _ in dropping.values()), key=lambda i: (i.created_at or 0, i.uri))
    report.items = items + [item for item, _ in orphans]
    if not dry_run:
        instance.delete_index_entries(i.index_key for i in items if i.index_key)
        for item, address, manager in dropping.values():
            _attempt(report, item, lambda m=manager, a=address: m.delete(a))
        for item, path_manager in orphans:
            _attempt(report, item, lambda m=path_manager, u=item.uri: m.delete_uri(u or ""))
    return report


def _replace(item: GcItem, **changes: Any) -> GcItem:
    from dataclasses import replace

    return replace(item, **changes)


def _unique(items: list[GcItem]) -> list[GcItem]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for item in items:
        key = (item.uri, item.run_id, item.step_key, item.output_name)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _attempt(report: GcReport, item: GcItem, delete: Any) -> None:
    try:
        delete()
    except FileNotFoundError:
        pass
    except Exception as exc:
        where = item.uri or f"{item.step_key}.{item.output_name} (run {item.run_id[:8]})"
        report.errors.append(f"{where}: {type(exc).__name__}: {exc}")


def _orphans(
    instance: Any,
    runs: list[Any],
    addresses_of: Mapping[str, Mapping[Any, Address]],
    indexed: set[tuple[Any, ...]],
    managers: _Managers,
) -> list[tuple[GcItem, PathIOManager]]:
    """Files under the run folders of runs that are over that no recorded address names."""
    recorded = set(indexed)
    for addresses in addresses_of.values():
        recorded.update(_identity(a) for a in addresses.values())
    found: list[tuple[GcItem, PathIOManager]] = []
    for run in runs:
        if not run_is_over(instance, run):
            continue
        for manager in list(managers.path_managers.values()):
            for uri in _run_files(manager, run.run_id):
                if (uri,) in recorded:
                    continue
                name = os.path.basename(uri)
                item = GcItem(
                    uri, name, "", run.run_id, run.start_time, _size(manager, uri), orphan=True
                )
                found.append((item, manager))
    return found


def _run_files(manager: PathIOManager, run_id: str) -> Iterator[str]:
    try:
        yield from manager.run_files(run_id)
    except (OSError, ValueError):
        return
