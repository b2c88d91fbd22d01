"""What users declare about tables: ``Table`` (a frame or query plus its table options),
``@materialize`` (an op whose outputs go to the job's table store), ``Stage`` (ops called in a
``with Stage("name"):`` block land in that database schema), ``AUTO_VERSION`` (an op versioned
by the polars plan it builds) and ``ExternalTableReference`` (a table memodag did not write).

Pure definitions: nothing here imports pandas, polars, pyarrow, SQLAlchemy or a database
driver, and nothing reads or writes a table (``memodag.tables`` does). Semantics: docs/tables.md.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from memodag.definitions.io import DEFAULT_OUTPUT, In, Out, RetryPolicy
from memodag.errors import DefinitionError

#: the resource key of the table store (``Out(io_manager_key=TABLE_STORE_KEY)``)
TABLE_STORE_KEY = "table_store"
#: the node tag holding the stage an op was called in (set by ``Stage``)
STAGE_TAG = "memodag/stage"
#: the node tag listing the table-producing nodes of the node's stage (comma-separated names)
STAGE_MEMBERS_TAG = "memodag/stage_members"
#: the op tag marking ``@materialize`` ops (their job memoizes by default)
MATERIALIZE_TAG = "memodag/materialize"
#: ``In.metadata`` key of the type an input table is handed to the op as
INPUT_TYPE_KEY = "input_type"
#: the op tag marking ``@materialize(lazy=True)`` ops: their body runs on every run and the
#: table store versions what it returns (docs/tables.md, "Lazy SQL tasks")
LAZY_TAG = "memodag/lazy"
#: the op tag marking ``@materialize(version=AUTO_VERSION)`` ops (versioned by their plan)
AUTO_VERSION_TAG = "memodag/auto_version"


class _AutoVersion:
    """The type of ``AUTO_VERSION``: one instance, compared by identity."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "AUTO_VERSION"

    def __reduce__(self) -> str:
        return "AUTO_VERSION"  # pickles as the module attribute: still the one instance


#: ``@materialize(version=AUTO_VERSION, input_type=pl.LazyFrame)``: the op's code version is the
#: serialized polars plan its body builds on empty frames of its inputs' schemas
#: (docs/tables.md, "AUTO_VERSION")
AUTO_VERSION: Any = _AutoVersion()


def check_auto_version(op_name: str, input_type: Any, lazy: bool = False) -> None:
    """Refuse ``AUTO_VERSION`` where it cannot work, when the op is declared.

    Raises:
        DefinitionError: no ``input_type`` (the body must be called on LazyFrames to build its
            plan), or ``lazy=True`` (a lazy task's version is its query already).
    """
    if lazy:
        raise DefinitionError(
            f"@materialize op '{op_name}': version=AUTO_VERSION and lazy=True do not go together "
            "(a lazy task is versioned by the query it returns); drop one of them"
        )
    if input_type is None:
        raise DefinitionError(
            f"@materialize op '{op_name}': version=AUTO_VERSION needs input_type=pl.LazyFrame "
            "(the body is called on empty LazyFrames of its inputs' schemas to hash its plan)"
        )


class ExternalTableReference:
    """A table that exists in the table store's database and that memodag did not write,
    returned by an op as its output: consumers read it as any input table.

    Without ``@materialize(cache=fn)`` the output counts as changed on every run (its op runs
    and so do its consumers); with one, as ``fn``'s value says (docs/tables.md, "External
    tables and fresh input").

    Args:
        name: the table (or view) name in ``schema``.
        schema: the database schema holding it (on DuckDB, ``main`` for the default one); not
            the schema of the stage the op is in.
    """

    __slots__ = ("name", "schema")

    def __init__(self, name: str, schema: str) -> None:
        for label, value in (("name", name), ("schema", schema)):
            if not isinstance(value, str) or not value or "/" in value or "\x00" in value:
                raise DefinitionError(
                    f"ExternalTableReference {label} must be a non-empty string without '/', "
                    f"got {value!r}"
                )
        if "." in schema:
            raise DefinitionError(
                f"ExternalTableReference schema {schema!r} holds a '.'; give the table name and "
                "its schema separately: ExternalTableReference('table', schema='schema')"
            )
        self.name = name
        self.schema = schema

    def __repr__(self) -> str:
        return f"ExternalTableReference({self.name!r}, schema={self.schema!r})"


#: ``Out.metadata`` key of the columns an output table declares (``@materialize(schema=)``):
#: what a collected fan-out of no pieces is handed over as, and what each piece must have
SCHEMA_KEY = "schema"
#: the placeholder a fan-out piece's ``Table(name=...)`` may hold: the piece's mapping key
MAPPING_KEY_PLACEHOLDER = "{mapping_key}"

