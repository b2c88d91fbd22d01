"""How one process holds a DuckDB file: when it opens it, when it lets it go, who holds it.

DuckDB lets one process hold a file for writing, and then no other process can open it, even
read-only; opening costs 30-100 ms (a database instance per open) against 1-2 ms for writing a
one-row table on an open connection. ``DuckDBFile`` owns the connections of one store and the
policy (``hold``) that trades the two:

- ``idle`` (default): hold the file while the run writes; let it go after ``release_after``
  seconds without a table read or write (a thread watches), or at once after the current write
  when another memodag process is waiting for it; reopen at the next table call.
- ``run``: hold it from the first table call to the end of the run.
- ``write``: hold it only for each write, commit and read.

While it holds the file for writing it keeps ``<file>.holder`` (pid, command line, since when);
a process that finds the file held waits up to ``lock_timeout`` seconds (saying so in
``<file>.waiting``), then fails naming the holder. Owns no SQL: the store does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from memodag.errors import StorageError

HOLD_IDLE, HOLD_RUN, HOLD_WRITE = "idle", "run", "write"
HOLD_POLICIES = (HOLD_IDLE, HOLD_RUN, HOLD_WRITE)
_LOCKED = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")
#: how often a waiting process tries the file again, and says again that it waits (seconds)
_RETRY = 0.02
#: a waiting mark this fresh means a process still waits (it renews it every ``_RETRY``)
_FRESH = 0.25
#: at most this long a process about to reopen the file lets a waiting one go first (seconds)
_YIELD = 1.0

F = TypeVar("F", bound=Callable[..., Any])


class DuckDBFile:
    """The connections one store has on one DuckDB file, and when it holds the file.

    Invariants: at most one connection is open (a writer or a read-only reader); every use of
    a connection happens under ``lock`` (the store's methods take it through ``holding``), so
    the idle thread never closes a connection in use; a connection handed out beyond a call (a
    DuckDB relation) ``pin``s the file until ``close``.
    """

    def __init__(self, path: str, hold: str, lock_timeout: float, release_after: float) -> None:
        if hold not in HOLD_POLICIES:
            raise StorageError(
                f"duckdb_table_store: hold_file must be one of {', '.join(HOLD_POLICIES)}; "
                f"got {hold!r}"
            )
        if release_after < 0:
            raise StorageError(
                f"duckdb_table_store: release_after must be >= 0 seconds, got {release_after!r}"
            )
        self.path = path
        self.hold = hold
        self.lock_timeout = lock_timeout
        self.release_after = release_after
        self.lock = threading.RLock()
        self.writer: Any = None  # the writing connection while this process holds the file
        self.reader: Any = None  # a read-only connection, for reads outside a write
        self.opened_at_ns = 0  # when a connection opened (the waiting marker is compared to it)
        self._pinned = False
        self._last_use = 0.0
        self._watching = False  # a thread waits to let the file go (changed under ``lock``)

    # ---- opening -----------------------------------------------------------------------------

    def open_writer(self) -> tuple[Any, bool]:
        """The writing connection, and whether it was opened just now (the caller then reads
        what other processes wrote meanwhile)."""
        if self.writer is not None:
            return self.writer, False
        if self.reader is not None:  # one process opens a file one way at a time
            self.reader.close()
            self.reader = None
        self._let_waiting_go_first()
        self.writer = self._connect(read_only=False)
        self.opened_at_ns = time.time_ns()
        self._write_holder()
        self._watch()
        return self.writer, True

    def open_reader(self) -> Any:
        """The held connection, else a read-only one (never taking the file for writing)."""
        if self.writer is not None:
            return self.writer
        if self.reader is None:
            self._let_waiting_go_first()
            self.reader = self._connect(read_only=True)
            self.opened_at_ns = time.time_ns()
            self._watch()
        return self.reader

    def pin(self) -> None:
        """Keep the file open until ``close``: a connection was handed out (a relation)."""
        self._pinned = True

    def _connect(self, read_only: bool) -> Any:
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        waiting = False
        try:
            while True:
                try:
                    return duckdb.connect(self.path, read_only=read_only)
                except duckdb.IOException as exc:
                    held = _LOCKED.search(str(exc))
                    if held is None:
                        raise StorageError(f"cannot open DuckDB file {self.path}: {exc}") from exc
                    waiting = True
                    self._mark_waiting()  # renewed each try: a holder that reopened sees it
                    if time.monotonic() >= deadline:
                        raise StorageError(
                            f"DuckDB file {self.path} is held by another process: "
                            f"{self._holder(int(held.group(2)), held.group(1))}; waited "
                            f"{self.lock_timeout:g} s. DuckDB lets one process write a file and "
                            "no other open it meanwhile: wait for it to finish, raise the "
                            "store's lock_timeout, or close the program holding it"
                        ) from exc
                    time.sleep(_RETRY)
                except duckdb.ConnectionException:
                    # this process already has the file open with another configuration
                    return duckdb.connect(self.path)
        finally:
            if waiting:
                with contextlib.suppress(OSError):
                    os.remove(self._waiting_path())

    # ---- letting go ----------------------------------------------------------------------------

    def done_writing(self) -> None:
        """After a write, commit or drop: let the file go if the policy says so now."""
        if self.hold == HOLD_WRITE or (self.hold == HOLD_IDLE and self._someone_waits()):
            self.close_connections()

    def done_reading(self) -> None:
        """After a read: ``write`` lets a reader go at once; ``idle`` leaves it to the timer."""
        if self.hold == HOLD_WRITE and self.reader is not None and not self._pinned:
            self.reader.close()
            self.reader = None

    def touch(self) -> None:
        """A table call just ended: the idle gap starts now."""
        self._last_use = time.monotonic()

    def close_connections(self) -> None:
        """Close what is open (under ``lock``) unless pinned; the next call reopens."""
        if self._pinned:
            return
        self._close_all()

    def close(self) -> None:
        """End of run or of a read outside a run: close everything, pinned or not."""
        with self.lock:
            self._pinned = False
            self._close_all()

    def _close_all(self) -> None:
        reader, writer = self.reader, self.writer
        self.reader = self.writer = None
        if reader is not None:
            reader.close()
        if writer is not None:
            writer.close()
            self._remove_holder()

    def _watch(self) -> None:
        """Start the thread that lets the file go after ``release_after`` idle seconds (called
        under ``lock`` when a connection opens)."""
        if self.hold != HOLD_IDLE or self._watching:
            return
        self._watching = True
        self._last_use = time.monotonic()
        threading.Thread(
            target=self._watch_idle, name=f"memodag-duckdb-release:{self.path}", daemon=True
        ).start()

    def _watch_idle(self) -> None:
        while True:
            idle_for = time.monotonic() - self._last_use
            time.sleep(max(self.release_after - idle_for, _RETRY))
            with self.lock:
                if self.writer is None and self.reader is None:
                    self._watching = False
                    return
                if self._pinned:
                    continue
                idle = time.monotonic() - self._last_use >= self.release_after
                # a memodag process waits while this one only reads: let it in too
                if idle or self._someone_waits():
                    self._close_all()
                    self._watching = False
                    return

    # ---- who holds it, who waits ---------------------------------------------------------------

    def _holder_path(self) -> str:
        return self.path + ".holder"

    def _waiting_path(self) -> str:
        return self.path + ".waiting"

    def _write_holder(self) -> None:
        data = {
            "pid": os.getpid(),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv])[:300],
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with contextlib.suppress(OSError):  # only for messages: never fails a write
            tmp = f"{self._holder_path()}.tmp-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as file:
                json.dump(data, file)
            os.replace(tmp, self._holder_path())

    def _remove_holder(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            with open(self._holder_path(), encoding="utf-8") as file:
                if json.load(file).get("pid") != os.getpid():
                    return  # another process holds it now
            os.remove(self._holder_path())

    def _holder(self, pid: int, program: str) -> str:
        """``<command> (PID n), holding it since ...`` from the holder file, ``/proc``, or
        DuckDB's message, whichever knows most."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            with open(self._holder_path(), encoding="utf-8") as file:
                data = json.load(file)
            if data.get("pid") == pid:
                return f"{data.get('command')} (PID {pid}), holding it since {data.get('since')}"
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                command = file.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if command:
                return f"{command[:300]} (PID {pid})"
        return f"{program} (PID {pid})"

    def _mark_waiting(self) -> None:
        """Tell a memodag process holding the file that someone waits (it lets go after its
        current write)."""
        with contextlib.suppress(OSError):
            with open(self._waiting_path(), "a", encoding="utf-8"):
                pass
            os.utime(self._waiting_path())

    def _let_waiting_go_first(self) -> None:
        """Before reopening: if another process waits for the file (a fresh mark), give it
        the file first (it removes the mark once in), for at most ``_YIELD`` seconds."""
        deadline = time.monotonic() + _YIELD
        while time.monotonic() < deadline:
            try:
                age = time.time() - os.stat(self._waiting_path()).st_mtime
            except OSError:
                return
            if age > _FRESH:
                return
            time.sleep(_RETRY)

    def _someone_waits(self) -> bool:
        try:
            return os.stat(self._waiting_path()).st_mtime_ns >= self.opened_at_ns
        except OSError:
            return False


def holding(method: F) -> F:
    """Run a store method under its file's lock, and count it as a use of the file (the idle
    gap starts when it returns). The store keeps its ``DuckDBFile`` as ``self.file``."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        file: DuckDBFile = self.file
        with file.lock:
            try:
                return method(self, *args, **kwargs)
            finally:
                file.touch()

    return wrapper  # type: ignore[return-value]
