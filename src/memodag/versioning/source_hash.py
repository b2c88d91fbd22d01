"""``SourceHashVersionStrategy``: an op's code version from its source and everything it reaches.

This module owns the strategy and the walk over what an op reaches (``explain_op`` shows it).
Parsing source and digesting it live in ``source_index``; telling project code from stdlib and
installed packages, and naming objects stably, in ``code_origin``.

What is hashed. Starting from the op's function, the strategy follows, transitively, every
project-local object the code can reach by name:

- globals the bytecode loads (``LOAD_GLOBAL``; nested code objects included: comprehensions,
  lambdas, inner functions), attribute chains through modules (``helpers.clean(x)`` reaches
  ``helpers.clean``, not the whole ``helpers`` module), closure cells, default argument values,
  ``__wrapped__`` of decorated functions and the names used in a helper's decorator lines;
- imports inside a function body (``from helpers import quad`` or ``import helpers`` in the op,
  relative ones too), followed like globals: ``quad(x)`` or ``helpers.quad(x)`` reaches
  ``helpers.quad``. A project module not imported yet is imported to be hashed (the op imports it
  when it runs anyway); installed and stdlib ones are never imported, only named;
- every implementation registered on a ``functools.singledispatch`` function (or
  ``singledispatchmethod``), with the type that picks it;
- project-local classes as a whole (class source, bases, every method, names used in the body);
- module constants, by a canonical form of simple values (see ``_Walker.canonical``; a dict's
  key order counts: it is data).

Each reached object becomes a node ``(kind, name, digest)``; the version is the digest of the
sorted node list, so it depends only on qualified names and contents: never on
``hash()``, memory addresses, dict/set iteration order or absolute file paths. The walk keeps a
seen-set, so recursion and cycles terminate.

Project-local vs installed. A module is *stdlib* if its file lies under the interpreter's stdlib
(or it has no file and is a builtin/stdlib name), *installed* if its file lies under a
site-packages/dist-packages directory, *local* if its file lies under the working directory (at
construction) or a configured ``local_roots`` entry, installed if its top-level name belongs to a
distribution (an install of another project outside site-packages), local otherwise; except
that a distribution installed editable (PEP 610 ``direct_url.json``) is local: its source is the
user's to edit. memodag itself always
counts as installed: it is the framework, not the user's project. Installed code counts as
``Distribution==version`` (its source is never read); stdlib and builtins count by name only
(plus ``python==X.Y`` with ``include_python_version=True``).

Normalisation. Each source file is parsed with ``ast`` once per process (read through
``linecache``, so zip imports and notebook cells work too) and a definition is hashed as
``ast.dump(node, annotate_fields=False, include_attributes=False)``: the same tree
``ast.parse(textwrap.dedent(inspect.getsource(fn)))`` gives, without tokenizing every function
again, so formatting and comments do not count. Docstrings are dropped: they document behaviour
without changing it, and rewording one must not recompute an expensive pipeline. The op's own
decorator lines (``@op(...)``) are dropped too: its config and hand-set version are hashed
separately by the version resolver, and the rest (description, tags, io manager keys) decides
where data goes, not what it is. Helpers keep their decorators, and names used in them are
followed, because a helper's decorator changes what the helper does. Project code is named
in versions by its qualified name without its module (``hashed_label``): a module's name depends
on how it was loaded (a script as ``__main__``, ``-f pipe/job.py`` as ``job``, ``-m pipe.job``),
and renaming a file changes no code. Where two reached objects share such a name, their full
names count too, so a reference switched from one to the other is still seen.
Local variables are renamed to placeholders before hashing (``source_index._normalize_locals``),
so a pure rename of one (assignments, loop, comprehension, ``except``/``with`` targets, cells
that inner functions close over, a factory's variable the function closes over, whose value
counts under its placeholder) is no change, except in a function that can see its local names
as data (``locals()``, ``eval``, frames: ``source_index._reads_local_names``), which is not
renamed. Parameters keep their names: they are a
function's interface (keyword callers, an op's input names), so renaming one is a change.

Limits (by design, and what to do about them):
- Imports inside a function are followed only where its source can be read; a variable renamed
  in a lambda still counts as a change (``def`` functions and methods are normalised, lambdas are
  found by line only), and so does the name of a nested ``def``/``class`` or of an imported module.
- Source unavailable (REPL, ``exec``, a file changed or deleted since import): the code object's
  parts are hashed instead (``co_consts`` recursively, ``co_names``, ``co_varnames``, the
  qualified name and the sequence of operation names, which tells ``x + 1`` from ``x - 1`` but
  ties the version to the Python minor version); there, docstrings count.
- Two lambdas with the same parameters on one line are hashed together (a lambda knows its line,
  not its column), so editing one invalidates users of the other.
- Module constants other than simple values (numbers, strings, bytes, None and tuples, lists,
  dicts, sets of them; plus dates, decimals, paths, patterns) hash as: instance of a project-local
  class -> the class and the instance's ``__dict__`` and ``__slots__`` values; anything else -> its type's qualified name
  and that type's package version. Editing the *value* of such an object (a DataFrame built at
  import time) is not seen: load data in an op, not at import.
- A project-local module used bare (``getattr(helpers, name)``) hashes that module's whole
  source (its file's bytes when it has none), without following what it imports.
- Methods called on objects the op receives at run time (inputs, resources, ``context``) are not
  followed: only classes reached by name are. Reach them by name or version the op by hand.
- Mutable module state (a cache dict a helper fills at run time) is hashed as found when the
  version is computed; keep such state out of what ops reach, or give them ``version=``.
- Project code counts as local only when found under the working directory or ``local_roots``
  (or outside any installed location, or installed editable with a PEP 610 mark): run from
  elsewhere, an install without that mark counts by its version; pass
  ``local_roots=[project root]`` to pin it.
- Sources are parsed once per process, and a function's digest is kept between processes
  (``source_cache``: by file signature, by content where the signature cannot be trusted);
  ``begin_run`` (every run) and every new code object
  re-stat the files behind them, and between runs a changed file is noticed within
  ``source_index._FRESHNESS_INTERVAL`` (1 s). Digests already computed stay with their code
  objects: they describe the code that runs.
- What cannot be hashed (an object whose iteration raises) fails the version with a
  ``MemoizationError`` naming the op: counting it by name only would serve stale outputs.
"""

