"""``SourceHashVersionStrategy``: an op's code version from its source and everything it reaches.

What is hashed. Starting from the op's function, the strategy follows, transitively, every
project-local object the code can reach by name:

- globals the bytecode loads (``LOAD_GLOBAL``; nested code objects included: comprehensions,
  lambdas, inner functions), attribute chains through modules (``helpers.clean(x)`` reaches
  ``helpers.clean``, not the whole ``helpers`` module), closure cells, default argument values,
  ``__wrapped__`` of decorated functions and the names used in a helper's decorator lines;
- project-local classes as a whole (class source, bases, every method, names used in the body);
- module constants, by a canonical form of simple values (see ``_Walker.canonical``).

Each reached object becomes a node ``(kind, name, digest)``; the version is the digest of the
sorted node list, so it depends only on module names, qualified names and contents: never on
``hash()``, memory addresses, dict/set iteration order or absolute file paths. The walk keeps a
seen-set, so recursion and cycles terminate.

Project-local vs installed. A module is *stdlib* if its file lies under the interpreter's stdlib
(or it has no file and is a builtin/stdlib name), *installed* if its file lies under a
site-packages/dist-packages directory, *local* if its file lies under the working directory (at
construction) or a configured ``local_roots`` entry, installed if its top-level name belongs to a
distribution (an editable install of another project), local otherwise. memodag itself always
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
followed, because a helper's decorator changes what the helper does. Module names are taken as
the user sees them: a script run as ``__main__`` and the same file loaded by the CLI hash alike.

Limits (by design, and what to do about them):
- Source unavailable (REPL, ``exec``, a file changed or deleted since import): the code object's
  parts are hashed instead (``co_consts`` recursively, ``co_names``, ``co_varnames``, the
  qualified name and the sequence of operation names, which tells ``x + 1`` from ``x - 1`` but
  ties the version to the Python minor version); there, docstrings count.
- Two lambdas with the same parameters on one line are hashed together (a lambda knows its line,
  not its column), so editing one invalidates users of the other.
- Module constants other than simple values (numbers, strings, bytes, None and tuples, lists,
  dicts, sets of them; plus dates, decimals, paths, patterns) hash as: instance of a project-local
  class -> the class and the instance's ``__dict__``; anything else -> its type's qualified name
  and that type's package version. Editing the *value* of such an object (a DataFrame built at
  import time) is not seen: load data in an op, not at import.
- A project-local module used bare (``getattr(helpers, name)``) hashes that module's whole
  source, without following what it imports.
- Methods called on objects the op receives at run time (inputs, resources, ``context``) are not
  followed: only classes reached by name are. Reach them by name or version the op by hand.
- Mutable module state (a cache dict a helper fills at run time) is hashed as found when the
  version is computed; keep such state out of what ops reach, or give them ``version=``.
- Project code counts as local only when found under the working directory or ``local_roots``
  (or outside any installed location): run from elsewhere, an editable install of the project
  counts by its version; pass ``local_roots=[project root]`` to pin it.
- Sources are parsed once per process; a long-lived process (a notebook reloading modules)
  notices an edited file within ``_FRESHNESS_INTERVAL`` (1 s) of the edit and re-reads it.
  Digests already computed stay with their code objects: they describe the code that runs.
"""

from __future__ import annotations

import ast
import builtins
import copy
import dis
import enum
import functools
import linecache
import os
import re
import site
import sys
import sysconfig
import time
import types
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from memodag.definitions.op import OpDefinition
from memodag.definitions.resources import ResourceDefinition
from memodag.versioning.hashing import hash_strings
from memodag.versioning.strategy import OpVersionContext, ResourceVersionContext, VersionStrategy

SCHEME = "memodag-source-hash/1"
_MISSING = object()
_SCALARS = (type(None), bool, int, float, complex, str, bytes)

ExplainEntry = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class _Ref:
    """Something reached: ``key`` is its identity in this process, ``kind``/``label`` are stable."""

    key: tuple[Any, ...]
    kind: str
    label: str
    target: Any = None


