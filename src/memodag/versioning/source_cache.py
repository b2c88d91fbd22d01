"""Function source digests kept across processes, so a warm run does not parse and walk every
op's source file again.

Owns one JSON file per interpreter under the user's cache folder (``$MEMODAG_CACHE_DIR``, see
``distributions.cache_dir``) holding what ``source_index.function_digest`` computed, per source
file. An entry serves a digest only while everything that makes it valid is unchanged: the
file's path, device, inode, size, modification and change times (nanoseconds; the change time
cannot be set back by ``touch`` or ``cp -p``), the function's qualified name, first line and
closure variables, and memodag's hashing code (``source_index.py``'s bytes, the version
schemes). A file changed less than ``RACY_SECONDS`` before it was read is not trusted by its
signature (on a file system with coarse timestamps a second edit within one tick could keep it,
as git's "racily clean" index entries): its bytes are read and compared by SHA-256, as they are
for a file whose signature changed (``touch``, a checkout back and forth). Saves parsing, never
looking: each process stats a file before serving its entries. Decides nothing about what is
hashed.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import sys
import time
import types
from typing import Any, NamedTuple

from memodag.hashing import hash_strings

#: bump when what an entry holds or how it is read changes: older files are then ignored
_CACHE_FORMAT = 1
#: a file changed within this many seconds of being read is compared by content, not signature
RACY_SECONDS = 2.0
# Entries of files not used for this long are dropped when the file is written, and at most
# this many source files are kept (the most recently used).
_MAX_AGE_SECONDS = 30 * 24 * 3600
_MAX_FILES = 5000

#: ``(device, inode, size, mtime_ns, ctime_ns)`` of a source file
Signature = tuple[int, int, int, int, int]

_state: dict[str, Any] = {"files": None, "dirty": set(), "registered": False, "key": None}


class FileRead(NamedTuple):
    """A source file as read: its text, and what says the text is still the file's."""

    signature: Signature
    checked_ns: int  # wall clock just before ``signature`` was taken
    sha256: str  # of the file's bytes
    text: str = ""


def file_signature(filename: str) -> Signature | None:
    """What identifies a file's content without reading it; None when it is not a file."""
    try:
        stat = os.stat(filename)
    except (OSError, ValueError):  # a notebook cell, a zip member, ``<string>``
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def read_file(filename: str) -> FileRead | None:
    """The file's text (decoded as Python decodes a module) and what identifies it; None when
    it is not a readable file or changed while being read."""
    checked = time.time_ns()
    signature = file_signature(filename)
    if signature is None:
        return None
    try:
        with open(filename, "rb") as f:
            data = f.read()
        text = importlib.util.decode_source(data)
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError):
        return None
    if file_signature(filename) != signature:
        return None  # written to while read: the signature may not describe these bytes
    return FileRead(signature, checked, hashlib.sha256(data).hexdigest(), text)


def function_key(code: types.CodeType, drop_decorators: bool) -> str:
    """What besides its file decides a function's digest (``source_index._find_function``)."""
    arguments = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    return "\x1f".join(
        (
            code.co_qualname,
            code.co_name,
            str(code.co_firstlineno),
            "1" if drop_decorators else "0",
            ",".join(code.co_freevars),
            ",".join(arguments) if code.co_name == "<lambda>" else "",
        )
    )


def lookup(filename: str, key: str) -> tuple[Any, Signature] | None:
    """The stored digest of function ``key`` in ``filename`` and the file's signature, when the
    file is still what it was hashed from: same signature, last changed ``RACY_SECONDS`` before
    it was read; else (a touched file, one changed just before it was read) same bytes."""
    entry = _files().get(filename)
    if entry is None:
        return None
    found = entry["functions"].get(key)
    if found is None:
        return None
    signature = file_signature(filename)
    if signature is None:
        return None
    if entry.get("signature") != list(signature) or _racy(signature, entry.get("checked", 0)):
        read = read_file(filename)
        if read is None or read.sha256 != entry.get("sha256"):
            return None
        # the same bytes: trust this signature from now on (when it is not racy itself)
        _remember(filename, entry, read)
        signature = read.signature
    try:
        digest, chains, imports, cells = found
        digest_tuple = (
            str(digest),
            tuple(tuple(map(str, c)) for c in chains),
            tuple((int(level), tuple(map(str, path))) for level, path in imports),
            tuple((str(v), str(n)) for v, n in cells),
        )
    except (TypeError, ValueError):  # a damaged entry: parse the file again
        return None
    entry["used"] = int(time.time())
    return digest_tuple, signature


