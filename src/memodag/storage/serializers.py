"""How a value becomes bytes in a file or object: pickle (default), JSON, Parquet, or a custom pair.

Serializers are chosen per output (``Out(serializer=...)`` or ``Out(write=..., read=...)``) or as an
io manager's default, never by the value's type. Heavy libraries are imported only when used.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from memodag.errors import DefinitionError, StorageError


class Serializer:
    """Writes a value to a binary file object and reads it back."""

    name: str = "custom"
    extension: str = ""

    def dump(self, obj: Any, file: BinaryIO) -> None:
        raise NotImplementedError

    def load(self, file: BinaryIO) -> Any:
        raise NotImplementedError


class PickleSerializer(Serializer):
    name = "pickle"
    extension = ".pkl"

    def dump(self, obj: Any, file: BinaryIO) -> None:
        pickle.dump(obj, file, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, file: BinaryIO) -> Any:
        return pickle.load(file)


class JsonSerializer(Serializer):
    name = "json"
    extension = ".json"

    def dump(self, obj: Any, file: BinaryIO) -> None:
        try:
            file.write(json.dumps(obj, sort_keys=True).encode())
        except TypeError as exc:
            raise StorageError(
                f"JSON serializer cannot store {type(obj).__name__}: {exc}; use serializer='pickle'"
            ) from exc

    def load(self, file: BinaryIO) -> Any:
        return json.loads(file.read())


_KIND_KEY = b"memodag.kind"


class ParquetSerializer(Serializer):
    """Parquet for pandas/polars DataFrames and Arrow tables; loads back as the same library's type."""

    name = "parquet"
    extension = ".parquet"

    def dump(self, obj: Any, file: BinaryIO) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        kind, table = _to_arrow(obj, pa)
        meta = dict(table.schema.metadata or {})
        meta[_KIND_KEY] = kind.encode()
        pq.write_table(table.replace_schema_metadata(meta), file)

    def load(self, file: BinaryIO) -> Any:
        import pyarrow.parquet as pq

        table = pq.read_table(file)
        kind = (table.schema.metadata or {}).get(_KIND_KEY, b"arrow").decode()
        if kind == "pandas":
            return table.to_pandas()
        if kind == "polars":
            import polars as pl

            return pl.from_arrow(table)
        return table


def _to_arrow(obj: Any, pa: Any) -> tuple[str, Any]:
    module = type(obj).__module__.split(".")[0]
    if isinstance(obj, pa.Table):
        return "arrow", obj
    if module == "pandas":
        return "pandas", pa.Table.from_pandas(obj)
    if module == "polars":
        return "polars", obj.to_arrow()
    if isinstance(obj, pa.RecordBatch):
        return "arrow", pa.Table.from_batches([obj])
    raise StorageError(
        f"parquet serializer stores pandas/polars DataFrames and Arrow tables, got {type(obj).__name__}"
    )


@dataclass(frozen=True)
class CallableSerializer(Serializer):
    """A custom ``write(obj, file)`` / ``read(file)`` pair attached to one ``Out``."""

    write: Callable[[Any, BinaryIO], None]
    read: Callable[[BinaryIO], Any]
    name: str = "custom"
    extension: str = ""

    def dump(self, obj: Any, file: BinaryIO) -> None:
        self.write(obj, file)

    def load(self, file: BinaryIO) -> Any:
        return self.read(file)


_BUILTIN: dict[str, Serializer] = {
    s.name: s for s in (PickleSerializer(), JsonSerializer(), ParquetSerializer())
}


def get_serializer(spec: Any) -> Serializer:
    """``"pickle"``/``"json"``/``"parquet"``, a ``Serializer`` instance, or ``None`` for pickle."""
    if spec is None:
        return _BUILTIN["pickle"]
    if isinstance(spec, Serializer):
        return spec
    if isinstance(spec, str) and spec in _BUILTIN:
        return _BUILTIN[spec]
    raise DefinitionError(
        f"unknown serializer {spec!r}; expected one of {sorted(_BUILTIN)} or a Serializer instance"
    )


def serializer_for_out(out: Any, default: Any = None) -> Serializer:
    """The serializer an ``Out`` asks for: its write/read pair, its named format, or ``default``."""
    if out is not None:
        if out.write is not None:
            return CallableSerializer(out.write, out.read)
        if out.serializer is not None:
            return get_serializer(out.serializer)
    return get_serializer(default)
