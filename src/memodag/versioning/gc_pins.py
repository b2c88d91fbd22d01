"""What live runs pin, as gc sees it: which of the outputs gc would drop they still need, and
the lease gc holds while it deletes. Decides nothing about what a run reads (the memoizer pins
it) and deletes nothing (``gc.py`` does). See docs/reliability.md, "gc beside live runs".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from memodag.storage.io_manager import Address
from memodag.versioning.leases import lease_expired
from memodag.versioning.memoize import output_key

#: the lease gc holds while it deletes: a re-execution pinning its ancestors' outputs waits
#: for it (their files are named by events gc does not change, so a pin must come before gc
#: decides, or after it is done)
GC_LEASE = "gc"
#: a pin whose run was never recorded (its validation failed before the run was stored, and
#: the process died before releasing it) counts as dead after this many seconds
_UNRECORDED_PIN_SECONDS = 3600.0


def pin_runs(instance: Any, run_id: str, ancestors: list[str], poll: float = 0.05) -> None:
    """Pin, for ``run_id``, every output the ``ancestors`` recorded (a re-execution loads them).

    Waits while a gc is deleting (its decision was made without this pin), unless that gc's
    lease expired (``versioning.leases``): then it is dropped.
    """
    while True:
        holder = instance.add_pins(run_id, "run", ancestors, unless_held=GC_LEASE)
        if holder is None:
            return
        if lease_expired(holder):
            instance.release_lease(GC_LEASE, holder.run_id)
            continue
        time.sleep(poll)


def lineage(run: Any, runs_by_id: Mapping[str, Any]) -> Iterator[Any]:
    """``run`` and its ancestors, nearest first (a cycle or a missing parent ends it)."""
    seen: set[str] = set()
    while run is not None and run.run_id not in seen:
        seen.add(run.run_id)
        yield run
        run = runs_by_id.get(run.parent_run_id) if run.parent_run_id else None


def unreachable_manifests(
    manifests: list[Any],
    dropping: Mapping[tuple[Any, ...], tuple[list[Any], Address, Any]],
    created: Mapping[tuple[str, str], float],
    kept_run_ids: set[str],
    older_than: float | None,
) -> list[Any]:
    """Manifest entries (a fan-out's piece list, no data of their own) whose every piece goes or
    is gone, recorded by no kept run and, with ``older_than``, before it: with them the fan-out is
    computed again, instead of a manifest naming pieces no run can load."""
    going = {i.index_key for group, _, _ in dropping.values() for i in group if i.index_key}
    found = []
    for entry in manifests:
        if entry.address.run_id in kept_run_ids:
            continue
        if older_than is not None and entry.created_at >= older_than:
            continue
        base, _, identity = entry.output_key.rpartition("@")
        pieces = [
            (f"{base}[{piece_key}]@{identity}", version)
            for piece_key, version in (entry.recipe or {}).get("manifest", [])
        ]
        if all(p in going or p not in created for p in pieces):
            found.append(entry)
    return found


class PinnedSpare:
    """gc's ``spare(pins)``: the ``(output_key, version)`` index entries it would delete that a
    live run's pins name, and (``places``) every stored file they keep, event-only ones too.

    Called inside the transaction that deletes the entries (possibly again, on a retry): it
    reads nothing but what gc read before and the pins it is given.
    """

    def __init__(
        self,
        runs_by_id: Mapping[str, Any],
        over: Mapping[str, bool],
        addresses_of: Mapping[str, Mapping[Any, Address]],
        places: Any,
        place_of_pair: Mapping[tuple[str, str], tuple[Any, ...]],
        manifests: Iterable[Any],
    ) -> None:
        self.runs_by_id = runs_by_id
        self.over = over
        self.addresses_of = addresses_of
        self.places_of = places
        self.place_of_pair = place_of_pair
        self.manifests = list(manifests)
        #: files a pin keeps: gc deletes none of them
        self.places: set[tuple[Any, ...]] = set()
        self._event_only: dict[tuple[Any, ...], set[tuple[str, str | None]]] = {}

    def note_event_only(self, named: Mapping[tuple[Any, ...], list[Address]]) -> None:
        """Files gc would drop that only runs' events name (their index entry was stored again
        elsewhere since): a run that pinned the entry may have read the old address."""
        for place, addresses in named.items():
            self._event_only[place] = {
                (
                    output_key(
                        self.runs_by_id[a.run_id].job_name, a.step_key, a.output_name, a.mapping_key
                    )
                    if a.run_id in self.runs_by_id
                    else "",
                    a.version,
                )
                for a in addresses
            }

    def _live(self, pin: Any, now: float) -> bool:
        if pin.run_id not in self.runs_by_id:
            # not recorded when gc read the runs: a run starting now, or one whose validation
            # failed and whose process died before releasing its pins, long ago
            return bool(pin.created_at >= now - _UNRECORDED_PIN_SECONDS)
        return not self.over[pin.run_id]  # pins expire with their run

    def __call__(self, pins: list[Any]) -> set[tuple[str, str]]:
        now = time.time()
        keys: set[str] = set()
        exact: set[tuple[Any, ...]] = set()
        for pin in pins:
            if not self._live(pin, now):
                continue
            if pin.kind == "key":
                keys.add(pin.target)
            elif pin.kind == "entry":
                pair = tuple(json.loads(pin.target))
                exact.add(pair)
                if pair in self.place_of_pair:
                    self.places.add(self.place_of_pair[pair])
            elif pin.kind == "run" and pin.target in self.runs_by_id:
                for ancestor in lineage(self.runs_by_id[pin.target], self.runs_by_id):
                    self.places.update(
                        self.places_of.of(a)
                        for a in self.addresses_of.get(ancestor.run_id, {}).values()
                    )
        for (key, _version), place in self.place_of_pair.items():
            if key in keys:
                self.places.add(place)
        # job-scoped names (the io manager's identity left out): keeping too much costs disk
        bases: set[Any] = {key.rpartition("@")[0] for key in keys}
        bases.update((key.rpartition("@")[0], version) for key, version in exact)
        for place, named_as in self._event_only.items():
            if any(base in bases or (base, version) in bases for base, version in named_as):
                self.places.add(place)
        spared = {pair for pair, place in self.place_of_pair.items() if place in self.places}
        spared.update(
            (e.output_key, e.version)
            for e in self.manifests
            if e.output_key in keys or (e.output_key, e.version) in exact
        )
        return spared


#: deletes between two looks at the index for entries stored again (versioned layouts)
RECHECK_EVERY = 256


def indexed_again(instance: Any, chunk: list[tuple[list[Any], Any, Any]]) -> set[tuple[str, str]]:
    """The (output key, version) pairs of ``chunk`` that are in the index again."""
    pairs = {i.index_key for group, _, _ in chunk for i in group if i.index_key is not None}
    if not pairs:
        return set()
    entries = instance.entries_for_keys({key for key, _ in pairs})
    return {(e.output_key, e.version) for e in entries} & pairs
