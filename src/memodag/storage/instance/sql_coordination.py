"""Pins and leases on SQL: what live runs rely on (gc keeps it) and what they are computing.

A mixin of ``SqlInstanceStorage`` (kept apart so the run and event verbs stay readable): every
verb is one transaction through the storage's ``_run``. It decides nothing: whether a holder is
alive, or what a pin spares, is the caller's callback. On PostgreSQL, pinning transactions take an
advisory lock shared and gc's deleting transaction takes it exclusively, so a pin and gc's
decision never interleave; SQLite's write transactions exclude each other already.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from memodag.storage.instance.records import Event, IndexEntry, Lease, Pin

if TYPE_CHECKING:
    from memodag.storage.instance.sql import Dialect

# keys per statement: under SQLite's 999 parameters before 3.32
_LOOKUP_CHUNK = 400
_ENTRY_COLUMNS = (
    "output_key, version, address, created_at, size_bytes, recipe, version_scheme, run_id"
)


class PinsAndLeases:
    """The pin and lease verbs of ``InstanceStorage`` (``base.py`` documents each)."""

    dialect: Dialect
    _run: Callable[..., Any]
    _sql: Callable[[str], str]
    _execute: Callable[..., list[Any]]
    _write_many: Callable[..., None]
    _storing: Callable[..., Callable[[Any], None] | None]
    _entries: Callable[..., list[IndexEntry]]

    def pinned_index_entries(self, output_keys: Iterable[str], run_id: str) -> list[IndexEntry]:
        keys = list(dict.fromkeys(output_keys))
        if not keys:
            return []
        lock = self.dialect.pin_lock

        def work(cur: Any) -> list[Any]:
            if lock:
                cur.execute(lock)
            return self._read_and_pin(cur, keys, run_id)

        return self._entries(self._run(work, write=True))

    def _read_and_pin(self, cur: Any, keys: list[str], run_id: str) -> list[Any]:
        """The index rows of ``keys``, each key found pinned for ``run_id``."""
        select = self._sql(f"SELECT {_ENTRY_COLUMNS} FROM output_index WHERE output_key IN ")
        rows: list[Any] = []
        for i in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[i : i + _LOOKUP_CHUNK]
            marks = ",".join([self.dialect.placeholder] * len(chunk))
            cur.execute(f"{select}({marks})", chunk)
            rows.extend(cur.fetchall())
        found = sorted({r[0] for r in rows})
        if found:
            now = time.time()
            cur.executemany(self._sql(_INSERT_PIN), [(run_id, "key", k, now) for k in found])
        return rows

    def add_pins(
        self, run_id: str, kind: str, targets: Iterable[str], unless_held: str | None = None
    ) -> Lease | None:
        rows = [(run_id, kind, t, time.time()) for t in dict.fromkeys(targets)]
        pin = self._sql(_INSERT_PIN)
        lock = self.dialect.pin_lock

        def work(cur: Any) -> Lease | None:
            if lock:
                cur.execute(lock)
            if unless_held is not None:
                holder = self._lease(cur, unless_held)
                if holder is not None:
                    return holder
            if rows:
                cur.executemany(pin, rows)
            return None

        return self._run(work, write=True)

    def settle_pins(
        self,
        run_id: str,
        entries: Iterable[tuple[str, str]],
        release_keys: Iterable[str],
        release_leases: Iterable[str] = (),
    ) -> None:
        now = time.time()
        rows = [(run_id, "entry", entry_target(k, v), now) for k, v in dict.fromkeys(entries)]
        released = [(run_id, k) for k in dict.fromkeys(release_keys)]
        leases = [(k, run_id) for k in dict.fromkeys(release_leases)]
        if not rows and not released and not leases:
            return
        give_up = self._sql("DELETE FROM leases WHERE lease_key = ? AND run_id = ?")
        pin = self._sql(_INSERT_PIN)
        unpin = self._sql("DELETE FROM run_pins WHERE run_id = ? AND kind = 'key' AND target = ?")
        lock = self.dialect.pin_lock

        def work(cur: Any) -> None:
            if lock:
                cur.execute(lock)
            if rows:
                cur.executemany(pin, rows)
            if released:
                cur.executemany(unpin, released)
            if leases:
                cur.executemany(give_up, leases)

        self._run(work, write=True)

    def pins(self) -> list[Pin]:
        rows = self._execute("SELECT run_id, kind, target, created_at FROM run_pins")
        return [Pin(*row) for row in rows]

    def delete_unpinned_index_entries(
        self,
        entries: Sequence[tuple[str, str, float]],
        spare: Callable[[list[Pin]], Collection[tuple[str, str]]],
        lease: Lease | None = None,
    ) -> list[tuple[str, str]]:
        lock = self.dialect.collect_lock
        delete = self._sql(
            "DELETE FROM output_index WHERE output_key = ? AND version = ? AND created_at = ?"
        )
        pins_sql = self._sql("SELECT run_id, kind, target, created_at FROM run_pins")

        def work(cur: Any) -> list[tuple[str, str]]:
            if lock:
                cur.execute(lock)
            cur.execute(pins_sql)
            spared = set(spare([Pin(*row) for row in cur.fetchall()]))
            deleted = []
            for key, version, created_at in entries:
                if (key, version) in spared:
                    continue
                cur.execute(delete, (key, version, created_at))
                if cur.rowcount:
                    deleted.append((key, version))
            if lease is not None:
                self._put_lease(cur, lease)
            return deleted

        return self._run(work, write=True)

    def acquire_lease(self, lease: Lease, expired: Callable[[Lease], bool]) -> Lease | None:
        return self._run(lambda cur: self._acquire(cur, lease, expired), write=True)

    def claim_steps(
        self,
        leases: Sequence[Lease],
        expired: Callable[[Lease], bool],
        output_keys: Sequence[str],
        release_leases: Sequence[str] = (),
        events: Sequence[Event] = (),
        index_entries: Sequence[IndexEntry] = (),
    ) -> tuple[dict[str, Lease], list[IndexEntry]]:
        keys = list(dict.fromkeys(output_keys))
        store = self._storing(events, index_entries) if events or index_entries else None
        lock = self.dialect.pin_lock
        run_id = leases[0].run_id if leases else ""
        give_up = self._sql("DELETE FROM leases WHERE lease_key = ? AND run_id = ?")
        released = [(k, run_id) for k in release_leases]

        def work(cur: Any) -> tuple[dict[str, Lease], list[Any]]:
            if lock and keys:
                cur.execute(lock)
            if store is not None:
                store(cur)
            if released:
                cur.executemany(give_up, released)
            holders = {}
            for lease in leases:
                holder = self._acquire(cur, lease, expired)
                if holder is not None:
                    holders[lease.lease_key] = holder
            return holders, self._read_and_pin(cur, keys, run_id) if keys else []

        holders, rows = self._run(work, write=True)
        return holders, self._entries(rows)

    def _acquire(self, cur: Any, lease: Lease, expired: Callable[[Lease], bool]) -> Lease | None:
        insert = self._sql(
            "INSERT INTO leases (lease_key, run_id, step_key, process, acquired_at, heartbeat_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (lease_key) DO NOTHING"
        )
        take = self._sql(
            "UPDATE leases SET run_id = ?, step_key = ?, process = ?, acquired_at = ?, "
            "heartbeat_at = ? WHERE lease_key = ? AND run_id = ? AND acquired_at = ?"
        )
        row = _lease_row(lease)
        cur.execute(insert, row)
        if cur.rowcount:
            return None
        holder = self._lease(cur, lease.lease_key)
        if holder is None:  # released in between: take it
            cur.execute(insert, row)
            return None if cur.rowcount else self._lease(cur, lease.lease_key)
        if holder.run_id != lease.run_id and not expired(holder):
            return holder
        # compare and set: of two runs taking over the same expired lease, one wins
        cur.execute(take, (*row[1:], lease.lease_key, holder.run_id, holder.acquired_at))
        return None if cur.rowcount else self._lease(cur, lease.lease_key)

    def release_lease(self, lease_key: str, run_id: str) -> None:
        delete = "DELETE FROM leases WHERE lease_key = ? AND run_id = ?"
        self._write_many([(delete, [(lease_key, run_id)])])

    def release_run(self, run_ids: Iterable[str]) -> None:
        ids = [(r,) for r in dict.fromkeys(run_ids)]
        self._write_many(
            [
                ("DELETE FROM run_pins WHERE run_id = ?", ids),
                ("DELETE FROM leases WHERE run_id = ?", ids),
            ]
        )

    def _lease(self, cur: Any, lease_key: str) -> Lease | None:
        """The lease on ``lease_key``, with its holder run's last heartbeat (``runs.heartbeat``,
        the one liveness record a run keeps) when that is newer than the lease's own."""
        cur.execute(
            self._sql(
                "SELECT l.lease_key, l.run_id, l.step_key, l.process, l.acquired_at, "
                "l.heartbeat_at, r.heartbeat FROM leases l LEFT JOIN runs r "
                "ON r.run_id = l.run_id WHERE l.lease_key = ?"
            ),
            (lease_key,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        key, run_id, step_key, process, acquired, beat, run_beat = row
        if run_beat is not None and run_beat > beat:
            beat = run_beat
        return Lease(key, run_id, step_key, json.loads(process), acquired, beat)

    def _put_lease(self, cur: Any, lease: Lease) -> None:
        cur.execute(self._sql("DELETE FROM leases WHERE lease_key = ?"), (lease.lease_key,))
        cur.execute(
            self._sql(
                "INSERT INTO leases (lease_key, run_id, step_key, process, acquired_at, "
                "heartbeat_at) VALUES (?,?,?,?,?,?)"
            ),
            _lease_row(lease),
        )


_INSERT_PIN = (
    "INSERT INTO run_pins (run_id, kind, target, created_at) VALUES (?,?,?,?) "
    "ON CONFLICT (run_id, kind, target) DO NOTHING"
)


def entry_target(output_key: str, version: str) -> str:
    """The target of an ``"entry"`` pin: one stored version of one output."""
    return json.dumps([output_key, version])


def _lease_row(lease: Lease) -> tuple[Any, ...]:
    return (
        lease.lease_key,
        lease.run_id,
        lease.step_key,
        json.dumps(dict(lease.process), sort_keys=True),
        lease.acquired_at,
        lease.heartbeat_at,
    )