@dataclass(frozen=True, slots=True)
class _Node:
    kind: str
    label: str
    digest: str

    def material(self) -> str:
        return f"{self.kind}\x1f{self.label}\x1f{self.digest}"


# Process-wide caches: parsing is the expensive part and does not depend on strategy settings.
# Keys hold the code objects, so an id is never reused while its entry lives.
_SOURCE_DIGESTS: dict[tuple[Any, ...], tuple[str, tuple[tuple[str, ...], ...]]] = {}
_CLASS_DIGESTS: dict[int, tuple[type, str, tuple[tuple[str, ...], ...]]] = {}
_MODULE_DIGESTS: dict[int, tuple[types.ModuleType, str]] = {}
_CODE_CHAINS: dict[tuple[Any, str], tuple[tuple[str, ...], ...]] = {}
_SOURCE_INDEXES: dict[str, tuple[tuple[int, int] | None, _SourceIndex | None]] = {}
# Long-lived processes (notebooks with autoreload) edit and reload modules: every so often the
# files behind the parsed sources are stat'ed, and a changed one starts a new generation, which
# empties every cache keyed by object identity (classes, modules, versions).
_FRESHNESS_INTERVAL = 1.0
_freshness = {"generation": 0, "checked": 0.0}


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
        self.local_roots: tuple[str, ...] = tuple(_real(p) for p in roots)
        self.include_python_version = include_python_version
        self._walker = _Walker(self)
        self._results: dict[tuple[Any, ...], tuple[Any, str, list[_Node]]] = {}
        self._generation = _source_generation()

    def get_op_version(self, context: OpVersionContext) -> str:
        return self._result(context.op_def.compute_fn, "op")[0]

    def get_resource_version(self, context: ResourceVersionContext) -> str | None:
        return self._result(context.resource_def.resource_fn, "resource")[0]

    def explain_op(self, op_def: Any) -> list[ExplainEntry]:
        """What the op's version is made of: ``(kind, name, digest)``, the op first, then sorted.

        Kinds: op, resource, function, class, module, constant, wrapper, package
        (name ``Dist==version``), stdlib (name only).
        """
        return self._explain(op_def.compute_fn, "op")

    def explain_resource(self, resource_def: Any) -> list[ExplainEntry]:
        """Like ``explain_op``, for a resource's function."""
        return self._explain(resource_def.resource_fn, "resource")

    def _explain(self, fn: Any, kind: str) -> list[ExplainEntry]:
        _, nodes = self._result(fn, kind)
        return [(n.kind, n.label, n.digest) for n in nodes]

    def _result(self, fn: Any, kind: str) -> tuple[str, list[_Node]]:
        generation = _source_generation()
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
            version = hash_strings(SCHEME, *(n.material() for n in ordered))
            hit = self._results[key] = (fn, version, ordered)
        return hit[1], hit[2]


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
            return _Ref(("root", kind, id(fn)), kind, _label(fn), fn)
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

    def expand(self, ref: _Ref) -> tuple[_Node, tuple[_Ref, ...]]:
        hit = self._expanded.get(ref.key)
        if hit is None:
            try:
                own, children = self._expand(ref)
            except Exception as exc:  # odd user objects must not fail a run; say what was lost
                warnings.warn(
                    f"SourceHashVersionStrategy could not hash {ref.kind} {ref.label} "
                    f"({type(exc).__name__}: {exc}); it counts by name only",
                    RuntimeWarning,
                    stacklevel=2,
                )
                own, children = f"unhashable:{type(exc).__name__}", []
            edges = sorted({f"{c.kind}:{c.label}" for c in children})
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
            return _module_digest(target), []
        if kind == "wrapper":
            module = _module_of(target)
            children = [self.describe(target.__wrapped__, module, "__wrapped__")]
            if isinstance(target, types.FunctionType):
                origin, label = self.origin(module)
                children.append(self.external(origin, label if origin == "package" else module))
            else:
                children.append(self.describe(type(target), module, "<type>"))
            return _type_name(type(target)), children
        if kind == "constant":
            refs = []
            return self.canonical(target, refs, ref.label, "<item>", set()), refs
        return self._python if kind == "stdlib" else "", []

    def _expand_function(self, fn: Any, *, drop_decorators: bool) -> tuple[str, list[_Ref]]:
        code = fn.__code__
        own, decorator_chains = _function_digest(fn, drop_decorators)
        namespace = fn.__globals__
        owner = namespace.get("__name__") or _module_of(fn)
        children: list[_Ref] = []
        for chain in (*_code_chains(code), *decorator_chains):
            ref = self.resolve_chain(chain, namespace, owner)
            if ref is not None:
                children.append(ref)
        label = _label(fn)
        for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: the variable is assigned after this def
                continue
            children.append(self.describe(value, owner, f"{label}.<closure>.{var}"))
        if fn.__defaults__ or fn.__kwdefaults__:
            defaults = (fn.__defaults__ or (), fn.__kwdefaults__ or {})
            children.append(self.describe(defaults, owner, f"{label}.<defaults>"))
        wrapped = _safe_getattr(fn, "__wrapped__")
        if wrapped is not _MISSING:
            if drop_decorators and isinstance(wrapped, types.FunctionType):
                children.append(
                    _Ref(("root", "function", id(wrapped)), "function", _label(wrapped), wrapped)
                )
            else:
                children.append(self.describe(wrapped, owner, f"{label}.__wrapped__"))
        return own, children

    def _expand_class(self, cls: type) -> tuple[str, list[_Ref]]:
        own, body_chains = _class_digest(cls)
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
            for fn in _member_functions(member):
                children.append(self.describe(fn, cls.__module__, f"{cls.__qualname__}.{name}"))
            if isinstance(member, type) and member.__module__ == cls.__module__:
                children.append(self.describe(member, cls.__module__, name))
        return own, children

    # -- naming what is reached -------------------------------------------------------------

    def resolve_chain(
        self, chain: tuple[str, ...], namespace: Mapping[str, Any], owner: str
    ) -> _Ref | None:
        """``a.b.c`` loaded by code in module ``owner``: the object reached, following modules only."""
        first = chain[0]
        obj = namespace.get(first, _MISSING)
        if obj is _MISSING:
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
            nxt = vars(obj).get(attr, _MISSING)
            if nxt is _MISSING:
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
                return _Ref(("obj", id(value)), "module", _display_module(value.__name__), value)
            return self.external(origin, label if origin == "package" else value.__name__)
        if isinstance(value, types.FunctionType | type):
            module = _module_of(value)
            origin, label = self.origin(module)
            if origin == "local":
                kind = "class" if isinstance(value, type) else "function"
                return _Ref(("obj", id(value)), kind, _label(value), value)
            if isinstance(value, type) or _safe_getattr(value, "__wrapped__") is _MISSING:
                return self.external(
                    origin, label if origin == "package" else _dotted(value, module)
                )
        if callable(value) and _safe_getattr(value, "__wrapped__") is not _MISSING:
            # An installed decorator (lru_cache, tenacity.retry, ...) around a local function:
            # the decorator counts by its package, the function it wraps by its source.
            return _Ref(("obj", id(value)), "wrapper", _label(value), value)
        if isinstance(
            value,
            types.BuiltinFunctionType | types.WrapperDescriptorType | types.MethodDescriptorType,
        ):
            module = _module_of(value)
            origin, label = self.origin(module)
            return self.external(origin, label if origin == "package" else _dotted(value, module))
        label = name if ":" in name else f"{_display_module(owner)}:{name}"
        return _Ref(("const", label, id(value)), "constant", label, value)

    def external(self, origin: str, label: str) -> _Ref:
        kind = "package" if origin == "package" else "stdlib"
        return _Ref(("ext", kind, label), kind, label)

    def canonical(
        self, value: Any, refs: list[_Ref], owner: str, name: str, stack: set[int]
    ) -> str:
        """A stable text form of a constant; objects it holds that are code become ``refs``."""
        kind = type(value)
        if kind in _SCALARS:
            return repr(value)
        if isinstance(value, enum.Enum):
            ref = self.describe(kind, owner, name)
            refs.append(ref)
            return f"enum {ref.label}.{value.name}"
        if id(value) in stack:
            return "<cycle>"
        stack = stack | {id(value)}

        def canon(item: Any) -> str:
            return self.canonical(item, refs, owner, name, stack)

        if kind in (tuple, list):
            return kind.__name__ + "(" + ",".join(canon(v) for v in value) + ")"
        if kind is dict:
            return (
                "dict(" + ",".join(sorted(f"{canon(k)}:{canon(v)}" for k, v in value.items())) + ")"
            )
        if kind in (set, frozenset):
            return kind.__name__ + "(" + ",".join(sorted(canon(v) for v in value)) + ")"
        if isinstance(value, functools.partial):
            return f"partial({canon(value.func)},{canon(value.args)},{canon(value.keywords)})"
        if isinstance(value, types.MethodType):
            return f"method({canon(value.__func__)},{canon(value.__self__)})"
        ref = self.describe(value, owner, name)
        if ref.kind != "constant":
            refs.append(ref)
            return f"ref {ref.kind}:{ref.label}"
        simple = _simple_stdlib_value(value)
        if simple is not None:
            return simple
        type_ref = self.describe(kind, owner, f"{name}.<type>")
        refs.append(type_ref)
        text = f"object {_type_name(kind)}"
        if isinstance(value, tuple | list):
            text += canon(list(value))
        elif isinstance(value, dict):
            text += canon(dict(value))
        if type_ref.kind == "class":
            state = _safe_getattr(value, "__dict__")
            if isinstance(state, dict):
                text += canon(state)
        return text

    def origin(self, module_name: str) -> tuple[str, str]:
        """``("local"|"stdlib"|"package", label)``; the label of a package is ``Dist==version``."""
        hit = self._origins.get(module_name)
        if hit is None:
            hit = self._origins[module_name] = self._classify(module_name)
        return hit

    def _classify(self, module_name: str) -> tuple[str, str]:
        top = module_name.partition(".")[0]
        if top == "memodag":
            return "package", _distribution_label(top)
        module = sys.modules.get(module_name)
        file = _safe_getattr(module, "__file__") if module is not None else None
        if isinstance(file, str):
            path = _real(file)
            if _under(path, _site_dirs()) or any(
                p in ("site-packages", "dist-packages") for p in path.split(os.sep)
            ):
                return "package", _distribution_label(top)
            if _under(path, _stdlib_dirs()):
                return "stdlib", module_name
            if _under(path, self.strategy.local_roots):
                return "local", module_name
        elif top in sys.stdlib_module_names or top in sys.builtin_module_names:
            return "stdlib", module_name
        if _distributions().get(top):
            return "package", _distribution_label(top)
        return "local", module_name


