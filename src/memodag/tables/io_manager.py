"""``TableIOManager``: stores op outputs as tables through a ``TableStore`` and commits stages.

Owns the rules that do not depend on the database: which stage and name an output gets, its
physical name (op, output, version), what its address says, which type an input is handed over
as, and when a stage commits (at run end, when the run succeeded, one transaction per stage).
Must never write SQL itself (the store does) nor import a frame library at module level.
Semantics: docs/tables.md.
"""

from __future__ import annotations

import inspect
import re
import threading
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memodag.definitions.tables import (
    INPUT_TYPE_KEY,
    STAGE_MEMBERS_TAG,
    STAGE_TAG,
    Table,
    table_identifier,
)
from memodag.errors import DefinitionError, StorageError
from memodag.storage.io_manager import (
    Address,
    InputContext,
    MemoizableIOManager,
    OutputContext,
    RunEnd,
    RunInfo,
)
from memodag.tables.convert import (
    ARROW,
    DUCKDB,
    SQL,
    SQLALCHEMY,
    from_arrow,
    kind_of,
    kind_of_type,
    to_arrow,
)
from memodag.tables.store import StageTable, TableSpec, TableStore, physical_table_name

if TYPE_CHECKING:
    from memodag.tables.handover import StagingArea

#: how an address names a table: ``table:<kind>:<stage>/<name>/<physical>``
_URI_SCHEME = "table"
#: what ``Address.serializer`` says for a table (gc and ``runs show`` print it)
SERIALIZER = "table"


@dataclass(frozen=True)
class TableAddress:
    """What a table output's URI holds: the kind of object the op returned, its stage, its name
    in the stage and the physical table."""

    kind: str
    stage: str
    name: str
    physical: str

    def uri(self) -> str:
        return f"{_URI_SCHEME}:{self.kind}:{self.stage}/{self.name}/{self.physical}"

    @classmethod
    def parse(cls, uri: str | None) -> TableAddress:
        try:
            scheme, kind, rest = (uri or "").split(":", 2)
            stage, name, physical = rest.split("/")
        except ValueError:
            raise StorageError(f"{uri!r} is not the address of a stored table") from None
        if scheme != _URI_SCHEME:
            raise StorageError(f"{uri!r} is not the address of a stored table")
        return cls(kind, stage, name, physical)


