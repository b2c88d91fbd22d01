"""Source of functions, classes and modules, parsed once per process, and their digests.

Owns reading each source file once (through ``linecache``), finding the AST node of a function
or class, the normalised AST digest (docstrings dropped), the code-object fallback when source
is unavailable, and the names code loads (from bytecode or decorator lines). Process-wide caches
live here, with the freshness check that drops them when a parsed file changes on disk; function
digests are also kept between processes by ``source_cache``. What is
hashed and why: see ``memodag.versioning.source_hash``. Never decides what is project code.
"""

from __future__ import annotations

import ast
import dis
import functools
import hashlib
import linecache
import symtable
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from memodag.hashing import hash_strings
from memodag.versioning import source_cache
from memodag.versioning.code_origin import MISSING, safe_getattr, type_name
from memodag.versioning.source_cache import Signature, file_signature

SCALARS = (type(None), bool, int, float, complex, str, bytes)

#: ``(level, dotted path)`` reached through an import inside a function body: ``from .helpers
#: import quad`` and a call ``quad(x)`` give ``(1, ("helpers", "quad"))``.
ImportRef = tuple[int, tuple[str, ...]]

# Process-wide caches: parsing is the expensive part and does not depend on strategy settings.
# Keys hold the code objects, so an id is never reused while its entry lives.
FunctionDigest = tuple[
    str, tuple[tuple[str, ...], ...], tuple[ImportRef, ...], tuple[tuple[str, str], ...]
]
_SOURCE_DIGESTS: dict[tuple[Any, ...], FunctionDigest] = {}
_CLASS_DIGESTS: dict[int, tuple[type, str, tuple[tuple[str, ...], ...]]] = {}
_MODULE_DIGESTS: dict[int, tuple[types.ModuleType, str]] = {}
_CODE_CHAINS: dict[tuple[Any, str], tuple[tuple[str, ...], ...]] = {}
_SOURCE_INDEXES: dict[str, tuple[Signature | None, _SourceIndex | None]] = {}
# Files whose function digests came from the persistent cache (``source_cache``) unparsed, with
# the signature they were served at: watched for edits like parsed files.
_SERVED: dict[str, Signature] = {}
# What each parsed file was read as (``source_cache.read_file``), for the persistent cache.
_CONTENT: dict[str, source_cache.FileRead] = {}
# Long-lived processes (notebooks with autoreload) edit and reload modules: every so often the
# files behind the parsed sources are stat'ed, and a changed one starts a new generation, which
# empties every cache keyed by object identity (classes, modules, versions).
_FRESHNESS_INTERVAL = 1.0
_freshness = {"generation": 0, "checked": 0.0}


def function_digest(fn: Any, drop_decorators: bool) -> FunctionDigest:
    """``(digest, dotted names used in decorator lines, what the body's imports reach, closure
    variable -> its placeholder)`` of a function, from source if possible. Local variables are
    renamed to placeholders first (``_local_names``), so a pure rename keeps the digest."""
    code = fn.__code__
    key = (code, code.co_filename, code.co_qualname, drop_decorators)
    hit = _SOURCE_DIGESTS.get(key)
    if hit is None:
        filename = code.co_filename
        _recheck(filename)
        persisted = source_cache.function_key(code, drop_decorators)
        served = source_cache.lookup(filename, persisted)
        if served is not None:
            hit, _SERVED[filename] = served  # watched: an edit now starts a new generation
            _SOURCE_DIGESTS[key] = hit
            return hit
        found = _find_function(code, fn.__globals__)
        if found is None:
            hit = ("code:" + _code_digest(code), (), (), ())
        else:
            index, nodes = found
            chains: list[tuple[str, ...]] = []
            imports: list[ImportRef] = []
            dumps = []
            cells: tuple[tuple[str, str], ...] = ()
            for node in nodes:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    renamable, has_imports = _local_names(node, index)
                    if has_imports:
                        imports += _import_refs(node)
                    text, names = _dump_function(node, renamable, drop_decorators)
                    dumps.append(text)
                    cells = tuple((v, names[v]) for v in code.co_freevars if v in names)
                    if not drop_decorators:
                        for decorator in node.decorator_list:
                            chains += _ast_chains(decorator)
                else:
                    dumps.append(_dump(node))
            hit = (
                "ast:" + hash_strings(*dumps),
                tuple(dict.fromkeys(chains)),
                tuple(dict.fromkeys(imports)),
                cells,
            )
            read = _CONTENT.get(filename)
            if read is not None:  # the file as it was parsed
                source_cache.store(filename, read, persisted, hit)
        _SOURCE_DIGESTS[key] = hit
    return hit