# -- digests of source (process-wide caches) ---------------------------------------------------


def _function_digest(fn: Any, drop_decorators: bool) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """``(digest, dotted names used in decorator lines)`` of a function, from source if possible."""
    code = fn.__code__
    key = (code, code.co_filename, code.co_qualname, drop_decorators)
    hit = _SOURCE_DIGESTS.get(key)
    if hit is None:
        nodes = _find_function(code, fn.__globals__)
        if nodes is None:
            hit = ("code:" + _code_digest(code), ())
        else:
            chains: list[tuple[str, ...]] = []
            for i, node in enumerate(nodes):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    if drop_decorators:
                        nodes[i] = node = copy.copy(node)  # the index's tree is shared
                        node.decorator_list = []
                    for decorator in node.decorator_list:
                        chains += _ast_chains(decorator)
            hit = ("ast:" + hash_strings(*map(_dump, nodes)), tuple(dict.fromkeys(chains)))
        _SOURCE_DIGESTS[key] = hit
    return hit


def _find_function(code: types.CodeType, namespace: dict[str, Any]) -> list[ast.AST] | None:
    """The def (or the matching lambdas on its line) of ``code``; None when it cannot be had."""
    index = _source_index(code.co_filename, namespace)
    if index is None:
        return None
    if code.co_name == "<lambda>":
        wanted = list(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
        lambdas = [
            n
            for n in index.lambdas.get(code.co_firstlineno, ())
            if [a.arg for a in (*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs)] == wanted
        ]
        return lambdas or None
    for node in index.definitions.get(code.co_qualname, ()):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == code.co_name:
            first_line = min([d.lineno for d in node.decorator_list] + [node.lineno])
            if first_line == code.co_firstlineno:
                return [node]
    return None  # the file changed since import: never hash the wrong text


@dataclass(slots=True)
class _SourceIndex:
    """One parsed source file (docstrings removed), its definitions by qualname, lambdas by line."""

    tree: ast.Module
    definitions: dict[str, list[ast.AST]]
    lambdas_by_line: dict[int, list[ast.Lambda]] | None = None

    @property
    def lambdas(self) -> dict[int, list[ast.Lambda]]:
        if self.lambdas_by_line is None:  # few files hold a lambda that is reached: walk on demand
            self.lambdas_by_line = {}
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Lambda):
                    self.lambdas_by_line.setdefault(node.lineno, []).append(node)
        return self.lambdas_by_line


