"""Path-based io managers: an output becomes one file or object under a base location.

The manager decides the path and the format; a ``FileStore`` moves the bytes atomically (a
temporary name renamed into place, or one whole-object upload), so a crash mid-write never
leaves something at the final path.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, BinaryIO

from memodag.storage.io_manager import InputContext, MemoizableIOManager, OutputContext
from memodag.storage.serializers import Serializer, get_serializer, serializer_for_out


class FileStore(ABC):
    """Moves bytes to and from paths under one root; every write is all-or-nothing."""

    @abstractmethod
    def write(self, path: str, dump: Callable[[BinaryIO], None]) -> None: ...

    @abstractmethod
    def open_read(self, path: str) -> BinaryIO: ...

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def join(self, *parts: str) -> str: ...

    @abstractmethod
    def uri(self, path: str) -> str: ...

    @abstractmethod
    def path_of(self, uri: str) -> str: ...

    def size(self, path: str) -> int | None:
        return None

    def delete(self, path: str) -> None:
        raise NotImplementedError


class LocalFileStore(FileStore):
    """Local disk: write to a unique temporary name beside the target, then ``os.replace``."""

    def __init__(self) -> None:
        self._made: set[str] = set()

    def write(self, path: str, dump: Callable[[BinaryIO], None]) -> None:
        directory = os.path.dirname(path)
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as file:
                dump(file)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
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
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class FsspecFileStore(FileStore):
    """Any fsspec filesystem (``s3://``, ``memory://``, ...): serialize to a local temporary file,
    then upload it whole, so a failing serializer never leaves a partial object."""

    def __init__(self, fs: Any, protocol: str) -> None:
        self.fs = fs
        self.protocol = protocol

    def write(self, path: str, dump: Callable[[BinaryIO], None]) -> None:
        with tempfile.NamedTemporaryFile(prefix="memodag-", suffix=".part") as tmp:
            dump(tmp)  # type: ignore[arg-type]
            tmp.flush()
            self.fs.put_file(tmp.name, path)

    def open_read(self, path: str) -> BinaryIO:
        return self.fs.open(path, "rb")

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def join(self, *parts: str) -> str:
        return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))

    def uri(self, path: str) -> str:
        return (
            f"{self.protocol}://{path.lstrip('/')}"
            if self.protocol != "memory"
            else f"memory://{path}"
        )

    def path_of(self, uri: str) -> str:
        return self.fs._strip_protocol(uri)

    def size(self, path: str) -> int | None:
        try:
            return int(self.fs.size(path))
        except (OSError, FileNotFoundError):
            return None

    def delete(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass


class PathIOManager(MemoizableIOManager):
    """Stores each output as one file: ``<base>/<run_id>/<step_key>/<output>[/<piece>]<ext>``, or
    with ``versioned=True`` ``<base>/<step_key>/<output>[/<piece>]/<version><ext>`` so a memoized
    run finds it by version alone."""

    #: outputs recorded in the instance index can be trusted to exist at their address
    uses_instance_index = True

    def __init__(
        self, store: FileStore, base: str, default_serializer: Any = None, versioned: bool = False
    ) -> None:
        self.store = store
        self.base = base
        self.default_serializer = get_serializer(default_serializer)
        self.versioned = versioned

    def _serializer(self, context: OutputContext) -> Serializer:
        out = context.out
        if out is None or (out.write is None and out.serializer is None):
            return self.default_serializer
        return serializer_for_out(out)

    def path_for(self, context: OutputContext, serializer: Serializer | None = None) -> str:
        ext = (serializer or self._serializer(context)).extension
        parts = [context.step_key, context.name]
        if context.mapping_key is not None:
            parts.append(context.mapping_key)
        if self.versioned:
            if not context.version:
                from memodag.errors import StorageError

                raise StorageError(
                    f"versioned io manager needs a version for output '{context.step_key}.{context.name}'; give the op a version or the job a version_strategy"
                )
            return self.store.join(self.base, *parts, context.version + ext)
        parts[-1] += ext
        return self.store.join(self.base, context.run_id, *parts)

    def handle_output(self, context: OutputContext, obj: Any) -> str:
        serializer = self._serializer(context)
        path = self.path_for(context, serializer)
        self.store.write(path, lambda file: serializer.dump(obj, file))
        return self.store.uri(path)

    def serializer_name(self, context: OutputContext) -> str | None:
        return self._serializer(context).name

    def load_input(self, context: InputContext) -> Any:
        upstream = context.upstream_output
        address = context.address
        serializer = self._serializer(upstream)
        if address is not None and address.serializer and address.serializer != serializer.name:
            serializer = get_serializer(address.serializer)
        path = (
            self.store.path_of(address.uri)
            if address is not None and address.uri
            else self.path_for(upstream, serializer)
        )
        with self.store.open_read(path) as file:
            return serializer.load(file)

    def has_output(self, context: OutputContext) -> bool:
        return (
            self.versioned and bool(context.version) and self.store.exists(self.path_for(context))
        )