def _find_function(
    code: types.CodeType, namespace: dict[str, Any]
) -> tuple[_SourceIndex, list[ast.AST]] | None:
    """The def (or the matching lambdas on its line) of ``code`` and the file's index; None when
    it cannot be had."""
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
        return (index, list[ast.AST](lambdas)) if lambdas else None
    for node in index.definitions.get(code.co_qualname, ()):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == code.co_name:
            first_line = min([d.lineno for d in node.decorator_list] + [node.lineno])
            if first_line == code.co_firstlineno:
                return index, [node]
    return None  # the file changed since import: never hash the wrong text


@dataclass(slots=True)
class _SourceIndex:
    """One parsed source file (docstrings removed), its definitions by qualname, lambdas by line."""

    tree: ast.Module
    definitions: dict[str, list[ast.AST]]
    source: str = ""
    lambdas_by_line: dict[int, list[ast.Lambda]] | None = None
    scopes_by_line: dict[tuple[str, int], symtable.SymbolTable] | None = None

    @property
    def lambdas(self) -> dict[int, list[ast.Lambda]]:
        if self.lambdas_by_line is None:  # few files hold a lambda that is reached: walk on demand
            self.lambdas_by_line = {}
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Lambda):
                    self.lambdas_by_line.setdefault(node.lineno, []).append(node)
        return self.lambdas_by_line

    def scope(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> symtable.SymbolTable | None:
        """The symbol table of a def (built for the whole file on first use)."""
        if self.scopes_by_line is None:
            self.scopes_by_line = {}
            try:
                top = symtable.symtable(self.source, "<source>", "exec")
            except (SyntaxError, ValueError):
                return None
            tables = [top]
            while tables:
                table = tables.pop()
                if table.get_type() == "function":
                    self.scopes_by_line[(table.get_name(), table.get_lineno())] = table
                tables.extend(table.get_children())
        return self.scopes_by_line.get((node.name, node.lineno))


def _source_index(filename: str, namespace: dict[str, Any] | None) -> _SourceIndex | None:
    # One parse per file, not one per function: a job of thousands of ops defined in a few
    # modules parses each module once (inspect.getsource would tokenize every function).
    hit = _SOURCE_INDEXES.get(filename)
    if hit is not None:
        return hit[1]
    index = None
    signature = file_signature(filename)
    read = source_cache.read_file(filename) if signature is not None else None
    if read is not None:  # a file, read now (linecache keeps a same-size same-mtime
        signature = read.signature  # replacement's old lines)
        lines = read.text.splitlines(keepends=True)
        _CONTENT[filename] = read._replace(text="")
    else:  # zipimport and notebook cells
        linecache.checkcache(filename)
        lines = linecache.getlines(filename, namespace)
    if lines:
        try:
            tree = ast.parse("".join(lines))
        except (SyntaxError, ValueError):
            tree = None
        if tree is not None:
            index = _SourceIndex(tree, {}, "".join(lines))
            _index_block(tree, "", index)
    _SOURCE_INDEXES[filename] = (signature, index)
    return index


def source_generation(force: bool = False) -> int:
    """A number that changes when a parsed source file changed on disk (checked at most once
    per ``_FRESHNESS_INTERVAL`` seconds, so a loop of version look-ups stays a dict hit; at
    once with ``force``)."""
    now = time.monotonic()
    if force or now - _freshness["checked"] >= _FRESHNESS_INTERVAL:
        _freshness["checked"] = now
        watched = [(name, signature) for name, (signature, _) in _SOURCE_INDEXES.items()]
        _forget(
            [
                name
                for name, signature in [*watched, *_SERVED.items()]
                if signature is not None and file_signature(name) != signature
            ]
        )
    return int(_freshness["generation"])


def _forget(stale: list[str]) -> None:
    """Drop the parses of files changed on disk, and everything derived from parses."""
    if stale:
        for name in stale:
            _SOURCE_INDEXES.pop(name, None)
            _SERVED.pop(name, None)
            _CONTENT.pop(name, None)
        _CLASS_DIGESTS.clear()
        _MODULE_DIGESTS.clear()
        _freshness["generation"] += 1


def _recheck(filename: str) -> None:
    """Stat one parsed file now: a new code object (a reloaded module, a redefined function)
    may come from an edit made since the file was parsed, within ``_FRESHNESS_INTERVAL``."""
    hit = _SOURCE_INDEXES.get(filename)
    signature = hit[0] if hit is not None else _SERVED.get(filename)
    if signature is not None and file_signature(filename) != signature:
        _forget([filename])


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


def class_digest(cls: type) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """``(digest, dotted names the class statement loads outside method bodies)`` of a class."""
    hit = _CLASS_DIGESTS.get(id(cls))
    if hit is None:
        found = _find_class(cls)
        if found is not None:
            index, node = found
            chains = tuple(dict.fromkeys(_class_body_chains(node)))
            digest = "ast:" + hash_strings(_dump_class(node, index))
        else:  # no source: the members' code and simple attributes stand in for it
            parts = [cls.__qualname__]
            for name, member in vars(cls).items():
                codes = _member_code(member)
                if codes:
                    parts += [f"{name}=" + _code_digest(c) for c in codes]
                elif type(member) in SCALARS:
                    parts.append(f"{name}={member!r}")
            digest, chains = "code:" + hash_strings(*parts), ()
        hit = _CLASS_DIGESTS[id(cls)] = (cls, digest, chains)
    return hit[1], hit[2]


def _find_class(cls: type) -> tuple[_SourceIndex, ast.ClassDef] | None:
    methods = [c for m in vars(cls).values() for c in _member_code(m)]
    module = sys.modules.get(cls.__module__)
    filename = safe_getattr(module, "__file__") if module is not None else MISSING
    if not isinstance(filename, str):
        if not methods:
            return None
        filename = methods[0].co_filename
    _recheck(filename)
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
    return (index, candidates[0]) if len(candidates) == 1 else None


def module_digest(module: types.ModuleType) -> str:
    """Digest of a whole module's source (its file's bytes without source; its name only
    without a file)."""
    hit = _MODULE_DIGESTS.get(id(module))
    if hit is None:
        filename = safe_getattr(module, "__file__")
        index = _source_index(filename, vars(module)) if isinstance(filename, str) else None
        if index is not None:
            digest = "ast:" + hash_strings(_dump(index.tree))
        else:  # a compiled module (``.so``, ``.pyc`` only): its bytes, not its name
            compiled = _file_digest(filename) if isinstance(filename, str) else None
            digest = compiled or "nosource:" + module.__name__
        hit = _MODULE_DIGESTS[id(module)] = (module, digest)
    return hit[1]


def _file_digest(filename: str) -> str | None:
    try:
        with open(filename, "rb") as f:
            return "file:" + hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _import_refs(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ImportRef]:
    """What imports inside a function body reach: each name an import binds, followed by the
    attributes the body loads from it (``import helpers`` then ``helpers.quad(x)`` reaches
    ``helpers.quad``, not the whole module); a bound name never loaded counts as itself."""
    bindings: dict[str, ImportRef] = {}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Import):
            for alias in sub.names:
                if alias.asname:
                    bindings[alias.asname] = (0, tuple(alias.name.split(".")))
                else:  # ``import a.b`` binds ``a``; ``a.b.c`` in the body walks down from it
                    top = alias.name.partition(".")[0]
                    bindings[top] = (0, (top,))
        elif isinstance(sub, ast.ImportFrom):
            base = tuple(sub.module.split(".")) if sub.module else ()
            for alias in sub.names:
                if alias.name != "*":
                    bindings[alias.asname or alias.name] = (sub.level, (*base, alias.name))
    if not bindings:
        return []
    refs: list[ImportRef] = []
    used: set[str] = set()
    for statement in node.body:
        for chain in _ast_chains(statement):
            bound = bindings.get(chain[0])
            if bound is not None:
                used.add(chain[0])
                refs.append((bound[0], bound[1] + chain[1:]))
    refs += [bound for name, bound in bindings.items() if name not in used]
    return refs


