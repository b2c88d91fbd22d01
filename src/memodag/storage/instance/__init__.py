"""The instance: the control plane. Runs, their event logs, and the index of stored outputs.

``Instance.get()`` opens the SQLite file under the instance home (``find_home``: ``$MEMODAG_HOME``,
else the nearest ``.memodag`` upward from the current directory, else ``./.memodag``), or the
database named by ``$MEMODAG_INSTANCE_URL``; ``Instance.ephemeral()`` is in memory, for tests;
``Instance.from_url("postgresql://...")`` is shared by a team. ``Instance`` adds a storage directory
and derived queries to an ``InstanceStorage`` backend (``base.py``); it never talks SQL itself.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

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
from memodag.storage.instance.sql import sqlite_storage, storage_from_url
from memodag.storage.io_manager import Address

__all__ = [
    "Event",
    "EventType",
    "IndexEntry",
    "Instance",
    "InstanceStorage",
    "Lease",
    "Pin",
    "RunRecord",
    "RunStatus",
    "find_home",
]

HOME_ENV = "MEMODAG_HOME"
HOME_DIR_NAME = ".memodag"
_DEFAULT_INSTANCES: dict[tuple[str, str | None, int], Instance] = {}
URL_ENV = "MEMODAG_INSTANCE_URL"


def find_home(start: str | Path | None = None) -> Path:
    """The default instance's home directory, found as git finds its repository.

    ``$MEMODAG_HOME`` when set; else the nearest ``.memodag`` directory in ``start`` (default: the
    current directory) or one of its parents, so a pipeline run from any subfolder of a project
    uses the project's instance; else ``<start>/.memodag``, which does not exist yet (created on
    first use). Only looks; never creates anything.
    """
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / HOME_DIR_NAME
        if candidate.is_dir():
            return candidate
    return here / HOME_DIR_NAME


class Instance:
    """Where runs, events and the output index live, plus a default directory for stored outputs.

    The engine depends only on the verbs here; the backend is any ``InstanceStorage``.
    """

    def __init__(
        self, storage: InstanceStorage, storage_dir: Path, home: Path | None = None
    ) -> None:
        self._storage = storage
        # absolute: addresses recorded under it must name the same files from any directory
        self.storage_dir = Path(storage_dir).resolve()
        self.home = home
        self._default_key: tuple[str, str | None, int] | None = None  # set by Instance.get()

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def get(cls) -> Instance:
        """The default instance: ``$MEMODAG_INSTANCE_URL`` if set, else SQLite in the home
        ``find_home()`` gives. Outputs go to ``<home>/storage``."""
        home = find_home()
        url = os.environ.get(URL_ENV)
        key = (str(home), url, os.getpid())  # a forked child must not share the parent's connection
        # one connection per default instance per process, not one per run
        cached = _DEFAULT_INSTANCES.get(key)
        if cached is not None:
            return cached
        if url:
            instance = cls.from_url(url, storage_dir=home / "storage")
        else:
            home.mkdir(parents=True, exist_ok=True)
            instance = cls(sqlite_storage(str(home / "instance.db")), home / "storage", home)
        instance._default_key = key
        _DEFAULT_INSTANCES[key] = instance
        return instance

    @classmethod
    def from_url(cls, url: str, storage_dir: str | Path | None = None) -> Instance:
        """An instance on ``sqlite:///path/to/file.db`` or ``postgresql://user@host/db``."""
        storage = storage_from_url(url)
        base = Path(storage_dir) if storage_dir else find_home() / "storage"
        return cls(storage, base)

    @classmethod
    def ephemeral(cls) -> Instance:
        """An in-memory instance with a temporary storage directory removed at exit (tests)."""
        tmp = Path(tempfile.mkdtemp(prefix="memodag-"))
        atexit.register(shutil.rmtree, tmp, True)
        return cls(sqlite_storage(":memory:"), tmp / "storage")

    @property
    def url(self) -> str:
        """The database URL for messages (``sqlite:///...`` or ``postgresql://...``), password
        removed."""
        return self._storage.url

    @property
    def connection_url(self) -> str:
        """The full database URL, password included: what another process passes to
        ``Instance.from_url`` to open this instance (never put it in a message)."""
        return self._storage.connection_url

    def close(self) -> None:
        """Close the database connection; the instance cannot be used afterwards."""
        key = getattr(self, "_default_key", None)
        if key is not None and _DEFAULT_INSTANCES.get(key) is self:
            del _DEFAULT_INSTANCES[key]
        self._storage.close()

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- runs -------------------------------------------------------------------------------

    def add_run(self, run: RunRecord) -> None:
        """Record a run as it starts."""
        self._storage.add_run(run)

    def record_heartbeat(self, run_id: str, when: float) -> None:
        """Record that STARTED run ``run_id`` is alive (its driver does so every
        ``liveness.HEARTBEAT_SECONDS``)."""
        self._storage.record_heartbeat(run_id, when)

    def update_run_status(
        self, run_id: str, status: RunStatus, end_time: float | None = None
    ) -> None:
        """Set a run's status (and end time, seconds since the epoch)."""
        self._storage.update_run_status(run_id, status, end_time)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id (or the one run whose id starts with it)."""
        return self._storage.get_run(run_id)

    def get_runs(
        self, limit: int = 20, job_name: str | None = None, status: RunStatus | None = None
    ) -> list[RunRecord]:
        """Newest first."""
        return self._storage.get_runs(limit, job_name, status)

    # -- events -----------------------------------------------------------------------------

    def store_events(
        self,
        events: Sequence[Event],
        index_entries: Sequence[IndexEntry] = (),
    ) -> None:
        """Append events and index entries in one transaction."""
        self._storage.store_events(events, index_entries)

    def get_events(
        self, run_id: str, event_types: Sequence[EventType] | None = None
    ) -> list[Event]:
        """A run's events in the order they were recorded (only ``event_types``, if given)."""
        return self._storage.get_events(run_id, event_types)

    def get_output_addresses(self, run_id: str) -> dict[tuple[str, str, str | None], Address]:
        """Every output a run stored in a *successful* attempt, or found stored (memoized), by
        (step_key, output_name, mapping_key), in the order the run recorded them. Outputs of an
        attempt that then failed are not part of the run's result and are left out."""
        result: dict[tuple[str, str, str | None], Address] = {}
        pending: dict[str, list[Address]] = {}
        kinds = [
            EventType.STEP_START,
            EventType.HANDLED_OUTPUT,
            EventType.STEP_SUCCESS,
            EventType.STEP_MEMOIZED,
        ]
        for event in self.get_events(run_id, kinds):
            key = event.step_key or ""
            if event.event_type is EventType.STEP_START:
                pending[key] = []
            elif event.event_type is EventType.HANDLED_OUTPUT:
                pending.setdefault(key, []).append(Address.from_dict(event.data["address"]))
            else:
                found = pending.pop(key, [])
                if event.event_type is EventType.STEP_MEMOIZED:
                    found = [Address.from_dict(d) for d in event.data.get("addresses", [])]
                for address in found:
                    result[(address.step_key, address.output_name, address.mapping_key)] = address
        return result

    # -- the output index (memoization) -------------------------------------------------------

    def entries_for_keys(self, output_keys: Iterable[str]) -> list[IndexEntry]:
        """Every stored version of these outputs (one batched query: memoization, explain)."""
        return self._storage.index_entries(output_keys)

    def index_entries(self) -> list[IndexEntry]:
        """Every entry of the index (gc)."""
        return self._storage.index_entries()

    def delete_index_entries(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget these (output_key, version) pairs (gc, after deleting their data)."""
        self._storage.delete_index_entries(keys)

    # -- pins and leases (docs/reliability.md) ------------------------------------------------

    def pinned_entries_for_keys(self, output_keys: Iterable[str], run_id: str) -> list[IndexEntry]:
        """``entries_for_keys``, pinning for ``run_id`` every key found in the same transaction:
        gc keeps every stored version of them until the run ends or is found dead."""
        return self._storage.pinned_index_entries(output_keys, run_id)

    def add_pins(
        self, run_id: str, kind: str, targets: Iterable[str], unless_held: str | None = None
    ) -> Lease | None:
        """Pin ``targets`` (``kind`` ``"key"`` or ``"run"``) for ``run_id``, unless the lease
        ``unless_held`` is held; then nothing is pinned and its holder is returned."""
        return self._storage.add_pins(run_id, kind, targets, unless_held)

    def settle_pins(
        self,
        run_id: str,
        entries: Iterable[tuple[str, str]],
        release_keys: Iterable[str],
        release_leases: Iterable[str] = (),
    ) -> None:
        """Narrow a run's pins once it has decided: exactly the ``(output_key, version)``
        entries it reuses stay pinned; its pins on ``release_keys`` and its leases
        ``release_leases`` go (one transaction)."""
        self._storage.settle_pins(run_id, entries, release_keys, release_leases)

    def pins(self) -> list[Pin]:
        """Every pin of every run (gc)."""
        return self._storage.pins()

    def delete_unpinned_index_entries(
        self,
        entries: Sequence[tuple[str, str, float]],
        spare: Callable[[list[Pin]], Collection[tuple[str, str]]],
        lease: Lease | None = None,
    ) -> list[tuple[str, str]]:
        """Delete these ``(output_key, version, created_at)`` entries but what ``spare(pins)``
        names, in one transaction no pin interleaves with; returns the pairs deleted (gc)."""
        return self._storage.delete_unpinned_index_entries(entries, spare, lease)

    def acquire_lease(self, lease: Lease, expired: Callable[[Lease], bool]) -> Lease | None:
        """Take a lease unless a holder that is not ``expired`` has it (then: that holder)."""
        return self._storage.acquire_lease(lease, expired)

    def claim_steps(
        self,
        leases: Sequence[Lease],
        expired: Callable[[Lease], bool],
        output_keys: Sequence[str],
        release_leases: Sequence[str] = (),
        events: Sequence[Event] = (),
        index_entries: Sequence[IndexEntry] = (),
    ) -> tuple[dict[str, Lease], list[IndexEntry]]:
        """Take these leases of one run, giving up its ``release_leases``, and read (and pin)
        ``output_keys``' index entries, in one transaction; returns the holders of the leases
        another live run keeps (by lease key) and the entries. ``events`` and
        ``index_entries`` are stored first in that transaction (``store_events``)."""
        return self._storage.claim_steps(
            leases, expired, output_keys, release_leases, events, index_entries
        )

    def release_lease(self, lease_key: str, run_id: str) -> None:
        """Give a lease up (if ``run_id`` holds it)."""
        self._storage.release_lease(lease_key, run_id)

    def release_run(self, *run_ids: str) -> None:
        """Drop every pin and lease of these runs (they ended or were found dead)."""
        self._storage.release_run(run_ids)

    def __repr__(self) -> str:
        return f"<Instance {self.url}>"
