"""``@graph`` bodies: calling ops records nodes and the edges between them.

A body runs once, when the graph is defined, against handles rather than values; every wiring
mistake is raised here, naming the node and the input. The result is a ``GraphDefinition``:
nodes in call order (which is a topological order) and, per node input, where its value comes from.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from memodag.definitions.io import DEFAULT_OUTPUT, check_name
from memodag.definitions.op import OpDefinition
from memodag.errors import DefinitionError

if TYPE_CHECKING:
    from memodag.definitions.job import JobDefinition

_BUILDER: contextvars.ContextVar[CompositionBuilder | None] = contextvars.ContextVar(
    "memodag_builder", default=None
)


def current_builder() -> CompositionBuilder | None:
    return _BUILDER.get()


#: node tag prefix: ``<prefix><input>`` names the table of a ``RawSql`` output the input gets
PICK_TABLE_TAG = "memodag/table_of/"


# ---- where a node input's value comes from --------------------------------------------------


@dataclass(frozen=True)
class FromNode:
    """The output ``output`` of sibling node ``node``; ``mode`` is ``"value"``, ``"piece"`` (one
    piece of a dynamic output, inside ``.map``) or ``"collect"`` (all pieces, as a list)."""

    node: str
    output: str
    mode: str = "value"


@dataclass(frozen=True)
class FromGraphInput:
    """The enclosing graph's input ``name``."""

    name: str


@dataclass(frozen=True)
class FromList:
    """A fan-in: the input gets a list of these members' values, in order (``op([a(), b()])``)."""

    members: tuple[FromNode | FromGraphInput, ...]


InputSource = FromNode | FromGraphInput | FromList


@dataclass(frozen=True)
class NodeInvocation:
    """One node of a graph: a definition placed under a name, with its inputs wired.

    ``mapped_over`` lists the dynamic outputs (node, output), outermost first, that this node is
    cloned over: one clone per piece (empty for ordinary nodes).
    """

    name: str
    definition: Any  # OpDefinition | GraphDefinition
    inputs: Mapping[str, InputSource]
    tags: Mapping[str, str] = field(default_factory=dict)
    mapped_over: tuple[tuple[str, str], ...] = ()


Scope = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class GraphOutputShape:
    """What a graph output is to the graph's caller, for outputs that are not one plain value:
    ``dynamic`` (a ``DynamicOut`` to ``.map``/``.collect``) and/or ``mapped_over`` (one value per
    piece of those fan-outs, named by op paths relative to the graph, outermost first)."""

    mapped_over: Scope = ()
    dynamic: bool = False


@dataclass(frozen=True, eq=False)
class GraphDefinition:
    """A set of nodes wired together. Graphs nest as nodes of other graphs.

    ``output_mappings`` maps each graph output name to the (node, output) that provides it; the
    node may be a dotted path into a nested graph (``inner.op``), see ``resolve_output``.
    ``output_shapes`` holds the outputs that are dynamic or mapped (absent: one plain value).
    """

    name: str
    nodes: Mapping[str, NodeInvocation]
    input_names: tuple[str, ...] = ()
    output_mappings: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    description: str | None = None
    output_shapes: Mapping[str, GraphOutputShape] = field(default_factory=dict)

    def resolve_output(self, node: str, output: str, prefix: str = "") -> tuple[str, str]:
        """The op node path (under ``prefix``) and op output behind ``node``'s ``output``, where
        ``node`` is a node of this graph or a dotted path into its nested graphs."""
        head, _, rest = node.partition(".")
        invocation = self.nodes[head]
        if isinstance(invocation.definition, GraphDefinition):
            inner: GraphDefinition = invocation.definition
            if rest:
                return inner.resolve_output(rest, output, f"{prefix}{head}.")
            inner_node, inner_output = inner.output_mappings[output]
            return inner.resolve_output(inner_node, inner_output, f"{prefix}{head}.")
        return f"{prefix}{head}", output

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.output_mappings)

    @property
    def ins(self) -> Mapping[str, Any]:
        return {n: None for n in self.input_names}

    def alias(self, name: str) -> Any:
        from memodag.definitions.op import PendingNode

        return PendingNode(self, check_name(name, "alias"), {})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = current_builder()
        if builder is None:
            raise DefinitionError(
                f"graph '{self.name}' can only be called inside a @job or @graph body; run it with .to_job().execute_in_process()"
            )
        return builder.invoke(self, None, {}, args, kwargs)

    def to_job(self, name: str | None = None, **job_kwargs: Any) -> JobDefinition:
        """Make a job of this graph (``resource_defs``, ``config``, ``tags``, ... as ``@job``)."""
        from memodag.definitions.job import JobDefinition

        return JobDefinition.from_graph(self, name=name, **job_kwargs)

    def iter_ops(self, prefix: str = "") -> Iterator[tuple[str, OpDefinition]]:
        """Every op below this graph with its dotted node path."""
        for node in self.nodes.values():
            path = f"{prefix}{node.name}"
            if isinstance(node.definition, GraphDefinition):
                yield from node.definition.iter_ops(path + ".")
            else:
                yield path, node.definition

    def __repr__(self) -> str:
        return f"<graph {self.name}>"


