"""Job + run config -> ``ExecutionPlan``: flattened op nodes, steps, and the edges between them.

Pure: builds data, runs no user code and touches no storage. Nested graphs are flattened into op
nodes with dotted paths (``outer.inner``), which are also the step keys of unmapped nodes. Nodes
mapped over a dynamic output are kept as templates; ``dynamic.expand_mapped`` clones them into a
run's own steps once the pieces are known (docs/dynamic.md): a plan never changes once built.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memodag.definitions.composition import FromGraphInput, FromList, FromNode, GraphDefinition
from memodag.definitions.config import NO_DEFAULT
from memodag.definitions.op import OpDefinition
from memodag.errors import DefinitionError, ExecutionError
from memodag.plan.run_config import ResolvedRunConfig

if TYPE_CHECKING:
    from memodag.definitions.job import JobDefinition


@dataclass(frozen=True, slots=True)
class NodeSource:
    """Where a flattened node input comes from: op node ``node`` output ``output`` with ``mode``
    ``value`` | ``piece`` | ``collect`` (see ``composition.FromNode``)."""

    node: str
    output: str
    mode: str = "value"


@dataclass(frozen=True, slots=True)
class DefaultSource:
    value: Any


@dataclass(frozen=True, slots=True)
class ListSource:
    """A fan-in input: the values of ``members`` (each ``value`` or ``piece`` mode), as a list in
    order. Its step input is a ``collect`` one: a member not produced is left out."""

    members: tuple[NodeSource, ...]


Source = NodeSource | DefaultSource | ListSource


@dataclass(frozen=True)
class OpNode:
    """A flattened op node: the template of its step(s)."""

    path: str
    op_def: OpDefinition
    inputs: Mapping[str, Source]
    tags: Mapping[str, str]
    mapped_over: tuple[tuple[str, str], ...] = ()

    @property
    def is_mapped(self) -> bool:
        return bool(self.mapped_over)


@dataclass(frozen=True, slots=True)
class StepOutputHandle:
    """Names one stored output: step key + output name (+ piece key for a dynamic output piece)."""

    step_key: str
    output_name: str
    mapping_key: str | None = None

    def __str__(self) -> str:
        base = f"{self.step_key}.{self.output_name}"
        return f"{base}[{self.mapping_key}]" if self.mapping_key is not None else base


@dataclass(frozen=True, slots=True)
class StepInput:
    """One input of a step: ``upstream`` handles (one for a value, many for a collect) or a default."""

    name: str
    upstream: tuple[StepOutputHandle, ...] = ()
    collect: bool = False
    default: Any = NO_DEFAULT


@dataclass(slots=True)
class ExecutionStep:
    """One unit of work: an op node (or one clone of a mapped node) with its inputs resolved.

    ``pieces`` is set, in a run's own steps only, once a step with a dynamic output has been
    expanded: its mapping keys per dynamic output (a collector of several fan-outs is made when
    the last of them is known). ``gathered_from``: a collector's fan-out source step keys.
    """

    key: str
    node: OpNode
    inputs: tuple[StepInput, ...]
    config: Any
    mapping_keys: tuple[str, ...] = ()
    pieces: Mapping[str, tuple[str, ...]] | None = None
    gathered_from: tuple[str, ...] = ()

    @property
    def op_def(self) -> OpDefinition:
        return self.node.op_def

    @property
    def upstream_step_keys(self) -> set[str]:
        return {h.step_key for i in self.inputs for h in i.upstream}


@dataclass
class ExecutionPlan:
    """Steps keyed by step key in a topological order, plus mapped templates awaiting pieces.

    Invariant: every upstream of a step in ``steps`` is itself in ``steps`` or is a template's
    clone. Clones and collectors never enter ``steps``: each run (and each dry run) expands them
    into a copy it owns (``dynamic.expand_mapped``), so one plan can serve several walks.
    """

    job_name: str
    nodes: dict[str, OpNode]
    steps: dict[str, ExecutionStep]
    run_config: ResolvedRunConfig

    def step(self, key: str) -> ExecutionStep:
        try:
            return self.steps[key]
        except KeyError:
            raise ExecutionError(
                f"job '{self.job_name}' has no step '{key}'; steps are {sorted(self.steps)[:20]}"
            ) from None


def flatten_graph(graph: GraphDefinition) -> dict[str, OpNode]:
    """Every op node below ``graph`` with its inputs resolved to op outputs, in call order."""
    nodes: dict[str, OpNode] = {}
    _flatten(graph, "", {}, (), nodes)
    return nodes


def _resolve_output(
    graph: GraphDefinition, prefix: str, node_name: str, output: str
) -> tuple[str, str]:
    return graph.resolve_output(node_name, output, prefix)


#: definitions.tables.STAGE_TAG: the stage a node was called in
_STAGE_TAG = "memodag/stage"


def _flatten(
    graph: GraphDefinition,
    prefix: str,
    graph_inputs: Mapping[str, Source],
    outer_scope: tuple[tuple[str, str], ...],
    out: dict[str, OpNode],
    stage: str | None = None,
) -> None:
    for name, node in graph.nodes.items():
        inputs: dict[str, Source] = {}
        for input_name, source in node.inputs.items():
            if isinstance(source, FromList):
                members = []
                for member in source.members:
                    found = _flat_source(
                        graph, prefix, graph_inputs, member, f"{prefix}{name}", input_name
                    )
                    assert isinstance(found, NodeSource)  # _flat_source refuses anything else
                    members.append(found)
                inputs[input_name] = ListSource(tuple(members))
            else:
                inputs[input_name] = _flat_source(graph, prefix, graph_inputs, source, "", "")
        scope = (
            outer_scope + tuple(_resolve_output(graph, prefix, n, o) for n, o in node.mapped_over)
            if node.mapped_over
            else outer_scope
        )
        if isinstance(node.definition, GraphDefinition):
            # a mapped graph: every op inside is cloned per piece (its scope starts with the graph's)
            # a graph called inside ``with Stage(...)`` puts its ops there (unless they name one)
            inner_stage = node.tags.get(_STAGE_TAG, stage)
            _flatten(node.definition, f"{prefix}{name}.", inputs, scope, out, inner_stage)
            continue
        op_def: OpDefinition = node.definition
        for input_name, spec in op_def.ins.items():
            if input_name not in inputs and spec.has_default:
                inputs[input_name] = DefaultSource(spec.default_value)
        path = f"{prefix}{name}"
        # most nodes add no tags: they share their op's (tags are never changed once built)
        tags = {**op_def.tags, **node.tags} if node.tags else op_def.tags
        if stage is not None and _STAGE_TAG not in tags:
            tags = {**tags, _STAGE_TAG: stage}
        out[path] = OpNode(path, op_def, inputs, tags, scope)


def _flat_source(
    graph: GraphDefinition,
    prefix: str,
    graph_inputs: Mapping[str, Source],
    source: FromNode | FromGraphInput,
    fan_in_node: str,
    fan_in_input: str,
) -> Source:
    """Where ``source`` comes from in op terms. For a member of a fan-in list (``fan_in_node``
    given), it must be one value: a graph input given a default or a list cannot be a member."""
    if isinstance(source, FromNode):
        node_path, output = _resolve_output(graph, prefix, source.node, source.output)
        return NodeSource(node_path, output, source.mode)
    if source.name not in graph_inputs:
        raise DefinitionError(
            f"graph '{graph.name}': input '{source.name}' is not connected where the graph is used"
        )
    found = graph_inputs[source.name]
    if fan_in_node and not (isinstance(found, NodeSource) and found.mode != "collect"):
        raise DefinitionError(
            f"node '{fan_in_node}' input '{fan_in_input}': graph input '{source.name}' of graph "
            f"'{graph.name}' is a member of a fan-in list but is given a default, a list or a "
            "collected list where the graph is used; pass one op output to it"
        )
    return found


def build_plan(job: JobDefinition, run_config: ResolvedRunConfig) -> ExecutionPlan:
    """Build the plan: one step per unmapped op node; mapped nodes wait as templates."""
    from memodag.plan.dynamic import check_collectors

    nodes = flatten_graph(job.graph)
    check_collectors(nodes)
    steps: dict[str, ExecutionStep] = {}
    for path, node in nodes.items():
        if node.is_mapped or _collects(node):
            continue
        steps[path] = ExecutionStep(
            path, node, _static_inputs(node), run_config.op_config.get(path)
        )
    return ExecutionPlan(job.name, nodes, steps, run_config)


def _collects(node: OpNode) -> bool:
    """A collect over pieces cannot be wired before the pieces exist: it waits as a template."""
    return any(isinstance(s, NodeSource) and s.mode == "collect" for s in node.inputs.values())


def _static_inputs(node: OpNode) -> tuple[StepInput, ...]:
    result = []
    for name, source in node.inputs.items():
        if isinstance(source, DefaultSource):
            result.append(StepInput(name, default=source.value))
        elif isinstance(source, ListSource):
            handles = tuple(StepOutputHandle(m.node, m.output) for m in source.members)
            result.append(StepInput(name, handles, collect=True))
        else:
            result.append(StepInput(name, (StepOutputHandle(source.node, source.output),)))
    return tuple(result)


def select_steps(
    plan: ExecutionPlan,
    selection: Sequence[str],
    steps: Mapping[str, ExecutionStep] | None = None,
) -> set[str]:
    """Resolve a step selection among ``steps`` (default: the plan's; a re-execution passes its
    steps with the parent's fan-outs expanded): exact keys or globs, ``*op`` (op and all
    upstream), ``op*`` (op and all downstream), ``+op`` / ``op+`` (one level). A mapped node's
    clones are selected one by one by key (``double[k7]``), all together by the node's name or
    Dagster's ``double[?]``. Unknown selections raise, naming them."""
    all_steps = plan.steps if steps is None else steps
    downstream: dict[str, set[str]] = {k: set() for k in all_steps}
    for key, step in all_steps.items():
        for upstream in step.upstream_step_keys:
            downstream.setdefault(upstream, set()).add(key)
    selected: set[str] = set()
    unknown: list[str] = []
    for item in selection:
        core = item.strip().strip("*+")
        up = _depth(item, prefix=True)
        down = _depth(item, prefix=False)
        matches = [k for k in all_steps if k == core]
        if not matches and core.endswith("[?]"):
            # Dagster's name for a mapped node's clones yet to be made: all of them; a node
            # whose fan-out yielded no piece has none, which is no mistake
            base = core[: -len("[?]")]
            matches = [k for k in all_steps if _clone_of(k, base)]
            node = plan.nodes.get(base)
            if not matches and node is not None and node.is_mapped:
                continue
        if not matches:
            # a mapped node by its name: every clone of it ("double*" = all of double's clones
            # and what is downstream of them)
            matches = [k for k in all_steps if _clone_of(k, core)]
        if not matches:
            # not a step key with up/downstream marks: the whole item as a glob ("g.*", "double[*]")
            raw = item.strip()
            matches = [
                k for k in all_steps if k == raw or fnmatch.fnmatchcase(k, raw.replace("[", "[[]"))
            ]
            up = down = 0
            if not matches:
                matches = [k for k in all_steps if fnmatch.fnmatchcase(k, core.replace("[", "[[]"))]
                up, down = _depth(item, prefix=True), _depth(item, prefix=False)
        if not matches:
            unknown.append(item)
            continue
        for key in matches:
            selected.add(key)
            selected |= _walk(key, lambda k: all_steps[k].upstream_step_keys, up)
            selected |= _walk(key, lambda k: downstream.get(k, set()), down)
    if unknown:
        raise ExecutionError(
            f"step selection {unknown} matches no step of job '{plan.job_name}'; steps are {sorted(all_steps)[:30]}"
        )
    return selected


def _clone_of(step_key: str, node_path: str) -> bool:
    """Whether ``step_key`` is a clone of the mapped node ``node_path`` (``double[k7]``,
    ``inner[k1,k2]``); mapping keys never contain brackets."""
    return (
        step_key.startswith(node_path + "[")
        and step_key.endswith("]")
        and "[" not in step_key[len(node_path) + 1 :]
    )


def _depth(item: str, prefix: bool) -> int:
    s = item.strip()
    edge = s[: len(s) - len(s.lstrip("*+"))] if prefix else s[len(s.rstrip("*+")) :]
    if "*" in edge:
        return 10**9
    return edge.count("+")


def _walk(start: str, neighbours: Any, depth: int) -> set[str]:
    seen: set[str] = set()
    frontier = {start}
    while frontier and depth > 0:
        nxt: set[str] = set()
        for key in frontier:
            for n in neighbours(key):
                if n not in seen:
                    seen.add(n)
                    nxt.add(n)
        frontier = nxt
        depth -= 1
    return seen
