"""Function source digests kept across processes, so a warm run does not parse and walk every
op's source file again.

Owns one JSON file per interpreter under the user's cache folder (``$MEMODAG_CACHE_DIR``, see
``distributions.cache_dir``) holding what ``source_index.function_digest`` computed, per source
file. An entry serves a digest only while everything that makes it valid is unchanged: the
file's path, device, inode, size, modification and change times (nanoseconds; the change time
cannot be set back by ``touch`` or ``cp -p``), the function's qualified name, first line and
closure variables, and memodag's hashing code (``source_index.py``'s bytes, the version
schemes). A file changed less than ``RACY_SECONDS`` before it was read is never written: on a
file system with coarse timestamps a second edit within one tick could keep its signature (git's
"racily clean" index entries). Saves reading and parsing, never looking: each process stats a
file before serving its entries. Decides nothing about what is hashed.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
import tempfile
import time
import types
from typing import Any

from memodag.hashing import hash_strings

#: bump when what an entry holds or how it is read changes: older files are then ignored
_CACHE_FORMAT = 1
#: a file changed within this many seconds of being read is re-read by the next process
RACY_SECONDS = 2.0
# Entries of files not used for this long are dropped when the file is written, and at most
# this many source files are kept (the most recently used).
_MAX_AGE_SECONDS = 30 * 24 * 3600
_MAX_FILES = 5000

#: ``(device, inode, size, mtime_ns, ctime_ns)`` of a source file
Signature = tuple[int, int, int, int, int]

_state: dict[str, Any] = {"files": None, "dirty": set(), "registered": False, "key": None}


def file_signature(filename: str) -> Signature | None:
    """What identifies a file's content without reading it; None when it is not a file."""
    try:
        stat = os.stat(filename)
    except (OSError, ValueError):  # a notebook cell, a zip member, ``<string>``
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


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


def lookup(filename: str, signature: Signature, key: str) -> Any | None:
    """The stored digest of function ``key`` in ``filename`` as of ``signature``, else None."""
    entry = _files().get(filename)
    if entry is None or entry.get("signature") != list(signature):
        return None
    found = entry["functions"].get(key)
    if found is None:
        return None
    entry["used"] = int(time.time())
    digest, chains, imports, cells = found
    return (
        digest,
        tuple(tuple(c) for c in chains),
        tuple((level, tuple(path)) for level, path in imports),
        tuple((v, n) for v, n in cells),
    )


def store(filename: str, signature: Signature, key: str, digest: Any) -> None:
    """Keep ``digest`` for the next processes, unless the file changed too recently to trust
    its signature (``RACY_SECONDS``)."""
    newest_change = max(signature[3], signature[4])
    if time.time_ns() - newest_change < RACY_SECONDS * 1e9:
        return
    files = _files()
    entry = files.get(filename)
    if entry is None or entry.get("signature") != list(signature):
        entry = files[filename] = {"signature": list(signature), "functions": {}}
    entry["functions"][key] = digest
    entry["used"] = int(time.time())
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
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": _CACHE_FORMAT, "key": _code_key(), "files": dict(kept)}, f)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        pass


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

        with open(source_index.__file__, "rb") as f:
            own = hashlib.sha256(f.read()).hexdigest()
        key = _state["key"] = hash_strings(str(_CACHE_FORMAT), str(VERSION_SCHEME), own)
    return str(key)


def _cache_file() -> str:
    from memodag.versioning.distributions import cache_dir

    # one file per interpreter: ``ast.dump`` differs between Python versions
    interpreter = hash_strings(os.path.realpath(sys.prefix), sys.version)[:16]
    return os.path.join(cache_dir(), f"source-digests-{interpreter}.json")