def _local_names(
    node: ast.FunctionDef | ast.AsyncFunctionDef, index: _SourceIndex
) -> tuple[frozenset[str], bool]:
    """``(names renamed before hashing, whether the body imports anything)``.

    Renamed: the function's local variables, so renaming one is no change: names assigned in
    the body (comprehension variables, ``except ... as``, ``with ... as``, walrus and match
    captures, cells inner functions close over). Kept: parameters of the function and of
    anything nested in it (they are its interface: keyword callers, memodag's input names),
    names of nested defs and classes and of imports (visible as ``__name__``), globals, class
    attributes, and any name that is one of those in some scope of the body. From the file's
    symbol tables (``symtable``), which say exactly which name is local where. Nothing is
    renamed in a function that can see its local names as data (``locals()``, ``eval``, a
    frame's ``f_locals``, ...): there a rename can change what it computes."""
    table = index.scope(node)
    if table is None or _reads_local_names(node):
        return frozenset(), True
    candidates: set[str] = set()
    kept: set[str] = set()
    has_imports = False
    tables = [table]
    while tables:
        scope = tables.pop()
        tables.extend(scope.get_children())
        if scope.get_type() != "function":  # class bodies: names are attributes
            kept.update(scope.get_identifiers())
            continue
        for symbol in scope.get_symbols():
            name = symbol.get_name()
            if symbol.is_imported():
                has_imports = True
                kept.add(name)
            elif symbol.is_parameter() or symbol.is_global() or symbol.is_namespace():
                kept.add(name)
            elif symbol.is_free() or symbol.is_local():
                # free in the function itself: a cell of the factory that made it, whose value
                # counts under the placeholder's name (``function_digest``'s cells)
                candidates.add(name)
                candidates.add(name)
    return frozenset(candidates - kept), has_imports


