"""``TableIOManager``: stores op outputs as tables through a ``TableStore`` and commits stages.

Owns the rules that do not depend on the database: which stage and name an output gets, its
physical name (op, output, version), what its address says, which type an input is handed over
as, and when a stage commits (at run end, when the run succeeded, one transaction per stage).
Must never write SQL itself (the store does) nor import a frame library at module level.
Semantics: docs/tables.md.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import typing
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from memodag.definitions.composition import PICK_TABLE_TAG
from memodag.definitions.tables import (
    INPUT_TYPE_KEY,
    LAZY_TAG,
    STAGE_MEMBERS_TAG,
    STAGE_TAG,
    ExternalTableReference,
    RawSql,
    Table,
    table_identifier,
)
from memodag.errors import DefinitionError, OutputLostError, StorageError
from memodag.hashing import hash_strings
from memodag.plan.dynamic import parse_step_key
from memodag.storage.io_manager import (
    INLINE,
    Address,
    InputContext,
    MemoizableIOManager,
    OutputContext,
    RunEnd,
    RunInfo,
    StoredData,
)
from memodag.tables import inline as inline_handover
from memodag.tables.cache import CacheRecord, LocalTableCache, same_after_store
from memodag.tables.convert import (
    ARROW,
    DUCKDB,
    PANDAS,
    POLARS,
    POLARS_LAZY,
    SQL,
    SQLALCHEMY,
    from_arrow,
    kind_of,
    kind_of_type,
    to_arrow,
)
from memodag.tables.cutoff import arrow_content_hash
from memodag.tables.fanout import (
    Piece,
    check_declared,
    collected_as,
    concatenate,
    declared_schema,
    piece_keys,
    piece_name,
)
from memodag.tables.lazy import canonical_sql, frame_content_hash, frame_version, query_version
from memodag.tables.store import (
    StageTable,
    TableSpec,
    TableStore,
    physical_table_name,
    quote_identifier,
)

if TYPE_CHECKING:
    from memodag.tables.handover import StagingArea

#: how an address names a table: ``table:<kind>:<stage>/<name>/<physical>[@<shown as>]``
_URI_SCHEME = "table"
#: the kind of a ``RawSql`` output: several tables, listed in its address
RAWSQL = "rawsql"
#: what ``Address.serializer`` says for a table (gc and ``runs show`` print it)
SERIALIZER = "table"
#: the address kind of an ``ExternalTableReference``: its "physical" part is ``schema.name``
EXTERNAL = "external"
#: the run tag of a run that re-runs stored steps (``versioning.fresh_input``): tables it holds
#: at a version are written anew, since the data may differ now
_CACHE_VALIDATION_TAG = "memodag/cache_validation"
_FORCED = ("force_fresh_input", "force_cache_invalid")


class DecidedAtRunTime(StorageError):
    """A lazy task's version cannot be told without running it on data (it returns a frame,
    or reads an input as data): ``list-versions`` says it is decided at run time."""


@dataclass(frozen=True)
class TableAddress:
    """What a table output's URI holds: the kind of object the op returned, its stage, its name
    in the stage, the physical table, and where users find it (``shown_as``:
    ``<store location>#<schema>.<name>``, no password; empty in URIs written before it was kept).
    """

    kind: str
    stage: str
    name: str
    physical: str
    shown_as: str = ""

    def uri(self) -> str:
        uri = f"{_URI_SCHEME}:{self.kind}:{self.stage}/{self.name}/{self.physical}"
        return f"{uri}@{self.shown_as}" if self.shown_as else uri

    def tables(self) -> list[tuple[str, str]]:
        """``(name in the stage, physical table)`` of each table the output shows: one, or for
        a ``RawSql`` output (``physical`` is ``<marker>;<name>:<physical>;...``) each it made."""
        if self.kind != RAWSQL:
            return [(self.name, self.physical)]
        return [tuple(part.split(":", 1)) for part in self.physical.split(";")[1:]]  # type: ignore[misc]

    def physicals(self) -> list[str]:
        """Every physical table behind the output (a ``RawSql`` output's marker too)."""
        if self.kind != RAWSQL:
            return [self.physical]
        return [self.physical.split(";")[0], *(p for _, p in self.tables())]

    @classmethod
    def parse(cls, uri: str | None) -> TableAddress:
        try:
            scheme, kind, rest = (uri or "").split(":", 2)
            # the location after '@' may hold '/' (a path) and '@' (user@host); names never do
            stage, name, tail = rest.split("/", 2)
            physical, _, shown_as = tail.partition("@")
            if "/" in physical:
                raise ValueError(physical)
        except ValueError:
            raise StorageError(f"{uri!r} is not the address of a stored table") from None
        if scheme != _URI_SCHEME:
            raise StorageError(f"{uri!r} is not the address of a stored table")
        return cls(kind, stage, name, physical, shown_as)


#: where an inline table is: handed over in memory, in no database
INLINE_LOCATION = "inline (in memory, not stored)"


def table_location(uri: str | None) -> str | None:
    """Where users find the table at ``uri`` (``duckdb:<file>#<schema>.<table>``,
    ``postgresql://user@host:port/db#<schema>.<table>``), ``<stage>.<table>`` for URIs written
    before the store's location was kept, or None when ``uri`` is not a table's."""
    try:
        table = TableAddress.parse(uri)
    except StorageError:
        return None
    if table.kind.startswith(inline_handover.INLINE_KIND):
        return INLINE_LOCATION
    return table.shown_as or f"{table.stage}.{table.name}"


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

    def __init__(
        self,
        store: TableStore,
        inline_policy: str = "default_false",
        cache: LocalTableCache | None = None,
    ) -> None:
        self.store = store
        #: Parquet copies of tables on this machine (``memodag.tables.cache``), or None
        self.cache = cache
        #: the store's ``inline_policy`` (never in a version); a run tag may override it
        self.inline_policy = inline_handover.check_policy(inline_policy, "inline_policy")
        #: which outputs the run may hand over in memory (``prepare_inline``); None: none
        self._inline_plan: inline_handover.InlinePlan | None = None
        self._frames: inline_handover.InlineFrames | None = None
        self._policy = self.inline_policy
        # stage -> step keys whose table this run handed over in memory (no view shows it)
        self._inlined: dict[str, set[str]] = {}
        # (step key, output, piece) of outputs handed over in memory: their serializer
        self._inline_outputs: set[tuple[str, str, str | None]] = set()
        self._run: RunInfo | None = None
        # stage -> name -> the table the run recorded for it
        self._stages: dict[str, dict[str, StageTable]] = {}
        # stage -> name -> step key of the output that took the name in this run
        self._names: dict[str, dict[str, str]] = {}
        self._broken = False
        # stage -> step keys of every table-producing step of the stage, when the job says
        self._members: dict[str, set[str]] = {}
        # step key -> (input, producer, output, piece) -> version of each table it read: what
        # a lazy task's query is versioned by besides its text
        self._inputs: dict[str, dict[tuple[str, ...], str]] = {}
        # set while list-versions evaluates a lazy task's body: nothing is written or executed
        self._predicting = False
        # stage -> step keys that returned an external table (no view in the stage)
        self._externals: dict[str, set[str]] = {}
        self._forced = False
        # the run this process serves as a worker (``serve_worker``), else None
        self._worker: RunInfo | None = None
        # the run's hand-over files, for a single-writer store on several processes
        self._area: StagingArea | None = None
        # a Dask worker may run attempts on several threads; the store is not thread-safe
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def predicting(self) -> Iterator[None]:
        """While open, a lazy task's outputs are versioned but nothing is written or executed,
        and inputs are handed over only as ``sqlalchemy.Table`` references (``list-versions``
        evaluates lazy SQL bodies this way); anything else raises ``DecidedAtRunTime``."""
        self._predicting = True
        try:
            yield
        finally:
            self._predicting = False
            self._inputs = {}
            self.store.close()

    def storage_identity(self) -> str:
        return self.store.identity()

    # ---- run lifecycle -----------------------------------------------------------------------

    def on_run_start(self, run: RunInfo) -> None:
        self._run = run
        self._stages = {}
        self._names = {}
        self._broken = False
        self._members = {}
        self._inputs = {}
        self._externals = {}
        self._forced = run.tags.get(_CACHE_VALIDATION_TAG) in _FORCED
        self._area = self._staging(run.run_id)
        self._policy = inline_handover.policy_of({"inline_policy": self.inline_policy}, run.tags)
        self._frames = inline_handover.InlineFrames(run.run_id)
        self._inlined = {}
        self._inline_outputs = set()
        self.store.open()

    def prepare_inline(self, plan: Any, in_process: bool) -> None:
        """Before the run's first step: which outputs may be handed over in memory."""
        self._inline_plan = inline_handover.plan_inline(plan, in_process)

    def on_output_recorded(self, run: RunInfo, address: Address, memoized: bool) -> None:
        table = TableAddress.parse(address.uri)
        if table.kind == EXTERNAL:  # shown by no view: its step counts as done for the stage
            self._externals.setdefault(table.stage, set()).add(address.step_key)
            return
        if table.kind.startswith(inline_handover.INLINE_KIND):  # in memory: no view either
            self._externals.setdefault(table.stage, set()).add(address.step_key)
            self._inlined.setdefault(table.stage, set()).add(address.step_key)
            return
        for name, physical in table.tables():
            try:
                self._take_name(table.stage, name, address.step_key)
            except StorageError:
                self._broken = True  # the run fails at its end (the engine says why): no commit
                raise
            self._stages.setdefault(table.stage, {})[name] = StageTable(
                name, physical, address.step_key
            )

    def on_run_end(self, run: RunInfo, end: RunEnd) -> None:
        try:
            if not self._broken:
                for stage, tables in self._stages.items():
                    if end.success or self._complete(stage, tables):
                        self._commit(run, stage, tables)
                if end.success and run.whole_job:
                    self._empty_abandoned_stages(run)
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
        self._forced = run.tags.get(_CACHE_VALIDATION_TAG) in _FORCED

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
        if table.kind not in (EXTERNAL, RAWSQL):  # as in-process: no name of the stage's own
            self._take_name(table.stage, table.name, context.step_key)
        if self._area is None:
            return  # the worker wrote the store itself
        self._area.claim()
        staged = self._area.take_output(table.physical)
        # forced: the step re-ran, so its table is new even if one is stored at its version
        if context.version is None or self._forced or not self.store.has_table(table.physical):
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
        return members <= {t.step_key for t in tables.values()} | self._externals.get(stage, set())

    def _commit(self, run: RunInfo, stage: str, tables: dict[str, StageTable]) -> None:
        shown = self.store.stage_tables(stage)
        if run.whole_job:
            # the stage shows exactly what this run made for it: views of ops moved to another
            # stage, removed, or no longer yielding a piece or an optional output go (a table
            # now handed over in memory too: its old view would be stale)
            drop = [n for n in shown if n not in tables]
        else:
            # a subset of the steps: only views of steps this run made elsewhere, under
            # another name or in memory go; the other steps' views stay as they were
            made = {t.step_key for ts in self._stages.values() for t in ts.values()}
            made |= self._inlined.get(stage, set())
            drop = [n for n, t in shown.items() if t.step_key in made and n not in tables]
        # only the views that change are replaced: a stage of 100 tables where one changed
        # commits one view (the store still checks the stage's owner)
        changed = [t for n, t in tables.items() if shown.get(n) != t]
        self.store.commit_stage(stage, run.job_name, changed, drop)

    def _empty_abandoned_stages(self, run: RunInfo) -> None:
        """Stages the job committed before and in which it makes no table any more (their ops
        moved or were removed) are committed empty: they show what this run made for them."""
        for stage in self.store.job_stages(run.job_name):
            if stage not in self._stages:
                shown = self.store.stage_tables(stage)
                if shown:
                    self.store.commit_stage(stage, run.job_name, [], list(shown))

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
        if run is None and not self._predicting:
            raise StorageError(
                f"{context.step_key}: table outputs are stored only during a run (the store's "
                "run lifecycle was not started)"
            )
        table = obj if isinstance(obj, Table) else Table(obj)
        what = f"op '{context.step_key}' output '{context.name}'"
        if isinstance(table.obj, ExternalTableReference):
            return self._external(context, table, what)
        lazy = context.tags.get(LAZY_TAG) == "true"
        kind = RAWSQL if isinstance(table.obj, RawSql) else kind_of(table.obj)
        if kind == RAWSQL and not lazy:
            raise StorageError(
                f"{what}: returned RawSql, which only a lazy task may return; declare the op "
                "with @materialize(lazy=True)"
            )
        if kind is None:
            raise StorageError(
                f"{what}: returned {type(table.obj).__name__}, which is not a table; return a "
                "pandas or polars frame, a pyarrow.Table, a DuckDB relation, or a SQL query "
                "(string, SQLAlchemy Select/TextClause), optionally wrapped in Table(...)"
            )
        job_name = run.job_name if run is not None else context.run_id
        stage = context.tags.get(STAGE_TAG) or _stage_of_job(job_name)
        name = _piece_name(table.name or _default_name(context), context)
        if stage not in self._names:
            self.store.check_stage(stage)
        if self._worker is None:  # the driver's: a worker's outputs are noted when accepted
            self._note_members(context, stage)
            if kind != RAWSQL and not self._predicting:  # a script's tables: their own names
                self._take_name(stage, name, context.step_key)
        spec = TableSpec(
            name=name,
            primary_key=table.primary_key,
            indexes=table.indexes,
            type_map=table.type_map,
            nullable=table.nullable,
            non_nullable=table.non_nullable,
            materialization_details=table.materialization_details,
        )
        where = TableAddress(kind, stage, name, "", self._shown_as(stage, name))
        handed_over = self._worker is not None and self._area is not None
        if handed_over and (lazy or kind == RAWSQL):
            from memodag.tables.handover import worker_cannot_open

            raise worker_cannot_open(what, "a lazy task runs its query in the database")
        if kind == RAWSQL:
            return self._store_script(context, table.obj, where)
        if lazy:
            return self._store_lazy(context, table.obj, kind, where, spec)
        version = context.version or "r" + context.run_id.replace("-", "")
        physical = physical_table_name(context.step_key, context.name, version)
        if handed_over:
            assert self._area is not None
            if self._forced:  # the driver cannot tell a stored table apart: a new one
                physical = _forced_physical(context, version)
            # the driver stores it before the output is recorded (accept_worker_output)
            if kind == SQL:
                self._area.stage_output(physical, spec, None, self._compile(table.obj, what))
                # the driver runs the query later: its data is unseen here, so the output
                # counts as changed (a hash of the query text would hide new data)
                unseen = _unseen_hash(context) if context.early_cutoff else None
                return StoredData(replace(where, physical=physical).uri(), data_hash=unseen)
            data = _checked_arrow(context, table.obj, kind, f"{what} (table {stage}.{name})")
            self._area.stage_output(physical, spec, data, None)
            cutoff = arrow_content_hash(data) if context.early_cutoff else None
            return StoredData(replace(where, physical=physical).uri(), data_hash=cutoff)
        if self._inlines(context, table, kind):
            return self._hold(context, table.obj, kind, replace(where, physical=physical))
        data_hash = None
        with self._lock:
            stored = context.version is not None and self.store.has_table(physical)
            if stored and self._forced:
                # a forced run re-runs stored steps: the data may differ from what is stored at
                # this version, so it goes to a new table, which the index then names for it
                physical = _forced_physical(context, version)
                stored = False
            if not stored:
                if kind == SQL:
                    self.store.write_query(physical, self._compile(table.obj, what), spec)
                    if context.early_cutoff:  # what the query made, not its text
                        data_hash = arrow_content_hash(self.store.read_arrow(physical))
                else:
                    data = _checked_arrow(
                        context, table.obj, kind, f"{what} (table {stage}.{name})"
                    )
                    self.store.write_arrow(physical, data, spec)
                    self._cache_output(context, physical, data, spec)
                    if context.early_cutoff:
                        data_hash = arrow_content_hash(data)
            elif context.early_cutoff:
                data = (
                    self.store.read_arrow(physical)
                    if kind == SQL
                    else to_arrow(table.obj, kind, what)
                )
                data_hash = arrow_content_hash(data)
            schema = self._schema_text(self.store.schema_of(physical))
        uri = replace(where, physical=physical).uri()
        return StoredData(uri, data_hash=data_hash, schema=schema)

    def _inlines(self, context: OutputContext, table: Table, kind: str) -> bool:
        """Whether this output is handed over in memory: the policy asks for it and the plan
        allows it (a debug line says why not, when asked but not allowed)."""
        if kind not in inline_handover.FRAME_KINDS or context.mapping_key is not None:
            return False
        if not inline_handover.wants_inline(table.inline, self._policy):
            return False
        path = parse_step_key(context.step_key)[0]
        plan = self._inline_plan
        why = (
            "the step runs in another process than the run's driver (inline hand-over works "
            "on the in-process executor)"
            if plan is None or self._run is None
            else plan.why_not(path, context.name)
        )
        if why is not None:
            if context.log is not None:
                context.log.debug(
                    f"op '{context.step_key}' output '{context.name}': not inlined, "
                    f"materialized: {why}"
                )
            return False
        return True

    def _hold(self, context: OutputContext, obj: Any, kind: str, where: TableAddress) -> StoredData:
        """Keep the frame in memory for its consumers (no database write): the address has
        the output's version but no stored data (docs/tables.md, "Inline hand-over")."""
        assert self._frames is not None
        frame, kind = inline_handover.frame_of(obj, kind)
        self._frames.put(context.step_key, context.name, frame, kind)
        self._inline_outputs.add((context.step_key, context.name, context.mapping_key))
        data_hash = None
        what = f"op '{context.step_key}' output '{context.name}'"
        if declared_schema(context.out) is not None or context.early_cutoff:
            data = _checked_arrow(context, frame, kind, what)
            if context.early_cutoff:
                data_hash = arrow_content_hash(data)
        # no location: the table is in no database
        uri = replace(where, kind=inline_handover.INLINE_KIND + kind, shown_as="").uri()
        schema = self._schema_text(inline_handover.arrow_schema(frame, kind))
        return StoredData(uri, data_hash=data_hash, schema=schema)

    def _external(self, context: OutputContext, table: Table, what: str) -> StoredData:
        """An ``ExternalTableReference``: checked to exist and to lie outside the stage's own
        schema; nothing is written, and no view shows it."""
        run = self._run or self._worker
        assert run is not None
        if self._worker is not None and self._area is not None:
            from memodag.tables.handover import worker_cannot_open

            raise worker_cannot_open(what, "an ExternalTableReference is checked in the database")
        ref: ExternalTableReference = table.obj
        stage = context.tags.get(STAGE_TAG) or _stage_of_job(run.job_name)
        if ref.schema.lower() == self.store.schema_name(stage).lower():
            raise StorageError(
                f"{what}: ExternalTableReference({ref.name!r}, schema={ref.schema!r}) points into "
                f"the schema of stage '{stage}', which memodag replaces at each commit; keep "
                "external tables in a schema of their own"
            )
        if not self.store.external_exists(ref.schema, ref.name):
            raise StorageError(
                f"{what}: external table {ref.schema}.{ref.name} does not exist in "
                f"{self.store.identity()}; create it first, or fix the name or schema"
            )
        name = _piece_name(table.name or _default_name(context), context)
        shown = f"{self.store.location()}#{ref.schema}.{ref.name}"
        uri = TableAddress(EXTERNAL, stage, name, f"{ref.schema}.{ref.name}", shown).uri()
        schema = self.store.external_schema(ref.schema, ref.name)
        # never the reference object's hash (constant while the table's data changes): its
        # version (which holds a declared data version), or unseen data without one
        data_hash = None
        if context.early_cutoff:
            data_hash = context.version or _unseen_hash(context)
        return StoredData(uri, data_hash=data_hash, schema=self._schema_text(schema))

    @staticmethod
    def _schema_text(schema: Any) -> str:
        from memodag.tables.auto_version import schema_text

        return schema_text(schema)

    def schema_text(self, address: Address) -> str:
        """The stored table's schema (``Address.schema``), read from the store's bookkeeping
        (addresses written before memodag kept it there)."""
        table = TableAddress.parse(address.uri)
        try:
            if table.kind == EXTERNAL:
                schema, _, name = table.physical.partition(".")
                return self._schema_text(self.store.external_schema(schema, name))
            return self._schema_text(self.store.schema_of(table.physical))
        finally:
            self._close_if_idle()

    def _store_lazy(
        self, context: OutputContext, obj: Any, kind: str, where: TableAddress, spec: TableSpec
    ) -> StoredData:
        """A lazy task's output: versioned by what the body returned (the canonical query, the
        versions of the tables it read and the table options; or a frame's content), stored at
        that version unless a table of it is stored already. The version is reported as the
        output's data hash, by which its consumers are versioned (the output is early cutoff)."""
        what = f"op '{context.step_key}' output '{context.name}'"
        run_tag = "r" + context.run_id.replace("-", "")
        if self._predicting and kind != SQL:
            raise DecidedAtRunTime(f"{what} returned a frame: versioned by its content")
        if kind == SQL:
            sql = self._compile(obj, what)
            inputs = self._inputs.get(context.step_key, {})
            version = query_version(canonical_sql(sql, self.store.data_schema), inputs, spec)
            physical = physical_table_name(context.step_key, context.name, "q" + version)
            if not self._predicting and not self.store.has_table(physical):
                self.store.write_query(physical, sql, spec)  # runs inside the database
        else:
            data = to_arrow(obj, kind, f"{what} (table {where.stage}.{where.name})")
            content, column = frame_content_hash(obj, kind, data)
            if content is None:
                # no content to compare: never stale, so every consumer runs on every run
                if context.log is not None:
                    context.log.warning(
                        f"{what}: column '{column}' of table '{where.name}' cannot be hashed, "
                        "so this lazy table gets a new version on every run and its consumers "
                        "always run; convert the column to a hashable type (str, numbers) to "
                        "keep them memoized"
                    )
                version = hash_strings("unhashed", context.run_id, context.step_key, context.name)
                physical = physical_table_name(context.step_key, context.name, run_tag)
            else:
                version = frame_version(content, spec)
                physical = physical_table_name(context.step_key, context.name, "f" + version)
            if content is None or not self.store.has_table(physical):
                self.store.write_arrow(physical, data, spec)
                self._cache_output(context, physical, data, spec)
        return StoredData(replace(where, physical=physical).uri(), data_hash=version)

    def _store_script(self, context: OutputContext, raw: RawSql, where: TableAddress) -> StoredData:
        """A ``RawSql`` script's tables, versioned by the canonical script and the versions of
        the tables the task read. A new version runs the script in a scratch schema (``{stage}``
        in the script), copies each table it created into a physical table inside the database
        and lists them in a marker table; a stored version (its marker) runs nothing."""
        what = f"op '{context.step_key}' output '{context.name}' (RawSql {raw.name or where.name})"
        statements = raw.statements()
        data_schema = self.store.data_schema
        canonical = canonical_sql(f" {raw.separator} ".join(statements), data_schema)
        inputs = self._inputs.get(context.step_key, {})
        version = query_version(canonical, inputs, TableSpec(name=where.name), "script")
        marker = physical_table_name(context.step_key, context.name, "s" + version)
        if self._predicting:
            return StoredData(replace(where, physical=marker).uri(), data_hash=version)
        if self.store.has_table(marker):
            names = self.store.read_arrow(marker).column("table_name").to_pylist()
        else:
            names = self._run_script(context, statements, version, marker, what)
        parts = [marker]
        for table_name in names:
            self._take_name(where.stage, table_name, context.step_key)
            parts.append(f"{table_name}:{_script_table(context, table_name, version)}")
        return StoredData(replace(where, physical=";".join(parts)).uri(), data_hash=version)

    def _run_script(
        self, context: OutputContext, statements: list[str], version: str, marker: str, what: str
    ) -> list[str]:
        import pyarrow as pa

        scratch = self.store.schema_name(f"memodag_tmp_{version[:16]}")
        quoted = quote_identifier(scratch)
        try:
            try:
                created = self.store.run_script(
                    [s.replace("{stage}", quoted) for s in statements], scratch
                )
            except StorageError as exc:
                raise StorageError(f"{what}: {exc}") from exc
            if not created:
                raise StorageError(
                    f"{what}: the script created no table in its stage; create them as "
                    "CREATE TABLE {stage}.<name> AS ... ({stage} is replaced by the schema)"
                )
            names = []
            for created_name in created:
                try:
                    table_name = table_identifier(created_name, "table name")
                except DefinitionError as exc:
                    raise StorageError(f"{what}: {exc}") from exc
                names.append(table_name)
                self.store.write_query(
                    _script_table(context, table_name, version),
                    f"SELECT * FROM {quoted}.{quote_identifier(created_name)}",
                    TableSpec(name=table_name),
                )
            # written last: a script whose tables are not all stored has no marker
            self.store.write_arrow(
                marker, pa.table({"table_name": names}), TableSpec(name=f"{context.name}_tables")
            )
            return names
        finally:
            self.store.drop_schema(scratch)

    def _shown_as(self, stage: str, name: str) -> str:
        return f"{self.store.location()}#{self.store.schema_name(stage)}.{name}"

    def location(self, address: Address) -> str | None:
        try:
            table = TableAddress.parse(address.uri)
        except StorageError:  # a fan-out's manifest: no table of its own
            return None
        if table.kind.startswith(inline_handover.INLINE_KIND):
            return INLINE_LOCATION  # never written: no name in the stage to query
        return table.shown_as or self._shown_as(table.stage, table.name)

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

    def _cache_output(
        self, context: OutputContext, physical: str, data: Any, spec: TableSpec
    ) -> None:
        """``store_output``: the data just written goes to the local cache too, when the store
        reads it back value for value (no ``type_map``; PostgreSQL: no sub-microsecond times)."""
        cache = self.cache
        if cache is None or not cache.store_output or self._predicting or spec.type_map:
            return
        if cache.wants(data) and same_after_store(data, self.store.dialect):
            cache.put(CacheRecord(physical, context.version or "", context.run_id), data)

    def serializer_name(self, context: OutputContext) -> str | None:
        if (context.step_key, context.name, context.mapping_key) in self._inline_outputs:
            return INLINE  # a version, no stored data: recomputed when a consumer runs
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
        if table.kind.startswith(inline_handover.INLINE_KIND):
            return self._handed_over(context, table)
        active = self._run is not None or self._worker is not None or self._predicting
        if active and context.address is not None:
            upstream = context.address
            read = self._inputs.setdefault(context.step_key, {})
            if table.kind == EXTERNAL:
                # its data may change while its version stays: new with each run of the step
                # that made it, as its consumers see it (versioning/fresh_input.py)
                seen = "fresh:" + hash_strings(upstream.version or "", upstream.run_id)
            else:
                seen = upstream.data_hash or upstream.version or table.physical
            read[
                (
                    context.name,
                    upstream.step_key,
                    upstream.output_name,
                    upstream.mapping_key or "",
                )
            ] = seen
        as_type = context.metadata.get("as_type")
        concat = False
        if as_type is None and context.metadata.get("collected"):
            collected = _collected(context)
            as_type, concat = collected.as_type, collected.concat
        elif as_type is None:
            as_type = _input_type(context)
        if as_type is None:
            as_type = ARROW if table.kind in (SQL, RAWSQL, EXTERNAL) else table.kind
        if self._predicting and kind_of_type(as_type, context.name) != SQLALCHEMY:
            raise DecidedAtRunTime(f"input '{context.name}' is read as data")
        if self._worker is not None and self._area is not None:
            from memodag.tables.handover import worker_cannot_open, worker_input_error

            what = f"op '{context.step_key}' input '{context.name}'"
            kind = kind_of_type(as_type, what)
            if kind in (DUCKDB, SQLALCHEMY):
                raise worker_input_error(context.step_key, context.name, kind)
            if table.kind in (RAWSQL, EXTERNAL):
                raise worker_cannot_open(
                    what, "a RawSql or external table is read from the database"
                )
            data = self._area.read_input(table.physical)
            if concat:
                address = context.upstream_output
                key = f"[{address.mapping_key}]" if address.mapping_key is not None else ""
                return Piece(data, address.step_key + key)
            return from_arrow(data, kind, f"table {table.physical}")
        with self._lock:
            try:
                if concat:  # combine_collected concatenates the pieces as Arrow
                    address = context.upstream_output
                    key = f"[{address.mapping_key}]" if address.mapping_key is not None else ""
                    return Piece(self._read(table.physical, ARROW, context), address.step_key + key)
                if table.kind == EXTERNAL:
                    schema, _, name = table.physical.partition(".")
                    return self.store.read_external(schema, name, as_type)
                if table.kind != RAWSQL:
                    return self._read(table.physical, as_type, context)
                made = dict(table.tables())
                pick = context.tags.get(PICK_TABLE_TAG + context.name)
                if pick is None:  # all of the script's tables, by name
                    return {
                        n: self._read(physical, as_type, context) for n, physical in made.items()
                    }
                if pick not in made:
                    raise StorageError(
                        f"input '{context.name}' of step '{context.step_key}': the RawSql script "
                        f"of '{table.name}' made no table '{pick}' (it made {sorted(made)})"
                    )
                return self._read(made[pick], as_type, context)
            finally:
                self._close_if_idle()

    def _handed_over(self, context: InputContext, table: TableAddress) -> Any:
        """An inlined table, from the memory of the run that computed it."""
        address = context.address
        assert address is not None
        if self._run is not None:
            self._inputs.setdefault(context.step_key, {})[
                (context.name, address.step_key, address.output_name, address.mapping_key or "")
            ] = address.data_hash or address.version or table.physical
        frames = self._frames if self._frames is not None else None
        if frames is None or frames.run_id != address.run_id:
            frames = inline_handover.held(address.run_id)
        found = frames.get(address.step_key, address.output_name) if frames else None
        if found is None:
            raise OutputLostError(
                f"table '{table.stage}.{table.name}' of step '{address.step_key}' was handed "
                f"over in memory (inline) by run {address.run_id[:8]}, which no longer holds "
                "it: it is recomputed when a consumer runs; to read it after its run, "
                "materialize it (Table(inline=False), or inline_policy force_false)",
                address,
            )
        obj, kind = found
        as_type = context.metadata.get("as_type") or _input_type(context)
        what = f"input '{context.name}' of step '{context.step_key}'"
        return inline_handover.hand_over(obj, kind, as_type, what)

    def _read(self, physical: str, as_type: Any, context: InputContext) -> Any:
        """The physical table as ``as_type``: a frame or Arrow table from the local cache when
        it holds this table as the address recorded it, else from the store (then cached, with
        ``store_input``). References (``sqlalchemy.Table``, DuckDB relations) never come
        from the cache: they name the table in the database."""
        cache, address = self.cache, context.address
        if cache is None or address is None:
            return self.store.read(physical, as_type)
        what = f"table {physical}"
        kind = kind_of_type(as_type, what)
        if kind not in (PANDAS, POLARS, POLARS_LAZY, ARROW):
            return self.store.read(physical, as_type)
        record = CacheRecord(physical, address.version or "", address.run_id)
        data, hit = cache.read_through(record, lambda: self.store.read_arrow(physical))
        if hit and context.log is not None:
            context.log.debug(f"input '{context.name}': {what} read from {cache.path_of(physical)}")
        return from_arrow(data, kind, what)

    def combine_collected(self, context: InputContext, values: list[Any]) -> Any:
        """A collected input's tables as a list, or concatenated into the one frame type the
        parameter is annotated with (docs/tables.md, "Fan-outs")."""
        collected = _collected(context)
        if not collected.concat:
            return values
        what = (
            f"op '{context.step_key}' input '{context.name}' (the pieces of "
            f"'{context.upstream_output.step_key}')"
        )
        return concatenate(
            values, collected.as_type, what, declared_schema(context.upstream_output.out)
        )

    # ---- gc ----------------------------------------------------------------------------------

    def exists(self, address: Address) -> bool:
        table = TableAddress.parse(address.uri)
        if table.kind.startswith(inline_handover.INLINE_KIND):
            return True  # nothing stored, nothing to lose
        try:
            if table.kind == EXTERNAL:
                schema, _, name = table.physical.partition(".")
                return self.store.external_exists(schema, name)
            return all(self.store.has_table(p) for p in table.physicals())
        finally:
            self._close_if_idle()

    def verify(self, address: Address, read: bool = False) -> str | None:
        """Whether the table is still stored: when the store can tell without a query (a
        memoized run asks for every table it reuses), else with ``read`` (``memodag verify``)
        by asking the store; otherwise the index is trusted."""
        table = TableAddress.parse(address.uri)
        if table.kind == EXTERNAL or table.kind.startswith(inline_handover.INLINE_KIND):
            return None  # not memodag's to check: a consumer's read says if it is gone
        for physical in table.physicals():
            stored = self.store.stored_cheaply(physical)
            if stored is None and read:
                stored = self.store.has_table(physical)
            if stored is False:
                return "missing"
        return None

    def keeps(self, address: Address) -> bool:
        """Whether a committed stage still shows every physical table of ``address``:
        ``delete`` would keep them, so gc keeps the index entry that reuses them."""
        table = TableAddress.parse(address.uri)
        if table.kind == EXTERNAL or table.kind.startswith(inline_handover.INLINE_KIND):
            return False
        try:
            return all(self.store.is_shown(physical) for physical in table.physicals())
        finally:
            if self._run is None and self._worker is None:
                self.store.close()

    def delete(self, address: Address) -> None:
        table = TableAddress.parse(address.uri)
        if table.kind == EXTERNAL or table.kind.startswith(inline_handover.INLINE_KIND):
            return  # an external table is never memodag's to drop; an inline one is nowhere
        physicals = table.physicals()
        try:
            for physical in physicals:
                if self.cache is not None:  # no kept run reads it through this address
                    self.cache.discard(physical)
                if not self.store.is_shown(physical):  # a committed stage still shows it: kept
                    self.store.drop_table(physical)
        finally:
            self._close_if_idle()

    def _close_if_idle(self) -> None:
        """Outside a run, a worker's service and a prediction (``output_for_node``, gc,
        ``memodag verify``), the store is closed after each use: never keep the file."""
        if self._run is None and self._worker is None and not self._predicting:
            self.store.close()


def _script_table(context: OutputContext, table_name: str, version: str) -> str:
    """The physical table of one table a ``RawSql`` script made, at the script's version."""
    return physical_table_name(context.step_key, f"{context.name}_{table_name}", "s" + version)


def _stage_of_job(job_name: str) -> str:
    return table_identifier(job_name, f"stage of job '{job_name}' (ops outside any Stage)")


def _default_name(context: OutputContext) -> str:
    op_name = context.op_def.name if context.op_def is not None else context.step_key
    outs = getattr(context.op_def, "outs", ())
    return op_name if len(outs) <= 1 else f"{op_name}_{context.name}"


def _piece_name(name: str, context: OutputContext) -> str:
    """``name`` as the table name of this output: in a fan-out, with the piece's keys
    (``tables.fanout.piece_name``), so pieces never share a table name."""
    what = f"op '{context.step_key}' output '{context.name}'"
    name = piece_name(name, piece_keys(context.step_key, context.mapping_key), what)
    try:
        return table_identifier(name, "table name")
    except DefinitionError as exc:
        raise StorageError(f"{what}: {exc}; give Table(name=...)") from exc


def _collected(context: InputContext) -> Any:
    """How a collected input is handed over (``tables.fanout.collected_as``)."""
    input_type = None
    spec = context.op_def.ins.get(context.name) if context.op_def is not None else None
    if spec is not None:
        input_type = spec.metadata.get(INPUT_TYPE_KEY)
    return collected_as(input_type, _annotation(context))


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
    hint = _annotation_of(op_def, name)
    try:
        kind_of_type(hint, "")
    except StorageError:
        return None
    return hint


def _annotation(context: InputContext) -> Any:
    """The consuming parameter's annotation (resolved when it is a string), or None."""
    return _annotation_of(context.op_def, context.name)


def _annotation_of(op_def: Any, name: str) -> Any:
    if op_def is None:
        return None
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
    return hint


__all__ = ["DecidedAtRunTime", "TableAddress", "TableIOManager", "from_arrow", "table_location"]


def _forced_physical(context: OutputContext, version: str) -> str:
    """A forced run's table at a stored version: a new physical table (the data may differ
    from what is stored there), which the index then names for the version."""
    return physical_table_name(
        context.step_key, context.name, hash_strings(version, context.run_id)
    )


def _checked_arrow(context: OutputContext, obj: Any, kind: str, what: str) -> Any:
    """``obj`` as Arrow, checked against the output's declared schema, if any."""
    data = to_arrow(obj, kind, what)
    declared = declared_schema(context.out)
    if declared is not None:
        check_declared(data, declared, what)
    return data


def _unseen_hash(context: OutputContext) -> str:
    """An early-cutoff data hash for a table whose data this process cannot see: new with
    each run, so consumers count it as changed (never memoized on a stale hash)."""
    return hash_strings(
        "unseen", context.run_id, context.step_key, context.name, context.mapping_key or ""
    )