# ---- handles: what op calls return inside a body ----------------------------------------------


@dataclass(frozen=True)
class OutputHandle:
    """A node's output inside a body. Pass it to another op to wire an edge."""

    builder: CompositionBuilder
    node: str
    output: str
    mapped_over: tuple[tuple[str, str], ...] = ()
    #: ``raw["tbl"]``: one table of a lazy task's ``RawSql`` output
    table: str | None = None

    def __repr__(self) -> str:
        picked = f"[{self.table!r}]" if self.table is not None else ""
        return f"<output {self.node}.{self.output}{picked}>"

    def __getitem__(self, name: str) -> OutputHandle:
        """One table of a lazy task's ``RawSql`` output, by the name the script created it
        under: the consumer gets that table alone (docs/tables.md, "RawSql")."""
        from memodag.definitions.tables import LAZY_TAG, table_identifier

        node = self.builder.nodes.get(self.node)
        tags = getattr(getattr(node, "definition", None), "tags", {}) or {}
        if tags.get(LAZY_TAG) != "true" or self.table is not None:
            raise DefinitionError(
                f"'{self.node}.{self.output}'[{name!r}]: only the output of a lazy task "
                "returning RawSql has tables to pick by name (@materialize(lazy=True))"
            )
        return replace(self, table=table_identifier(name, "RawSql table name"))

    def map(self, fn: Callable[[Any], Any]) -> Any:
        """For a mapped output (what a ``.map`` returned): map again, per piece."""
        if not self.mapped_over:
            raise DefinitionError(
                f"'{self.node}.{self.output}' is not a dynamic output; .map() is for DynamicOut outputs"
            )
        _check_mappable(self, fn)
        with self.builder.mapping(self.mapped_over):
            return _mapped_result(self, fn, fn(self))

    def collect(self) -> Any:
        if not self.mapped_over:
            raise DefinitionError(
                f"'{self.node}.{self.output}' is not mapped over a dynamic output; nothing to .collect()"
            )
        return _CollectHandle(self)


