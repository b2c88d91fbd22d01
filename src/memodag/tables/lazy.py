"""Versions of what a lazy table task (``@materialize(lazy=True)``) returned: a query, a frame.

A lazy task's body runs on every run; what it returns is versioned here, and the table io
manager stores the output at that version (executing nothing when a table of it is stored).
Pure functions of their arguments: nothing here touches a database or decides what runs.
Semantics: docs/tables.md, "Lazy SQL tasks".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from memodag.hashing import hash_strings

if TYPE_CHECKING:
    from memodag.tables.store import TableSpec

# a string literal, a quoted identifier, a comment, whitespace, or one other character
_TOKEN = re.compile(
    r"""('(?:[^']|'')*')"""  # 'literal' ('' is a quote inside)
    r"""|("(?:[^"]|"")*")"""  # "identifier"
    r"|(--[^\n]*|/\*.*?\*/)"  # comments
    r"|(\s+)"
    r"|([^'\"\s-]+|-)",
    re.DOTALL,
)
_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
#: what a store's data schema is written as in a canonical query
DATA_SCHEMA_PLACEHOLDER = "{memodag_data}"


def canonical_sql(sql: str, data_schema: str) -> str:
    """``sql`` in a form that does not depend on where its inputs live or how it is spelled:
    the store's data schema (with its ``schema_prefix``/``schema_suffix``) becomes a
    placeholder, quotes around plain lower-case identifiers go, comments go, runs of whitespace
    outside literals become one space, and a trailing ``;`` goes. String literals are kept
    exactly (their content is data)."""
    out: list[str] = []
    for literal, quoted, comment, space, other in _TOKEN.findall(sql):
        if literal:
            out.append(literal)
        elif quoted:
            name = quoted[1:-1].replace('""', '"')
            if name == data_schema:
                out.append(DATA_SCHEMA_PLACEHOLDER)
            elif _PLAIN_IDENTIFIER.match(name):
                out.append(name)
            else:
                out.append(quoted)
        elif comment or space:
            if out and out[-1] != " ":
                out.append(" ")
        elif other:
            # a bare schema name: only a whole word is replaced
            out.append(
                re.sub(
                    rf"(?<![A-Za-z0-9_]){re.escape(data_schema)}(?![A-Za-z0-9_])",
                    DATA_SCHEMA_PLACEHOLDER,
                    other,
                )
            )
    text = "".join(out).strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def options_text(spec: TableSpec) -> str:
    """The ``Table`` options that shape the stored table (not its name in the stage): a primary
    key or index added later is another version, so the table is created with it."""
    return repr(
        (
            spec.primary_key,
            spec.indexes,
            sorted((k, str(v)) for k, v in spec.type_map.items()),
            spec.nullable,
            spec.non_nullable,
            repr(spec.materialization_details),
        )
    )


def input_versions_text(inputs: Mapping[tuple[str, ...], str]) -> str:
    """The versions of the tables a task read, in a stable order."""
    return repr(sorted(inputs.items()))


def query_version(
    canonical: str, inputs: Mapping[tuple[str, ...], str], spec: TableSpec, what: str = "query"
) -> str:
    """The version of a table made by a query (``what``: "query" or "script")."""
    return hash_strings("lazy-" + what, canonical, input_versions_text(inputs), options_text(spec))


def frame_version(data_hash: str, spec: TableSpec) -> str:
    """The version of a table a lazy task returned as a frame, from its content hash."""
    return hash_strings("lazy-frame", data_hash, options_text(spec))


def frame_content_hash(obj: Any, kind: str, arrow: Any) -> tuple[str | None, str | None]:
    """``(content hash, None)`` of a frame, or ``(None, column)`` naming a column whose content
    cannot be hashed (a pandas column of lists, dicts, objects).

    pandas frames are hashed column by column (``hash_pandas_object``: fast, and what tells an
    unhashable column); other frames by their Arrow data (``arrow``, the table to store).
    """
    import hashlib

    h = hashlib.sha256()
    if kind == "pandas":
        import pandas as pd

        for name in obj.columns:
            column = obj[name]
            h.update(f"{name!s}\0{column.dtype!s}\0".encode())
            try:
                h.update(pd.util.hash_pandas_object(column, index=False).values.tobytes())
            except TypeError:
                return None, str(name)
        return h.hexdigest()[:20], None
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, arrow.schema) as writer:
        writer.write_table(arrow)
    h.update(sink.getvalue())
    return h.hexdigest()[:20], None


__all__ = [
    "DATA_SCHEMA_PLACEHOLDER",
    "canonical_sql",
    "frame_content_hash",
    "frame_version",
    "options_text",
    "query_version",
]