from __future__ import annotations

import builtins
import enum
import functools
import importlib
import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from memodag.definitions.op import OpDefinition
from memodag.definitions.resources import ResourceDefinition
from memodag.errors import MemoizationError
from memodag.hashing import hash_strings
from memodag.versioning import source_cache
from memodag.versioning.code_origin import (
    MISSING,
    classify_module,
    classify_unimported,
    display_module,
    dotted_name,
    module_of,
    object_label,
    real_path,
    safe_getattr,
    type_name,
)
from memodag.versioning.source_index import (
    SCALARS,
    class_digest,
    code_chains,
    function_digest,
    member_functions,
    module_digest,
    source_generation,
)
from memodag.versioning.strategy import OpVersionContext, ResourceVersionContext, VersionStrategy

SCHEME = "memodag-source-hash/1"

ExplainEntry = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class _Ref:
    """Something reached: ``key`` is its identity in this process, ``kind``/``label`` are stable."""

    key: tuple[Any, ...]
    kind: str
    label: str
    target: Any = None

    @property
    def hashed(self) -> str:
        return hashed_label(self.kind, self.label)


@dataclass(frozen=True, slots=True)
class _Node:
    kind: str
    label: str
    digest: str

    @property
    def hashed(self) -> str:
        return hashed_label(self.kind, self.label)

    def material(self) -> str:
        return f"{self.kind}\x1f{self.hashed}\x1f{self.digest}"


def hashed_label(kind: str, label: str) -> str:
    """What of a label goes into versions: project code by its qualified name without its
    module, whose name depends on how the code was loaded (``-f pipe/job.py`` loads ``job``,
    ``-m pipe.job`` loads ``pipe.job``) and on the file's name; installed and stdlib code by its
    label (``Dist==version``, a stdlib name). Two reached objects with one such name are told
    apart by ``SourceHashVersionStrategy._ambiguous``."""
    if kind in ("package", "stdlib"):
        return label
    if kind == "module":
        return label.rpartition(".")[2]
    return label.partition(":")[2] or label


