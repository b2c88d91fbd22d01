"""The one hashing helper of the library: stable across processes, machines and hash seeds.

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
    h = hashlib.sha256()
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:VERSION_LENGTH]


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys) of config-like values; non-JSON leaves as their repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def hash_value(value: Any) -> str:
    """A content hash of an output value (early cutoff): equal data, equal hash."""
    h = hashlib.sha256()
    module = type(value).__module__.split(".")[0]
    if value is None or isinstance(value, bool | int | float | str | list | dict | tuple):
        try:
            h.update(b"json:" + canonical_json(value).encode())
            return h.hexdigest()[:VERSION_LENGTH]
        except (TypeError, ValueError):
            pass
    if module == "pandas":
        import pandas as pd

        h.update(
            b"pandas:"
            + str(list(value.columns) if hasattr(value, "columns") else value.name).encode()
        )
        h.update(pd.util.hash_pandas_object(value, index=True).values.tobytes())
        return h.hexdigest()[:VERSION_LENGTH]
    if module in ("polars", "pyarrow"):
        import pyarrow as pa

        table = value.to_arrow() if module == "polars" else value
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write(table)
        h.update(b"arrow:" + sink.getvalue().to_pybytes())
        return h.hexdigest()[:VERSION_LENGTH]
    h.update(b"pickle:" + pickle.dumps(value, protocol=4))
    return h.hexdigest()[:VERSION_LENGTH]


def piece_version(output_version: str, mapping_key: str) -> str:
    """The version of one piece of a dynamic output."""
    return hash_strings(output_version, "piece", mapping_key)
