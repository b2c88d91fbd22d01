"""``collect_garbage``: drop stored outputs no run worth keeping still points at, and the files
runs never recorded (orphans), through the io manager that stored each of them.

An output is kept when one of the newest ``keep_runs`` runs, a run still live, or (with
``older_than``) a run started since, or an ancestor of any of them that is a re-execution,
produced or reused it (its address is in that run's events), or when it was stored after
``older_than``, or when a live run pinned it (``gc_pins``). Everything else goes: its index
entry, in one transaction that spares what is pinned, then its data, deleted by
``IOManager.delete``. Dry run by default. The index entry is deleted before the data, so a crash
in between leaves an orphan, never a dangling entry.

One stored file is judged once, whatever names it: every index entry and run event naming it
(the versioned layout is not scoped by job, so jobs sharing an op and version share a file), by
any spelling (a relative path, a symlinked folder: compared by real path). It goes only when all
of them are unreachable, and then all the index entries naming it go with it.

Which io manager: one built from a job the caller supplies (``jobs``: the run's job, its
resource definition for the address's key, the run's resource config), else a built-in path
manager rebuilt from the address (a file path, ``memory://`` or ``s3://`` URI recorded with a
serializer, which only path managers record). An output whose manager cannot be had is reported
in ``GcReport.unavailable`` and kept: gc never unlinks what it cannot attribute to a manager.

Orphans are files under a run's folder (the run-keyed layout of the path managers) that no
recorded address of any run names, by real path or by their ``<run_id>/<name>`` tail: attempts killed before their outcome was recorded, attempts that
failed, temporary files of interrupted writes. They go once their run has ended or its process
is known dead, never while it may still be writing. See docs/storage.md, "Garbage collection".
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from memodag.storage.instance.records import Lease
from memodag.storage.io_manager import Address, IOManager, can_delete
from memodag.storage.io_managers.files import (
    LocalFileStore,
    PathIOManager,
    base_of,
)
from memodag.storage.liveness import process_alive, process_identity
from memodag.versioning.gc_pins import (
    GC_LEASE,
    RECHECK_EVERY,
    PinnedSpare,
    indexed_again,
    lineage,
    pin_runs,
    unreachable_manifests,
)
from memodag.versioning.memoize import ABSENT, CODE_PARTS, LOST

__all__ = ["GC_LEASE", "GcItem", "GcReport", "collect_garbage", "pin_runs", "run_is_over"]

_OBJECT_STORE_PROTOCOLS = ("s3", "s3a")
#: how a table store's addresses begin (``memodag.tables.io_manager.TableAddress``)
_TABLE_PREFIX = "table:"
#: what names a stored file: an address, when it was stored (or its run started), and the
#: ``(output_key, version)`` of its index entry (None: only a run's events name it)
_Namer = tuple[Address, float | None, tuple[str, str] | None]
#: index rows the memoizer writes that hold no data (a dynamic output's manifest, an optional
#: output not yielded, what a mapped op's code hashes: ``versioning.memoize``): left as they are
_METADATA_SERIALIZERS = frozenset({"manifest", ABSENT, CODE_PARTS, LOST})


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
    #: fan-out manifests (index rows without data) dropped with their pieces
    manifests: int = 0

    @property
    def total_bytes(self) -> int:
        """Bytes freed: a file several index entries share is counted once."""
        seen: set[str] = set()
        total = 0
        for item in self.items:
            if item.uri is not None:
                if item.uri in seen:
                    continue
                seen.add(item.uri)
            total += item.size_bytes or 0
        return total


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
        if uri.startswith(_TABLE_PREFIX):
            # a table in a database, not a file: only the job's table store may drop it (and
            # it keeps what a committed stage shows)
            job_name = run.job_name if run is not None else "?"
            return (
                f"a table of job '{job_name}' (io manager '{key}'); give gc the code that "
                "defines the job: memodag gc -f FILE.py"
            )
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


def _local_path(uri: str) -> str | None:
    """The local file a recorded URI names (a plain path or ``file://``), None for other stores."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return None if "://" in uri else uri


class _Places:
    """Names each stored file once whatever spelling recorded it: a local path by its real
    folder (relative paths and symlinked folders resolved), any other URI as it is.

    Only folders are resolved, each once: an output's own name is what gc would unlink.
    """

    def __init__(self) -> None:
        self._real_folders: dict[str, str] = {}

    def real_path(self, path: str) -> str:
        folder, name = os.path.split(os.path.abspath(path))
        real = self._real_folders.get(folder)
        if real is None:
            real = self._real_folders[folder] = os.path.realpath(folder)
        return os.path.join(real, name)

    def of_uri(self, uri: str) -> tuple[str, ...]:
        local = _local_path(uri)
        return ("file", self.real_path(local)) if local is not None else (uri,)

    def of(self, address: Address) -> tuple[Any, ...]:
        return self.of_uri(address.uri) if address.uri else _identity(address)


def _tails(uri: str) -> tuple[str, str]:
    """The last two and three parts of a recorded path: ``<run_id>/<name>`` and, for a piece of
    a fan-out, ``<run_id>/<name>/<piece>``, whatever base folder and spelling precede them."""
    path = _local_path(uri)
    parts = (uri.split("://", 1)[-1] if path is None else path).replace(os.sep, "/").split("/")
    return "/".join(parts[-2:]), "/".join(parts[-3:])


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
    # the index first, runs and their events after: an entry recorded meanwhile is not judged,
    # and every entry judged has the events that recorded it (same transaction) in what follows
    index = instance.index_entries()
    runs = instance.get_runs(limit=1_000_000)
    runs.sort(key=lambda r: r.start_time or 0, reverse=True)
    runs_by_id = {r.run_id: r for r in runs}
    addresses_of = {r.run_id: instance.get_output_addresses(r.run_id) for r in runs}
    over = {r.run_id: run_is_over(instance, r) for r in runs}
    places = _Places()
    # roots: the newest ``keep_runs``, every run not over (it may still load what it reused or
    # made), and with ``older_than`` every run started since (what it read was used since)
    roots = list(runs[:keep_runs]) if keep_runs is not None else []
    roots += [r for r in runs if not over[r.run_id]]
    if older_than is not None:
        roots += [r for r in runs if (r.start_time or 0) >= older_than]
    kept_run_ids: set[str] = set()
    keep: set[tuple[Any, ...]] = set()
    for run in roots:
        # a kept re-execution may have loaded any output of its ancestors (and a re-execution
        # of it will): they stay with it
        for ancestor in lineage(run, runs_by_id):
            if ancestor.run_id not in kept_run_ids:
                kept_run_ids.add(ancestor.run_id)
                keep.update(places.of(a) for a in addresses_of.get(ancestor.run_id, {}).values())

    def reachable(place: tuple[Any, ...], created_at: float | None) -> bool:
        if place in keep:
            return True
        return bool(older_than is not None and (created_at is None or created_at >= older_than))

    report = GcReport(dry_run=dry_run)
    # per stored file gc drops: (an item per index entry naming it, the address to delete it
    # by, its manager)
    dropping: dict[tuple[Any, ...], tuple[list[GcItem], Address, IOManager]] = {}

    def consider(place: tuple[Any, ...], namers: list[_Namer]) -> None:
        """Drop the file every one of ``namers`` (address, time, index key) names, through the
        first of their managers that can delete it; with none, report them all and keep it."""
        items = [
            GcItem(a.uri, a.step_key, a.output_name, a.run_id, t, None, key, a.io_manager_key)
            for a, t, key in namers
        ]
        chosen: tuple[Address, IOManager] | None = None
        reasons: list[str] = []
        for address, _, _ in namers:
            manager = managers.for_address(address, runs_by_id.get(address.run_id))
            if not isinstance(manager, str) and can_delete(manager):
                chosen = address, manager
                break
            reasons.append(
                manager
                if isinstance(manager, str)
                else f"io manager '{address.io_manager_key}' ({type(manager).__name__}) "
                "does not implement delete()"
            )
        if chosen is None:
            report.unavailable.extend(
                _replace(item, reason=reason) for item, reason in zip(items, reasons, strict=True)
            )
            return
        address, manager = chosen
        try:
            kept_by_store = manager.keeps(address)
        except Exception as exc:  # cannot tell: keep it rather than drop a live entry
            report.errors.append(f"{address.uri or place}: {type(exc).__name__}: {exc}")
            return
        if kept_by_store:
            # the store would not delete it (a committed stage shows it): its entries stay
            report.kept += sum(1 for _, _, key in namers if key is not None)
            return
        if namers[0][2] is None:
            # an address only runs' events name: drop it only if something is there
            try:
                if not manager.exists(address):
                    return
            except NotImplementedError:
                pass
            except Exception as exc:
                report.errors.append(f"{address.uri or place}: {type(exc).__name__}: {exc}")
                return
            items = items[:1]  # one file, named by several runs: one line
        size = _size(manager, address.uri)
        dropping[place] = ([_replace(i, size_bytes=size) for i in items], address, manager)

    # index entries, grouped by the file they name: judged by their entries' times
    indexed: dict[tuple[Any, ...], list[_Namer]] = {}
    manifests: list[Any] = []
    created: dict[tuple[str, str], float] = {}
    for entry in index:
        created[(entry.output_key, entry.version)] = entry.created_at
        if entry.address.uri is None and entry.address.serializer in _METADATA_SERIALIZERS:
            if entry.address.serializer == "manifest":
                manifests.append(entry)
            continue
        namer = (entry.address, entry.created_at, (entry.output_key, entry.version))
        indexed.setdefault(places.of(entry.address), []).append(namer)
    for place, namers in indexed.items():
        if any(reachable(place, created_at) for _, created_at, _ in namers):
            report.kept += len(namers)
        else:
            consider(place, namers)
    # what only runs' events name, grouped the same way: judged by the times of those runs
    named: dict[tuple[Any, ...], list[_Namer]] = {}
    for run in runs:
        for address in addresses_of[run.run_id].values():
            place = places.of(address)
            if place not in indexed:
                named.setdefault(place, []).append((address, run.start_time, None))
    for place, namers in named.items():
        if not any(reachable(place, started) for _, started, _ in namers):
            consider(place, namers)
    report.unavailable = _unique(report.unavailable)
    dropped_manifests = unreachable_manifests(
        manifests, dropping, created, kept_run_ids, older_than
    )

    # what live runs pinned (read from the index, or an ancestor a re-execution loads from)
    # stays, whatever the walk above decided: judged again where no pin can slip in between
    place_of_pair = {
        key: place
        for place, (group, _, _) in dropping.items()
        for i in group
        if (key := i.index_key) is not None
    }
    spare = PinnedSpare(runs_by_id, over, addresses_of, places, place_of_pair, dropped_manifests)
    spare.note_event_only(
        {place: [a for a, _, _ in named[place]] for place in dropping if place in named}
    )
    spared_places = spare.places

    entries = [(key[0], key[1], created[key]) for key in place_of_pair] + [
        (e.output_key, e.version, e.created_at) for e in dropped_manifests
    ]
    lease = None
    if dry_run:
        deleted = set(_pairs(entries)) - spare(instance.pins())
    else:
        now = time.time()
        lease = Lease(GC_LEASE, f"gc-{os.getpid()}-{now}", None, process_identity(), now, now)
        deleted = set(instance.delete_unpinned_index_entries(entries, spare, lease))
    try:
        for place in list(dropping):
            group = dropping[place][0]
            gone = [i for i in group if i.index_key is None or i.index_key in deleted]
            if place in spared_places or len(gone) < len(group):
                # pinned by a live run, or stored again since gc read the index: it stays
                report.kept += len([i for i in group if i.index_key])
                del dropping[place]
        orphans = _orphans(instance, runs, {*indexed, *named}, places, managers, over)
        items = sorted(
            (i for group, _, _ in dropping.values() for i in group),
            key=lambda i: (i.created_at or 0, i.uri or ""),
        )
        report.items = items + [item for item, _ in orphans]
        report.manifests = sum(1 for e in dropped_manifests if (e.output_key, e.version) in deleted)
        if not dry_run:
            doomed = list(dropping.values())
            stored_again: list[Any] = []
            for start in range(0, len(doomed), RECHECK_EVERY):
                chunk = doomed[start : start + RECHECK_EVERY]
                # a store whose paths name only the version (versioned layouts) may have been
                # written again, and indexed, by a run since gc dropped the entries: its file
                # is that run's now (looked at again just before each chunk of deletes)
                again = indexed_again(instance, chunk)
                for group, address, manager in chunk:
                    if any(i.index_key in again for i in group):
                        stored_again.extend(group)
                        continue
                    _attempt(report, group[0], lambda m=manager, a=address: m.delete(a))
            if stored_again:  # counted as kept, like entries stored again before gc's delete
                report.kept += len([i for i in stored_again if i.index_key])
                again_ids = {id(i) for i in stored_again}
                report.items = [i for i in report.items if id(i) not in again_ids]
            for item, path_manager in orphans:
                _attempt(report, item, lambda m=path_manager, u=item.uri: m.delete_uri(u or ""))
            # pins of runs found dead expire now (ended runs released their own)
            dead = {p.run_id for p in instance.pins() if over.get(p.run_id)}
            if dead:
                instance.release_run(*dead)
    finally:
        if lease is not None:
            instance.release_lease(GC_LEASE, lease.run_id)
    return report


def _pairs(entries: list[tuple[str, str, float]]) -> list[tuple[str, str]]:
    return [(key, version) for key, version, _ in entries]


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
    recorded: set[tuple[Any, ...]],
    places: _Places,
    managers: _Managers,
    over: Mapping[str, bool],
) -> list[tuple[GcItem, PathIOManager]]:
    """Files under the run folders of runs that are over that no recorded address names.

    ``recorded``: the places every index entry and every run's events name. A file whose
    ``<run_id>/<name>`` tail a recorded address ends with is kept too, even if its folder is
    spelled differently (a relative path resolved from another working directory): keeping an
    orphan costs some disk, deleting an output loses data.
    """
    tails: set[str] = set()
    for place in recorded:
        if place and isinstance(place[-1], str) and len(place) <= 2:
            tails.update(_tails(place[-1]))
    found: list[tuple[GcItem, PathIOManager]] = []
    for run in runs:
        if not over[run.run_id]:
            continue
        for manager in list(managers.path_managers.values()):
            for uri in _run_files(manager, run.run_id):
                if places.of_uri(uri) in recorded or _run_tail(uri, run.run_id) in tails:
                    continue
                name = os.path.basename(uri)
                item = GcItem(
                    uri, name, "", run.run_id, run.start_time, _size(manager, uri), orphan=True
                )
                found.append((item, manager))
    return found


def _run_tail(uri: str, run_id: str) -> str:
    """``<run_id>/<path in the run's folder>`` of a file listed under that folder."""
    path = "/" + uri.replace(os.sep, "/")
    index = path.rfind(f"/{run_id}/")
    return path[index + 1 :] if index >= 0 else path


def _run_files(manager: PathIOManager, run_id: str) -> Iterator[str]:
    try:
        yield from manager.run_files(run_id)
    except (OSError, ValueError):
        return
