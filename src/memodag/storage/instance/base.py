"""``InstanceStorage``: the verbs every instance backend implements, and nothing else.

The engine, the CLI and gc reach runs, events and the output index only through these verbs
(by way of ``Instance``), so a backend is a class, never a special case. Implementations: the SQL
storage (SQLite and PostgreSQL, ``sql.py``) and the workers' lazily opened proxy
(``executors/worker.py``). A backend owns no decisions: what is memoized, kept or collected is
decided above it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence

from memodag.storage.instance.records import (
    Event,
    EventType,
    IndexEntry,
    Lease,
    Pin,
    RunRecord,
    RunStatus,
)


class InstanceStorage(ABC):
    """Runs, their event logs and the output index ``(output_key, version) -> address``.

    Invariants every implementation keeps:

    - ``store_events`` is atomic: its events and index entries are all stored or none is, so an
      index entry is never visible without the events that recorded its data.
    - A run's events come back in the order they were stored.
    - The index holds at most one entry per ``(output_key, version)``; storing it again replaces it.
    - Every failure of the database surfaces as ``StorageError`` naming the database (never its
      password); the storage stays usable afterwards.
    - Opening a database written by an older memodag upgrades it; one written by a newer memodag is
      refused, never downgraded.
    """

    @property
    @abstractmethod
    def url(self) -> str:
        """The database URL for messages (``sqlite:///...``, ``postgresql://...``), password
        removed."""

    @property
    @abstractmethod
    def connection_url(self) -> str:
        """The full URL another process opens the same database with (password included: never
        put it in a message)."""

    # -- runs -------------------------------------------------------------------------------

    @abstractmethod
    def add_run(self, run: RunRecord) -> None:
        """Record a new run.

        Args:
            run: the run as it starts; its ``run_id`` must not be stored yet.
        """

    @abstractmethod
    def update_run_status(self, run_id: str, status: RunStatus, end_time: float | None) -> None:
        """Set a stored run's status and end time (seconds since the epoch, or None)."""

    def record_heartbeat(self, run_id: str, when: float) -> None:
        """Record that STARTED run ``run_id`` is alive at ``when`` (seconds since the epoch);
        a run that ended is left as it is. The default records nothing."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None:
        """One run.

        Args:
            run_id: the full id, or a prefix of it.

        Returns:
            The run with this id, else the only run whose id starts with it; None when no run or
            several runs match.
        """

    @abstractmethod
    def get_runs(
        self, limit: int = 20, job_name: str | None = None, status: RunStatus | None = None
    ) -> list[RunRecord]:
        """Runs, newest first.

        Args:
            limit: at most this many.
            job_name: only runs of this job.
            status: only runs with this status.

        Returns:
            The runs, by start time, newest first.
        """

    # -- events and the index ---------------------------------------------------------------

    @abstractmethod
    def store_events(self, events: Sequence[Event], index_entries: Sequence[IndexEntry]) -> None:
        """Append events and upsert index entries, in one transaction.

        Args:
            events: appended to their runs' logs, in this order.
            index_entries: each replaces any stored entry of its ``(output_key, version)``.
        """

    @abstractmethod
    def get_events(
        self, run_id: str, event_types: Sequence[EventType] | None = None
    ) -> list[Event]:
        """A run's events in the order they were stored.

        Args:
            run_id: the full run id.
            event_types: only events of these types (all when None or empty).
        """

    @abstractmethod
    def index_entries(self, output_keys: Iterable[str] | None = None) -> list[IndexEntry]:
        """Stored index entries, every version of each output.

        Args:
            output_keys: only these outputs (batched: one query per few hundred keys, whatever
                their number); every entry of the instance when None.

        Returns:
            The entries, in no particular order.
        """

    @abstractmethod
    def delete_index_entries(self, keys: Iterable[tuple[str, str]]) -> None:
        """Remove the index entries of these ``(output_key, version)`` pairs (absent ones are
        ignored), in one transaction."""

    # -- pins and leases: what live runs rely on and compute ------------------------------------

    @abstractmethod
    def pinned_index_entries(self, output_keys: Iterable[str], run_id: str) -> list[IndexEntry]:
        """``index_entries(output_keys)``, and in the same transaction a ``"key"`` pin of
        ``run_id`` on every key found: an entry read here stays until the run ends or is found
        dead, whatever gc decides meanwhile (``delete_unpinned_index_entries``)."""

    @abstractmethod
    def add_pins(
        self, run_id: str, kind: str, targets: Iterable[str], unless_held: str | None = None
    ) -> Lease | None:
        """Pin ``targets`` of ``kind`` for ``run_id`` in one transaction, unless the lease
        ``unless_held`` is held: then nothing is pinned and its holder is returned."""

    @abstractmethod
    def settle_pins(
        self,
        run_id: str,
        entries: Iterable[tuple[str, str]],
        release_keys: Iterable[str],
        release_leases: Iterable[str] = (),
    ) -> None:
        """Once a run has decided: pin exactly the ``(output_key, version)`` ``entries`` it
        reuses (kind ``"entry"``), drop its ``"key"`` pins on ``release_keys`` and its leases
        ``release_leases``, in one transaction (what it reuses is never unpinned in between)."""

    @abstractmethod
    def pins(self) -> list[Pin]:
        """Every pin of every run."""

    @abstractmethod
    def delete_unpinned_index_entries(
        self,
        entries: Sequence[tuple[str, str, float]],
        spare: Callable[[list[Pin]], Collection[tuple[str, str]]],
        lease: Lease | None = None,
    ) -> list[tuple[str, str]]:
        """Delete the ``(output_key, version, created_at)`` entries (those stored again since,
        with another ``created_at``, stay) except the ``(output_key, version)`` pairs
        ``spare(pins)`` names, ``pins`` read in the same transaction; no pin can be added while it
        runs. Takes ``lease`` (gc's) in that transaction too, when given.

        Returns:
            The ``(output_key, version)`` pairs deleted.
        """

    @abstractmethod
    def acquire_lease(self, lease: Lease, expired: Callable[[Lease], bool]) -> Lease | None:
        """Take ``lease.lease_key`` for ``lease.run_id``, in one transaction, if nobody holds it,
        the run already does, or its holder is ``expired``.

        Returns:
            None when taken; else the lease that holds it.
        """

    @abstractmethod
    def claim_steps(
        self,
        leases: Sequence[Lease],
        expired: Callable[[Lease], bool],
        output_keys: Sequence[str],
        release_leases: Sequence[str] = (),
        events: Sequence[Event] = (),
        index_entries: Sequence[IndexEntry] = (),
    ) -> tuple[dict[str, Lease], list[IndexEntry]]:
        """``acquire_lease`` for each of ``leases`` (one run's), and ``pinned_index_entries(
        output_keys)``, in one transaction: a step whose lease is taken sees what another run
        stored before giving it up. The run's ``release_leases`` are given up in it too, and
        ``events`` and ``index_entries`` are stored first, as ``store_events`` would (an executed
        step's outcome and the claim of the steps it makes ready: one commit, not two).

        Returns:
            The holders of the leases not taken, by lease key; the entries read.
        """

    @abstractmethod
    def release_lease(self, lease_key: str, run_id: str) -> None:
        """Give ``lease_key`` up, if ``run_id`` holds it."""

    @abstractmethod
    def release_run(self, run_ids: Iterable[str]) -> None:
        """Drop every pin and lease of these runs (they ended, or were found dead)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; every verb raises ``StorageError`` afterwards."""
