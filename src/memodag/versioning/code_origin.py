"""Where code comes from and what it is called, as source-hash versions see it.

Owns classifying a module as project-local, stdlib or installed (labelled ``Dist==version``) and
the stable names of objects (module as the user sees it, qualified name). Reads no source and
hashes nothing; installed distributions are looked up in ``distributions`` when a version is first
computed.
"""

from __future__ import annotations

import functools
import os
import re
import site
import sys
import sysconfig
import types
from collections.abc import Iterable, Mapping
from typing import Any

MISSING = object()


def classify_module(module_name: str, local_roots: Iterable[str]) -> tuple[str, str]:
    """``("local"|"stdlib"|"package", label)`` of a module; a package's label is ``Dist==version``.

    ``local_roots`` are real paths (see ``real_path``) whose modules count as project code.
    """
    top = module_name.partition(".")[0]
    if top == "memodag":
        return "package", _distribution_label(top)
    module = sys.modules.get(module_name)
    file = safe_getattr(module, "__file__") if module is not None else None
    if isinstance(file, str):
        found = _classify_path(real_path(file), module_name, local_roots)
        if found is not None:
            return found
    elif top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "stdlib", module_name
    if _distributions().get(top) and top not in _editable():
        return "package", _distribution_label(top)
    return "local", module_name


def classify_unimported(module_name: str, local_roots: Iterable[str]) -> tuple[str, str] | None:
    """``classify_module`` for a module not imported yet, from where its top-level package would
    be found (nothing is imported); None when it cannot be found."""
    import importlib.util

    top = module_name.partition(".")[0]
    if top == "memodag":
        return "package", _distribution_label(top)
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "stdlib", module_name
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or ())
    origin = spec.origin if spec.has_location else None
    path = origin or (locations[0] if locations else None)
    if isinstance(path, str):
        found = _classify_path(real_path(path), module_name, local_roots)
        if found is not None:
            return found
    if _distributions().get(top) and top not in _editable():
        return "package", _distribution_label(top)
    return "local", module_name


def _classify_path(
    path: str, module_name: str, local_roots: Iterable[str]
) -> tuple[str, str] | None:
    if _under(path, _site_dirs()) or any(
        p in ("site-packages", "dist-packages") for p in path.split(os.sep)
    ):
        return "package", _distribution_label(module_name.partition(".")[0])
    if _under(path, _stdlib_dirs()):
        return "stdlib", module_name
    if _under(path, local_roots):
        return "local", module_name
    return None


def safe_getattr(obj: Any, name: str) -> Any:
    """``getattr`` that gives ``MISSING`` instead of raising."""
    try:
        return getattr(obj, name, MISSING)
    except Exception:  # objects with odd __getattr__ must not break versioning
        return MISSING


def module_of(obj: Any) -> str:
    """The module that defines ``obj`` (for functions: where the code is, which ``wraps`` hides)."""
    if isinstance(obj, types.FunctionType):
        name = obj.__globals__.get("__name__")
        if isinstance(name, str):
            return name
    module = safe_getattr(obj, "__module__")
    if not isinstance(module, str):
        module = type(obj).__module__
    return module


def object_label(obj: Any) -> str:
    """``module:qualname`` of a function, class or object (module as ``display_module`` says)."""
    module = display_module(module_of(obj))
    if isinstance(obj, types.FunctionType):
        return f"{module}:{obj.__code__.co_qualname}"
    qualname = safe_getattr(obj, "__qualname__")
    if not isinstance(qualname, str):
        qualname = type_name(type(obj))
    return f"{module}:{qualname}"


_CLI_FILE_MODULE = re.compile(r"memodag_job_file_(\w+)_[0-9a-f]{8}")


def display_module(name: str) -> str:
    """A module's name as versions see it. A script run as ``__main__`` and the same file loaded
    by ``memodag job ... -f FILE`` (under its stem, or ``memodag_job_file_<stem>_<path hash>``
    when the stem is taken) hash alike, so switching between the two recomputes nothing."""
    if name == "__main__":
        main = sys.modules.get("__main__")
        spec = safe_getattr(main, "__spec__")
        if spec is not None and spec is not MISSING and getattr(spec, "name", None):
            return str(spec.name)  # python -m package.module
        file = safe_getattr(main, "__file__")
        return os.path.splitext(os.path.basename(file))[0] if isinstance(file, str) else name
    if name.startswith("memodag_job_file_"):
        match = _CLI_FILE_MODULE.fullmatch(name)
        if match:
            return match.group(1)
    return name


def dotted_name(obj: Any, module: str) -> str:
    """``module.qualname`` of ``obj``, or just ``module`` when it has no qualified name."""
    qualname = safe_getattr(obj, "__qualname__")
    return f"{module}.{qualname}" if isinstance(qualname, str) else module


def type_name(kind: type) -> str:
    """``module.qualname`` of a type."""
    return f"{kind.__module__}.{kind.__qualname__}"


def real_path(path: str) -> str:
    """Absolute path with symlinks resolved, as paths are compared when classifying."""
    return os.path.realpath(os.path.abspath(path))


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    try:
        dirs += site.getsitepackages()
    except AttributeError:  # some virtualenv builds of site lack it
        pass
    if site.ENABLE_USER_SITE and site.USER_SITE:
        dirs.append(site.USER_SITE)
    return tuple(dict.fromkeys(real_path(d) for d in dirs))


@functools.cache
def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    dirs = [paths["stdlib"], paths["platstdlib"], base["stdlib"], base["platstdlib"]]
    return tuple(dict.fromkeys(real_path(d) for d in dirs))


def _distributions() -> Mapping[str, tuple[str, ...]]:
    from memodag.versioning.distributions import distributions_by_top_level

    return distributions_by_top_level()


def _editable() -> frozenset[str]:
    """Top-level modules installed in editable mode: their code counts as the project's."""
    from memodag.versioning.distributions import editable_top_levels

    return editable_top_levels()


@functools.cache
def _distribution_label(top: str) -> str:
    """``Dist==version`` for a top-level module (several joined by '+', sorted)."""
    labels = _distributions().get(top)
    if labels:
        return "+".join(labels)
    module = sys.modules.get(top)
    version = safe_getattr(module, "__version__") if module is not None else MISSING
    return f"{top}=={version if isinstance(version, str) else 'unknown'}"