def _source_index(filename: str, namespace: dict[str, Any] | None) -> _SourceIndex | None:
    # One parse per file, not one per function: a job of thousands of ops defined in a few
    # modules parses each module once (inspect.getsource would tokenize every function).
    hit = _SOURCE_INDEXES.get(filename)
    if hit is not None:
        return hit[1]
    index = None
    signature = _file_signature(filename)
    linecache.checkcache(filename)
    lines = linecache.getlines(filename, namespace)  # also serves zipimport and notebook cells
    if lines:
        try:
            tree = ast.parse("".join(lines))
        except (SyntaxError, ValueError):
            tree = None
        if tree is not None:
            index = _SourceIndex(tree, {})
            _index_block(tree, "", index)
    _SOURCE_INDEXES[filename] = (signature, index)
    return index


def _file_signature(filename: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(filename)
    except (OSError, ValueError):  # not a file: a notebook cell, zip member, ``<string>``
        return None
    return stat.st_mtime_ns, stat.st_size


def _source_generation() -> int:
    """A number that changes when a parsed source file changed on disk (checked at most once
    per ``_FRESHNESS_INTERVAL`` seconds, so a loop of version look-ups stays a dict hit)."""
    now = time.monotonic()
    if now - _freshness["checked"] >= _FRESHNESS_INTERVAL:
        _freshness["checked"] = now
        stale = [
            name
            for name, (signature, _) in list(_SOURCE_INDEXES.items())
            if signature is not None and _file_signature(name) != signature
        ]
        if stale:
            for name in stale:
                del _SOURCE_INDEXES[name]
            _CLASS_DIGESTS.clear()
            _MODULE_DIGESTS.clear()
            _freshness["generation"] += 1
    return int(_freshness["generation"])


_BLOCK_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _index_block(node: ast.AST, prefix: str, index: _SourceIndex) -> None:
    """Record definitions by qualname and drop docstrings, visiting statements only (defs are
    statements, so expressions need no visit)."""
    if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:]
    for field in _BLOCK_FIELDS:
        block = getattr(node, field, None)
        if not isinstance(block, list):
            continue
        for child in block:
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualname = prefix + child.name
                index.definitions.setdefault(qualname, []).append(child)
                inner = "." if isinstance(child, ast.ClassDef) else ".<locals>."
                _index_block(child, qualname + inner, index)
            elif isinstance(child, ast.AST):
                _index_block(child, prefix, index)