class SourceHashVersionStrategy(VersionStrategy):
    """Versions ops and resources by the normalised source of all project-local code they reach.

    Args:
        local_roots: directories whose modules count as project code, in addition to the working
            directory at construction time (site-packages inside them still counts as installed).
        include_python_version: also count ``python==X.Y`` for stdlib and builtins.

    Equal code gives equal versions across processes, machines and hash seeds. Results are cached
    per strategy instance; source digests are cached per process.
    """

    def __init__(
        self,
        local_roots: Iterable[str | os.PathLike[str]] | None = None,
        *,
        include_python_version: bool = False,
    ) -> None:
        roots = [os.getcwd(), *(os.fspath(p) for p in (local_roots or ()))]
        self.local_roots: tuple[str, ...] = tuple(real_path(p) for p in roots)
        self.include_python_version = include_python_version
        self._walker = _Walker(self)
        self._results: dict[tuple[Any, ...], tuple[Any, str, list[_Node]]] = {}
        self._generation = source_generation()

    def begin_run(self) -> None:
        """Re-check every parsed source file now, not within ``_FRESHNESS_INTERVAL``: in a
        long-lived process a module edited and reloaded just before this run must count;
        and hand the digests the last runs computed to other processes (``source_cache``)."""
        source_generation(force=True)
        source_cache.flush()

    def get_op_version(self, context: OpVersionContext) -> str:
        op_def = context.op_def
        try:
            return self._result(op_def.compute_fn, "op")[0]
        except _Unversionable as exc:
            raise MemoizationError(
                f"SourceHashVersionStrategy cannot version op '{op_def.name}': {exc}; what it "
                "reaches must count, or edits to it would serve stale outputs. Give the op "
                "@op(version=...) (and bump it on every change), or make the object plain"
            ) from exc.__cause__

    def get_resource_version(self, context: ResourceVersionContext) -> str | None:
        try:
            return self._result(context.resource_def.resource_fn, "resource")[0]
        except _Unversionable as exc:
            raise MemoizationError(
                f"SourceHashVersionStrategy cannot version {context.resource_def!r}: {exc}; "
                "give the "
                "resource version=... (and bump it on every change)"
            ) from exc.__cause__

    def function_version(self, fn: Any) -> str:
        """The version of any function or callable by its source and what it reaches, as for
        an op's body (AUTO_VERSION versions Python functions inside polars plans with it).

        Raises:
            MemoizationError: something it reaches cannot be hashed.
        """
        kind = "function" if isinstance(fn, types.FunctionType) else "op"
        try:
            return self._result(fn, kind)[0]
        except _Unversionable as exc:
            raise MemoizationError(
                f"SourceHashVersionStrategy cannot version function {fn!r}: {exc}"
            ) from exc.__cause__

    def explain_op(self, op_def: Any) -> list[ExplainEntry]:
        """What the op's version is made of: ``(kind, name, digest)``, the op first, then sorted.

        Kinds: op, resource, function, class, module, constant, wrapper, package
        (name ``Dist==version``), stdlib (name only).
        """
        return self._explain(op_def.compute_fn, "op")

    def explain_resource(self, resource_def: Any) -> list[ExplainEntry]:
        """Like ``explain_op``, for a resource's function."""
        return self._explain(resource_def.resource_fn, "resource")

    def _ambiguous(self, nodes: list[tuple[tuple[Any, ...], _Node]]) -> list[str]:
        """Versions name project code without its module (``hashed_label``); when two objects
        reached from one op share a name, which one each reference points to is told by their
        full labels (only then does the version depend on module names)."""
        counts: dict[tuple[str, str], int] = {}
        for _, node in nodes:
            counts[(node.kind, node.hashed)] = counts.get((node.kind, node.hashed), 0) + 1
        shared = {name for name, count in counts.items() if count > 1}
        if not shared:
            return []
        extra = [
            f"\x1e{node.kind}\x1f{node.label}\x1f{node.digest}"
            for _, node in nodes
            if (node.kind, node.hashed) in shared
        ]
        for key, node in nodes:
            extra += [
                f"\x1e{node.material()}\x1f{child.kind}:{child.label}"
                for child in self._walker.children(key)
                if (child.kind, child.hashed) in shared
            ]
        return sorted(extra)

    def _explain(self, fn: Any, kind: str) -> list[ExplainEntry]:
        _, nodes = self._result(fn, kind)
        return [(n.kind, n.label, n.digest) for n in nodes]

    def _result(self, fn: Any, kind: str) -> tuple[str, list[_Node]]:
        generation = source_generation()
        if generation != self._generation:  # a source file changed: forget what was derived
            self._generation = generation
            self._walker = _Walker(self)
            self._results.clear()
        key = (kind, id(fn))
        hit = self._results.get(key)
        if hit is None:
            root = self._walker.root_ref(fn, kind)
            nodes = self._walker.reachable(root)
            first = next(n for k, n in nodes if k == root.key)
            rest = sorted((n for k, n in nodes if k != root.key), key=_Node.material)
            ordered = [first, *rest]
            version = hash_strings(
                SCHEME, *(n.material() for n in ordered), *self._ambiguous(nodes)
            )
            hit = self._results[key] = (fn, version, ordered)
        return hit[1], hit[2]