def store(filename: str, read: FileRead, key: str, digest: Any) -> None:
    """Keep ``digest`` of function ``key``, computed from the file as ``read``, for the next
    processes."""
    files = _files()
    entry = files.get(filename)
    if entry is None or entry.get("sha256") != read.sha256:
        entry = files[filename] = {"functions": {}}
    _remember(filename, entry, read)
    entry["functions"][key] = digest


def _racy(signature: Signature, checked_ns: int) -> bool:
    """Whether the file changed so shortly before it was read that a second change in the same
    timestamp tick could have left its signature as it was."""
    return max(signature[3], signature[4]) > checked_ns - RACY_SECONDS * 1e9


def _remember(filename: str, entry: dict[str, Any], read: FileRead) -> None:
    entry.update(
        signature=list(read.signature),
        checked=read.checked_ns,
        sha256=read.sha256,
        used=int(time.time()),
    )
    _state["dirty"].add(filename)
    if not _state["registered"]:
        _state["registered"] = True
        atexit.register(flush)


def flush() -> None:
    """Write what this process added (merged into what other processes wrote meanwhile),
    atomically; a cache that cannot be written only costs the next process the parsing."""
    dirty: set[str] = _state["dirty"]
    if not dirty:
        return
    path = _cache_file()
    merged = _read(path)
    for filename in dirty:
        merged[filename] = _files()[filename]
    dirty.clear()
    oldest = time.time() - _MAX_AGE_SECONDS
    kept = sorted(
        ((f, e) for f, e in merged.items() if e.get("used", 0) >= oldest),
        key=lambda item: item[1].get("used", 0),
    )[-_MAX_FILES:]
    from memodag.versioning.distributions import write_cache_file

    write_cache_file(path, {"format": _CACHE_FORMAT, "key": _code_key(), "files": dict(kept)})


def _files() -> dict[str, dict[str, Any]]:
    files = _state["files"]
    if files is None:
        files = _state["files"] = _read(_cache_file())
    return files


def _read(path: str) -> dict[str, dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != _CACHE_FORMAT
        or data.get("key") != _code_key()
        or not isinstance(data.get("files"), dict)
    ):
        return {}
    return {
        name: entry
        for name, entry in data["files"].items()
        if isinstance(entry, dict) and isinstance(entry.get("functions"), dict)
    }


def _code_key() -> str:
    """Which hashing code computed the digests: memodag's own parsing and normalising code
    (edited in a checkout without a version bump, it must not serve its old digests)."""
    key = _state["key"]
    if key is None:
        from memodag.versioning import source_index
        from memodag.versioning.scheme import VERSION_SCHEME

        code = hashlib.sha256()
        for module_file in (source_index.__file__, __file__):
            try:
                with open(module_file, "rb") as f:
                    code.update(f.read())
            except (OSError, TypeError):  # shipped without source: its release names it
                from importlib.metadata import PackageNotFoundError, version

                try:
                    release = version("memodag")
                except PackageNotFoundError:
                    release = "unknown"
                code.update(f"memodag=={release}".encode())
        key = _state["key"] = hash_strings(
            str(_CACHE_FORMAT), str(VERSION_SCHEME), code.hexdigest()
        )
    return str(key)


def _cache_file() -> str:
    from memodag.versioning.distributions import cache_dir

    # one file per interpreter: ``ast.dump`` differs between Python versions
    interpreter = hash_strings(os.path.realpath(sys.prefix), sys.version)[:16]
    return os.path.join(cache_dir(), f"source-digests-{interpreter}.json")