def _class_digest(cls: type) -> tuple[str, tuple[tuple[str, ...], ...]]:
    hit = _CLASS_DIGESTS.get(id(cls))
    if hit is None:
        node = _find_class(cls)
        if node is not None:
            chains = tuple(dict.fromkeys(_class_body_chains(node)))
            digest = "ast:" + hash_strings(_dump(node))
        else:  # no source: the members' code and simple attributes stand in for it
            parts = [cls.__qualname__]
            for name, member in vars(cls).items():
                codes = _member_code(member)
                if codes:
                    parts += [f"{name}=" + _code_digest(c) for c in codes]
                elif type(member) in _SCALARS:
                    parts.append(f"{name}={member!r}")
            digest, chains = "code:" + hash_strings(*parts), ()
        hit = _CLASS_DIGESTS[id(cls)] = (cls, digest, chains)
    return hit[1], hit[2]


def _find_class(cls: type) -> ast.ClassDef | None:
    methods = [c for m in vars(cls).values() for c in _member_code(m)]
    module = sys.modules.get(cls.__module__)
    filename = _safe_getattr(module, "__file__") if module is not None else _MISSING
    if not isinstance(filename, str):
        if not methods:
            return None
        filename = methods[0].co_filename
    index = _source_index(filename, vars(module) if module is not None else None)
    if index is None:
        return None
    candidates = [
        n
        for n in index.definitions.get(cls.__qualname__, ())
        if isinstance(n, ast.ClassDef) and n.name == cls.__name__
    ]
    lines = {c.co_firstlineno for c in methods if c.co_filename == filename}
    if lines:  # several definitions of one name (if/else): the one holding the methods
        candidates = [
            n for n in candidates if any(n.lineno <= x <= (n.end_lineno or 0) for x in lines)
        ]
    return candidates[0] if len(candidates) == 1 else None