@dataclass(frozen=True)
class DynamicHandle:
    """A ``DynamicOut`` output inside a body: use ``.map(fn)`` or ``.collect()``, not the value itself."""

    builder: CompositionBuilder
    node: str
    output: str
    mapped_over: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"<dynamic output {self.node}.{self.output}>"

    def map(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn`` once now on a piece handle; every op it calls on it is cloned per piece."""
        _check_mappable(self, fn)
        piece = _PieceHandle(self)
        with self.builder.mapping((*self.mapped_over, (self.node, self.output))):
            return _mapped_result(self, fn, fn(piece))

    def collect(self) -> Any:
        """All pieces as one list input, in emission order."""
        return _CollectHandle(self)


class _MappedTuple(tuple):
    """The outputs a ``.map`` function returned as a tuple: unpack it; ``.collect()`` on the
    whole tuple names what to do instead of failing as a bare AttributeError."""

    _where: str

    def __new__(cls, handles: tuple[Any, ...], where: str = ".map(...)") -> _MappedTuple:
        obj = super().__new__(cls, handles)
        obj._where = where
        return obj

    def __getattr__(self, name: str) -> Any:
        if name in ("map", "collect"):
            raise DefinitionError(
                f"{self._where} returned a tuple of {len(self)} outputs ({_describe(self)}); "
                f"unpack it (`first, second = fan_out.map(fn)`) and .{name}(...) each one"
            )
        raise AttributeError(name)


def _container_name(value: Any) -> str:
    return "tuple" if isinstance(value, tuple) else type(value).__name__


def _map_where(handle: OutputHandle | DynamicHandle) -> str:
    return f"{handle.builder.graph_name}: '{handle.node}.{handle.output}'.map(...)"


def _check_mappable(handle: OutputHandle | DynamicHandle, fn: Any) -> None:
    if not callable(fn):
        raise DefinitionError(
            f"{_map_where(handle)}: takes a function of one piece (an op, a graph or a lambda "
            f"calling them); got {fn!r}"
        )


def _mapped_result(handle: OutputHandle | DynamicHandle, fn: Any, result: Any) -> Any:
    """What ``fn`` returned, if it is op outputs (or nothing): anything else would only fail
    later, far from the ``.map``, as an AttributeError on ``.collect()``."""
    if result is None or _is_handle(result):
        return result
    items = result.values() if isinstance(result, Mapping) else result
    if isinstance(result, tuple | list | Mapping) and items and all(_is_handle(v) for v in items):
        if type(result) is tuple:
            return _MappedTuple(result, _map_where(handle))
        return result
    shown = _describe_returned(result)
    if isinstance(result, tuple | list | Mapping):
        shown = f"a {type(result).__name__} of {_describe(result).removeprefix('op outputs ')}"
    name = getattr(fn, "__name__", repr(fn))
    raise DefinitionError(
        f"{_map_where(handle)}: the function {name} returned {shown}, not op outputs. It is "
        "called once, when the job is defined, with a handle to one piece: call ops (or graphs) "
        "on it and return what they return, e.g. `.map(lambda piece: double(piece))`, a tuple "
        "of such outputs, or nothing"
    )


@dataclass(frozen=True)
class _PieceHandle:
    source: DynamicHandle


@dataclass(frozen=True)
class _CollectHandle:
    source: OutputHandle | DynamicHandle


@dataclass(frozen=True)
class GraphInputHandle:
    """The enclosing graph's input inside its body."""

    builder: CompositionBuilder
    name: str

    def __repr__(self) -> str:
        return f"<graph input {self.name}>"


class MultipleOutputs(tuple):
    """The outputs of a node with several outputs; unpack it or use ``.name``."""

    _node: str
    _names: tuple[str, ...]

    def __new__(
        cls, node: str, names: tuple[str, ...], handles: tuple[Any, ...]
    ) -> MultipleOutputs:
        obj = super().__new__(cls, handles)
        obj._node = node
        obj._names = names
        return obj

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return self.__getattr__(key)
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[self._names.index(name)]
        except ValueError:
            if name in ("map", "collect"):
                # a handle of one output was meant: say which ones there are
                raise DefinitionError(
                    f"node '{self._node}' has several outputs {list(self._names)}; pick one "
                    f"to .{name}(...): `{self._node}(...).{self._names[0]}.{name}(...)`"
                ) from None
            raise AttributeError(
                f"node '{self._node}' has no output '{name}' (outputs: {list(self._names)})"
            ) from None


def _describe(values: Any) -> str:
    """``outputs 'a.result', 'b.result'``-style text for a container of handles, for messages."""
    items = values.values() if isinstance(values, Mapping) else values
    names = []
    for v in items:
        if isinstance(v, OutputHandle | DynamicHandle):
            names.append(f"'{v.node}.{v.output}'")
        elif isinstance(v, _PieceHandle):
            names.append(f"a piece of '{v.source.node}.{v.source.output}'")
        elif isinstance(v, _CollectHandle):
            names.append(f"'{v.source.node}.{v.source.output}' collected")
        elif isinstance(v, GraphInputHandle):
            names.append(f"graph input '{v.name}'")
        elif isinstance(v, MultipleOutputs):
            names.append(f"all outputs of '{v._node}'")
        else:
            names.append(repr(v))
    return "op outputs " + ", ".join(names)


def _is_handle(value: Any) -> bool:
    return isinstance(
        value,
        OutputHandle
        | DynamicHandle
        | _PieceHandle
        | _CollectHandle
        | GraphInputHandle
        | MultipleOutputs,
    )


# ---- the builder ----------------------------------------------------------------------------------


class CompositionBuilder:
    """Records nodes while a graph body runs. One per body; not thread-safe (bodies run once)."""

    def __init__(self, graph_name: str) -> None:
        self.graph_name = graph_name
        self.nodes: dict[str, NodeInvocation] = {}
        self._outputs_of: dict[str, tuple[str, ...]] = {}
        # the fan-outs whose .map(fn) bodies are running now: mapped outputs are usable only there
        self._scope: tuple[tuple[str, str], ...] = ()
        #: the stage a ``with Stage(...)`` block opened (definitions/tables.py), or None
        self.stage: str | None = None
        #: the scopes of the .map bodies this one runs inside (for messages only)
        self._outer_scopes: list[tuple[tuple[str, str], ...]] = []

    @contextlib.contextmanager
    def mapping(self, scope: tuple[tuple[str, str], ...]) -> Iterator[None]:
        outer = self._scope
        self._outer_scopes.append(outer)
        self._scope = scope
        try:
            yield
        finally:
            self._scope = outer
            self._outer_scopes.pop()

    def _out_of_scope(self, where: str, what: str, scope: Scope) -> DefinitionError:
        """The error for a per-piece value used where its fan-out's pieces are not in reach."""
        fan_out = ".".join(scope[-1])
        inside = any(outer[: len(scope)] == scope for outer in self._outer_scopes)
        if inside and self._scope:
            # written inside the right .map, but within a nested .map over a fan-out that does
            # not depend on the piece: its pieces are unrelated to this fan-out's
            other_node, other_output = self._scope[-1]
            other = f"{other_node}.{other_output}"
            return DefinitionError(
                f"{where}: got {what} inside a .map over '{other}', a fan-out unrelated to "
                f"'{fan_out}': '{other_node}' takes no input from a piece of '{fan_out}', so "
                f"it runs once, not once per piece, and its pieces cannot be paired with the "
                f"pieces of '{fan_out}'. Give '{other_node}' the piece as an input so it fans out once "
                f"per piece (`{other_node}(piece).map(...)` inside the .map over '{fan_out}'), "
                "or collect one of the two fan-outs first and pass the list in"
            )
        return DefinitionError(
            f"{where}: got {what}, which has one value per piece of '{fan_out}'; use it inside "
            f"that .map(...) body, or gather it with .collect()"
        )

    def invoke(
        self,
        node_def: Any,
        alias: str | None,
        tags: Mapping[str, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        name = self._node_name(node_def, alias)
        input_names = tuple(node_def.ins)
        if len(args) > len(input_names):
            raise DefinitionError(
                f"{self._where(name)}: takes {len(input_names)} input(s) {list(input_names)}, got {len(args)} positional arguments"
            )
        given: dict[str, Any] = dict(zip(input_names, args, strict=False))
        for key, value in kwargs.items():
            if key not in input_names:
                raise DefinitionError(
                    f"{self._where(name)}: has no input '{key}' (inputs: {list(input_names)})"
                )
            if key in given:
                raise DefinitionError(f"{self._where(name)}: input '{key}' is given twice")
            given[key] = value
        sources: dict[str, InputSource] = {}
        mapped: tuple[tuple[str, str], ...] = ()
        collects: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        for input_name in input_names:
            if input_name not in given:
                spec = node_def.ins[input_name]
                if spec is not None and spec.has_default:
                    continue
                raise DefinitionError(
                    f"{self._where(name)}: input '{input_name}' is not connected; pass another op's output to it or give it a default (In(default_value=...))"
                )
            source, scope = self._source(name, input_name, given[input_name])
            sources[input_name] = source
            if isinstance(source, FromNode) and source.mode == "collect":
                collects.append((input_name, scope))
            mapped = self._merge_scopes(self._where(name), mapped, scope)
        for input_name, scope in collects:
            if scope != mapped:
                self._refuse_collect_in_map(name, input_name, sources[input_name], mapped)
        node_tags = dict(tags)
        for input_name, value in given.items():
            if isinstance(value, OutputHandle) and value.table is not None:
                node_tags[PICK_TABLE_TAG + input_name] = value.table
        if self.stage is not None:
            node_tags["memodag/stage"] = self.stage  # definitions.tables.STAGE_TAG
        self.nodes[name] = NodeInvocation(name, node_def, sources, node_tags, mapped)
        return self._handles(name, node_def, mapped)

    @staticmethod
    def _merge_scopes(where: str, mapped: Scope, scope: Scope) -> Scope:
        """The deeper of two fan-out scopes, when one is inside the other (a node is cloned over
        the innermost fan-out of its inputs)."""
        if len(scope) > len(mapped):
            mapped, scope = scope, mapped
        if mapped[: len(scope)] != scope:
            names = [".".join(s[-1]) for s in (mapped, scope)]
            raise DefinitionError(
                f"{where}: inputs come from two unrelated fan-outs '{names[1]}' and '{names[0]}'; "
                "collect one first"
            )
        return mapped

    def _refuse_collect_in_map(
        self, node: str, input_name: str, source: Any, mapped: tuple[tuple[str, str], ...]
    ) -> None:
        """A clone that gathers a whole fan-out would wait on pieces its own fan-out makes (or on
        an unrelated fan-out); as in Dagster, it is refused rather than left never to run."""
        fan_out = ".".join(mapped[-1])
        raise DefinitionError(
            f"{self._where(node)} input '{input_name}': collects '{source.node}.{source.output}' "
            f"inside the .map over '{fan_out}', so each clone would need every piece; collecting "
            f"inside a .map is only for a fan-out started inside that same .map. Collect it in an "
            f"op outside the .map and pass that op's output in, e.g. "
            f"`everything = gather(fan_out.collect())` then "
            f"`fan_out.map(lambda piece: {node}(piece, everything))`"
        )

    def _where(self, node: str) -> str:
        return f"{self.graph_name}: node '{node}'"

    def _node_name(self, node_def: Any, alias: str | None) -> str:
        base = node_def.name
        if alias is not None:
            if alias in self.nodes:
                raise DefinitionError(
                    f"{self.graph_name}: two nodes are named '{alias}'; give each alias a unique name"
                )
            return alias
        if base not in self.nodes:
            return base
        taken = self.nodes[base]
        if _source_of(taken.definition) is not _source_of(node_def):
            # Renaming would hide that two different definitions share a name: config, step keys
            # and messages would then point at 'step_2' without the user ever writing it.
            raise DefinitionError(
                f"{self.graph_name}: two different definitions are named '{base}': "
                f"{describe_definition(taken.definition)} (node '{base}') and "
                f"{describe_definition(node_def)}. Give one of them another name "
                f"(@op(name=...)), or call it under an alias of its own: "
                f"{_python_name(node_def)}.alias('{_python_name(node_def)}')(...)"
            )
        i = 2
        while f"{base}_{i}" in self.nodes:
            i += 1
        return f"{base}_{i}"

    def _source(
        self, node: str, input_name: str, value: Any
    ) -> tuple[InputSource, tuple[tuple[str, str], ...]]:
        where = f"{self._where(node)} input '{input_name}'"
        if isinstance(value, OutputHandle):
            self._check_same_builder(value.builder, where)
            if value.mapped_over and self._scope[: len(value.mapped_over)] != value.mapped_over:
                fan_out = ".".join(value.mapped_over[-1])
                if any(
                    o[: len(value.mapped_over)] == value.mapped_over for o in self._outer_scopes
                ):
                    raise self._out_of_scope(
                        where, f"'{value.node}.{value.output}'", value.mapped_over
                    )
                raise DefinitionError(
                    f"{where}: got '{value.node}.{value.output}', which has one value per piece of "
                    f"'{fan_out}'; gather it with .collect() or keep mapping with .map(...)"
                )
            return FromNode(value.node, value.output), value.mapped_over
        if isinstance(value, _PieceHandle):
            src = value.source
            self._check_same_builder(src.builder, where)
            scope = (*src.mapped_over, (src.node, src.output))
            self._check_in_scope(scope, f"a piece of '{src.node}.{src.output}'", where)
            return FromNode(src.node, src.output, "piece"), scope
        if isinstance(value, _CollectHandle):
            collected: OutputHandle | DynamicHandle = value.source
            self._check_same_builder(collected.builder, where)
            scope = (
                collected.mapped_over
                if isinstance(collected, OutputHandle)
                else (*collected.mapped_over, (collected.node, collected.output))
            )
            self._check_in_scope(
                scope[:-1], f"'{collected.node}.{collected.output}' collected", where
            )
            return FromNode(collected.node, collected.output, "collect"), scope[:-1]
        if isinstance(value, GraphInputHandle):
            self._check_same_builder(value.builder, where)
            return FromGraphInput(value.name), ()
        if isinstance(value, DynamicHandle):
            raise DefinitionError(
                f"{where}: got dynamic output '{value.node}.{value.output}' directly, which has "
                "one value per piece; map over its pieces with .map(lambda piece: op(piece)) or "
                "gather them with .collect()"
            )
        if isinstance(value, MultipleOutputs):
            raise DefinitionError(
                f"{where}: got all outputs of node '{value._node}', which has several outputs "
                f"{list(value._names)}; pick one: `{', '.join(value._names)} = {value._node}()`"
            )
        if isinstance(value, list) and value and all(_is_handle(v) for v in value):
            return self._fan_in(node, input_name, value)
        if isinstance(value, tuple | list | set | Mapping) and any(
            _is_handle(v) for v in (value.values() if isinstance(value, Mapping) else value)
        ):
            raise DefinitionError(
                f"{where}: got a {_container_name(value)} of {_describe(value)}; an input takes one "
                "output, or a list of outputs (a fan-in: the op gets their values as a list). "
                "Pass [out1, out2, ...], or give the op one input per output"
            )
        if isinstance(value, (OpDefinition, GraphDefinition)):
            kind = "op" if isinstance(value, OpDefinition) else "graph"
            raise DefinitionError(
                f"{where}: got the {kind} '{value.name}' itself, not its output; call it: "
                f"{value.name}()"
            )
        raise DefinitionError(
            f"{where}: got a plain value {value!r}; inside a job or graph body, inputs come from other "
            "ops' outputs. Pass constants through op config, a resource, or In(default_value=...)"
        )

    def _fan_in(self, node: str, input_name: str, members: list[Any]) -> tuple[FromList, Scope]:
        """A list of outputs: the input gets their values in order. A member not produced (its
        optional output not yielded) is left out, as in Dagster."""
        sources: list[FromNode | FromGraphInput] = []
        scope: Scope = ()
        for i, member in enumerate(members):
            source, member_scope = self._source(node, f"{input_name}[{i}]", member)
            if isinstance(source, FromNode) and source.mode == "collect":
                raise DefinitionError(
                    f"{self._where(node)} input '{input_name}[{i}]': got {_describe([member])[11:]}, "
                    "a whole list; each member of a fan-in list is one output. Pass the collected "
                    "list through an op of its own, or give the op a separate input for it"
                )
            assert isinstance(source, FromNode | FromGraphInput)
            sources.append(source)
            scope = self._merge_scopes(
                f"{self._where(node)} input '{input_name}'", scope, member_scope
            )
        return FromList(tuple(sources)), scope

    def _check_in_scope(self, scope: tuple[tuple[str, str], ...], what: str, where: str) -> None:
        """A value with one copy per piece may only be used inside the ``.map`` body of its fan-out."""
        if self._scope[: len(scope)] != scope:
            raise self._out_of_scope(where, what, scope)

    def _check_same_builder(self, other: CompositionBuilder, where: str) -> None:
        if other is not self:
            raise DefinitionError(
                f"{where}: this handle comes from another graph body; pass it in as a graph input instead"
            )

    def _handles(self, name: str, node_def: Any, mapped: tuple[tuple[str, str], ...]) -> Any:
        names = node_def.output_names
        if isinstance(node_def, GraphDefinition):
            handles = tuple(self._graph_output_handle(name, node_def, n, mapped) for n in names)
        else:
            handles = tuple(
                (DynamicHandle if node_def.outs[n].is_dynamic else OutputHandle)(
                    self, name, n, mapped
                )
                for n in names
            )
        if not handles:
            return None
        if len(handles) == 1:
            return handles[0]
        return MultipleOutputs(name, names, handles)

    def _graph_output_handle(
        self, name: str, graph_def: GraphDefinition, output: str, mapped: Scope
    ) -> Any:
        """What a graph node's output is in the caller: a plain, mapped or dynamic handle. Fan-outs
        inside the graph are named by their op path below the node (``node.op``), so one fan-out
        has one name in the caller however it is reached."""
        shape = graph_def.output_shapes.get(output)
        if shape is None:
            return OutputHandle(self, name, output, mapped)
        scope = (*mapped, *((f"{name}.{n}", o) for n, o in shape.mapped_over))
        if shape.dynamic:
            inner_node, inner_output = graph_def.output_mappings[output]
            return DynamicHandle(self, f"{name}.{inner_node}", inner_output, scope)
        return OutputHandle(self, name, output, scope)


def _source_of(node_def: Any) -> Any:
    """What makes two definitions "the same" for naming: an op's function (so ``op`` and
    ``op.with_retry_policy(...)`` count as one), a graph's own object."""
    if isinstance(node_def, OpDefinition):
        return inspect.unwrap(node_def.compute_fn)
    return node_def


def _python_name(node_def: Any) -> str:
    """The name the user most likely wrote in the body: the op's function name."""
    if isinstance(node_def, OpDefinition):
        return str(getattr(inspect.unwrap(node_def.compute_fn), "__name__", node_def.name))
    return str(node_def.name)


def describe_definition(node_def: Any) -> str:
    """``op 'step' (function clean at pipe/orders.py:12)`` or ``graph 'g'``, for messages."""
    if not isinstance(node_def, OpDefinition):
        return f"graph '{node_def.name}'"
    fn = inspect.unwrap(node_def.compute_fn)
    code = getattr(fn, "__code__", None)
    label = getattr(fn, "__qualname__", None) or type(fn).__name__
    if code is None:
        return f"op '{node_def.name}' (function {label})"
    return f"op '{node_def.name}' (function {label} at {code.co_filename}:{code.co_firstlineno})"


def build_graph(
    fn: Callable[..., Any], name: str | None = None, description: str | None = None
) -> GraphDefinition:
    """Run a composition body once against handles and return the graph it describes."""
    graph_name = check_name(name or fn.__name__, "graph")
    builder = CompositionBuilder(graph_name)
    params = list(inspect.signature(fn).parameters)
    token = _BUILDER.set(builder)
    try:
        returned = fn(*[GraphInputHandle(builder, p) for p in params])
    finally:
        _BUILDER.reset(token)
    handles = _returned_handles(graph_name, returned)
    return GraphDefinition(
        graph_name,
        dict(builder.nodes),
        tuple(params),
        {name: (h.node, h.output) for name, h in handles.items()},
        description or inspect.getdoc(fn),
        {
            name: GraphOutputShape(h.mapped_over, isinstance(h, DynamicHandle))
            for name, h in handles.items()
            if h.mapped_over or isinstance(h, DynamicHandle)
        },
    )


def _returned_handles(graph_name: str, returned: Any) -> dict[str, OutputHandle | DynamicHandle]:
    """The graph's outputs by name, from what its body returned. A dynamic output stays dynamic
    and a mapped output stays mapped: the caller ``.map``s or ``.collect``s them."""
    if returned is None:
        return {}
    if isinstance(returned, OutputHandle | DynamicHandle):
        return {DEFAULT_OUTPUT: returned}
    if isinstance(returned, MultipleOutputs):
        return dict(zip(returned._names, returned, strict=True))
    if isinstance(returned, Mapping):
        result: dict[str, OutputHandle | DynamicHandle] = {}
        for key, handle in returned.items():
            if not isinstance(handle, OutputHandle | DynamicHandle):
                raise DefinitionError(
                    f"graph '{graph_name}': returned '{key}' is {_describe_returned(handle)}, not "
                    f"an op output{_RETURN_HINT}"
                )
            result[check_name(key, "graph output")] = handle
        return result
    raise DefinitionError(
        f"graph '{graph_name}' must return an op output, a dict of them, or nothing; got "
        f"{_describe_returned(returned)}{_RETURN_HINT}"
    )


_RETURN_HINT = (
    ". A collected list, a piece or a graph input is returned through an op "
    "(`return as_list(x.collect())`)"
)


def _describe_returned(value: Any) -> str:
    """A returned value for a message: handles by the outputs they name, never their repr."""
    if _is_handle(value):
        return _describe([value]).removeprefix("op outputs ")
    return repr(value)


def graph(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None
) -> Any:
    """Declare a graph: a body that calls ops (and other graphs) and returns their outputs."""

    def decorate(func: Callable[..., Any]) -> GraphDefinition:
        return build_graph(func, name, description)

    return decorate(fn) if fn is not None else decorate
