"""The one hashing helper of the library: stable across processes, machines and hash seeds.

A leaf module (imports nothing of memodag), below every layer: versions (``versioning``) and the
step attempt (``runtime``: piece versions, early cutoff's data hash) hash the same way.

Never uses ``hash()`` (salted per process) and never pickles for identity where a canonical form
exists.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from typing import Any

VERSION_LENGTH = 20


def hash_strings(*parts: str) -> str:
    """A short hex digest of ordered strings (length-prefixed, so ("ab","c") != ("a","bc"))."""
    framed = bytearray()  # one update: hashing many short strings is call-bound
    for part in parts:
        data = part.encode()
        framed += len(data).to_bytes(8, "little")
        framed += data
    return hashlib.sha256(framed).hexdigest()[:VERSION_LENGTH]


def canonical_json(value: Any) -> str:
    """Deterministic JSON of config-like values; non-JSON leaves as their repr.

    Mapping order is kept, not sorted: it is data (an op iterating a config mapping sees it), so
    a reordered mapping is another config. Schema-declared fields are in schema order already.
    """
    return json.dumps(value, separators=(",", ":"), default=repr)


def _plain(value: Any) -> Any:
    """A JSON form of plain data that keeps types apart (a tuple is not a list, ``1`` is not
    ``"1"`` as a key) and mapping order (a reordered dict is other data: a consumer iterating
    it sees the order); raises TypeError for anything else, which is then hashed by its pickle."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value if type(value) in (int, float) else _not_plain(value)
    if isinstance(value, list) and type(value) is list:
        return [_plain(v) for v in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return {"~tuple": [_plain(v) for v in value]}
    if isinstance(value, set | frozenset) and type(value) in (set, frozenset):
        # by sorted content: iteration order of a set depends on the process's hash seed
        members = sorted(json.dumps(_plain(v), sort_keys=True) for v in value)
        return {"~set": members}
    if isinstance(value, dict) and type(value) is dict:
        if all(type(k) is str for k in value):
            return {"~dict": {k: _plain(v) for k, v in value.items()}}
        return {"~items": [[_plain(k), _plain(v)] for k, v in value.items()]}
    return _not_plain(value)


def _not_plain(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def hash_value(value: Any) -> str:
    """A content hash of an output value (early cutoff): equal data, equal hash; different data
    never shares a hash through a shortened ``repr`` (containers of non-plain values are pickled)."""
    h = hashlib.sha256()
    try:
        # not sort_keys: the only objects ``_plain`` makes are its tags and ``~dict``s, whose
        # key order is the value's own
        h.update(b"json:" + json.dumps(_plain(value), separators=(",", ":")).encode())
        return h.hexdigest()[:VERSION_LENGTH]
    except (TypeError, ValueError):
        pass
    module = type(value).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        try:
            cells = pd.util.hash_pandas_object(value, index=True).values.tobytes()
        except TypeError:
            # cells hash_pandas_object cannot hash (lists, dicts): the pickle below sees them
            cells = None
        if cells is not None:
            h.update(b"pandas:" + _pandas_header(value).encode())
            h.update(cells)
            return h.hexdigest()[:VERSION_LENGTH]
    if module in ("polars", "pyarrow"):
        import pyarrow as pa

        table = value.to_arrow() if module == "polars" else value
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write(table)
        h.update(b"arrow:" + sink.getvalue().to_pybytes())
        return h.hexdigest()[:VERSION_LENGTH]
    try:
        h.update(b"pickle:" + pickle.dumps(value, protocol=4))
    except Exception as exc:  # a lock, an open connection, a lambda: no content to compare
        raise UnhashableValue(
            f"{type(value).__module__}.{type(value).__qualname__}: {exc}"
        ) from exc
    return h.hexdigest()[:VERSION_LENGTH]


def _pandas_header(value: Any) -> str:
    """What ``hash_pandas_object`` does not hash of a pandas object and code can see: column
    and index names (``reset_index`` turns them into columns), dtypes, and a categorical's
    categories in order, unused ones too (they decide codes, sorting and ``get_dummies``)."""

    def dtype_text(dtype: Any) -> str:
        categories = getattr(dtype, "categories", None)
        if categories is None:
            return str(dtype)
        return f"category({list(categories)!r},ordered={dtype.ordered},{categories.dtype})"

    index = value.index
    levels = getattr(index, "levels", None)  # a MultiIndex: each level's dtype
    index_dtypes = [dtype_text(level.dtype) for level in levels or (index,)]
    if hasattr(value, "columns"):  # a DataFrame
        columns = [list(value.columns), list(value.columns.names)]
        dtypes = [dtype_text(t) for t in value.dtypes]
    else:
        columns, dtypes = [value.name], [dtype_text(value.dtype)]
    return repr((type(value).__name__, columns, dtypes, list(index.names), index_dtypes))


class UnhashableValue(TypeError):
    """``hash_value`` cannot see a value's content (it does not pickle)."""


def piece_version(output_version: str, mapping_key: str) -> str:
    """The version of one piece of a dynamic output."""
    return hash_strings(output_version, "piece", mapping_key)


def content_hasher() -> Any:
    """A fresh hasher of stored bytes (``update(bytes)``, ``hexdigest()``): what io managers
    record as an output's ``content_hash`` and check it against. BLAKE2b: fast, and 128 bits
    are plenty to tell an altered file from the one written."""
    return hashlib.blake2b(digest_size=16)