def _module_digest(module: types.ModuleType) -> str:
    hit = _MODULE_DIGESTS.get(id(module))
    if hit is None:
        filename = _safe_getattr(module, "__file__")
        index = _source_index(filename, vars(module)) if isinstance(filename, str) else None
        digest = (
            "ast:" + hash_strings(_dump(index.tree)) if index else "nosource:" + module.__name__
        )
        hit = _MODULE_DIGESTS[id(module)] = (module, digest)
    return hit[1]


def _dump(node: ast.AST) -> str:
    return ast.dump(node, annotate_fields=False, include_attributes=False)


def _ast_chains(node: ast.AST) -> Iterator[tuple[str, ...]]:
    """Dotted names loaded in an expression: ``a.b.c`` -> ("a", "b", "c")."""
    if isinstance(node, ast.Attribute | ast.Name):
        parts: list[str] = []
        current: ast.AST = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if isinstance(current, ast.Name):
            yield (current.id, *reversed(parts))
            return
        yield from _ast_chains(current)
        return
    for child in ast.iter_child_nodes(node):
        yield from _ast_chains(child)


def _class_body_chains(cls_node: ast.ClassDef) -> Iterator[tuple[str, ...]]:
    """Names a class statement loads outside its methods' bodies (bases, decorators, attributes)."""
    for expr in (*cls_node.decorator_list, *cls_node.bases, *(k.value for k in cls_node.keywords)):
        yield from _ast_chains(expr)
    for stmt in cls_node.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            for expr in (
                *stmt.decorator_list,
                *stmt.args.defaults,
                *(d for d in stmt.args.kw_defaults if d),
            ):
                yield from _ast_chains(expr)
        elif isinstance(stmt, ast.ClassDef):
            yield from _class_body_chains(stmt)
        else:
            yield from _ast_chains(stmt)


def _code_chains(code: types.CodeType) -> tuple[tuple[str, ...], ...]:
    """Global names (with module attribute chains) loaded by ``code`` and its nested code."""
    key = (code, code.co_filename)
    hit = _CODE_CHAINS.get(key)
    if hit is None:
        scan = _scan_bytecode if _FAST_SCAN else _scan_instructions
        chains = list(scan(code))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                chains += _code_chains(const)
        hit = _CODE_CHAINS[key] = tuple(dict.fromkeys(chains))
    return hit


