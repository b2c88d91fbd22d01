"""Tables in fan-outs: the name each piece's table gets in its stage, and how a collected input
of tables is handed over (a list, or one frame concatenated through Arrow).

Owns the naming rule for piece tables and the checks of pieces' schemas (against each other and
against the schema the mapped op declares). Must never touch a database (stores do) nor import
a frame library at module level. Semantics: docs/tables.md, "Fan-outs".
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memodag.definitions.tables import MAPPING_KEY_PLACEHOLDER, SCHEMA_KEY, check_schema
from memodag.errors import DefinitionError, StorageError
from memodag.hashing import hash_strings
from memodag.tables.convert import (
    ARROW,
    DUCKDB,
    POLARS,
    POLARS_LAZY,
    SQLALCHEMY,
    from_arrow,
    kind_of_type,
)
from memodag.tables.store import MAX_IDENTIFIER_BYTES

if TYPE_CHECKING:
    import pyarrow as pa

_IDENTIFIER_START = re.compile(r"^[a-z_]")
#: hex digits of the hash that keeps a changed name distinct (lower-cased, cut, prefixed)
_HASH_DIGITS = 8


def piece_keys(step_key: str, mapping_key: str | None) -> list[str]:
    """The mapping keys that tell one piece's table from another's: a clone's keys
    (``sales[north]``, ``pair[k1,j0]``), then a dynamic output's own piece key."""
    keys = [k for group in re.findall(r"\[([^\]]*)\]", step_key) for k in group.split(",")]
    if mapping_key is not None:
        keys.append(mapping_key)
    return keys


def piece_name(name: str, keys: list[str], what: str) -> str:
    """The table name of a fan-out piece: ``name`` with ``{mapping_key}`` replaced by the keys,
    or ``<name>_<keys>`` without the placeholder (kept as it is when it already ends so).

    Keys are lower-case identifiers' parts in the common case and then appear as they are
    (``part_north``). A key with capitals (names are case-insensitive: ``North`` and
    ``north`` would meet), nested keys holding ``_`` (``a_b``+``c`` and ``a``+``b_c`` would
    meet), a name that would start with a digit, or one over 63 bytes, gets a hash of the keys
    (and is cut to fit): two pieces' names never collide, and a piece keeps its name run
    after run.

    Raises:
        StorageError: ``{mapping_key}`` in the name of an op that is not in a fan-out.
    """
    if not keys:
        if MAPPING_KEY_PLACEHOLDER in name:
            raise StorageError(
                f"{what}: Table name {name!r} holds {MAPPING_KEY_PLACEHOLDER} but the op is not "
                "mapped over a fan-out (no piece key to put there); name the table without it"
            )
        return name
    text = "_".join(k.lower() for k in keys)
    exact = all(k == k.lower() for k in keys) and (len(keys) == 1 or "_" not in "".join(keys))
    if not exact:
        text += "_" + _digest(keys)
    if MAPPING_KEY_PLACEHOLDER in name:
        full = name.replace(MAPPING_KEY_PLACEHOLDER, text)
    elif name.endswith("_" + text):  # Table(name=f"part_{context.mapping_key}")
        full = name
    else:
        full = f"{name}_{text}"
    if not _IDENTIFIER_START.match(full):
        # "_" alone would meet a key that starts with it ("1" and "_1"): the hash tells them apart
        full = f"_{full}" if not exact else f"_{full}_{_digest(keys)}"
    if len(full.encode()) > MAX_IDENTIFIER_BYTES:
        full = full[: MAX_IDENTIFIER_BYTES - _HASH_DIGITS - 1] + "_" + hash_strings(full)[:8]
    return full


def _digest(keys: list[str]) -> str:
    return hash_strings(*keys)[:_HASH_DIGITS]


# ---- collected inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Collected:
    """How a collected input is handed over: ``as_type`` per piece (None: the type each piece
    was returned as) in a list, or, with ``concat``, all pieces as one frame of ``as_type``."""

    as_type: Any
    concat: bool


@dataclass(frozen=True, slots=True)
class Piece:
    """One loaded piece of a collected input to concatenate: its Arrow table and which step
    (``op[key]``) made it, for errors."""

    table: pa.Table
    label: str


def collected_as(input_type: Any, annotation: Any) -> Collected:
    """The hand-over of a collected input from the op's ``input_type`` and the parameter's
    annotation: ``list[T]`` gives a list of ``T``; a frame type alone (``pd.DataFrame``) gives
    the pieces concatenated; otherwise a list of ``input_type`` (or of what each piece was)."""
    if annotation is not None and typing.get_origin(annotation) is list:
        args = typing.get_args(annotation)
        element = args[0] if args and _is_table_type(args[0]) else None
        return Collected(input_type if input_type is not None else element, False)
    if annotation is not None and _is_table_type(annotation):
        return Collected(annotation, True)
    return Collected(input_type, False)


def _is_table_type(hint: Any) -> bool:
    try:
        kind_of_type(hint, "")
    except StorageError:
        return False
    return True