class _Unversionable(Exception):
    """Something an op reaches could not be hashed: the op cannot be versioned by its source."""


class _Walker:
    """Turns objects into nodes and follows their references; one per strategy (origins differ)."""

    def __init__(self, strategy: SourceHashVersionStrategy) -> None:
        self.strategy = strategy
        self._origins: dict[str, tuple[str, str]] = {}
        self._expanded: dict[tuple[Any, ...], tuple[Any, _Node, tuple[_Ref, ...]]] = {}
        py = sys.version_info
        self._python = f"python=={py.major}.{py.minor}" if strategy.include_python_version else ""

    # -- the walk ---------------------------------------------------------------------------

    def root_ref(self, fn: Any, kind: str) -> _Ref:
        if isinstance(fn, types.FunctionType):
            return _Ref(("root", kind, id(fn)), kind, object_label(fn), fn)
        # A callable object as the op body: hash what it is made of, as a constant.
        return _Ref(("root", kind, id(fn)), kind, f"<{type(fn).__qualname__}>", ("value", fn))

    def reachable(self, root: _Ref) -> list[tuple[tuple[Any, ...], _Node]]:
        seen: dict[tuple[Any, ...], _Node] = {}
        stack = [root]
        while stack:
            ref = stack.pop()
            if ref.key in seen:
                continue
            node, children = self.expand(ref)
            seen[ref.key] = node
            stack.extend(c for c in children if c.key not in seen)
        return list(seen.items())

    def children(self, key: tuple[Any, ...]) -> tuple[_Ref, ...]:
        """What an expanded object references (after ``reachable`` walked it)."""
        return self._expanded[key][2]

    def expand(self, ref: _Ref) -> tuple[_Node, tuple[_Ref, ...]]:
        hit = self._expanded.get(ref.key)
        if hit is None:
            try:
                own, children = self._expand(ref)
            except _Unversionable:
                raise
            except Exception as exc:
                # never count it by name only: its edits would then serve stale outputs
                raise _Unversionable(
                    f"could not hash {ref.kind} {ref.label} ({type(exc).__name__}: {exc})"
                ) from exc
            edges = sorted({f"{c.kind}:{c.hashed}" for c in children})
            node = _Node(ref.kind, ref.label, hash_strings(ref.kind, own, *edges))
            hit = self._expanded[ref.key] = (ref.target, node, tuple(children))
        return hit[1], hit[2]

    def _expand(self, ref: _Ref) -> tuple[str, list[_Ref]]:
        kind, target = ref.kind, ref.target
        if kind in ("op", "resource") and isinstance(target, tuple):
            refs: list[_Ref] = []
            return self.canonical(target[1], refs, ref.label, "<callable>", set()), refs
        if kind in ("op", "resource", "function"):
            return self._expand_function(target, drop_decorators=ref.key[0] == "root")
        if kind == "class":
            return self._expand_class(target)
        if kind == "module":
            return module_digest(target), []
        if kind == "wrapper":
            module = module_of(target)
            children = [self.describe(target.__wrapped__, module, "__wrapped__")]
            if isinstance(target, types.FunctionType):
                origin, label = self.origin(module)
                children.append(self.external(origin, label if origin == "package" else module))
            else:
                children.append(self.describe(type(target), module, "<type>"))
            return type_name(type(target)) + self._dispatch_registry(target, children), children
        if kind == "constant":
            refs = []
            return self.canonical(target, refs, ref.label, "<item>", set()), refs
        return self._python if kind == "stdlib" else "", []

    def _expand_function(self, fn: Any, *, drop_decorators: bool) -> tuple[str, list[_Ref]]:
        code = fn.__code__
        own, decorator_chains, imports, cells = function_digest(fn, drop_decorators)
        namespace = fn.__globals__
        owner = namespace.get("__name__") or module_of(fn)
        children: list[_Ref] = []
        for chain in (*code_chains(code), *decorator_chains):
            ref = self.resolve_chain(chain, namespace, owner)
            if ref is not None:
                children.append(ref)
        for level, path in imports:
            ref = self.resolve_import(level, path, namespace, owner)
            if ref is not None:
                children.append(ref)
        label = object_label(fn)
        for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: the variable is assigned after this def
                continue
            # named by its placeholder: renaming the factory's variable is no change
            name = dict(cells).get(var, var)
            children.append(self.describe(value, owner, f"{label}.<closure>.{name}"))
        if fn.__defaults__ or fn.__kwdefaults__:
            defaults = (fn.__defaults__ or (), fn.__kwdefaults__ or {})
            children.append(self.describe(defaults, owner, f"{label}.<defaults>"))
        wrapped = safe_getattr(fn, "__wrapped__")
        if wrapped is not MISSING:
            if drop_decorators and isinstance(wrapped, types.FunctionType):
                children.append(
                    _Ref(
                        ("root", "function", id(wrapped)),
                        "function",
                        object_label(wrapped),
                        wrapped,
                    )
                )
            else:
                children.append(self.describe(wrapped, owner, f"{label}.__wrapped__"))
        return own, children

    def _expand_class(self, cls: type) -> tuple[str, list[_Ref]]:
        own, body_chains = class_digest(cls)
        module = sys.modules.get(cls.__module__)
        namespace = vars(module) if module is not None else {}
        children = [
            r for c in body_chains if (r := self.resolve_chain(c, namespace, cls.__module__))
        ]
        bases = [b for b in cls.__bases__ if b is not object]
        children += [self.describe(b, cls.__module__, "<base>") for b in bases]
        if type(cls) is not type:
            children.append(self.describe(type(cls), cls.__module__, "<metaclass>"))
        for name, member in vars(cls).items():
            for fn in member_functions(member):
                children.append(self.describe(fn, cls.__module__, f"{cls.__qualname__}.{name}"))
            if isinstance(member, type) and member.__module__ == cls.__module__:
                children.append(self.describe(member, cls.__module__, name))
        return own, children

    def _dispatch_registry(self, target: Any, children: list[_Ref]) -> str:
        """A ``functools.singledispatch`` function's registered implementations (each followed
        like any reached function) and which type picks which: ``__wrapped__`` is only the
        fallback for ``object``."""
        registry = safe_getattr(target, "registry")
        if not isinstance(registry, Mapping) or not callable(safe_getattr(target, "dispatch")):
            return ""
        module = module_of(target)
        pairs = []
        for kind, implementation in list(registry.items()):
            kind_ref = self.describe(kind, module, "<dispatch type>")
            implementation_ref = self.describe(implementation, module, "<dispatch>")
            children += (kind_ref, implementation_ref)
            pairs.append(
                f"{kind_ref.kind}:{kind_ref.hashed}->{implementation_ref.kind}:"
                f"{implementation_ref.hashed}"
            )
        return "\x1f" + "\x1f".join(sorted(pairs))

    # -- naming what is reached -------------------------------------------------------------

    def resolve_import(
        self, level: int, path: tuple[str, ...], namespace: Mapping[str, Any], owner: str
    ) -> _Ref | None:
        """What an import inside a function body reaches (``source_index.ImportRef``): the
        module is imported if it is project code and not imported yet (the op imports it when
        it runs anyway); installed and stdlib modules are never imported here."""
        if level:
            package = namespace.get("__package__")
            if not isinstance(package, str) or not package:
                return None
            try:
                first = importlib.util.resolve_name("." * level, package)
            except (ImportError, ValueError):
                return None
            rest = path
        else:
            first, rest = path[0], path[1:]
        module = self.import_module(first, owner)
        if not isinstance(module, types.ModuleType):
            return module
        obj: Any = module
        owner, name = module.__name__, module.__name__
        for attr in rest:
            if not isinstance(obj, types.ModuleType):
                break
            origin = self.origin(obj.__name__)[0]
            if origin == "stdlib":
                return self.external(origin, f"{obj.__name__}.{attr}")
            if origin != "local":
                break
            nxt = vars(obj).get(attr, MISSING)
            if nxt is MISSING:  # ``from package import submodule`` not imported yet
                nxt = self.import_module(f"{obj.__name__}.{attr}", owner)
                if not isinstance(nxt, types.ModuleType):
                    return nxt
            owner, name, obj = obj.__name__, attr, nxt
        return self.describe(obj, owner, name)

    def import_module(self, name: str, owner: str) -> types.ModuleType | _Ref | None:
        """The module ``name``, imported if it is project code; a reference for installed and
        stdlib code (by distribution or name, without importing it); None if not found."""
        module = sys.modules.get(name)
        if module is not None:
            return module
        origin = classify_unimported(name, self.strategy.local_roots)
        if origin is None:
            return None  # the import fails when the op runs, whatever its version
        if origin[0] != "local":
            return self.external(*origin)
        try:
            return importlib.import_module(name)
        except Exception as exc:  # the op's own import raises this when it runs
            warnings.warn(
                f"SourceHashVersionStrategy could not import {name!r}, imported by "
                f"{display_module(owner)} inside a function ({type(exc).__name__}: {exc}); "
                "what it holds does not count in the version",
                RuntimeWarning,
                stacklevel=2,
            )
            return None

    # -- naming what is reached (by name) ---------------------------------------------------

    def resolve_chain(
        self, chain: tuple[str, ...], namespace: Mapping[str, Any], owner: str
    ) -> _Ref | None:
        """``a.b.c`` loaded by code in module ``owner``: the object reached, via modules only."""
        first = chain[0]
        obj = namespace.get(first, MISSING)
        if obj is MISSING:
            if hasattr(builtins, first):
                return self.external("stdlib", f"builtins.{first}")
            return None  # defined later at run time, or a typo the op will raise on
        name = first
        for attr in chain[1:]:
            if not isinstance(obj, types.ModuleType):
                break
            origin = self.origin(obj.__name__)[0]
            if origin == "stdlib":  # counted by name: say which name, for ``explain``
                return self.external(origin, f"{obj.__name__}.{attr}")
            if origin != "local":
                break
            nxt = vars(obj).get(attr, MISSING)
            if nxt is MISSING:
                break
            owner, name, obj = obj.__name__, attr, nxt
        return self.describe(obj, owner, name)

    def describe(self, value: Any, owner: str, name: str) -> _Ref:
        """A reference to ``value`` found as ``owner:name`` (a global, cell, default, ...)."""
        definition_fn = _definition_function(value)
        if definition_fn is not None:
            value = definition_fn
        if isinstance(value, types.ModuleType):
            origin, label = self.origin(value.__name__)
            if origin == "local":
                return _Ref(("obj", id(value)), "module", display_module(value.__name__), value)
            return self.external(origin, label if origin == "package" else value.__name__)
        if isinstance(value, types.FunctionType | type):
            module = module_of(value)
            origin, label = self.origin(module)
            if origin == "local":
                kind = "class" if isinstance(value, type) else "function"
                return _Ref(("obj", id(value)), kind, object_label(value), value)
            if isinstance(value, type) or safe_getattr(value, "__wrapped__") is MISSING:
                return self.external(
                    origin, label if origin == "package" else dotted_name(value, module)
                )
        if callable(value) and safe_getattr(value, "__wrapped__") is not MISSING:
            # An installed decorator (lru_cache, tenacity.retry, ...) around a local function:
            # the decorator counts by its package, the function it wraps by its source.
            return _Ref(("obj", id(value)), "wrapper", object_label(value), value)
        if isinstance(
            value,
            types.BuiltinFunctionType | types.WrapperDescriptorType | types.MethodDescriptorType,
        ):
            module = module_of(value)
            origin, label = self.origin(module)
            return self.external(
                origin, label if origin == "package" else dotted_name(value, module)
            )
        label = name if ":" in name else f"{display_module(owner)}:{name}"
        return _Ref(("const", label, id(value)), "constant", label, value)

    def external(self, origin: str, label: str) -> _Ref:
        kind = "package" if origin == "package" else "stdlib"
        return _Ref(("ext", kind, label), kind, label)

    def canonical(
        self, value: Any, refs: list[_Ref], owner: str, name: str, stack: set[int]
    ) -> str:
        """A stable text form of a constant; objects it holds that are code become ``refs``."""
        kind = type(value)
        if kind in SCALARS:
            return repr(value)
        if isinstance(value, enum.Enum):
            ref = self.describe(kind, owner, name)
            refs.append(ref)
            return f"enum {ref.hashed}.{value.name}"
        if id(value) in stack:
            return "<cycle>"
        stack = stack | {id(value)}

        def canon(item: Any) -> str:
            return self.canonical(item, refs, owner, name, stack)

        if kind in (tuple, list):
            return kind.__name__ + "(" + ",".join(canon(v) for v in value) + ")"
        if kind is dict:  # in order: a mapping's order is data (iteration, json.dumps, zip)
            return "dict(" + ",".join(f"{canon(k)}:{canon(v)}" for k, v in value.items()) + ")"
        if kind in (set, frozenset):
            return kind.__name__ + "(" + ",".join(sorted(canon(v) for v in value)) + ")"
        if isinstance(value, functools.partial):
            return f"partial({canon(value.func)},{canon(value.args)},{canon(value.keywords)})"
        if isinstance(value, types.MethodType):
            return f"method({canon(value.__func__)},{canon(value.__self__)})"
        ref = self.describe(value, owner, name)
        if ref.kind != "constant":
            refs.append(ref)
            return f"ref {ref.kind}:{ref.hashed}"
        simple = _simple_stdlib_value(value)
        if simple is not None:
            return simple
        type_ref = self.describe(kind, owner, f"{name}.<type>")
        refs.append(type_ref)
        text = f"object {type_ref.hashed if type_ref.kind == 'class' else type_name(kind)}"
        if isinstance(value, tuple | list):
            text += canon(list(value))
        elif isinstance(value, dict):
            text += canon(dict(value))
        if type_ref.kind == "class":
            state = safe_getattr(value, "__dict__")
            if isinstance(state, dict):
                text += canon(state)
            slots = _slot_values(value)
            if slots:  # a slots class (``@dataclass(slots=True)``) keeps its state here
                text += "slots" + canon(slots)
        return text

    def origin(self, module_name: str) -> tuple[str, str]:
        """``("local"|"stdlib"|"package", label)``; the label of a package is ``Dist==version``."""
        hit = self._origins.get(module_name)
        if hit is None:
            hit = self._origins[module_name] = classify_module(
                module_name, self.strategy.local_roots
            )
        return hit