_FAST_SCAN = (3, 11) <= sys.version_info < (3, 14)  # the bytecode layouts checked against dis
_LOAD_ATTR_FLAG = sys.version_info >= (3, 12)  # from 3.12 LOAD_ATTR's oparg carries a flag bit
_OPS = dis.opmap


def _scan_bytecode(code: types.CodeType) -> Iterator[tuple[str, ...]]:
    """What ``_scan_instructions`` finds, read straight from ``co_code`` (several times faster)."""
    names, raw = code.co_names, code.co_code
    load_global, load_name, load_attr = _OPS["LOAD_GLOBAL"], _OPS["LOAD_NAME"], _OPS["LOAD_ATTR"]
    load_method, cache, extended = _OPS.get("LOAD_METHOD", -1), _OPS["CACHE"], dis.EXTENDED_ARG
    current: list[str] | None = None
    extended_arg = 0
    for i in range(0, len(raw), 2):
        op = raw[i]
        arg = raw[i + 1] | extended_arg
        extended_arg = arg << 8 if op == extended else 0
        if op in (cache, extended):
            continue
        if current is not None and op == load_attr:
            current.append(names[arg >> 1 if _LOAD_ATTR_FLAG else arg])
            continue
        if current is not None and op == load_method:
            current.append(names[arg])
            continue
        if current:
            yield tuple(current)
        current = None
        if op == load_global:
            current = [names[arg >> 1]]
        elif op == load_name:
            current = [names[arg]]
    if current:
        yield tuple(current)


def _scan_instructions(code: types.CodeType) -> Iterator[tuple[str, ...]]:
    current: list[str] | None = None
    for ins in dis.get_instructions(code):
        if current is not None and ins.opname in ("LOAD_ATTR", "LOAD_METHOD"):
            current.append(ins.argval)
            continue
        if current:
            yield tuple(current)
        current = [ins.argval] if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") else None
    if current:
        yield tuple(current)


def _code_digest(code: types.CodeType) -> str:
    """A code object without its source (the fallback): its constants (recursively), names,
    variables and qualified name, plus the sequence of operations, which is what tells
    ``x + 1`` from ``x - 1``. Operation names change between Python minor versions, so this part
    is tagged with the Python version: such ops recompute once after a Python upgrade."""
    consts = [
        "code:" + _code_digest(c) if isinstance(c, types.CodeType) else _const_text(c)
        for c in code.co_consts
    ]
    counts = f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount}"
    operations = " ".join(
        f"{i.opname}:{i.argrepr}" if i.opcode in dis.hasname or i.opcode in _COMPARE else i.opname
        for i in dis.get_instructions(code)
    )
    py = sys.version_info
    return hash_strings(
        code.co_qualname,
        counts,
        ",".join(code.co_varnames),
        ",".join(code.co_names),
        ",".join(code.co_freevars),
        *consts,
        f"python=={py.major}.{py.minor}",
        operations,
    )


# Operations whose argument is the operator itself (``a < b`` vs ``a > b``, ``a + b`` vs ``a - b``).
_COMPARE = {
    dis.opmap[name]
    for name in ("COMPARE_OP", "BINARY_OP", "IS_OP", "CONTAINS_OP")
    if name in dis.opmap
}


def _const_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_const_text(v) for v in value) + ")"
    if isinstance(value, frozenset):
        return "frozenset(" + ",".join(sorted(_const_text(v) for v in value)) + ")"
    return repr(value) if type(value) in _SCALARS else _type_name(type(value))


# -- small helpers ---------------------------------------------------------------------------