# Names and attributes through which code sees its local variables' names: ``locals()``,
# ``vars()``/``dir()`` without arguments, ``eval``/``exec`` of text naming them, and frames.
_LOCALS_NAMES = frozenset(
    {"locals", "vars", "dir", "eval", "exec", "currentframe", "_getframe", "stack", "trace"}
)
_LOCALS_ATTRIBUTES = frozenset(
    {"_getframe", "currentframe", "f_locals", "f_back", "tb_frame"}
    | {"getouterframes", "getinnerframes", "getargvalues"}
)
# ``inspect.stack()`` and ``inspect.trace()``, not ``np.stack`` or ``df.stack()``
_INSPECT_ATTRIBUTES = frozenset({"stack", "trace"})


def _reads_local_names(node: ast.AST) -> bool:
    """Whether code in ``node`` may read its local variables by name (``_LOCALS_NAMES``)."""
    for item in ast.walk(node):
        if isinstance(item, ast.Name) and item.id in _LOCALS_NAMES:
            return True
        if isinstance(item, ast.Attribute) and (
            item.attr in _LOCALS_ATTRIBUTES
            or (
                item.attr in _INSPECT_ATTRIBUTES
                and isinstance(item.value, ast.Name)
                and item.value.id == "inspect"
            )
        ):
            return True
    return False


_IDENTIFIER_FIELDS = {
    ast.Name: "id",
    ast.ExceptHandler: "name",
    ast.MatchAs: "name",
    ast.MatchStar: "name",
    ast.MatchMapping: "rest",
}


