"""Path-based io managers: an output becomes one file or object under a base location.

The manager decides the path and the format; a ``FileStore`` moves the bytes atomically (a
temporary name renamed into place, or one whole-object upload), so a crash mid-write never
leaves something at the final path. Local writes are not fsync'ed: they survive a crashed
process, not a crashed machine (an fsync per output would cost more than the whole step budget).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, BinaryIO

from memodag.errors import DefinitionError, OutputLostError, StorageError
from memodag.hashing import content_hasher
from memodag.storage.io_manager import (
    Address,
    InputContext,
    MemoizableIOManager,
    OutputContext,
    RunInfo,
    StoredData,
)
from memodag.storage.serializers import (
    AUTO,
    CUSTOM,
    AutoSerializer,
    Serializer,
    get_serializer,
    refused_pickle,
    serializer_for_out,
)

#: path parts that name no file of their own: joined into a path, they would leave the base
_NOT_NAMES = frozenset(("", ".", ".."))

#: marks a local temporary file; a crashed writer may leave one beside the target, never at it
TMP_MARK = ".tmp-"


class FileStore(ABC):
    """Moves bytes to and from paths under one root; every write is all-or-nothing."""

    @abstractmethod
    def write(self, path: str, dump: Callable[[BinaryIO], None]) -> None:
        """Call ``dump(file)`` and make its bytes appear at ``path`` whole, or not at all."""

    @abstractmethod
    def open_read(self, path: str) -> BinaryIO: ...

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def join(self, *parts: str) -> str: ...

    @abstractmethod
    def uri(self, path: str) -> str:
        """The address recorded for ``path`` (what ``path_of`` turns back into the path)."""

    @abstractmethod
    def path_of(self, uri: str) -> str: ...

    def size(self, path: str) -> int | None:
        """Bytes stored at ``path`` (one stat), or None if nothing is there."""
        return None

    def delete(self, path: str) -> None:
        """Remove ``path``; a missing path is not an error."""
        raise NotImplementedError

    def walk(self, path: str) -> list[str]:
        """Every file under the directory ``path`` (none if it does not exist)."""
        return []

    def check_base(self, base: str) -> str | None:
        """Why outputs cannot be written under ``base`` (checked once per run, before any step),
        or None. Remote stores are not probed: a request per run is not worth it."""
        return None


class LocalFileStore(FileStore):
    """Local disk: write to a unique temporary name beside the target, then ``os.replace``."""

    def __init__(self) -> None:
        # directories already made by this store: saves a makedirs syscall per output
        self._made: set[str] = set()
        self._tmp_pid = 0
        self._tmp_tag = ""
        self._tmp_count = itertools.count()

    def _tmp_name(self, path: str) -> str:
        """A temporary name beside ``path`` no other writer uses: the process id and a random
        tag drawn once per process (not per write), then a counter."""
        pid = os.getpid()
        if pid != self._tmp_pid:  # first write, or a forked child
            self._tmp_pid, self._tmp_tag = pid, f"{pid}-{uuid.uuid4().hex[:8]}-"
        return f"{path}{TMP_MARK}{self._tmp_tag}{next(self._tmp_count)}"

    def write(self, path: str, dump: Callable[[BinaryIO], None]) -> None:
        directory = os.path.dirname(path)
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        tmp = self._tmp_name(path)
        file = _create(tmp, directory)
        try:
            with file:
                dump(file)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def open_read(self, path: str) -> BinaryIO:
        return open(path, "rb")

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def uri(self, path: str) -> str:
        return path

    def path_of(self, uri: str) -> str:
        return uri[7:] if uri.startswith("file://") else uri

    def size(self, path: str) -> int | None:
        try:
            return os.path.getsize(path)
        except OSError:
            return None

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def prune_empty_dirs(self, path: str, stop: str) -> None:
        """Remove the folders holding ``path`` that are now empty, up to ``stop`` (kept)."""
        stop = os.path.normpath(stop)
        parent = os.path.dirname(os.path.normpath(path))
        while parent.startswith(stop + os.sep):
            try:
                os.rmdir(parent)  # refuses a folder that still holds something
            except OSError:
                break
            self._made.discard(parent)
            parent = os.path.dirname(parent)

    def walk(self, path: str) -> list[str]:
        return [os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names]

    def check_base(self, base: str) -> str | None:
        if os.path.exists(base) and not os.path.isdir(base):
            return f"{base} is not a directory"
        try:
            os.makedirs(base, exist_ok=True)
            # a write is the only honest test: a read-only mount, or permissions root ignores
            fd, probe = tempfile.mkstemp(prefix=".memodag-probe-", dir=base)
        except OSError as exc:
            return f"cannot write under {base}: {exc.strerror or exc}"
        os.close(fd)
        os.unlink(probe)
        self._made.add(base)
        return None


def _create(path: str, directory: str) -> BinaryIO:
    """Open a new file for writing, making its directory again if it went away since we made it
    (gc, a user cleaning up)."""
    try:
        return open(path, "wb")
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        return open(path, "wb")


class FsspecFileStore(FileStore):
    """Any fsspec filesystem (``s3://``, ``memory://``, ...): serialize to a local temporary file,
    then upload it whole, so a failing serializer never leaves a partial object.

    (Writing through ``fs.open(path, "wb")`` would not do: closing it, which happens even when
    the writer raises, uploads whatever was buffered.) Listing caches are dropped for a path
    before asking about it, so an object written by another process is never reported missing.
    """

    def __init__(self, fs: Any, protocol: str, timeout: float | None = None) -> None:
        self.fs = fs
        self.protocol = protocol
        #: seconds one call (its internal retries included) may take on an asynchronous
        #: filesystem (S3); None waits as long as the filesystem's own timeouts let it
        self.timeout = timeout or None

    def _call(self, method: str, *args: Any, path: str) -> Any:
        """``fs.<method>(*args)``, given up after ``timeout`` seconds: a store that accepts the
        connection and never answers must fail the attempt (its retry policy then decides),
        not hold the run forever. Only asynchronous filesystems can be cut off mid-call."""
        if self.timeout is None or not getattr(self.fs, "async_impl", False):
            return getattr(self.fs, method)(*args)
        from fsspec.asyn import sync
        from fsspec.exceptions import FSTimeoutError

        try:
            return sync(self.fs.loop, getattr(self.fs, "_" + method), *args, timeout=self.timeout)
        except FSTimeoutError:
            raise StorageError(
                f"the object store did not answer within {self.timeout:g}s ({method} "
                f"{self.uri(path)}); raise the io manager's `timeout` if the store is only "
                "slow, or give the op a RetryPolicy to try again"
            ) from None

    def write(self, path: str, dump: Callable[[BinaryIO], None]) -> None:
        with tempfile.NamedTemporaryFile(prefix="memodag-", suffix=".part") as tmp:
            dump(tmp)  # type: ignore[arg-type]
            tmp.flush()
            self._call("put_file", tmp.name, path, path=path)
        self.fs.invalidate_cache(path)

    def open_read(self, path: str) -> BinaryIO:
        self.fs.invalidate_cache(path)
        if self.timeout is None or not getattr(self.fs, "async_impl", False):
            return self.fs.open(path, "rb")
        # a lazily read remote file would make calls outside any deadline: fetch it whole
        # into a local temporary file within one
        with tempfile.NamedTemporaryFile(prefix="memodag-", suffix=".part") as tmp:
            self._call("get_file", path, tmp.name, path=path)
            return open(tmp.name, "rb")  # readable after the name is removed

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache(path)
        return bool(self._call("exists", path, path=path))

    def join(self, *parts: str) -> str:
        return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))

    def uri(self, path: str) -> str:
        if self.protocol == "memory":
            return f"memory://{path}"
        return f"{self.protocol}://{path.lstrip('/')}"

    def path_of(self, uri: str) -> str:
        return self.fs._strip_protocol(uri)

    def size(self, path: str) -> int | None:
        self.fs.invalidate_cache(path)
        try:
            return int(self._call("size", path, path=path))
        except OSError:
            return None

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("rm_file", path, path=path)
        self.fs.invalidate_cache(path)

    def walk(self, path: str) -> list[str]:
        self.fs.invalidate_cache(path)
        try:
            return [str(p) for p in self._call("find", path, path=path)]
        except FileNotFoundError:
            return []


class PathIOManager(MemoizableIOManager):
    """Stores each output as one file: ``<base>/<run_id>/<step_key>.<output><ext>`` (pieces: ``.../<step_key>.<output>/<piece><ext>``), or
    with ``versioned=True`` ``<base>/<step_key>/<output>[/<piece>]/<version><ext>`` so a memoized
    run finds it by version alone.

    The format of an output is, in order: its ``Out(write=, read=)`` pair, its
    ``Out(serializer=)``, the manager's default. Loading uses the format recorded in the address.

    With ``allow_pickle=False`` the manager never writes or loads a pickle (loading one runs
    whatever code it holds): its default format becomes ``auto`` without pickle, and an output
    that needs pickle fails its step.
    """

    #: outputs recorded in the instance index can be trusted to exist at their address
    uses_instance_index = True

    def __init__(
        self,
        store: FileStore,
        base: str,
        default_serializer: Any = None,
        versioned: bool = False,
        allow_pickle: bool = True,
    ) -> None:
        self.store = store
        self.base = base
        self.allow_pickle = allow_pickle
        self.default_serializer = self._safe(get_serializer(default_serializer), default=True)
        self.versioned = versioned

    def _safe(self, serializer: Serializer, default: bool = False) -> Serializer:
        """``serializer`` as this manager may use it: ``auto`` without its pickle fallback when
        pickle is not allowed (and, for the manager's default, instead of pickle)."""
        if self.allow_pickle:
            return serializer
        if serializer.name == AUTO or (default and serializer.name == "pickle"):
            return AutoSerializer(allow_pickle=False)
        return serializer

    def _serializer(self, context: OutputContext) -> Serializer:
        out = context.out
        if out is None or (out.write is None and out.serializer is None):
            return self.default_serializer
        try:
            return self._safe(serializer_for_out(out))
        except DefinitionError as exc:
            raise DefinitionError(f"output '{context.step_key}.{context.name}': {exc}") from None

    def path_for(self, context: OutputContext, serializer: Serializer | None = None) -> str:
        """Where the output named by ``context`` is (or would be) stored: always under the base.

        Raises ``StorageError`` if a name (run id, step key, output, piece key) would lead out
        of it, whatever let that name through.
        """
        ext = (serializer or self._serializer(context)).extension
        if not self.versioned:
            # flat within the run: a directory per step would cost a mkdir per step
            name = f"{context.step_key}.{context.name}"
            if context.mapping_key is not None:
                parts = [context.run_id, name, context.mapping_key + ext]
            else:
                parts = [context.run_id, name + ext]
        else:
            parts = [context.step_key, context.name]
            if context.mapping_key is not None:
                parts.append(context.mapping_key)
            if not context.version:
                raise StorageError(
                    f"versioned io manager needs a version for output '{context.step_key}.{context.name}'; "
                    "give the op a version or the job a version_strategy"
                )
            parts.append(context.version + ext)
        for part in parts:
            # a part with no separator that is not '.' or '..' cannot lead out of the base
            if part in _NOT_NAMES or "/" in part or "\\" in part:
                raise self._outside(context, part)
        return self.store.join(self.base, *parts)

    def _outside(self, context: OutputContext, what: str) -> StorageError:
        return StorageError(
            f"output '{context.step_key}.{context.name}' of run {context.run_id!r}: the name "
            f"{what!r} would put it outside the io manager's base {self.base!r}; run ids, op, "
            "output and mapping key names must not contain path separators or be '.' or '..'"
        )

    def on_run_start(self, run: RunInfo) -> None:
        """Refuse a run whose base folder cannot hold outputs (a file, ``/dev/null``, a
        read-only folder), before any step runs rather than at its first output."""
        problem = self.store.check_base(self.base)
        if problem is not None:
            raise StorageError(
                f"cannot store outputs: {problem}; give it a "
                "writable directory (base_dir, or base_url for object_store_io_manager)"
            )

    def storage_identity(self) -> str:
        store = self.store.protocol if isinstance(self.store, FsspecFileStore) else "file"
        return f"{store}:{self.base}:{self.default_serializer.name}:{self.versioned}"

    def handle_output(self, context: OutputContext, obj: Any) -> StoredData:
        serializer = self._serializer(context)
        if serializer.name == "pickle" and not self.allow_pickle:
            raise refused_pickle(
                "Out(serializer='pickle') asks for pickle",
                "choose serializer 'json', 'parquet' or 'auto' (JSON or Parquet where the value "
                "allows), or Out(write=..., read=...)",
            )
        path = self.path_for(context, serializer)
        written: list[_HashingWriter] = []

        def dump(file: BinaryIO) -> None:
            # hashed as it is written: checking it later costs no second read
            writer = _HashingWriter(file)
            written.append(writer)
            serializer.dump(obj, writer)  # type: ignore[arg-type]

        self.store.write(path, dump)
        writer = written[-1]
        return StoredData(self.store.uri(path), writer.size, writer.digest())

    def serializer_name(self, context: OutputContext) -> str | None:
        return self._serializer(context).name

    def load_input(self, context: InputContext) -> Any:
        upstream = context.upstream_output
        address = context.address
        serializer = self._serializer(upstream)
        if address is not None and address.serializer and address.serializer != serializer.name:
            if address.serializer == CUSTOM:
                raise StorageError(
                    f"output '{upstream.step_key}.{upstream.name}' at {address.uri} was written "
                    "by a custom write function; reading it needs the Out(write=..., read=...) "
                    "that wrote it"
                )
            serializer = self._safe(get_serializer(address.serializer))
        if serializer.name == "pickle" and not self.allow_pickle:
            where = address.uri if address is not None else self.path_for(upstream, serializer)
            raise refused_pickle(
                f"output '{upstream.step_key}.{upstream.name}' at {where} is stored as a pickle",
                "re-run its step with this store (it writes JSON or Parquet), or load it with "
                "a store that allows pickle if you trust everyone who can write to it",
            )
        path = (
            self.store.path_of(address.uri)
            if address is not None and address.uri
            else self.path_for(upstream, serializer)
        )
        try:
            file = self.store.open_read(path)
        except FileNotFoundError:
            if address is None:
                raise
            raise OutputLostError(f"{address.describe()} is missing", address) from None
        if address is None or (address.size is None and address.content_hash is None):
            with file:
                return serializer.load(file)
        with file:
            reader = _HashingReader(file)
            value = serializer.load(reader)  # type: ignore[arg-type]
            reader.read_rest()
        # the data was read anyway: checking what was read costs no extra I/O
        size = reader.size if reader.sequential else self.store.size(path)
        problem = _mismatch(address, size, reader.digest() if reader.sequential else None)
        if problem:
            raise OutputLostError(f"{address.describe()} was altered: {problem}", address)
        return value

    def verify(self, address: Address, read: bool = False) -> str | None:
        """``"missing"``, a size or content mismatch, or None: one stat, plus a read of the
        data with ``read=True`` when its content hash was recorded."""
        path = self._path_of_address(address)
        size = self.store.size(path)
        if size is None:
            return "missing"
        problem = _mismatch(address, size, None)
        if problem or not read or address.content_hash is None:
            return problem
        hasher = content_hasher()
        try:
            with self.store.open_read(path) as file:
                while chunk := file.read(1 << 20):
                    hasher.update(chunk)
        except FileNotFoundError:
            return "missing"
        return _mismatch(address, size, hasher.hexdigest())

    def has_output(self, context: OutputContext) -> bool:
        return (
            self.versioned and bool(context.version) and self.store.exists(self.path_for(context))
        )

    def _path_of_address(self, address: Address) -> str:
        if address.uri:
            return self.store.path_of(address.uri)
        raise StorageError(
            f"output '{address.step_key}.{address.output_name}' of run {address.run_id[:8]} "
            "has no URI in its address; a path io manager always records one"
        )

    def exists(self, address: Address) -> bool:
        return self.store.exists(self._path_of_address(address))

    def delete(self, address: Address) -> None:
        self.delete_uri(self.store.uri(self._path_of_address(address)))

    def run_files(self, run_id: str) -> list[str]:
        """URIs of every file under the run's folder (the run-keyed layout), temporary files of
        interrupted writes included: what gc compares with the run's recorded addresses to find
        orphans. Empty for the versioned layout, which has no folder per run."""
        if self.versioned:
            return []
        return [self.store.uri(p) for p in self.store.walk(self.store.join(self.base, run_id))]

    def delete_uri(self, uri: str) -> None:
        """Remove the file at ``uri`` (an output, or an orphan gc found under a run's folder),
        and the run and fan-out folders it leaves empty (never the base folder)."""
        path = self.store.path_of(uri)
        self.store.delete(path)
        if isinstance(self.store, LocalFileStore) and self.base:
            self.store.prune_empty_dirs(path, self.base)


def _mismatch(address: Address, size: int | None, digest: str | None) -> str | None:
    """How stored data differs from what ``address`` recorded (None: it does not, or cannot
    be told)."""
    if address.size is not None and size is not None and size != address.size:
        return f"{size} bytes, {address.size} recorded"
    if address.content_hash is not None and digest is not None and digest != address.content_hash:
        return "content hash differs from the one recorded"
    return None


class _HashingWriter:
    """A binary file that counts and hashes what goes through it. A writer that seeks (to
    patch a header) makes the hash unknown; the size is then what the file holds."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._hasher = content_hasher()
        self._count = 0
        self.sequential = True

    def write(self, data: Any) -> int:
        self._hasher.update(data)
        written = self._file.write(data)
        self._count += len(memoryview(data).cast("B"))
        return written

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._file.seek(offset, whence)
        if position != self._count:
            self.sequential = False
        return position

    def tell(self) -> int:
        return self._file.tell()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    @property
    def size(self) -> int | None:
        if self.sequential:
            return self._count
        try:
            return int(self._file.seek(0, 2))
        except (OSError, ValueError):
            return None

    def digest(self) -> str | None:
        return self._hasher.hexdigest() if self.sequential else None


class _HashingReader:
    """A binary file that counts and hashes what is read through it, while it is read in
    order; a reader that seeks elsewhere (Parquet reads its footer first) turns it off."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._hasher = content_hasher()
        self.size = 0
        self.sequential = True

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        if self.sequential:
            self._hasher.update(data)
            self.size += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def readline(self, limit: int = -1) -> bytes:
        data = self._file.readline(limit)
        if self.sequential:
            self._hasher.update(data)
            self.size += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._file.seek(offset, whence)
        if position != self.size:
            self.sequential = False
        return position

    def tell(self) -> int:
        return self._file.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._file.seekable())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def read_rest(self) -> None:
        """Read (and hash) what the deserializer left, so the whole file is checked."""
        if self.sequential:
            while self.read(1 << 20):
                pass

    def digest(self) -> str:
        return self._hasher.hexdigest()


def base_of(address: Address, path: str) -> tuple[str, bool] | None:
    """The base folder and layout (``versioned``) of a path io manager that stored ``address``
    at ``path``, read back from the layout ``PathIOManager.path_for`` makes; None if ``path``
    does not follow it."""
    name = f"{address.step_key}.{address.output_name}"
    run_keyed = f"/{address.run_id}/{name}"
    index = path.rfind(run_keyed)
    if index >= 0:
        return path[:index] or "/", False
    parts = [address.step_key, address.output_name]
    if address.mapping_key is not None:
        parts.append(address.mapping_key)
    versioned = "/" + "/".join(parts) + f"/{address.version}"
    index = path.rfind(versioned)
    if address.version and index >= 0:
        return path[:index] or "/", True
    return None