#: PostgreSQL's identifier limit, which stage and table names keep on every store
_MAX_IDENTIFIER_BYTES = 63
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
#: schemas a stage may not be named as: memodag's own and the databases' reserved ones
_RESERVED_STAGES = frozenset(
    {
        "memodag_data",
        "memodag_meta",
        "main",
        "public",
        "information_schema",
        "pg_catalog",
        "pg_toast",
        "temp",
        "pg_temp",
        "system",
    }
)


def table_identifier(name: Any, what: str) -> str:
    """``name`` lower-cased and checked: an identifier of at most 63 bytes.

    Raises:
        DefinitionError: naming ``what`` and the value, with what is allowed.
    """
    if not isinstance(name, str):
        raise DefinitionError(f"{what} must be a string, got {type(name).__name__} {name!r}")
    lowered = name.lower()
    if not _IDENTIFIER.match(lowered):
        raise DefinitionError(
            f"{what} {name!r} is not an identifier: use letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    size = len(lowered.encode())
    if size > _MAX_IDENTIFIER_BYTES:
        raise DefinitionError(
            f"{what} {name!r} is {size} bytes long; at most {_MAX_IDENTIFIER_BYTES} are allowed "
            "(PostgreSQL's limit)"
        )
    return lowered


def _table_name(name: Any) -> str:
    """A ``Table`` name, which may hold ``{mapping_key}`` (filled in per fan-out piece, made an
    identifier of at most 63 bytes there: docs/tables.md, "Fan-outs")."""
    if not isinstance(name, str) or MAPPING_KEY_PLACEHOLDER not in name:
        return table_identifier(name, "Table name")
    # checked with a one-letter key; the filled-in name is checked (and cut) per piece
    if not _IDENTIFIER.match(name.replace(MAPPING_KEY_PLACEHOLDER, "k").lower()):
        raise DefinitionError(
            f"Table name {name!r} is not an identifier: use letters, digits and underscores "
            f"around {MAPPING_KEY_PLACEHOLDER}, starting with a letter or underscore"
        )
    parts = name.split(MAPPING_KEY_PLACEHOLDER)
    return MAPPING_KEY_PLACEHOLDER.join(p.lower() for p in parts)


def check_schema(schema: Any, what: str) -> Any:
    """A declared table schema: a ``pyarrow.Schema`` or a mapping of column name to a pyarrow
    type or its name (``"int64"``, ``"string"``, ``"timestamp[us]"``). Checked for its shape
    only (names are strings); type names are checked when the schema is used, so that
    declaring one imports no pyarrow.

    Raises:
        DefinitionError: naming ``what`` and what was given.
    """
    if type(schema).__module__.split(".")[0] == "pyarrow" and hasattr(schema, "names"):
        return schema
    if isinstance(schema, Mapping) and all(isinstance(k, str) for k in schema):
        return dict(schema)
    raise DefinitionError(
        f"{what}: schema must be a pyarrow.Schema or a mapping of column name to a pyarrow "
        f"type or type name (e.g. {{'region': 'string', 'n': 'int64'}}), got {schema!r}"
    )


def _columns(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value) and value:
        return tuple(value)
    raise DefinitionError(
        f"{what} must be a column name or a non-empty list of them, got {value!r}"
    )


class Table:
    """A table an op returns: the data (a pandas or polars frame, a ``pyarrow.Table``, a
    DuckDB relation, or a SQLAlchemy ``Select``/``TextClause`` or SQL string run inside the
    database) and how to store it.

    Args:
        obj: the data or query.
        name: the table's name in its stage (case-insensitive, lower-cased, at most 63 bytes);
            default ``<op>`` for an op's only output, else ``<op>_<output>``.
        primary_key: a column or list of columns; created on the stored table (duplicates are an
            error naming the table and key).
        indexes: a list of column lists, one index each.
        type_map: column -> SQL type to use instead of the one derived from the data.
        nullable, non_nullable: columns to declare nullable / NOT NULL.
        materialization_details: store options (e.g. PostgreSQL ``unlogged``), passed through.
        inline: accepted and stored; honoured from a later release (docs/tables.md).
    """

    __slots__ = (
        "indexes",
        "inline",
        "materialization_details",
        "name",
        "non_nullable",
        "nullable",
        "obj",
        "primary_key",
        "type_map",
    )

    def __init__(
        self,
        obj: Any = None,
        name: str | None = None,
        *,
        primary_key: str | Sequence[str] | None = None,
        indexes: Sequence[Sequence[str]] | None = None,
        type_map: Mapping[str, Any] | None = None,
        nullable: Sequence[str] | None = None,
        non_nullable: Sequence[str] | None = None,
        materialization_details: Any = None,
        inline: bool | None = None,
    ) -> None:
        self.obj = obj
        self.name = None if name is None else _table_name(name)
        self.primary_key = () if primary_key is None else _columns(primary_key, "Table primary_key")
        if indexes is not None and (
            isinstance(indexes, str)
            or not isinstance(indexes, Sequence)
            or any(isinstance(i, str) or not isinstance(i, Sequence) for i in indexes)
        ):
            raise DefinitionError(
                f"Table indexes must be a list of column lists (list[list[str]]), got {indexes!r}"
            )
        self.indexes = tuple(_columns(i, "Table index") for i in indexes or ())
        self.type_map = dict(type_map or {})
        for label, cols in (("nullable", nullable), ("non_nullable", non_nullable)):
            if cols is not None and (isinstance(cols, str) or not isinstance(cols, Sequence)):
                raise DefinitionError(f"Table {label} must be a list of column names, got {cols!r}")
        self.nullable = None if nullable is None else tuple(nullable)
        self.non_nullable = None if non_nullable is None else tuple(non_nullable)
        self.materialization_details = materialization_details
        self.inline = inline

    def __repr__(self) -> str:
        return f"Table({type(self.obj).__name__}, name={self.name!r})"


class RawSql:
    """A SQL script a lazy task returns (``@materialize(lazy=True)``): its statements run in the
    database, in order, and every table they create in the stage's schema is an output of the
    task. Consumers get those tables as a mapping, name -> table (``raw["tbl"]``).

    Args:
        sql: the script; it creates its tables in the schema ``{stage}`` stands for
            (``CREATE TABLE {stage}.tbl AS ...``) and reads inputs through the tables it is given.
        name: a name for the script in messages; default the op's.
        separator: what separates statements in ``sql``.

    Versioned by the script's text (canonicalised as queries are) and its inputs' versions: an
    unchanged script over unchanged inputs executes nothing.
    """

    __slots__ = ("name", "separator", "sql")

    def __init__(self, sql: str, name: str | None = None, separator: str = ";") -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise DefinitionError(f"RawSql: sql must be a non-empty SQL string, got {sql!r}")
        if not isinstance(separator, str) or not separator:
            raise DefinitionError(
                f"RawSql: separator must be a non-empty string, got {separator!r}"
            )
        self.sql = sql
        self.name = None if name is None else table_identifier(name, "RawSql name")
        self.separator = separator

    def statements(self) -> list[str]:
        """The script's statements, stripped, empty ones left out."""
        return [s.strip() for s in self.sql.split(self.separator) if s.strip()]

    def __repr__(self) -> str:
        return f"RawSql({len(self.statements())} statements, name={self.name!r})"


class Stage:
    """``with Stage("raw"):`` in a job or graph body: the ops called inside store their tables
    in database schema ``raw`` (a view per table), committed atomically when they all succeed.

    The name is checked here, when the job is defined: an identifier, lower-cased, at most 63
    bytes, not one of memodag's or the database's own schemas. Stages do not nest.
    """

    __slots__ = ("_before", "_builder", "materialization_details", "name")

    def __init__(self, name: str, materialization_details: Any = None) -> None:
        self.name = table_identifier(name, "Stage name")
        if self.name in _RESERVED_STAGES:
            raise DefinitionError(
                f"Stage name {name!r} is reserved (memodag's or the database's own schema); "
                "choose another name"
            )
        self.materialization_details = materialization_details
        self._builder: Any = None

    def __enter__(self) -> Stage:
        from memodag.definitions.composition import current_builder

        builder = current_builder()
        if builder is None:
            raise DefinitionError(
                f"Stage('{self.name}') is used outside a @job or @graph body; open it inside "
                "the body, around the op calls it groups"
            )
        if builder.stage is not None:
            raise DefinitionError(
                f"Stage('{self.name}') is opened inside Stage('{builder.stage}') in "
                f"'{builder.graph_name}': stages do not nest; close the outer one first"
            )
        builder.stage = self.name
        self._builder = builder
        self._before = set(builder.nodes)
        return self

    def __exit__(self, *exc: Any) -> None:
        builder, self._builder = self._builder, None
        builder.stage = None
        if exc[0] is None:
            _tag_members(builder, [n for n in builder.nodes if n not in self._before])

    def __repr__(self) -> str:
        return f"Stage({self.name!r})"


def _tag_members(builder: Any, names: list[str]) -> None:
    """Tag each table-producing node of a stage with the names of them all
    (``STAGE_MEMBERS_TAG``), so the table store can tell when every one has been stored and
    commit the stage even if the run fails later. A stage holding a graph or a fan-out (members
    not known before the run) is left untagged: it commits when the run succeeds."""
    from dataclasses import replace

    from memodag.definitions.op import OpDefinition

    members = []
    for name in names:
        node = builder.nodes[name]
        if not isinstance(node.definition, OpDefinition) or node.mapped_over:
            return
        if any(o.io_manager_key == TABLE_STORE_KEY for o in node.definition.outs.values()):
            members.append(name)
    value = ",".join(sorted(members))
    for name in members:
        node = builder.nodes[name]
        builder.nodes[name] = replace(node, tags={**node.tags, STAGE_MEMBERS_TAG: value})


def materialize(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    version: Any = None,
    input_type: Any = None,
    nout: int = 1,
    lazy: bool = False,
    config_schema: Any = None,
    required_resource_keys: set[str] | frozenset[str] | None = None,
    retry_policy: RetryPolicy | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    data_version: Callable[[Any], Any] | None = None,
    cache: Callable[[Any], Any] | None = None,
    schema: Any = None,
) -> Any:
    """Declare an op whose outputs are tables in the job's table store (``table_store``).

    Args:
        version: the op's code version; None: its source hash (helpers included), as the
            job's version strategy computes it; ``AUTO_VERSION``: the polars plan the body
            builds (needs ``input_type=pl.LazyFrame``). Config, resources and inputs are in the
            version as for any op.
        cache: pipedag's name for ``@op(data_version=fn)``: ``fn(context)`` returns a JSON value
            saying which version of outside data the op reads (it gets the op's context, not
            its arguments as in pipedag).
        input_type: the type input tables are handed over as (``pandas.DataFrame``,
            ``polars.DataFrame``/``LazyFrame``, ``pyarrow.Table``, ``sqlalchemy.Table``, a DuckDB
            relation); default each parameter's annotation, else the type the producer returned.
        nout: number of outputs (the body returns a tuple); outputs are ``result`` for one, else
            ``result_0``, ``result_1``, ...
        lazy: the body runs on every run (it must be cheap) and returns a query, a ``RawSql``
            script or a frame; each output is versioned by what was returned (the canonical
            query and its inputs' versions and table options, or a frame's content), and
            executes in the database only when no table of that version is stored. Consumers
            are versioned by that version (docs/tables.md, "Lazy SQL tasks").
        schema: the columns each output table has, a ``pyarrow.Schema`` or a mapping of column
            name to a pyarrow type or type name. In a fan-out, a consumer that takes the pieces
            as one frame gets an empty frame of this schema when there are no pieces, and each
            stored table must have these columns and types (docs/tables.md, "Fan-outs").

    The other arguments are ``@op``'s. A job holding a ``@materialize`` op memoizes by default.
    """
    if not isinstance(nout, int) or isinstance(nout, bool) or nout < 1:
        raise DefinitionError(f"@materialize: nout must be a positive integer, got {nout!r}")
    if cache is not None and data_version is not None:
        raise DefinitionError(
            "@materialize: give cache= or data_version= (the same hook), not both"
        )
    data_version = cache if cache is not None else data_version
    auto = version is AUTO_VERSION
    if lazy and version is not None and not auto and not isinstance(version, str):
        raise DefinitionError(
            f"@materialize(lazy=True, version={version!r}): a lazy task is versioned by the query "
            "it returns; drop version= (or give a string), or drop lazy=True"
        )
    declared = None if schema is None else check_schema(schema, "@materialize")

    def decorate(func: Callable[..., Any]) -> Any:
        from memodag.definitions.op import op

        op_name = str(name or getattr(func, "__name__", "op"))
        extra_tags: dict[str, str] = {}
        if auto:
            check_auto_version(op_name, input_type, lazy=lazy)
            extra_tags[AUTO_VERSION_TAG] = "true"

        params = list(inspect.signature(func).parameters)
        if params and params[0] in ("context", "_context", "ctx"):
            params = params[1:]
        ins = {
            p: In(metadata={INPUT_TYPE_KEY: input_type}) if input_type is not None else In()
            for p in params
        }
        metadata = {} if schema is None else {SCHEMA_KEY: declared}
        # a lazy output's consumers are versioned by the version the store reports for it
        out_def = Out(
            io_manager_key=TABLE_STORE_KEY,
            early_cutoff=True if lazy else None,
            metadata=metadata,
        )
        outs: Any = (
            out_def if nout == 1 else {f"{DEFAULT_OUTPUT}_{i}": out_def for i in range(nout)}
        )
        return op(
            name=name,
            ins=ins,
            out=outs,
            config_schema=config_schema,
            required_resource_keys=required_resource_keys,
            version=None if auto else version,
            retry_policy=retry_policy,
            tags={
                **(tags or {}),
                MATERIALIZE_TAG: "true",
                **({LAZY_TAG: "true"} if lazy else {}),
                **extra_tags,
            },
            description=description,
            data_version=data_version,
        )(func)

    return decorate(fn) if fn is not None else decorate
