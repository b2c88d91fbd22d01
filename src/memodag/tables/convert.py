"""Conversions between the frames users write and Arrow, the one format tables move in.

Owns which Python types a table can be returned as or handed over as, how each maps to Arrow,
and what every store shares about a ``TableSpec`` (its columns, which are NOT NULL, a
``sqlalchemy.Table`` reference typed from Arrow). Must never touch a database (stores do) and
never import a frame library at module level: a type is recognised by looking in ``sys.modules`` (a frame of a library means the
library is loaded), and libraries are imported only when a conversion asks for one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from memodag.errors import StorageError

if TYPE_CHECKING:
    import pyarrow as pa

    from memodag.tables.store import TableSpec

#: what ``kind_of`` returns, and what ``type_of_kind`` maps back to a class
PANDAS, POLARS, POLARS_LAZY, ARROW, DUCKDB, SQLALCHEMY, SQL = (
    "pandas",
    "polars",
    "polars_lazy",
    "arrow",
    "duckdb",
    "sqlalchemy",
    "sql",
)

#: the names ``as_type``/``input_type`` may also be given as (strings avoid importing a library)
_KIND_NAMES = {
    "pandas": PANDAS,
    "pd.dataframe": PANDAS,
    "polars": POLARS,
    "pl.dataframe": POLARS,
    "polars_lazy": POLARS_LAZY,
    "pl.lazyframe": POLARS_LAZY,
    "arrow": ARROW,
    "pyarrow": ARROW,
    "pa.table": ARROW,
    "duckdb": DUCKDB,
    "sqlalchemy": SQLALCHEMY,
    "sa.table": SQLALCHEMY,
}


def _module(name: str) -> Any:
    return sys.modules.get(name)


def kind_of(obj: Any) -> str | None:
    """Which kind of table ``obj`` is (``PANDAS``, ..., ``SQL`` for a query), or None."""
    if isinstance(obj, str):
        return SQL
    pd = _module("pandas")
    if pd is not None and isinstance(obj, pd.DataFrame):
        return PANDAS
    pl = _module("polars")
    if pl is not None:
        if isinstance(obj, pl.DataFrame):
            return POLARS
        if isinstance(obj, pl.LazyFrame):
            return POLARS_LAZY
    pa = _module("pyarrow")
    if pa is not None and isinstance(obj, pa.Table):
        return ARROW
    duckdb = _module("duckdb")
    if duckdb is not None and isinstance(obj, duckdb.DuckDBPyRelation):
        return DUCKDB
    sa = _module("sqlalchemy")
    if sa is not None:
        if isinstance(obj, sa.Table):
            return SQLALCHEMY
        from sqlalchemy.sql.elements import TextClause
        from sqlalchemy.sql.selectable import Selectable

        if isinstance(obj, (Selectable, TextClause)):
            return SQL
    return None


def kind_of_type(as_type: Any, what: str) -> str:
    """The kind a requested type (a class, or a name such as ``"polars"``) stands for.

    Raises:
        StorageError: naming ``what`` and the type, and listing the types tables come as.
    """
    if isinstance(as_type, str) and as_type.lower() in _KIND_NAMES:
        return _KIND_NAMES[as_type.lower()]
    module = getattr(as_type, "__module__", "") or ""
    qualname = getattr(as_type, "__qualname__", "") or ""
    top = module.split(".")[0]
    if top == "pandas" and qualname == "DataFrame":
        return PANDAS
    if top == "polars" and qualname == "DataFrame":
        return POLARS
    if top == "polars" and qualname == "LazyFrame":
        return POLARS_LAZY
    if top == "pyarrow" and qualname == "Table":
        return ARROW
    if top in ("duckdb", "_duckdb") and qualname == "DuckDBPyRelation":
        return DUCKDB
    if top == "sqlalchemy" and qualname == "Table":
        return SQLALCHEMY
    raise StorageError(
        f"{what}: cannot hand a table over as {as_type!r}; use pandas.DataFrame, "
        "polars.DataFrame, polars.LazyFrame, pyarrow.Table, sqlalchemy.Table or "
        "duckdb.DuckDBPyRelation"
    )


def to_arrow(obj: Any, kind: str, what: str) -> pa.Table:
    """``obj`` (a frame of ``kind``) as a ``pyarrow.Table``, with no pandas index.

    Categorical/enum columns become strings (documented in docs/tables.md).
    """
    import pyarrow as pa

    try:
        table = _arrow_of(obj, kind, what)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        # pyarrow names the column and its type ("Conversion failed for column x ...")
        raise StorageError(f"{what}: a column cannot be stored as a table column: {exc}") from exc
    return _plain_arrow(table)


def _arrow_of(obj: Any, kind: str, what: str) -> Any:
    import pyarrow as pa

    if kind == PANDAS:
        table = pa.Table.from_pandas(obj, preserve_index=False)
    elif kind == POLARS:
        table = obj.to_arrow()
    elif kind == POLARS_LAZY:
        table = obj.collect().to_arrow()
    elif kind == ARROW:
        table = obj
    elif kind == DUCKDB:
        table = obj.to_arrow_table() if hasattr(obj, "to_arrow_table") else obj.arrow()
    else:
        raise StorageError(f"{what}: cannot store a {type(obj).__name__} as a table")
    return table


def _plain_arrow(table: pa.Table) -> pa.Table:
    """Dictionary columns (categoricals, polars enums) as their value type; polars' large and
    view string types stay as they are (every store reads them)."""
    import pyarrow as pa

    fields = list(table.schema)
    if not any(pa.types.is_dictionary(f.type) for f in fields):
        return table
    columns = []
    new_fields = []
    for f, column in zip(fields, table.columns, strict=True):
        if pa.types.is_dictionary(f.type):
            column = column.cast(f.type.value_type)
            f = pa.field(f.name, f.type.value_type, f.nullable)
        columns.append(column)
        new_fields.append(f)
    metadata = table.schema.metadata
    return pa.Table.from_arrays(columns, schema=pa.schema(new_fields, metadata=metadata))


def from_arrow(table: pa.Table, as_type: Any, what: str) -> Any:
    """``table`` converted to ``as_type`` (a class or kind name; see ``kind_of_type``)."""
    kind = as_type if as_type in (PANDAS, POLARS, POLARS_LAZY, ARROW) else None
    if kind is None:
        kind = kind_of_type(as_type, what)
    if kind == ARROW:
        return table
    if kind == PANDAS:
        return table.to_pandas()
    if kind in (POLARS, POLARS_LAZY):
        import polars as pl

        # no rechunk: a copy of every column (the frame works on DuckDB's chunks as they are)
        frame = pl.from_arrow(table, rechunk=False)
        assert isinstance(frame, pl.DataFrame)  # a Table (not an Array) gives a DataFrame
        return frame.lazy() if kind == POLARS_LAZY else frame
    raise StorageError(f"{what}: this store cannot hand a table over as {as_type!r}")


def check_columns(spec: TableSpec, names: Sequence[str], what: str) -> None:
    """Refuse a ``spec`` naming a column the table does not have.

    Raises:
        StorageError: naming ``what`` (the table), the option (primary key, index, ...), the
            column and the table's columns.
    """
    present = set(names)
    wanted = [("primary key", c) for c in spec.primary_key]
    wanted += [("index", c) for index in spec.indexes for c in index]
    wanted += [("non_nullable", c) for c in spec.non_nullable or ()]
    wanted += [("nullable", c) for c in spec.nullable or ()]
    wanted += [("type_map", c) for c in spec.type_map]
    for role, column in wanted:
        if column not in present:
            raise StorageError(
                f"{what}: {role} column '{column}' is not a column of the table "
                f"(columns: {list(names)})"
            )


def not_null_columns(spec: TableSpec, names: Sequence[str]) -> list[str]:
    """The columns to declare NOT NULL: ``non_nullable``, or with only ``nullable`` given, every
    other column (pipedag's meaning); primary key columns are NOT NULL anyway."""
    if spec.non_nullable is not None:
        return list(spec.non_nullable)
    if spec.nullable is not None:
        return [n for n in names if n not in spec.nullable]
    return []


def sqlalchemy_table(schema: str, physical: str, arrow_schema: Any) -> Any:
    """A ``sqlalchemy.Table`` naming the stored table, its columns typed from the Arrow
    schema kept at write time (no reflection: no query)."""
    import pyarrow as pa
    import sqlalchemy as sa

    def sa_type(t: Any) -> Any:
        if pa.types.is_boolean(t):
            return sa.Boolean()
        if pa.types.is_integer(t):
            return sa.BigInteger()
        if pa.types.is_floating(t):
            return sa.Float()
        if pa.types.is_decimal(t):
            return sa.Numeric(t.precision, t.scale)
        if pa.types.is_timestamp(t):
            return sa.DateTime(timezone=t.tz is not None)
        if pa.types.is_date(t):
            return sa.Date()
        return sa.String()

    columns = [sa.Column(f.name, sa_type(f.type)) for f in arrow_schema]
    return sa.Table(physical, sa.MetaData(), *columns, schema=schema)


def wants_unlogged(spec: TableSpec, what: str, store: str) -> bool:
    """Whether ``materialization_details`` asks for an unlogged table: ``"unlogged"`` or
    ``{"unlogged": bool}``, the one option memodag's stores take (PostgreSQL honours it,
    DuckDB has nothing to skip and ignores it, so a job moves between stores unchanged).

    Raises:
        StorageError: any other value, naming ``what`` (the table), the value and what is taken.
    """
    details = spec.materialization_details
    if details is None or details == {}:
        return False
    if details == "unlogged":
        return True
    if isinstance(details, dict) and set(details) == {"unlogged"}:
        return bool(details["unlogged"])
    raise StorageError(
        f"{what}: materialization_details {details!r} is not understood by the {store} table "
        "store; it takes 'unlogged' or {'unlogged': True} (PostgreSQL's UNLOGGED table; "
        "DuckDB accepts and ignores it)"
    )
