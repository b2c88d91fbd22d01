"""How a value becomes bytes in a file or object: pickle (default), JSON, Parquet, ``auto`` (JSON
or Parquet where the value allows, else pickle), or a custom pair.

Serializers are chosen per output (``Out(serializer=...)`` or ``Out(write=..., read=...)``) or as an
io manager's default, never by the value's type. Heavy libraries are imported only when used.
A serializer only writes to the file object it is given; making the write atomic is the file
store's job (see ``io_managers/files.py``).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from memodag.definitions.io import SERIALIZER_NAMES, check_serializer_name
from memodag.errors import DefinitionError, StorageError


class Serializer:
    """Writes a value to a binary file object and reads it back.

    ``name`` is recorded in each output's address, so a later run reads the value with the format
    it was written in even if the output's declared format has changed since.
    """

    name: str = "custom"
    extension: str = ""

    def dump(self, obj: Any, file: BinaryIO) -> None:
        """Write ``obj`` to ``file`` (opened for binary writing)."""
        raise NotImplementedError

    def load(self, file: BinaryIO) -> Any:
        """Read a value from ``file`` (opened for binary reading)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class PickleSerializer(Serializer):
    """Any picklable value (the default)."""

    name = "pickle"
    extension = ".pkl"

    def dump(self, obj: Any, file: BinaryIO) -> None:
        try:
            pickle.dump(obj, file, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            # pickle's own words name only the part it choked on ("cannot pickle '_thread.lock'
            # object"), not what to do about it
            raise StorageError(
                f"the pickle serializer cannot store this {type(obj).__name__}: "
                f"{type(exc).__name__}: {exc}; return only data that pickles (not a lock, a "
                "connection, an open file or a generator), choose another serializer with "
                "Out(serializer='json' or 'parquet') or Out(write=..., read=...), or store the "
                "output with another io manager: Out(io_manager_key=...)"
            ) from exc

    def load(self, file: BinaryIO) -> Any:
        return pickle.load(file)


class JsonSerializer(Serializer):
    """JSON values (dict, list, str, int, float, bool, None). Tuples load back as lists and
    non-string dict keys as strings, as JSON has no other way to say them."""

    name = "json"
    extension = ".json"

    def dump(self, obj: Any, file: BinaryIO) -> None:
        try:
            text = json.dumps(obj)  # mapping order is data: it loads back in the order stored
        except (TypeError, ValueError) as exc:
            raise StorageError(
                f"JSON serializer cannot store a {type(obj).__name__} value: {exc}; "
                "store JSON values only, or use serializer='pickle'"
            ) from exc
        file.write(text.encode())

    def load(self, file: BinaryIO) -> Any:
        return json.loads(file.read())


_KIND_KEY = b"memodag.kind"


class ParquetSerializer(Serializer):
    """Parquet for pandas/polars DataFrames and Arrow tables; loads back as the same library's type."""

    name = "parquet"
    extension = ".parquet"

    def dump(self, obj: Any, file: BinaryIO) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise StorageError(
                "parquet serializer needs pyarrow: pip install 'memodag[parquet]'"
            ) from exc

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
    if isinstance(obj, pa.Table):
        return "arrow", obj
    if isinstance(obj, pa.RecordBatch):
        return "arrow", pa.Table.from_batches([obj])
    module = type(obj).__module__.split(".")[0]
    kind_name = type(obj).__name__
    if module == "pandas" and kind_name == "DataFrame":
        try:
            return "pandas", pa.Table.from_pandas(obj)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise StorageError(
                f"parquet serializer cannot convert this pandas DataFrame to Arrow: {exc}; "
                "give each column one type, or use serializer='pickle'"
            ) from exc
    if module == "polars" and kind_name == "DataFrame":
        return "polars", obj.to_arrow()
    hint = ""
    if kind_name == "Series":
        hint = "; wrap a Series with .to_frame()"
    elif kind_name == "LazyFrame":
        hint = "; call .collect() on a LazyFrame first"
    raise StorageError(
        f"parquet serializer stores pandas/polars DataFrames and Arrow tables, "
        f"got {type(obj).__module__}.{kind_name}{hint}"
    )


#: what a pickle (protocol 2 and later, all memodag writes) and a Parquet file begin with
_PICKLE_MAGIC = b"\x80"
_PARQUET_MAGIC = b"PAR1"


def refused_pickle(what: str, fix: str) -> StorageError:
    """The error for a pickle a store that refuses them (``allow_pickle: false``) was given."""
    return StorageError(
        f"{what}, and this io manager does not allow pickle (allow_pickle: false; loading a "
        f"pickle runs whatever code it contains): {fix}"
    )


@dataclass(frozen=True)
class AutoSerializer(Serializer):
    """The safest format the value allows: JSON for plain data that loads back equal (dict with
    str keys, list, str, int, float, bool, None), Parquet for pandas/polars DataFrames and Arrow
    tables when pyarrow is installed, pickle for anything else (or, with ``allow_pickle=False``,
    a ``StorageError``). Loading tells the format from the file's first bytes."""

    allow_pickle: bool = True
    name: str = "auto"
    extension: str = ""

    def dump(self, obj: Any, file: BinaryIO) -> None:
        if _is_table(obj) and _has_pyarrow():
            _BUILTIN["parquet"].dump(obj, file)
            return
        text = _exact_json(obj)
        if text is not None:
            file.write(text.encode())
            return
        if not self.allow_pickle:
            raise refused_pickle(
                f"a {type(obj).__module__}.{type(obj).__name__} can be stored only as a pickle "
                "(JSON would not load it back equal; Parquet takes DataFrames and Arrow tables)",
                "return plain data (dicts with str keys, lists, str, numbers) or a DataFrame, "
                "write it yourself with Out(write=..., read=...), or store it with another io "
                "manager (Out(io_manager_key=...))",
            )
        _BUILTIN["pickle"].dump(obj, file)

    def load(self, file: BinaryIO) -> Any:
        data = file.read()
        if data.startswith(_PARQUET_MAGIC):
            import io

            return _BUILTIN["parquet"].load(io.BytesIO(data))
        if data.startswith(_PICKLE_MAGIC):
            if not self.allow_pickle:
                raise refused_pickle(
                    "the stored output is a pickle",
                    "re-run the step that made it with this store, which writes JSON or Parquet",
                )
            return pickle.loads(data)
        return json.loads(data)


def _is_table(obj: Any) -> bool:
    module = type(obj).__module__.split(".")[0]
    name = type(obj).__name__
    return (module in ("pandas", "polars") and name == "DataFrame") or (
        module == "pyarrow" and name in ("Table", "RecordBatch")
    )


def _has_pyarrow() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


_JSON_SCALARS = (str, int, float, bool, type(None))


def _exact_json(obj: Any) -> str | None:
    """``obj`` as JSON text if it loads back equal and of the same types, else None (a tuple,
    an int key, a NaN, a subclass of str would come back as something else)."""
    stack = [obj]
    seen: set[int] = set()  # a container met again (shared, or containing itself) is not redone
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in (dict, list):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if kind is dict:
            if any(type(k) is not str for k in item):
                return None
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif (
            kind not in _JSON_SCALARS
            or (kind is float and item != item)
            or (kind is float and item in (float("inf"), float("-inf")))
        ):
            return None
    try:
        return json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None  # a list that contains itself, or nested too deep for JSON


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


CUSTOM = CallableSerializer.name
AUTO = AutoSerializer.name

_BUILTIN: dict[str, Serializer] = {
    s.name: s for s in (PickleSerializer(), JsonSerializer(), ParquetSerializer(), AutoSerializer())
}


def get_serializer(spec: Any) -> Serializer:
    """``"pickle"``/``"json"``/``"parquet"``, a ``Serializer`` instance, or ``None`` for pickle."""
    if spec is None:
        return _BUILTIN["pickle"]
    if isinstance(spec, Serializer):
        return spec
    if isinstance(spec, str):
        return _BUILTIN[check_serializer_name(spec)]
    raise DefinitionError(
        f"unknown serializer {spec!r}; expected one of {sorted(SERIALIZER_NAMES)} "
        "or a Serializer instance"
    )


def serializer_for_out(out: Any, default: Any = None) -> Serializer:
    """The serializer an ``Out`` asks for: its write/read pair, its named format, or ``default``."""
    if out is not None:
        if out.write is not None:
            return CallableSerializer(out.write, out.read)
        if out.serializer is not None:
            return get_serializer(out.serializer)
    return get_serializer(default)