class TableIOManager(MemoizableIOManager):
    """Stores each output as one physical table of its ``TableStore`` and shows it in its
    stage once the run succeeds.

    Invariants: an output's table is complete in the store before its address is returned
    (so before the engine records it); a stage is committed only from ``on_run_end`` of a
    successful run, with every table the run recorded for it; in a run two outputs never share
    a name in one stage. On a worker process of a multiprocess or Dask run (``serve_worker``)
    it writes and reads the store directly, or for a ``single_writer`` store (DuckDB) hands
    tables over through files the driver ingests and exports (``memodag.tables.handover``);
    names, stage members and commits are the driver's alone.
    """

    uses_instance_index = True

    def __init__(self, store: TableStore) -> None:
        self.store = store
        self._run: RunInfo | None = None
        # stage -> name -> the table the run recorded for it
        self._stages: dict[str, dict[str, StageTable]] = {}
        # stage -> name -> step key of the output that took the name in this run
        self._names: dict[str, dict[str, str]] = {}
        self._broken = False
        # stage -> step keys of every table-producing step of the stage, when the job says
        self._members: dict[str, set[str]] = {}
        # the run this process serves as a worker (``serve_worker``), else None
        self._worker: RunInfo | None = None
        # the run's hand-over files, for a single-writer store on several processes
        self._area: StagingArea | None = None
        # a Dask worker may run attempts on several threads; the store is not thread-safe
        self._lock = threading.RLock()

    def storage_identity(self) -> str:
        return self.store.identity()

    # ---- run lifecycle -----------------------------------------------------------------------

    def on_run_start(self, run: RunInfo) -> None:
        self._run = run
        self._stages = {}
        self._names = {}
        self._broken = False
        self._members = {}
        self._area = self._staging(run.run_id)
        self.store.open()

    def on_output_recorded(self, run: RunInfo, address: Address, memoized: bool) -> None:
        table = TableAddress.parse(address.uri)
        try:
            self._take_name(table.stage, table.name, address.step_key)
        except StorageError:
            self._broken = True  # the run fails at its end (the engine says why): no commit
            raise
        self._stages.setdefault(table.stage, {})[table.name] = StageTable(
            table.name, table.physical, address.step_key
        )

    def on_run_end(self, run: RunInfo, end: RunEnd) -> None:
        try:
            if not self._broken:
                for stage, tables in self._stages.items():
                    if end.success or self._complete(stage, tables):
                        self._commit(run, stage, tables)
        finally:
            self._run = None
            if self._area is not None:
                self._area.remove()
                self._area = None
            self.store.close()

    # ---- worker processes (docs/tables.md, "Executors") ---------------------------------------

    def _staging(self, run_id: str) -> StagingArea | None:
        if not self.store.single_writer:
            return None
        from memodag.tables.handover import StagingArea

        return StagingArea(self.store.staging_root(), run_id)

    def serve_worker(self, run: RunInfo) -> None:
        # a store every process reaches (PostgreSQL) connects at this worker's first table:
        # the driver already found it reachable, and workers that run no table op never connect
        self._worker = run
        self._area = self._staging(run.run_id)

    def release_worker(self, run: RunInfo) -> None:
        self._worker = None
        self._area = None
        self.store.close()

    def prepare_worker_input(self, run: RunInfo, address: Address) -> None:
        if self._area is None:
            return
        physical = TableAddress.parse(address.uri).physical
        self._area.claim()
        if not self._area.has_input(physical):
            self._area.export_input(physical, self.store.read_arrow(physical))

    def accept_worker_output(self, run: RunInfo, context: OutputContext, address: Address) -> None:
        table = TableAddress.parse(address.uri)
        self._note_members(context, table.stage)
        self._take_name(table.stage, table.name, context.step_key)
        if self._area is None:
            return  # the worker wrote the store itself
        self._area.claim()
        staged = self._area.take_output(table.physical)
        if context.version is None or not self.store.has_table(table.physical):
            if staged.sql is not None:
                self.store.write_query(table.physical, staged.sql, staged.spec)
            else:
                assert staged.data is not None
                self.store.write_arrow(table.physical, staged.data, staged.spec)
        # read back, a table a type_map changed differs from the data the op returned
        self._area.output_stored(
            table.physical, keep_as_input=staged.sql is None and not staged.spec.type_map
        )

    def _complete(self, stage: str, tables: dict[str, StageTable]) -> bool:
        """Whether every table-producing step of ``stage`` stored its tables in this run (a
        stage commits then even if the run fails later); unknown members: no."""
        members = self._members.get(stage)
        if not members:
            return False
        return members <= {t.step_key for t in tables.values()}

    def _commit(self, run: RunInfo, stage: str, tables: dict[str, StageTable]) -> None:
        # views the stage shows for steps of this run under a name they no longer produce
        steps = {t.step_key for t in tables.values()}
        shown = self.store.stage_tables(stage)
        drop = [n for n, t in shown.items() if t.step_key in steps and n not in tables]
        # only the views that change are replaced: a stage of 100 tables where one changed
        # commits one view (the store still checks the stage's owner)
        changed = [t for n, t in tables.items() if shown.get(n) != t]
        self.store.commit_stage(stage, run.job_name, changed, drop)

    def _take_name(self, stage: str, name: str, step_key: str) -> None:
        taken = self._names.setdefault(stage, {})
        other = taken.setdefault(name, step_key)
        if other != step_key:
            raise StorageError(
                f"stage '{stage}': table name '{name}' is produced by both {other} and "
                f"{step_key}; give one of them another Table(name=...)"
            )

    # ---- outputs -----------------------------------------------------------------------------

    def handle_output(self, context: OutputContext, obj: Any) -> str:
        run = self._run or self._worker
        if run is None:
            raise StorageError(
                f"{context.step_key}: table outputs are stored only during a run (the store's "
                "run lifecycle was not started)"
            )
        table = obj if isinstance(obj, Table) else Table(obj)
        what = f"op '{context.step_key}' output '{context.name}'"
        kind = kind_of(table.obj)
        if kind is None:
            raise StorageError(
                f"{what}: returned {type(table.obj).__name__}, which is not a table; return a "
                "pandas or polars frame, a pyarrow.Table, a DuckDB relation, or a SQL query "
                "(string, SQLAlchemy Select/TextClause), optionally wrapped in Table(...)"
            )
        stage = context.tags.get(STAGE_TAG) or _stage_of_job(run.job_name)
        name = _piece_name(table.name or _default_name(context), context)
        if self._worker is None:  # the driver's: a worker's outputs are noted when accepted
            self._note_members(context, stage)
            self._take_name(stage, name, context.step_key)
        version = context.version or "r" + context.run_id.replace("-", "")
        physical = physical_table_name(context.step_key, context.name, version)
        spec = TableSpec(
            name=name,
            primary_key=table.primary_key,
            indexes=table.indexes,
            type_map=table.type_map,
            nullable=table.nullable,
            non_nullable=table.non_nullable,
            materialization_details=table.materialization_details,
        )
        if self._worker is not None and self._area is not None:
            # the driver stores it before the output is recorded (accept_worker_output)
            if kind == SQL:
                self._area.stage_output(physical, spec, None, self._compile(table.obj, what))
            else:
                data = to_arrow(table.obj, kind, f"{what} (table {stage}.{name})")
                self._area.stage_output(physical, spec, data, None)
            return TableAddress(kind, stage, name, physical).uri()
        with self._lock:
            if context.version is None or not self.store.has_table(physical):
                if kind == SQL:
                    self.store.write_query(physical, self._compile(table.obj, what), spec)
                else:
                    data = to_arrow(table.obj, kind, f"{what} (table {stage}.{name})")
                    self.store.write_arrow(physical, data, spec)
        return TableAddress(kind, stage, name, physical).uri()

    def _note_members(self, context: OutputContext, stage: str) -> None:
        members = context.tags.get(STAGE_MEMBERS_TAG)
        if members and stage not in self._members:
            # the stage's nodes sit beside this one: same graph prefix in their step keys
            prefix = context.step_key[
                : len(context.step_key) - len(context.step_key.split(".")[-1])
            ]
            self._members[stage] = {prefix + m for m in members.split(",")}

    def _compile(self, query: Any, what: str) -> str:
        if isinstance(query, str):
            return query
        from sqlalchemy.dialects import postgresql

        # DuckDB speaks PostgreSQL's SQL; SQLAlchemy has no DuckDB dialect of its own
        try:
            compiled = query.compile(
                dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
            )
        except Exception as exc:
            raise StorageError(f"{what}: SQLAlchemy could not compile the query: {exc}") from exc
        return str(compiled)

    def serializer_name(self, context: OutputContext) -> str | None:
        return SERIALIZER

    def has_output(self, context: OutputContext) -> bool:
        if context.version is None:
            return False
        return self.store.has_table(
            physical_table_name(context.step_key, context.name, context.version)
        )

    # ---- inputs ------------------------------------------------------------------------------

    def load_input(self, context: InputContext) -> Any:
        table = TableAddress.parse(context.address.uri if context.address else None)
        as_type = context.metadata.get("as_type") or _input_type(context)
        if as_type is None:
            as_type = ARROW if table.kind == SQL else table.kind
        if self._worker is not None and self._area is not None:
            kind = kind_of_type(as_type, f"op '{context.step_key}' input '{context.name}'")
            if kind in (DUCKDB, SQLALCHEMY):
                from memodag.tables.handover import worker_input_error

                raise worker_input_error(context.step_key, context.name, kind)
            data = self._area.read_input(table.physical)
            return from_arrow(data, kind, f"table {table.physical}")
        with self._lock:
            try:
                return self.store.read(table.physical, as_type)
            finally:
                if self._run is None and self._worker is None:
                    self.store.close()  # outside a run (output_for_node): never keep the file

    # ---- gc ----------------------------------------------------------------------------------

    def exists(self, address: Address) -> bool:
        try:
            return self.store.has_table(TableAddress.parse(address.uri).physical)
        finally:
            if self._run is None and self._worker is None:
                self.store.close()

    def verify(self, address: Address, read: bool = False) -> str | None:
        """Whether the table is still stored, when the store can tell without a query (a
        memoized run asks for every table it reuses); otherwise the index is trusted."""
        stored = self.store.stored_cheaply(TableAddress.parse(address.uri).physical)
        return "missing" if stored is False else None

    def delete(self, address: Address) -> None:
        physical = TableAddress.parse(address.uri).physical
        try:
            if not self.store.is_shown(physical):  # a committed stage still shows it: kept
                self.store.drop_table(physical)
        finally:
            if self._run is None and self._worker is None:
                self.store.close()