def concatenate(pieces: list[Piece], as_type: Any, what: str, declared: Any) -> Any:
    """The pieces as one frame of ``as_type``, rows in the pieces' order, through Arrow.

    Columns are matched by name, in the first piece's order; a column that is all null in one
    piece takes the others' type. With no pieces, an empty frame of the ``declared`` schema.

    Raises:
        StorageError: ``as_type`` cannot be concatenated into (a SQL reference); no pieces and
            no declared schema; two pieces' columns or types differ (naming both, the column
            and the types).
    """
    import pyarrow as pa

    kind = kind_of_type(as_type, what)
    if kind in (SQLALCHEMY, DUCKDB):
        raise StorageError(
            f"{what}: the pieces cannot be handed over as one {as_type!r} (a reference to one "
            "stored table); annotate the parameter list[...] of it to get one per piece, or "
            "a frame type (pandas, polars, pyarrow) to get them concatenated"
        )
    if not pieces:
        if declared is None:
            raise StorageError(
                f"{what}: there are no pieces, and the collected op declares no schema for an "
                "empty frame; declare its columns (@materialize(schema={'column': 'int64', "
                "...}), or Out(metadata={'schema': ...})), or take the pieces as a list "
                "(annotate the parameter list[...])"
            )
        empty = arrow_schema(declared, what).empty_table()
        return from_arrow(empty, _frame_kind(kind), what)
    first = pieces[0]
    # column -> its first type that is not all-null, and the piece that has it
    typed: dict[str, tuple[pa.DataType, Piece]] = {
        f.name: (f.type, first) for f in first.table.schema
    }
    tables = [_aligned(piece, first, typed, what) for piece in pieces]
    try:
        # permissive: string and large_string (pandas' and polars'), and a column all null
        # in one piece, meet; anything else that differs was refused above
        combined = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:  # _aligned checked names and types: a backstop
        raise StorageError(f"{what}: the pieces cannot be concatenated: {exc}") from exc
    return from_arrow(combined, _frame_kind(kind), what)


def _frame_kind(kind: str) -> str:
    return kind if kind in (POLARS, POLARS_LAZY, ARROW) else "pandas"


def _aligned(
    piece: Piece, first: Piece, typed: dict[str, tuple[pa.DataType, Piece]], what: str
) -> pa.Table:
    """``piece``'s table with ``first``'s columns in its order, or an error naming ``piece``
    and a piece it differs from."""
    import pyarrow as pa

    table = piece.table
    names = first.table.schema.names
    for name in names:
        if name not in table.schema.names:
            raise _differ(
                what, first, piece, f"column '{name}' is in {first.label}, not in {piece.label}"
            )
    for name in table.schema.names:
        if name not in typed:
            raise _differ(
                what, first, piece, f"column '{name}' is in {piece.label}, not in {first.label}"
            )
    for field in table.schema:
        known, other = typed[field.name]
        if not same_type(known, field.type):
            raise _differ(
                what,
                other,
                piece,
                f"column '{field.name}' is {known} in {other.label} and {field.type} in "
                f"{piece.label}",
            )
        if pa.types.is_null(known):
            typed[field.name] = (field.type, piece)
    return table if table.schema.names == names else table.select(names)


def same_type(one: pa.DataType, other: pa.DataType) -> bool:
    """Whether two pieces' column types agree: equal, one of them all null (no type yet), or
    both strings (or both binary) of any Arrow layout (pandas gives ``string``, polars
    ``large_string``)."""
    import pyarrow as pa

    if one == other or pa.types.is_null(one) or pa.types.is_null(other):
        return True
    strings = (pa.types.is_string, pa.types.is_large_string, _is_string_view)
    binaries = (pa.types.is_binary, pa.types.is_large_binary)
    return any(
        any(t(one) for t in family) and any(t(other) for t in family)
        for family in (strings, binaries)
    )


def _is_string_view(kind: pa.DataType) -> bool:
    import pyarrow as pa

    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(kind))


def _differ(what: str, first: Piece, piece: Piece, detail: str) -> StorageError:
    return StorageError(
        f"{what}: pieces {first.label} and {piece.label} have different schemas, so they cannot be "
        f"concatenated: {detail}; make the pieces' columns agree, or take them as a list "
        "(annotate the parameter list[...])"
    )


def declared_schema(out: Any) -> Any:
    """The schema an ``Out`` declares (``@materialize(schema=)``), or None."""
    metadata = getattr(out, "metadata", None) or {}
    return metadata.get(SCHEMA_KEY)


def arrow_schema(declared: Any, what: str) -> pa.Schema:
    """A declared schema as a ``pyarrow.Schema`` (type names read by ``pa.type_for_alias``)."""
    import pyarrow as pa

    if isinstance(declared, pa.Schema):
        return declared
    try:
        declared = check_schema(declared, what)  # Out(metadata=...) is not checked earlier
    except DefinitionError as exc:
        raise StorageError(str(exc)) from None
    fields = []
    for name, kind in declared.items():
        if isinstance(kind, pa.DataType):
            fields.append(pa.field(name, kind))
            continue
        try:
            fields.append(pa.field(name, pa.type_for_alias(str(kind))))
        except (ValueError, KeyError, TypeError):
            raise StorageError(
                f"{what}: declared schema column '{name}' has type {kind!r}, which pyarrow does "
                "not know; use a pyarrow type (pa.int64()) or a name like 'int64', 'string', "
                "'double', 'bool', 'date32', 'timestamp[us]'"
            ) from None
    return pa.schema(fields)


def check_declared(table: pa.Table, declared: Any, what: str) -> None:
    """``table`` has the declared schema's columns with their types (a column all null may have
    no type yet); otherwise an error naming the column and both types.

    Raises:
        StorageError: a missing, extra or differently typed column.
    """
    schema = arrow_schema(declared, what)
    got = table.schema
    for name in schema.names:
        if name not in got.names:
            raise StorageError(f"{what}: the op declares column '{name}', the table has none")
    for name in got.names:
        if name not in schema.names:
            raise StorageError(
                f"{what}: column '{name}' is not in the schema the op declares ({schema.names})"
            )
    for field in schema:
        other = got.field(field.name).type
        if not same_type(field.type, other):
            raise StorageError(
                f"{what}: column '{field.name}' is {other}, the op declares {field.type}"
            )
