"""``verify_outputs``: check that every indexed output is still stored as it was written, and
(with ``repair``) drop the index entries of those that are not, so memoization stops offering them.

Each output is checked through the io manager that stored it (found as ``memodag gc`` finds it:
a job the caller supplies, else a built-in path manager rebuilt from the address):
``IOManager.verify`` says whether the data is missing or differs in size or content hash from
what was recorded. An output whose manager cannot be had is reported as unchecked and kept.
Never deletes data. See docs/reliability.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memodag.versioning.gc import _METADATA_SERIALIZERS, _Managers

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
        repair: drop the index entries of outputs found missing or altered (their data, if
            any is left, stays: ``memodag gc`` collects it as unreferenced).
        jobs: job name -> ``JobDefinition`` whose io managers check their runs' outputs
            (custom managers); without them only built-in path managers are rebuilt.
        read: also read each output to compare its content hash (else sizes only: one stat).
    """
    report = VerifyReport(repaired=repair)
    runs = {r.run_id: r for r in instance.get_runs(limit=1_000_000)}
    checked: dict[tuple[str, str | None], tuple[str, str]] = {}
    with contextlib.ExitStack() as stack:
        managers = _Managers(instance, jobs or {}, stack)
        for entry in instance.index_entries():
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
        instance.delete_index_entries((i.output_key, i.version) for i in report.with_status(BAD))
    return report


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