def _member_functions(member: Any) -> Iterator[Any]:
    """The callables a class attribute holds: a method, or those under static/class methods
    and properties (which may be any callable, e.g. an ``lru_cache`` wrapper)."""
    if isinstance(member, staticmethod | classmethod):
        member = member.__func__
    if isinstance(member, property):
        yield from (f for f in (member.fget, member.fset, member.fdel) if f is not None)
    elif isinstance(member, functools.cached_property):
        yield member.func
    elif (
        isinstance(member, types.FunctionType)
        or _safe_getattr(member, "__wrapped__") is not _MISSING
    ):
        yield member


def _member_code(member: Any) -> list[types.CodeType]:
    return [f.__code__ for f in _member_functions(member) if isinstance(f, types.FunctionType)]


def _definition_function(value: Any) -> Any:
    """The function behind a memodag op/resource definition used as a value, else None."""
    if isinstance(value, OpDefinition):
        return value.compute_fn
    if isinstance(value, ResourceDefinition):
        return value.resource_fn
    return None


def _simple_stdlib_value(value: Any) -> str | None:
    """Stdlib value types whose repr is deterministic and says everything about them."""
    import pathlib
    import re

    if isinstance(value, _repr_types()):
        return f"{_type_name(type(value))}:{value!r}"
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


def _safe_getattr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, _MISSING)
    except Exception:  # objects with odd __getattr__ must not break versioning
        return _MISSING


def _module_of(obj: Any) -> str:
    """The module that defines ``obj`` (for functions: where the code is, which ``wraps`` hides)."""
    if isinstance(obj, types.FunctionType):
        name = obj.__globals__.get("__name__")
        if isinstance(name, str):
            return name
    module = _safe_getattr(obj, "__module__")
    if not isinstance(module, str):
        module = type(obj).__module__
    return module


def _label(obj: Any) -> str:
    module = _display_module(_module_of(obj))
    if isinstance(obj, types.FunctionType):
        return f"{module}:{obj.__code__.co_qualname}"
    qualname = _safe_getattr(obj, "__qualname__")
    if not isinstance(qualname, str):
        qualname = _type_name(type(obj))
    return f"{module}:{qualname}"


_CLI_FILE_MODULE = re.compile(r"memodag_job_file_(\w+)_[0-9a-f]{8}")


def _display_module(name: str) -> str:
    """A module's name as versions see it. A script run as ``__main__`` and the same file loaded
    by ``memodag job ... -f FILE`` (under its stem, or ``memodag_job_file_<stem>_<path hash>``
    when the stem is taken) hash alike, so switching between the two recomputes nothing."""
    if name == "__main__":
        main = sys.modules.get("__main__")
        spec = _safe_getattr(main, "__spec__")
        if spec is not None and spec is not _MISSING and getattr(spec, "name", None):
            return str(spec.name)  # python -m package.module
        file = _safe_getattr(main, "__file__")
        return os.path.splitext(os.path.basename(file))[0] if isinstance(file, str) else name
    if name.startswith("memodag_job_file_"):
        match = _CLI_FILE_MODULE.fullmatch(name)
        if match:
            return match.group(1)
    return name


def _dotted(obj: Any, module: str) -> str:
    qualname = _safe_getattr(obj, "__qualname__")
    return f"{module}.{qualname}" if isinstance(qualname, str) else module


def _type_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _real(path: str) -> str:
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
    return tuple(dict.fromkeys(_real(d) for d in dirs))


@functools.cache
def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    dirs = [paths["stdlib"], paths["platstdlib"], base["stdlib"], base["platstdlib"]]
    return tuple(dict.fromkeys(_real(d) for d in dirs))


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    import importlib.metadata  # only when a version is first computed: it costs import time

    return importlib.metadata.packages_distributions()


@functools.cache
def _distribution_label(top: str) -> str:
    """``Dist==version`` for a top-level module (several joined by '+', sorted)."""
    import importlib.metadata

    labels = []
    for dist in sorted(set(_distributions().get(top, ()))):
        try:
            labels.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    if labels:
        return "+".join(labels)
    module = sys.modules.get(top)
    version = _safe_getattr(module, "__version__") if module is not None else _MISSING
    return f"{top}=={version if isinstance(version, str) else 'unknown'}"