def _dump_function(
    node: ast.FunctionDef | ast.AsyncFunctionDef, renamable: frozenset[str], drop_decorators: bool
) -> tuple[str, dict[str, str]]:
    """A def as ``_dump`` writes it, with the names in ``renamable`` replaced in its body by
    ``#0``, ``#1``, ... in order of first appearance (no identifier starts with ``#``), and
    those replacements."""
    names: dict[str, str] = {}

    def name(value: str) -> str:
        if value not in renamable:
            return value
        return names.setdefault(value, f"#{len(names)}")

    def dump(item: Any) -> str:
        if isinstance(item, ast.AST):
            kind = type(item)
            renamed = _IDENTIFIER_FIELDS.get(kind)
            parts = []
            for field in item._fields:
                value = getattr(item, field, None)
                if field == renamed and isinstance(value, str):
                    parts.append(repr(name(value)))
                elif kind is ast.Nonlocal and field == "names":
                    parts.append(repr([name(v) for v in value or ()]))
                else:
                    parts.append(dump(value))
            return f"{kind.__name__}({', '.join(parts)})"
        if isinstance(item, list):
            return "[" + ", ".join(map(dump, item)) + "]"
        return repr(item)

    def plain(item: Any) -> str:
        return _dump(item) if isinstance(item, ast.AST) else repr(item)

    parts = []
    for field in node._fields:
        value: Any = getattr(node, field, None)
        if field == "body" and renamable:
            parts.append(dump(value))
        elif field == "decorator_list" and drop_decorators:
            parts.append("[]")
        elif isinstance(value, list):
            parts.append("[" + ", ".join(map(plain, value)) + "]")
        else:
            parts.append(plain(value))
    return f"{type(node).__name__}({', '.join(parts)})", names


def _dump_class(node: ast.ClassDef, index: _SourceIndex) -> str:
    """A class statement as ``_dump`` writes it, its methods (and nested classes') with their
    local variables renamed as ``_dump_function`` does for a def."""
    parts = []
    for field in node._fields:
        value: Any = getattr(node, field, None)
        if field == "body":
            items = []
            for statement in value:
                if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                    items.append(
                        _dump_function(statement, _local_names(statement, index)[0], False)[0]
                    )
                elif isinstance(statement, ast.ClassDef):
                    items.append(_dump_class(statement, index))
                else:
                    items.append(_dump(statement))
            parts.append("[" + ", ".join(items) + "]")
        elif isinstance(value, list):
            parts.append(
                "["
                + ", ".join(_dump(v) if isinstance(v, ast.AST) else repr(v) for v in value)
                + "]"
            )
        else:
            parts.append(_dump(value) if isinstance(value, ast.AST) else repr(value))
    return f"ClassDef({', '.join(parts)})"


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


def code_chains(code: types.CodeType) -> tuple[tuple[str, ...], ...]:
    """Global names (with module attribute chains) loaded by ``code`` and its nested code."""
    key = (code, code.co_filename)
    hit = _CODE_CHAINS.get(key)
    if hit is None:
        scan = _scan_bytecode if _FAST_SCAN else _scan_instructions
        chains = list(scan(code))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                chains += code_chains(const)
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
    return repr(value) if type(value) in SCALARS else type_name(type(value))


def member_functions(member: Any) -> Iterator[Any]:
    """The callables a class attribute holds: a method, or those under static/class methods
    and properties (which may be any callable, e.g. an ``lru_cache`` wrapper)."""
    if isinstance(member, functools.singledispatchmethod):
        yield member.dispatcher  # its registry is followed like a singledispatch function's
        return
    if isinstance(member, staticmethod | classmethod):
        member = member.__func__
    if isinstance(member, property):
        yield from (f for f in (member.fget, member.fset, member.fdel) if f is not None)
    elif isinstance(member, functools.cached_property):
        yield member.func
    elif (
        isinstance(member, types.FunctionType) or safe_getattr(member, "__wrapped__") is not MISSING
    ):
        yield member


def _member_code(member: Any) -> list[types.CodeType]:
    return [f.__code__ for f in member_functions(member) if isinstance(f, types.FunctionType)]
