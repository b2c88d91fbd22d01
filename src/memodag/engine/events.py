"""The run's event sink: records what a run did, and tells listeners (the CLI progress) as it goes.

An executed attempt's outcome is durable the moment it reaches the engine: ``record_outcome``
commits its events and index entries, with whatever was buffered before them, in one transaction
(a run killed right after still keeps that step, so a memoized rerun skips it). Everything else
(memoized steps, skips, retries) is buffered and goes with the next such commit, or is committed
on its own before the engine hands an attempt to an executor or waits for one (``flush_buffered``):
a record that a live run reuses a stored output never waits for a long step to end. Index entries always go in the same transaction as
the events that recorded their data. This module never decides what runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from memodag.storage.instance import Instance
from memodag.storage.instance.records import Event, IndexEntry

#: stores a batch of events and index entries in one transaction (and may do more in it)
Commit = Callable[[list[Event], list[IndexEntry]], Any]

FLUSH_SECONDS = 0.5
FLUSH_EVENTS = 1000


class EventLog:
    """Append-only sink for one run. Listeners see every event once it is recorded or buffered."""

    def __init__(
        self, instance: Instance, listeners: Iterable[Callable[[Event], Any]] = ()
    ) -> None:
        self.instance = instance
        self.listeners = list(listeners)
        self._events: list[Event] = []
        self._index: list[IndexEntry] = []
        self._last_flush = time.monotonic()
        self.count = 0
        #: called with each batch of events once it is stored (the storage lifecycle)
        self.on_stored: list[Callable[[list[Event]], Any]] = []
        #: events listeners already heard before their attempt's outcome (``shown_now``)
        self._shown: set[int] = set()

    def append(self, event: Event) -> None:
        """Buffer one event (stored with the next commit, at the latest ``FLUSH_EVENTS`` events
        later) and tell listeners."""
        events = self._events
        events.append(event)
        self.count += 1
        for listener in self.listeners:
            listener(event)
        if len(events) >= FLUSH_EVENTS:
            # a run of memoized steps between two commits is bounded too: its events are
            # written (and freed) in batches, not held until the run's end
            self.flush()

    def flush_buffered(self) -> None:
        """Commit what is buffered, if anything (before the engine starts or awaits an attempt)."""
        if self._events or self._index:
            self.flush()

    def shown_now(self, event: Event) -> None:
        """Tell listeners about an event of an attempt still running (a ``context.log`` line);
        it is stored with the attempt's outcome, and listeners do not hear it again then."""
        self._shown.add(id(event))
        self.notify(event)

    def notify(self, event: Event) -> None:
        """Tell listeners about ``event`` without storing it (a step being handed to an executor:
        the stored STEP_START comes back with the attempt's outcome)."""
        for listener in self.listeners:
            listener(event)

    def extend(self, events: Iterable[Event]) -> None:
        """Buffer events that need not be durable at once; they are stored with the next
        commit, at the latest ``FLUSH_SECONDS`` or ``FLUSH_EVENTS`` events later."""
        if self.listeners:
            for event in events:
                self.append(event)
        else:
            before = len(self._events)
            self._events.extend(events)
            self.count += len(self._events) - before
        if len(self._events) >= FLUSH_EVENTS or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def add_index_entries(self, entries: Iterable[IndexEntry]) -> None:
        """Buffer index entries; they are stored with the next commit of events."""
        self._index.extend(entries)

    def record_outcome(
        self,
        events: Sequence[Event],
        index_entries: Iterable[IndexEntry] = (),
        commit: Commit | None = None,
    ) -> None:
        """Store an executed attempt's events and index entries now, in one transaction with
        everything buffered so far; then tell listeners. Returns once they are committed.
        ``commit`` stores them in place of ``Instance.store_events`` (in one transaction that
        does more: the engine claims the steps the outcome makes ready in it)."""
        self._events.extend(events)
        self._index.extend(index_entries)
        self.count += len(events)
        self.flush(commit)
        shown = self._shown
        for event in events:
            if shown and id(event) in shown:
                shown.discard(id(event))
                continue
            for listener in self.listeners:
                listener(event)

    def discard(self) -> int:
        """Drop what is buffered (it cannot be stored); return how many events that was."""
        lost = len(self._events)
        self._events, self._index = [], []
        return lost

    def flush(self, commit: Commit | None = None) -> None:
        """Commit everything buffered in one transaction (``commit``'s, if given); on failure
        the batch stays buffered."""
        if self._events or self._index:
            events, index = self._events, self._index
            self._events, self._index = [], []
            try:
                (commit or self.instance.store_events)(events, index)
            except BaseException:
                # not stored (a storage error, or Ctrl-C/SIGTERM before the commit ended): keep
                # the batch, so the run's final flush stores it (at worst twice: index entries
                # are upserts), or, if it cannot, ``discard`` reports what was lost
                self._events[:0], self._index[:0] = events, index
                raise
            for callback in self.on_stored:
                callback(events)
        self._last_flush = time.monotonic()
