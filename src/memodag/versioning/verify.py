"""``verify_outputs``: check that every indexed output is still stored as it was written, and
(with ``repair``) mark the index entries of those that are not as lost, so memoization stops
offering them and ``explain`` says why they are recomputed.

Each output is checked through the io manager that stored it (found as ``memodag gc`` finds it:
a job the caller supplies, else a built-in path manager rebuilt from the address):
``IOManager.verify`` says whether the data is missing or differs in size or content hash from
what was recorded. An output whose manager cannot be had is reported as unchecked and kept.
Never deletes data. See docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memodag.storage.instance.records import IndexEntry
from memodag.storage.io_manager import Address
from memodag.versioning.gc import _METADATA_SERIALIZERS, _Managers
from memodag.versioning.memoize import LOST

OK, BAD, UNCHECKED = "ok", "bad", "unchecked"


@dataclass(frozen=True)
class VerifyItem:
    """One index entry and what verifying its data found."""

    output_key: str
    version: str
    uri: str | None
    step_key: str
    output_name: str
    run_id: str
    io_manager_key: str
    status: str  #: ``ok``, ``bad`` (missing or altered) or ``unchecked``
    reason: str = ""


@dataclass
class VerifyReport:
    items: list[VerifyItem] = field(default_factory=list)
    repaired: bool = False

    def with_status(self, status: str) -> list[VerifyItem]:
        return [i for i in self.items if i.status == status]


def verify_outputs(
    instance: Any,
    repair: bool = False,
    jobs: Mapping[str, Any] | None = None,
    read: bool = True,
) -> VerifyReport:
    """Check every output the instance's index names (each stored file once).

    Args:
        repair: mark the index entries of outputs found missing or altered as lost: no longer
            stored for memoization, kept so ``explain`` says so (their data, if any is left,
            stays: ``memodag gc`` collects it as unreferenced).
        jobs: job name -> ``JobDefinition`` whose io managers check their runs' outputs
            (custom managers); without them only built-in path managers are rebuilt.
        read: also read each output to compare its content hash (else sizes only: one stat).
    """
    report = VerifyReport(repaired=repair)
    runs = {r.run_id: r for r in instance.get_runs(limit=1_000_000)}
    checked: dict[tuple[str, str | None], tuple[str, str]] = {}
    entries: dict[tuple[str, str], IndexEntry] = {}
    with contextlib.ExitStack() as stack:
        managers = _Managers(instance, jobs or {}, stack)
        for entry in instance.index_entries():
            entries[(entry.output_key, entry.version)] = entry
            address = entry.address
            if address.serializer in _METADATA_SERIALIZERS and address.uri is None:
                continue
            place = (address.io_manager_key, address.uri)
            found = checked.get(place) if address.uri else None
            if found is None:
                found = _check(managers, address, runs.get(address.run_id), read)
                checked[place] = found
            status, reason = found
            report.items.append(
                VerifyItem(
                    entry.output_key,
                    entry.version,
                    address.uri,
                    address.step_key,
                    address.output_name,
                    address.run_id,
                    address.io_manager_key,
                    status,
                    reason,
                )
            )
    if repair:
        # each bad entry is replaced by one that names no data (not stored, for memoization)
        # but keeps what it was, so ``explain`` says the output was lost, not "never stored"
        now = time.time()
        lost = []
        for item in report.with_status(BAD):
            entry = entries[(item.output_key, item.version)]
            lost.append(_lost_entry(entry, item.reason, now))
        instance.store_events([], lost)
    return report


def _lost_entry(entry: IndexEntry, reason: str, now: float) -> IndexEntry:
    address = entry.address
    recipe = dict(entry.recipe or {})
    recipe["lost"] = {"reason": reason, "uri": address.uri, "at": now}
    return IndexEntry(
        entry.output_key,
        entry.version,
        Address(
            address.io_manager_key,
            None,
            LOST,
            address.run_id,
            address.step_key,
            address.output_name,
            address.mapping_key,
            address.version,
        ),
        entry.created_at,
        recipe=recipe,
        version_scheme=entry.version_scheme,
    )


def _check(managers: _Managers, address: Any, run: Any, read: bool) -> tuple[str, str]:
    manager = managers.for_address(address, run)
    if isinstance(manager, str):
        return UNCHECKED, manager
    try:
        problem = manager.verify(address, read=read)
    except Exception as exc:  # an unreachable store: say so, drop nothing
        return UNCHECKED, f"cannot be checked: {type(exc).__name__}: {exc}"
    return (BAD, problem) if problem else (OK, "")


__all__ = ["VerifyItem", "VerifyReport", "verify_outputs"]
