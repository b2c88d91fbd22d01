"""Installed distributions as source-hash versions count them: top-level module -> ``Dist==version``.

Owns finding which distributions provide a top-level module and their versions, without reading
every installed distribution's metadata in every run: what was read is kept in a small JSON file
in the user's cache directory (``$MEMODAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/memodag``, else
``~/.cache/memodag``), per metadata directory, keyed by the stat signatures (inode, size, mtime)
of that directory and of the files read from it. Each run still lists every ``sys.path`` folder
and stats those files, so a distribution installed, removed, upgraded or reinstalled since is
seen at once: the cache saves reading, never looking. Where the listing cannot see what
``importlib.metadata`` would (zip files on ``sys.path``, custom finders that provide
distributions), everything is read through ``importlib.metadata`` as before. Hashes nothing.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat as stat_module
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from memodag.hashing import hash_strings

#: bump when what an entry holds or how it is read changes: older files are then ignored
_CACHE_FORMAT = 2
_METADATA_SUFFIXES = (".dist-info", ".egg-info")
# Files an entry is read from: its name and version, and the modules it provides.
_SIGNED_FILES = {
    ".dist-info": ("METADATA", "RECORD", "top_level.txt", "direct_url.json"),
    ".egg-info": ("PKG-INFO", "top_level.txt", "SOURCES.txt", "installed-files.txt"),
}

Signature = list[int]


def distributions_by_top_level() -> Mapping[str, tuple[str, ...]]:
    """``{top-level module: sorted "Dist==version" labels of the distributions providing it}``.

    Computed once per process (what is installed does not change under a running job)."""
    return _scan()[0]


def editable_top_levels() -> frozenset[str]:
    """Top-level modules of distributions installed in editable mode (PEP 610 ``direct_url.json``
    says ``"editable": true``): their source is the user's to edit, so it counts, not their
    version."""
    return _scan()[1]


@functools.cache
def _scan() -> tuple[Mapping[str, tuple[str, ...]], frozenset[str]]:
    entries = _entries()
    if entries is None:
        return _from_importlib_metadata()
    cache_file = _cache_file()
    cached = _read_cache(cache_file)
    fresh: dict[str, dict[str, Any]] = {}
    for path, signature in entries:
        entry = cached.get(path)
        if entry is None or entry.get("signature") != signature:
            entry = _read_entry(path, signature)
        fresh[path] = entry
    if fresh != {p: cached.get(p) for p in fresh} or len(fresh) != len(cached):
        _write_cache(cache_file, fresh)
    labels: dict[str, set[str]] = {}
    versions: dict[str, str] = {}
    editable: set[str] = set()
    for path, _ in entries:  # sys.path order: the first distribution of a name wins
        entry = fresh[path]
        name, version = entry.get("name"), entry.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            continue
        if _normalized(name) not in versions:
            versions[_normalized(name)] = f"{name}=={version}"
            if entry.get("editable") is True:
                editable.update(entry.get("top_level", ()))
    for path, _ in entries:
        entry = fresh[path]
        name = entry.get("name")
        # an entry without a version (a broken METADATA) provides nothing, as importlib.metadata
        # cannot say its version either; another one of its name may
        if not isinstance(name, str) or _normalized(name) not in versions:
            continue
        for top in entry.get("top_level", ()):
            labels.setdefault(top, set()).add(versions[_normalized(name)])
    return {top: tuple(sorted(found)) for top, found in labels.items()}, frozenset(editable)


def _entries() -> list[tuple[str, Signature]] | None:
    """Every metadata directory (or ``.egg-info`` file) on ``sys.path``, in the order
    ``importlib.metadata`` finds them, with its signature; None when only ``importlib.metadata``
    can enumerate them."""
    if not _standard_finders_only():
        return None
    found: list[tuple[str, Signature]] = []
    for item in sys.path:
        folder = item or os.getcwd()
        try:
            with os.scandir(folder) as listing:
                names = sorted(
                    e.name for e in listing if e.name.lower().endswith(_METADATA_SUFFIXES)
                )
        except NotADirectoryError:
            return None  # a zip on sys.path may hold distributions: let importlib.metadata look
        except OSError:
            continue  # missing folders hold nothing
        for name in names:
            path = os.path.join(folder, name)
            signature = _signature(path)
            if signature is None:
                continue
            found.append((path, signature))
    return found


def _standard_finders_only() -> bool:
    import importlib.machinery

    standard = (
        importlib.machinery.BuiltinImporter,
        importlib.machinery.FrozenImporter,
        importlib.machinery.PathFinder,
    )
    for finder in sys.meta_path:
        if finder in standard or isinstance(finder, standard):
            continue
        kind = type(finder)
        if (kind.__module__, kind.__qualname__) == ("importlib_metadata", "MetadataPathFinder"):
            continue  # the importlib_metadata backport's own finder: the same sys.path folders
        if getattr(finder, "find_distributions", None) is not None:
            return False  # e.g. a plugin that serves distributions from elsewhere
    return True


def _signature(path: str) -> Signature | None:
    try:
        own = os.stat(path)
    except OSError:
        return None
    signature = [own.st_ino, own.st_size, own.st_mtime_ns]
    if stat_module.S_ISDIR(own.st_mode):
        for name in _SIGNED_FILES[os.path.splitext(path)[1].lower()]:
            try:
                stat = os.stat(os.path.join(path, name))
            except OSError:
                signature += [-1, -1, -1]
            else:
                signature += [stat.st_ino, stat.st_size, stat.st_mtime_ns]
    return signature


def _read_entry(path: str, signature: Signature) -> dict[str, Any]:
    """Name, version and top-level modules of one distribution, read as ``importlib.metadata``
    reads them."""
    import importlib.metadata
    import pathlib

    dist = importlib.metadata.PathDistribution(pathlib.Path(path))
    try:
        name, version = dist.metadata["Name"], dist.version
    except Exception:  # unreadable metadata: like importlib.metadata, it provides nothing
        return {"signature": signature}
    return {
        "signature": signature,
        "name": name,
        "version": version,
        "top_level": sorted(_top_level(dist)),
        "editable": _is_editable(dist),
    }


def _is_editable(dist: Any) -> bool:
    """PEP 610: ``direct_url.json`` of an editable install says ``dir_info.editable``."""
    try:
        data = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    info = data.get("dir_info") if isinstance(data, dict) else None
    return isinstance(info, dict) and info.get("editable") is True


def _top_level(dist: Any) -> set[str]:
    declared = (dist.read_text("top_level.txt") or "").split()
    if declared:
        return set(declared)
    modules = set()
    for file in dist.files or ():
        if file.suffix in (".py", ".so", ".pyd") and ".." not in file.parts:
            first = file.parts[0]
            modules.add(first if len(file.parts) > 1 else first.partition(".")[0])
    return modules


def _from_importlib_metadata() -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    import importlib.metadata

    editable: set[str] = set()
    for dist in importlib.metadata.distributions():
        try:
            if _is_editable(dist):
                editable.update(_top_level(dist))
        except Exception:  # unreadable metadata: like importlib.metadata, it provides nothing
            continue
    labels = {}
    for top, names in importlib.metadata.packages_distributions().items():
        found = set()
        for name in names:
            try:
                found.add(f"{name}=={importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                continue
        if found:
            labels[top] = tuple(sorted(found))
    return labels, frozenset(editable)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# -- the cache file ---------------------------------------------------------------------------


def cache_dir() -> str:
    """Where memodag keeps caches that only save work (safe to delete at any time)."""
    configured = os.environ.get("MEMODAG_CACHE_DIR")
    if configured:
        return os.path.abspath(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "memodag")


def _cache_file() -> str:
    # One file per interpreter: another venv's entries would only be re-read and dropped.
    interpreter = hash_strings(os.path.realpath(sys.prefix), sys.version)[:16]
    return os.path.join(cache_dir(), f"distributions-{interpreter}.json")


def _read_cache(path: str) -> dict[str, dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT:
        return {}
    entries = data.get("entries")
    return dict(_valid(entries)) if isinstance(entries, dict) else {}


def _valid(entries: dict[Any, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, entry in entries.items():
        if isinstance(path, str) and isinstance(entry, dict):
            yield path, entry


def _write_cache(path: str, entries: dict[str, dict[str, Any]]) -> None:
    write_cache_file(path, {"format": _CACHE_FORMAT, "entries": entries})


def write_cache_file(path: str, content: Any) -> None:
    """Write ``content`` as JSON to the cache file ``path`` atomically (a concurrent reader sees
    the old file or the new one); a cache that cannot be written only costs the next run the
    work again."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(content, f)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        pass
