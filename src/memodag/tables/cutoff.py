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

    h.update(f"\0{array.offset}:{len(array)}\0".encode())
    if pa.types.is_dictionary(array.type):
        # the buffers hold the indices only: the values are the dictionary's
        _hash_array(h, array.indices)
        _hash_array(h, array.dictionary)
        return
    for buffer in array.buffers():
        if buffer is None:
            h.update(b"\0-")
        else:
            h.update(f"\0{buffer.size}\0".encode())
            h.update(buffer)


__all__ = ["arrow_content_hash"]
