"""``collect_garbage``: drop stored outputs no run worth keeping still points at.

An output is kept when one of the newest ``keep_runs`` runs produced or reused it (its address
is in that run's events), or when it was stored after ``older_than``. Everything else — index
entries and the files/objects behind them — goes. Dry run by default. The index entry is
deleted before its data, so a crash in between leaves an orphan file, never a dangling entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GcItem:
    """One stored output that gc drops (or would drop)."""

    uri: str
    step_key: str
    output_name: str
    run_id: str
    created_at: float | None
    size_bytes: int | None
    index_key: tuple[str, str] | None = None


@dataclass
class GcReport:
    items: list[GcItem] = field(default_factory=list)
    kept: int = 0
    dry_run: bool = True
    errors: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(i.size_bytes or 0 for i in self.items)


def collect_garbage(
    instance: Any,
    keep_runs: int | None = None,
    older_than: float | None = None,
    dry_run: bool = True,
) -> GcReport:
    """Find (and unless ``dry_run``, delete) stored outputs not reachable from the newest
    ``keep_runs`` runs, or stored before ``older_than`` (a UNIX timestamp). With both, an output
    must fail both tests to go."""
    if keep_runs is None and older_than is None:
        raise ValueError("collect_garbage needs keep_runs and/or older_than")
    runs = instance.get_runs(limit=1_000_000)
    runs.sort(key=lambda r: r.start_time or 0, reverse=True)
    kept_runs = runs[:keep_runs] if keep_runs is not None else []
    keep_uris: set[str] = set()
    for run in kept_runs:
        keep_uris.update(a.uri for a in instance.get_output_addresses(run.run_id).values() if a.uri)

    def reachable(uri: str, created_at: float | None) -> bool:
        if keep_runs is not None and uri in keep_uris:
            return True
        return bool(older_than is not None and (created_at is None or created_at >= older_than))

    candidates: dict[str, GcItem] = {}
    indexed: set[str] = set()  # judged by their index entry's creation time, not by a run's
    kept = 0
    for entry in instance.index_entries():
        uri = entry.address.uri
        if not uri:
            continue
        indexed.add(uri)
        if reachable(uri, entry.created_at):
            kept += 1
            continue
        candidates[uri] = GcItem(
            uri,
            entry.address.step_key,
            entry.address.output_name,
            entry.address.run_id,
            entry.created_at,
            None,
            (entry.output_key, entry.version),
        )
    kept_ids = {r.run_id for r in kept_runs}
    for run in runs:
        if run.run_id in kept_ids:
            continue
        for address in instance.get_output_addresses(run.run_id).values():
            uri = address.uri
            if not uri or uri in indexed or uri in candidates or uri.startswith("memory://"):
                continue
            if reachable(uri, run.start_time):
                continue
            candidates[uri] = GcItem(
                uri, address.step_key, address.output_name, address.run_id, run.start_time, None
            )
    items = [_with_size(item) for item in candidates.values()]
    items = [i for i in items if i.size_bytes is not None or i.index_key is not None]
    report = GcReport(sorted(items, key=lambda i: (i.created_at or 0, i.uri)), kept, dry_run)
    if not dry_run:
        instance.delete_index_entries(i.index_key for i in report.items if i.index_key)
        for item in report.items:
            error = _delete(item.uri)
            if error:
                report.errors.append(error)
    return report


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _with_size(item: GcItem) -> GcItem:
    size: int | None
    try:
        if _is_local(item.uri):
            size = os.path.getsize(item.uri.removeprefix("file://"))
        else:
            from fsspec.core import url_to_fs

            fs, path = url_to_fs(item.uri)
            size = int(fs.size(path))
    except (OSError, ImportError, ValueError):
        size = None
    return GcItem(
        item.uri,
        item.step_key,
        item.output_name,
        item.run_id,
        item.created_at,
        size,
        item.index_key,
    )


def _delete(uri: str) -> str | None:
    try:
        if _is_local(uri):
            path = uri.removeprefix("file://")
            os.unlink(path)
            # an emptied run folder goes too; an emptied fan-out folder ("step.output") and then
            # its run folder
            parent = os.path.dirname(path)
            folders = (
                [parent, os.path.dirname(parent)] if "." in os.path.basename(parent) else [parent]
            )
            for folder in folders:
                try:
                    os.rmdir(folder)
                except OSError:
                    break
        else:
            from fsspec.core import url_to_fs

            fs, path = url_to_fs(uri)
            fs.rm_file(path)
    except FileNotFoundError:
        return None
    except (OSError, ImportError, ValueError) as exc:
        return f"{uri}: {type(exc).__name__}: {exc}"
    return None
