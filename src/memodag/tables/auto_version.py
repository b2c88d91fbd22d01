"""``AUTO_VERSION``: an op's code version from the polars plan its body builds.

The body is called on empty ``LazyFrame``s of its inputs' schemas (from the inputs' addresses:
no table is read), and what it returns is serialized; that plan, with the outputs' names, order
and table options, is the version. Python functions inside a plan (UDFs) are pickled by polars,
which is not stable across processes: they are versioned by their source instead, helpers
included (``SourceHashVersionStrategy``). Owns no decision about what runs; imports polars and
pyarrow only when called. Semantics: docs/tables.md, "AUTO_VERSION".
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import sys
import threading
import types
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from memodag.definitions.tables import INPUT_TYPE_KEY, Table
from memodag.errors import MemodagError, MemoizationError
from memodag.hashing import canonical_json, hash_strings
from memodag.tables.convert import POLARS_LAZY, kind_of_type

#: what every AUTO_VERSION code version starts with (bump it when what is hashed changes)
_SCHEME = "auto-version:1"
#: LazyFrame methods that compute data: called while a plan is built, they fail the version
_COLLECTING = (
    "collect",
    "collect_async",
    "collect_batches",
    "profile",
    "describe",
    "sink_parquet",
    "sink_ipc",
    "sink_csv",
    "sink_ndjson",
)
#: a cache node's id in polars' serialized plan (msgpack: key "id", 16 bytes): a random UUID
#: per ``.cache()``, renumbered in order of appearance so equal plans serialize alike
_CACHE_ID = re.compile(rb"\xa2id\xc4\x10(.{16})", re.DOTALL)
_LOCK = threading.RLock()


def schema_text(schema: Any) -> str:
    """An Arrow schema as compact text (``Address.schema``): its IPC bytes, without schema-level
    metadata (pandas' index notes), compressed and base64-encoded."""
    raw = schema.remove_metadata().serialize().to_pybytes()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def schema_from_text(text: str) -> Any:
    """The Arrow schema ``schema_text`` made."""
    import pyarrow as pa

    return pa.ipc.read_schema(pa.py_buffer(zlib.decompress(base64.b64decode(text))))


class _Collected(Exception):
    def __init__(self, method: str) -> None:
        super().__init__(method)
        self.method = method


@contextmanager
def _no_collect() -> Iterator[None]:
    """LazyFrame's collecting methods raise while the body builds its plan: a collected frame
    turned lazy again would hide the computation from the plan (and read no real data here)."""
    import polars as pl

    saved: list[tuple[Any, str, Any]] = []

    def refuse(name: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise _Collected(name)

        return refused

    with _LOCK:
        for name in _COLLECTING:
            if hasattr(pl.LazyFrame, name):
                saved.append((pl.LazyFrame, name, pl.LazyFrame.__dict__.get(name)))
                setattr(pl.LazyFrame, name, refuse(f"LazyFrame.{name}()"))
        for name in ("collect_all", "collect_all_async"):
            if hasattr(pl, name):
                saved.append((pl, name, getattr(pl, name)))
                setattr(pl, name, refuse(f"pl.{name}()"))
        try:
            yield
        finally:
            for owner, name, value in saved:
                if value is None:
                    delattr(owner, name)
                else:
                    setattr(owner, name, value)


def check_input_types(op_def: Any) -> None:
    """Every input of an AUTO_VERSION op is handed over as a ``polars.LazyFrame``.

    Raises:
        MemoizationError: naming the op, the input, its type and the supported one.
    """
    for name, spec in op_def.ins.items():
        wanted = spec.metadata.get(INPUT_TYPE_KEY)
        try:
            kind = kind_of_type(wanted, f"op '{op_def.name}' input '{name}'")
        except MemodagError:
            kind = None
        if kind != POLARS_LAZY:
            raise MemoizationError(
                f"op '{op_def.name}' has version=AUTO_VERSION, but its input '{name}' is handed "
                f"over as {getattr(wanted, '__qualname__', wanted)!r}: AUTO_VERSION supports "
                "input_type=polars.LazyFrame only (its plan is what is versioned); use "
                "input_type=pl.LazyFrame, or give the op version=..."
            )


def plan_version(
    op_def: Any,
    context: Any,
    inputs: Mapping[str, Any],
    code_version: Callable[[Any], str],
) -> str:
    """The code version of an AUTO_VERSION op called on ``inputs``.

    Args:
        op_def: the op.
        context: what the body receives as its context, if it takes one.
        inputs: per input name, the schema text (``schema_text``) of the table wired to it, a
            list of them (a fan-in list), or ``("default", value)`` for an input left to its
            default.
        code_version: the source-hash version of a Python function (UDFs in the plan).

    Raises:
        MemoizationError: the body collected, raised, or returned something that is not a
            LazyFrame (each naming the op and what happened).
    """
    import polars as pl

    from memodag.tables.convert import from_arrow

    check_input_types(op_def)
    frames: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, tuple) and value and value[0] == "default":
            frames[name] = value[1]
        elif isinstance(value, list):
            frames[name] = [_empty_frame(t, from_arrow) for t in value]
        else:
            frames[name] = _empty_frame(value, from_arrow)
    where = f"op '{op_def.name}' (version=AUTO_VERSION)"
    try:
        with _no_collect():
            result = (
                op_def.compute_fn(context, **frames)
                if op_def.takes_context
                else op_def.compute_fn(**frames)
            )
    except _Collected as exc:
        raise MemoizationError(
            f"{where} called {exc.method} while its plan was built (on empty frames of its "
            "inputs' schemas): an AUTO_VERSION body must return a LazyFrame without computing "
            "it; drop the collect, or give the op version=..."
        ) from None
    except MemodagError:
        raise
    except Exception as exc:
        raise MemoizationError(
            f"{where} raised {type(exc).__name__}: {exc} when called on empty LazyFrames of its "
            "inputs' schemas to build its plan; an AUTO_VERSION body must only build a query "
            "(no reading values out of the data), or give the op version=..."
        ) from exc
    names = list(op_def.outs)
    values = _outputs(result, names, where)
    parts = [_SCHEME, f"polars=={pl.__version__}"]
    for name, value in zip(names, values, strict=True):
        table = value if isinstance(value, Table) else Table(value)
        if not isinstance(table.obj, pl.LazyFrame):
            what = type(table.obj)
            raise MemoizationError(
                f"{where} returned {what.__module__}.{what.__qualname__} for output '{name}': "
                "an AUTO_VERSION body returns polars LazyFrames (optionally in Table(...)), "
                "whose plans are its version; return the LazyFrame without collect()"
            )
        parts.append(f"output:{name}:{_table_options(table)}")
        parts.append(_serialized(table.obj, code_version, where))
    return hash_strings(*parts)


def _empty_frame(text: Any, from_arrow: Callable[..., Any]) -> Any:
    schema = schema_from_text(text)
    return from_arrow(schema.empty_table(), POLARS_LAZY, "AUTO_VERSION input")


def _outputs(result: Any, names: Sequence[str], where: str) -> list[Any]:
    if len(names) == 1:
        return [result]
    if not isinstance(result, tuple | list) or len(result) != len(names):
        raise MemoizationError(
            f"{where} returned {type(result).__name__}, not a tuple of {len(names)} LazyFrames "
            f"(outputs {list(names)})"
        )
    return list(result)


def _table_options(table: Table) -> str:
    """What ``Table(...)`` says besides the data: part of the version (a new primary key is a
    new table)."""
    return canonical_json(
        [
            table.name,
            list(table.primary_key),
            [list(i) for i in table.indexes],
            sorted((str(k), str(v)) for k, v in table.type_map.items()),
            list(table.nullable) if table.nullable is not None else None,
            list(table.non_nullable) if table.non_nullable is not None else None,
            repr(table.materialization_details),
        ]
    )


def _serialized(frame: Any, code_version: Callable[[Any], str], where: str) -> str:
    """A digest of ``frame``'s serialized plan, with each Python object polars pickles replaced
    by a stable token and cache ids renumbered."""
    tokens: list[str] = []

    def dumps(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        token = _python_token(obj, code_version, where)
        tokens.append(token)
        return f"memodag-udf:{token}".encode()

    fake = types.ModuleType("cloudpickle")
    fake.dumps = dumps  # type: ignore[attr-defined]
    fake.loads = _refuse_loads  # type: ignore[attr-defined]
    with _LOCK:
        saved = sys.modules.get("cloudpickle")
        sys.modules["cloudpickle"] = fake
        try:
            raw = frame.serialize()
        except MemodagError:
            raise
        except Exception as exc:
            raise MemoizationError(f"{where}: polars could not serialize its plan: {exc}") from exc
        finally:
            if saved is None:
                sys.modules.pop("cloudpickle", None)
            else:
                sys.modules["cloudpickle"] = saved
    ids: dict[bytes, bytes] = {}

    def renumber(match: re.Match[bytes]) -> bytes:
        number = ids.setdefault(match.group(1), len(ids).to_bytes(16, "big"))
        return match.group(0)[:4] + number

    return hashlib.sha256(_CACHE_ID.sub(renumber, raw)).hexdigest()


def _refuse_loads(*args: Any, **kwargs: Any) -> Any:
    raise MemoizationError("AUTO_VERSION serializes plans only; nothing is unpickled")


def _python_token(obj: Any, code_version: Callable[[Any], str], where: str) -> str:
    """A stable stand-in for a Python object inside a plan: functions by their source hash
    (helpers included), polars' own wrappers by what they wrap, plain values by content."""
    parts: list[str] = []
    seen: set[int] = set()

    def walk(value: Any) -> None:
        if id(value) in seen:
            parts.append("<seen>")
            return
        seen.add(id(value))
        if value is None or isinstance(value, bool | int | float | str | bytes):
            parts.append(f"{type(value).__name__}:{value!r}")
        elif isinstance(value, tuple | list):
            parts.append(f"{type(value).__name__}[{len(value)}]")
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            parts.append(f"dict[{len(value)}]")
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, functools.partial):
            parts.append("partial")
            walk(value.func)
            walk(value.args)
            walk(dict(value.keywords))
        elif isinstance(value, types.MethodType):
            parts.append("method")
            walk(value.__func__)
            walk(value.__self__)
        elif isinstance(value, types.FunctionType) and _from_polars(value):
            # polars' wrapper around the user's function: what it closes over decides
            parts.append(f"polars:{value.__qualname__}")
            for cell in value.__closure__ or ():
                try:
                    walk(cell.cell_contents)
                except ValueError:
                    parts.append("<empty cell>")
            walk(value.__defaults__)
            walk(value.__kwdefaults__)
        elif isinstance(value, types.FunctionType | types.BuiltinFunctionType | type):
            parts.append(f"code:{code_version(value)}")
        elif _from_polars(type(value)):
            if isinstance(value, pl_datatype()):
                parts.append(f"dtype:{value!r}")
                return
            parts.append(f"polars-object:{type(value).__qualname__}")
            for key, item in sorted(getattr(value, "__dict__", {}).items()):
                parts.append(key)
                walk(item)
        elif callable(value):
            parts.append(f"callable:{code_version(type(value))}")
            state = getattr(value, "__dict__", None)
            if state:
                walk(dict(sorted(state.items())))
        else:
            raise MemoizationError(
                f"{where}: its plan holds a {type(value).__module__}.{type(value).__qualname__} "
                "that AUTO_VERSION cannot version; use plain values in the query, or give the "
                "op version=..."
            )

    walk(obj)
    return hash_strings(*parts)


def _from_polars(value: Any) -> bool:
    module = getattr(value, "__module__", None) or ""
    return module == "polars" or module.startswith("polars.")


def pl_datatype() -> Any:
    import polars as pl

    return pl.DataType


__all__ = ["check_input_types", "plan_version", "schema_from_text", "schema_text"]