# -- small helpers ---------------------------------------------------------------------------


def _definition_function(value: Any) -> Any:
    """The function behind a memodag op/resource definition used as a value, else None."""
    if isinstance(value, OpDefinition):
        return value.compute_fn
    if isinstance(value, ResourceDefinition):
        return value.resource_fn
    return None


def _slot_values(value: Any) -> dict[str, Any]:
    """The attributes an instance keeps in ``__slots__`` (of its class and bases), by name."""
    found: dict[str, Any] = {}
    for klass in type(value).__mro__:
        slots = vars(klass).get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if not isinstance(name, str) or name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):  # stored under a mangled name
                name = f"_{klass.__name__.lstrip('_')}{name}"
            item = safe_getattr(value, name)
            if item is not MISSING:
                found.setdefault(name, item)
    return found


def _simple_stdlib_value(value: Any) -> str | None:
    """Stdlib value types whose repr is deterministic and says everything about them."""
    import pathlib
    import re

    if isinstance(value, _repr_types()):
        return f"{type_name(type(value))}:{value!r}"
    if isinstance(value, pathlib.PurePath):
        return f"path:{value.as_posix()}"
    if isinstance(value, re.Pattern):
        return f"pattern:{value.pattern!r}:{value.flags}"
    return None


@functools.cache
def _repr_types() -> tuple[type, ...]:
    import datetime
    import decimal
    import fractions
    import uuid

    return (
        datetime.date,
        datetime.time,
        datetime.timedelta,
        decimal.Decimal,
        fractions.Fraction,
        uuid.UUID,
        range,
    )
