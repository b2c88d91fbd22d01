"""Tables across processes for a store only one process may write (DuckDB).

A worker process of a multiprocess or Dask run never opens such a store. It stages each table
output in the run's staging directory (an Arrow IPC file, or the compiled query of a SQL task,
beside a small pickle of what the op asked for: name, keys, indexes, types), and reads each table
input from an Arrow IPC file the driver exported there, memory-mapped. The driver alone writes
the database: it ingests a staged output before the output is recorded, and exports an input
before an attempt that reads it goes to a worker; an ingested output's file becomes its export.
The directory goes at run end; one a killed driver left behind goes when the next run's driver
finds that process gone (``claim``). Owns the files' layout and what a worker cannot be served
(``refused_on_workers``); must never decide what runs nor write SQL (the store does).
Semantics: docs/tables.md, "Executors".
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from memodag.definitions.tables import TABLE_STORE_KEY
from memodag.errors import StorageError
from memodag.tables.convert import DUCKDB, SQLALCHEMY, kind_of_type
from memodag.tables.store import TableSpec

if TYPE_CHECKING:
    import pyarrow as pa

    from memodag.definitions.job import JobDefinition
    from memodag.plan.plan import ExecutionPlan

_D = TypeVar("_D")

#: resource functions of table stores that are single-writer: always (None), or when their
#: resolved config says so (the default store is DuckDB unless it is given a PostgreSQL URL)
_SINGLE_WRITER: dict[Callable[..., Any], Callable[[Mapping[str, Any]], bool] | None] = {}

#: the file in a run's directory that names its driver process (``StagingArea.claim``)
_DRIVER = "driver.json"

#: input kinds that name the database itself: a worker of a single-writer store has none
_SQL_REFERENCES = {DUCKDB: "duckdb.DuckDBPyRelation", SQLALCHEMY: "sqlalchemy.Table"}


def single_writer_store(
    definition: _D, when: Callable[[Mapping[str, Any]], bool] | None = None
) -> _D:
    """Mark a table store resource whose store is ``single_writer`` (with ``when``: for the
    resolved configs it returns True for), so a run on several processes checks before it
    starts what its workers cannot be served."""
    _SINGLE_WRITER[definition.resource_fn] = when  # type: ignore[attr-defined]
    return definition


def refused_on_workers(
    job: JobDefinition, plan: ExecutionPlan, store_config: Mapping[str, Any] | None = None
) -> list[str]:
    """What a worker of the job's single-writer store could not do, each naming the op: a table
    input asked for as a ``sqlalchemy.Table`` or DuckDB relation (``input_type`` or annotation),
    as ``"op 'x' input 'y' (sqlalchemy.Table)"``, and a lazy task (its query runs in the
    database), as ``"op 'x' (lazy=True)"``. Empty when the store, with its resolved
    ``store_config``, is not single-writer.

    A lazy task is refused whatever it returns: whether its result is a query, a ``RawSql``
    script or an ``ExternalTableReference`` is known only once its body ran.
    """
    from memodag.definitions.tables import LAZY_TAG
    from memodag.plan.plan import ListSource, NodeSource
    from memodag.tables.io_manager import requested_input_type

    definition = job.resource_defs.get(TABLE_STORE_KEY)
    if definition is None or definition.resource_fn not in _SINGLE_WRITER:
        return []
    when = _SINGLE_WRITER[definition.resource_fn]
    if when is not None and not when(store_config or {}):
        return []
    found = []
    for node in plan.nodes.values():
        if node.op_def.tags.get(LAZY_TAG) and any(
            out.io_manager_key == TABLE_STORE_KEY for out in node.op_def.outs.values()
        ):
            found.append(f"op '{node.path}' (lazy=True)")
        for name, source in node.inputs.items():
            members = source.members if isinstance(source, ListSource) else (source,)
            if not any(
                isinstance(m, NodeSource)
                and m.node in plan.nodes
                and _out_key(plan, m.node, m.output) == TABLE_STORE_KEY
                for m in members
            ):
                continue
            wanted = requested_input_type(node.op_def, name)
            if wanted is None:
                continue
            kind = kind_of_type(wanted, f"op '{node.path}' input '{name}'")
            if kind in _SQL_REFERENCES:
                found.append(f"op '{node.path}' input '{name}' ({_SQL_REFERENCES[kind]})")
    return found


def _out_key(plan: ExecutionPlan, node: str, output: str) -> str | None:
    out = plan.nodes[node].op_def.outs.get(output)
    return out.io_manager_key if out is not None else None


def worker_cannot_open(what: str, reason: str) -> StorageError:
    """Why a worker of a single-writer store refuses ``what``: ``reason`` needs the database
    (which only the run's driver opens), and what to do instead."""
    return StorageError(
        f"{what}: {reason}, which a worker of a single-writer store (DuckDB) cannot open; run "
        "the job on the in-process executor, or use PostgreSQL"
    )


def worker_input_error(step_key: str, name: str, kind: str) -> StorageError:
    """Why a worker of a single-writer store cannot hand over a SQL reference, and what to use."""
    return StorageError(
        f"op '{step_key}' input '{name}': a {_SQL_REFERENCES.get(kind, kind)} names a table in "
        "the DuckDB file, which only the run's driver process may open; worker processes "
        "receive tables as data: ask for pyarrow.Table, pandas or polars (input_type=...), or "
        "run the job on in_process_executor (or on PostgreSQL, which every worker reaches)"
    )


@dataclass(frozen=True)
class StagedOutput:
    """A table a worker handed over: what the op asked for, and its data or its query."""

    spec: TableSpec
    data: pa.Table | None = None
    sql: str | None = None


class StagingArea:
    """One run's hand-over files: ``<root>/<run id>/out/<physical>.{arrow,pickle}`` written by
    workers, ``<root>/<run id>/in/<physical>.arrow`` written by the driver. Every file is
    written under a temporary name and renamed, so a reader never sees half of one."""

    def __init__(self, root: str, run_id: str) -> None:
        self.directory = os.path.join(root, run_id)
        self._outputs = os.path.join(self.directory, "out")
        self._inputs = os.path.join(self.directory, "in")
        self._exported: set[str] = set()  # inputs this process knows are there
        self._claimed = False

    # ---- worker side -------------------------------------------------------------------------

    def stage_output(
        self, physical: str, spec: TableSpec, data: pa.Table | None, sql: str | None
    ) -> None:
        """Hand one table over: its data (Arrow IPC) or its query, then what the op asked for
        (the pickle, written last: the driver takes only outputs whose pickle is there)."""
        os.makedirs(self._outputs, exist_ok=True)
        base = os.path.join(self._outputs, physical)
        if data is not None:
            _write_ipc(base + ".arrow", data)
        try:
            blob = pickle.dumps((spec, sql))
        except Exception as exc:
            raise StorageError(
                f"table '{spec.name}': its options (type_map, materialization_details) cannot "
                f"be handed to the driver process: {type(exc).__name__}: {exc}"
            ) from exc
        _write_atomically(base + ".pickle", blob)

    def read_input(self, physical: str) -> pa.Table:
        """An input the driver exported, memory-mapped (no copy)."""
        import pyarrow as pa

        path = os.path.join(self._inputs, physical + ".arrow")
        try:
            return pa.ipc.open_file(pa.memory_map(path)).read_all()
        except FileNotFoundError:
            raise StorageError(
                f"table {physical} was not handed to this worker ({path} is missing: the run "
                "ended, or the staging directory is not shared with the driver)"
            ) from None

    # ---- driver side -------------------------------------------------------------------------

    def claim(self) -> None:
        """Record the driver's process in the run's directory (once per run, before its first
        hand-over), and remove the directories of runs whose driver is gone: a killed run
        cannot remove its own."""
        if self._claimed:
            return
        self._claimed = True
        from memodag.storage.liveness import process_alive, process_identity

        os.makedirs(self.directory, exist_ok=True)
        _write_atomically(
            os.path.join(self.directory, _DRIVER), json.dumps(process_identity()).encode()
        )
        root = os.path.dirname(self.directory)
        for entry in os.scandir(root):
            if entry.path == self.directory or not entry.is_dir():
                continue
            try:
                with open(os.path.join(entry.path, _DRIVER), encoding="utf-8") as file:
                    identity = json.load(file)
            except (OSError, ValueError):
                continue  # not claimed yet (its driver may be starting), or not ours
            if process_alive(identity) is False:
                shutil.rmtree(entry.path, ignore_errors=True)

    def take_output(self, physical: str) -> StagedOutput:
        """What a worker staged for ``physical``."""
        import pyarrow as pa

        base = os.path.join(self._outputs, physical)
        try:
            with open(base + ".pickle", "rb") as file:
                spec, sql = pickle.load(file)
            if sql is not None:
                return StagedOutput(spec, None, sql)
            return StagedOutput(spec, pa.ipc.open_file(pa.memory_map(base + ".arrow")).read_all())
        except FileNotFoundError:
            raise StorageError(
                f"table {physical}: the worker's hand-over is missing from {self._outputs} "
                "(workers must reach the directory of the DuckDB file, at the same path)"
            ) from None

    def output_stored(self, physical: str, keep_as_input: bool) -> None:
        """The driver stored a staged output: its data file becomes the table's export for
        the attempts that read it (``keep_as_input``; the data is what a read would return),
        the rest goes."""
        base = os.path.join(self._outputs, physical)
        with contextlib.suppress(FileNotFoundError):
            os.remove(base + ".pickle")
        if keep_as_input:
            os.makedirs(self._inputs, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.replace(base + ".arrow", os.path.join(self._inputs, physical + ".arrow"))
                self._exported.add(physical)
                return
        with contextlib.suppress(FileNotFoundError):
            os.remove(base + ".arrow")

    def has_input(self, physical: str) -> bool:
        return physical in self._exported

    def export_input(self, physical: str, data: pa.Table) -> None:
        """Write a table for workers to read (``read_input``)."""
        os.makedirs(self._inputs, exist_ok=True)
        _write_ipc(os.path.join(self._inputs, physical + ".arrow"), data)
        self._exported.add(physical)

    def remove(self) -> None:
        """Drop the run's hand-over files (the run ended; its workers are gone)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.directory))  # the root, when no other run uses it
        self._exported.clear()


def _write_ipc(path: str, data: pa.Table) -> None:
    import pyarrow as pa

    if any(pa.types.is_dictionary(f.type) for f in data.schema):
        # the IPC file format holds one dictionary per column: chunks must share it
        data = data.unify_dictionaries()
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, data.schema) as writer:
            writer.write_table(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _write_atomically(path: str, blob: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as file:
        file.write(blob)
    os.replace(tmp, path)