def _stage_of_job(job_name: str) -> str:
    return table_identifier(job_name, f"stage of job '{job_name}' (ops outside any Stage)")


def _default_name(context: OutputContext) -> str:
    op_name = context.op_def.name if context.op_def is not None else context.step_key
    outs = getattr(context.op_def, "outs", ())
    return op_name if len(outs) <= 1 else f"{op_name}_{context.name}"


def _piece_name(name: str, context: OutputContext) -> str:
    """``name``, suffixed with the piece keys of a fan-out clone (``sales[north]`` ->
    ``<name>_north``) and of a dynamic output's piece, so pieces never share a table name."""
    keys = re.findall(r"\[([^\]]*)\]", context.step_key)
    if context.mapping_key is not None:
        keys.append(context.mapping_key)
    if keys:
        name = "_".join([name, *(re.sub(r"[^A-Za-z0-9_]", "_", k) for k in keys)])
    try:
        return table_identifier(name, "table name")
    except DefinitionError as exc:
        raise StorageError(
            f"op '{context.step_key}' output '{context.name}': {exc}; give Table(name=...)"
        ) from exc


def _input_type(context: InputContext) -> Any:
    return requested_input_type(context.op_def, context.name)


def requested_input_type(op_def: Any, name: str) -> Any:
    """The type op ``op_def`` asks input ``name`` as: ``In(metadata={"input_type": ...})``
    (what ``@materialize(input_type=)`` sets), else the parameter's annotation, else None."""
    if op_def is None:
        return None
    spec = op_def.ins.get(name)
    if spec is not None and spec.metadata.get(INPUT_TYPE_KEY) is not None:
        return spec.metadata[INPUT_TYPE_KEY]
    fn = op_def.compute_fn
    annotation = inspect.signature(fn).parameters.get(name)
    if annotation is None or annotation.annotation is inspect.Parameter.empty:
        return None
    hint = annotation.annotation
    if isinstance(hint, str):
        try:
            hint = typing.get_type_hints(fn).get(name, hint)
        except Exception:  # an annotation naming what the module does not import: no type
            return None
    try:
        kind_of_type(hint, "")
    except StorageError:
        return None
    return hint


__all__ = ["TableAddress", "TableIOManager", "from_arrow"]
