"""The run's event sink: buffers events and index entries, writes them in batched transactions.

Batching is what keeps per-step overhead under a millisecond: one transaction per flush, not per
event. Events are flushed at least every ``FLUSH_SECONDS`` and at the end of the run, and index
entries always go in the same transaction as the events that recorded their data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from memodag.storage.instance import Instance
from memodag.storage.instance.records import Event, IndexEntry

FLUSH_SECONDS = 0.5
FLUSH_EVENTS = 5000


class EventLog:
    """Append-only sink for one run. Listeners see every event as it arrives (CLI progress)."""

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

    def append(self, event: Event) -> None:
        self._events.append(event)
        self.count += 1
        for listener in self.listeners:
            listener(event)

    def notify(self, event: Event) -> None:
        """Tell listeners about ``event`` without storing it (a step being handed to an executor:
        the stored STEP_START comes back with the attempt's outcome)."""
        for listener in self.listeners:
            listener(event)

    def extend(self, events: Iterable[Event]) -> None:
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
        self._index.extend(entries)

    def flush(self) -> None:
        if self._events or self._index:
            events, index = self._events, self._index
            self._events, self._index = [], []
            self.instance.store_events(events, index)
            for callback in self.on_stored:
                callback(events)
        self._last_flush = time.monotonic()
