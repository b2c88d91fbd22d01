"""Early cutoff for tables: the content hash of a table's Arrow data.

With early cutoff, a table output's consumers are versioned by this hash instead of the
producer's code-derived version, so a task that re-runs and yields identical rows keeps its
consumers stored (docs/tables.md, "Early cutoff"). A pure function: it reads no database.
"""

from __future__ import annotations

import hashlib
from typing import Any


def arrow_content_hash(table: Any) -> str:
    """A hash of ``table``'s schema and data, buffer by buffer (no copy, no serialization).

    Equal data laid out differently (other chunks, a slice) may hash differently: its
    consumers then run once more, never the opposite (different data always differs here).
    """
    h = hashlib.sha1(usedforsecurity=False)  # fast here, and no adversary chooses the data
    h.update(str(table.schema).encode())
    h.update(f"\0{table.num_rows}\0".encode())
    for column in table.columns:
        h.update(b"\0column")
        for chunk in column.chunks:
            _hash_array(h, chunk)
    return h.hexdigest()[:20]


def _hash_array(h: Any, array: Any) -> None:
    import pyarrow as pa

    kind = array.type
    if isinstance(kind, pa.ExtensionType):
        array = array.storage
        kind = array.type
    h.update(f"\0{array.offset}:{len(array)}\0".encode())
    if pa.types.is_dictionary(kind):
        # the buffers hold the indices only: the values are the dictionary's
        _hash_array(h, array.indices)
        _hash_array(h, array.dictionary)
        return
    # buffers() lists the children's buffers too, but not the children's offsets and
    # lengths (a struct of two slices of one array would hash alike): hash this level's
    # own buffers, then each child as an array of its own
    for buffer in array.buffers()[: kind.num_buffers]:
        if buffer is None:
            h.update(b"\0-")
        else:
            h.update(f"\0{buffer.size}\0".encode())
            h.update(buffer)
    for child in _children(array):
        h.update(b"\0child")
        _hash_array(h, child)


def _children(array: Any) -> list[Any]:
    """The child arrays of a nested ``array`` (none for a flat one)."""
    import pyarrow as pa

    kind = array.type
    if kind.num_fields == 0:
        return []
    if pa.types.is_struct(kind) or pa.types.is_union(kind):
        return [array.field(i) for i in range(kind.num_fields)]
    if pa.types.is_run_end_encoded(kind):
        return [array.run_ends, array.values]
    if hasattr(array, "values"):  # list, large list, fixed-size list, list view, map
        return [array.values]
    raise TypeError(f"early cutoff cannot hash Arrow type {kind}: report it to memodag")


__all__ = ["arrow_content_hash"]
