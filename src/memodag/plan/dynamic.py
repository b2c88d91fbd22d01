"""Dynamic fan-out: turning mapped node templates into steps once a dynamic output's pieces exist.

When a step with a ``DynamicOut`` finishes (or is found stored), its pieces' mapping keys are
known; ``expand_mapped`` then clones every node mapped over that output once per key
(``op[key]``; nested fan-outs ``op[k1,k2]``) and creates the collectors that gather them. The
shared ``ExecutionPlan`` is never changed: expansions go into the steps of one run (or one dry
run), which the caller owns. See docs/dynamic.md.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import TypeAlias

from memodag.errors import DefinitionError
from memodag.plan.plan import (
    DefaultSource,
    ExecutionPlan,
    ExecutionStep,
    ListSource,
    NodeSource,
    OpNode,
    StepInput,
    StepOutputHandle,
)


def step_key_for(path: str, mapping_keys: Sequence[str]) -> str:
    """``op`` for an unmapped node, ``op[k]`` for a clone, ``op[k1,k2]`` inside nested fan-outs."""
    return f"{path}[{','.join(mapping_keys)}]" if mapping_keys else path


def parse_step_key(step_key: str) -> tuple[str, tuple[str, ...]]:
    """Inverse of ``step_key_for``."""
    if step_key.endswith("]") and "[" in step_key:
        path, keys = step_key[:-1].split("[", 1)
        return path, tuple(keys.split(","))
    return step_key, ()


def check_collectors(nodes: Mapping[str, OpNode]) -> None:
    """A collect gathers a fan-out started at the collector's own level: a clone that gathered a
    whole fan-out would wait on every piece (refused where the body is defined too; this also
    catches a collected list handed to a graph input and used inside a ``.map`` in the graph)."""
    for node in nodes.values():
        for name, source in node.inputs.items():
            if not (isinstance(source, NodeSource) and source.mode == "collect"):
                continue
            fan_out = gathered_fan_out(nodes, source)
            if _enclosing_scope(nodes, source) != node.mapped_over:
                raise DefinitionError(
                    f"node '{node.path}' input '{name}': collects '{'.'.join(fan_out)}' inside the "
                    f".map over '{'.'.join(node.mapped_over[-1])}', so each clone would need every "
                    "piece; collect it in an op outside the .map and pass that op's output in"
                )


def _enclosing_scope(
    nodes: Mapping[str, OpNode], source: NodeSource
) -> tuple[tuple[str, str], ...]:
    """The fan-outs around the one a collect input gathers (where its collector is made)."""
    collected = nodes[source.node]
    if collected.op_def.outs[source.output].is_dynamic:
        return collected.mapped_over
    return collected.mapped_over[:-1]


def gathered_fan_out(nodes: Mapping[str, OpNode], source: NodeSource) -> tuple[str, str]:
    """The fan-out (dynamic node, output) whose pieces a collect input gathers: the collected
    output itself if it is dynamic, else the innermost fan-out its node is mapped over."""
    collected = nodes[source.node]
    if collected.op_def.outs[source.output].is_dynamic:
        return (source.node, source.output)
    return collected.mapped_over[-1]


def expand_mapped(
    plan: ExecutionPlan,
    steps: dict[str, ExecutionStep],
    source: ExecutionStep,
    pieces: Mapping[str, Sequence[str]],
) -> list[ExecutionStep]:
    """Steps made known by ``source`` finishing with ``pieces`` (output name -> mapping keys in
    emission order). Adds them to ``steps`` (a run's steps, not ``plan.steps``) and returns them
    in a topological order."""
    prefix = source.mapping_keys
    depth = len(prefix)
    created: list[ExecutionStep] = []
    for output, keys in pieces.items():
        fan_out = (source.node.path, output)
        # collectors inside the fan-out are created by the inner fan-out they gather
        clones = [
            n
            for n in plan.nodes.values()
            if len(n.mapped_over) == depth + 1
            and n.mapped_over[depth] == fan_out
            and not _has_collect(n)
        ]
        # each clone's inputs differ only by its mapping keys: wire each node once, then clone
        wirings = [(node, _clone_wiring(plan, node)) for node in clones]
        config = plan.run_config.op_config
        for key in keys:
            mapping_keys = (*prefix, key)
            for node, wiring in wirings:
                inputs = tuple(
                    wire if isinstance(wire, StepInput) else wire(mapping_keys) for wire in wiring
                )
                created.append(
                    ExecutionStep(
                        step_key_for(node.path, mapping_keys),
                        node,
                        inputs,
                        config.get(node.path),
                        mapping_keys,
                    )
                )
    # this fan-out's pieces are known now: run state, kept on the run's copy of the step
    known = {name: tuple(keys) for name, keys in pieces.items()}
    steps[source.key] = replace(source, pieces=known)
    for output in pieces:
        fan_out = (source.node.path, output)
        for node in plan.nodes.values():
            if (
                len(node.mapped_over) == depth
                and node.mapped_over == source.node.mapped_over
                and gathers(plan, node, fan_out)
            ):
                gathered = _known_pieces(plan, steps, node, prefix)
                # made once, when the last fan-out it gathers is known
                if gathered is not None and _last_gathered(plan, node, fan_out, pieces):
                    created.append(_make_step(plan, node, prefix, gathered))
    for step in created:
        if step.key in steps:
            raise DefinitionError(
                f"step '{step.key}' was created twice; mapping keys must be unique per output"
            )
        steps[step.key] = step
    return created


def made_by(plan: ExecutionPlan, node: OpNode) -> tuple[tuple[tuple[str, str], ...], bool] | None:
    """The fan-outs (node path, output) whose expansion creates ``node``'s steps (a collector is
    made once every fan-out it gathers is known), and whether it takes at least one piece (a
    clone does; a collector exists even for zero pieces). None for a node whose step is in the
    plan from the start."""
    gathered = tuple(
        gathered_fan_out(plan.nodes, source)
        for source in node.inputs.values()
        if isinstance(source, NodeSource) and source.mode == "collect"
    )
    if gathered:
        return gathered, False
    if node.mapped_over:
        return (node.mapped_over[-1],), True
    return None


def _known_pieces(
    plan: ExecutionPlan, steps: Mapping[str, ExecutionStep], node: OpNode, prefix: tuple[str, ...]
) -> dict[tuple[str, str], tuple[str, ...]] | None:
    """The mapping keys of every fan-out ``node`` gathers at ``prefix``, or None while one of
    them is not known yet."""
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    for source in node.inputs.values():
        if not (isinstance(source, NodeSource) and source.mode == "collect"):
            continue
        path, output = gathered_fan_out(plan.nodes, source)
        fan_out_step = steps.get(step_key_for(path, prefix))
        keys = (
            None
            if fan_out_step is None or fan_out_step.pieces is None
            else fan_out_step.pieces.get(output)
        )
        if keys is None:
            return None
        found[(path, output)] = keys
    return found


def _last_gathered(
    plan: ExecutionPlan, node: OpNode, fan_out: tuple[str, str], pieces: Mapping[str, object]
) -> bool:
    """Whether ``fan_out`` is the last of ``node``'s gathered fan-outs among the outputs of the
    step just expanded (a step with two dynamic outputs gathered by one op makes it once)."""
    mine = [
        gathered_fan_out(plan.nodes, s)
        for s in node.inputs.values()
        if isinstance(s, NodeSource) and s.mode == "collect"
    ]
    same_step = [f for f in mine if f[0] == fan_out[0] and f[1] in pieces]
    return max(same_step, key=lambda f: list(pieces).index(f[1])) == fan_out


def _has_collect(node: OpNode) -> bool:
    return any(isinstance(s, NodeSource) and s.mode == "collect" for s in node.inputs.values())


def gathers(plan: ExecutionPlan, node: OpNode, fan_out: tuple[str, str]) -> bool:
    """Whether ``node`` collects the pieces of ``fan_out`` (its node path and output)."""
    return any(
        isinstance(source, NodeSource)
        and source.mode == "collect"
        and gathered_fan_out(plan.nodes, source) == fan_out
        for source in node.inputs.values()
    )


_Wire: TypeAlias = "StepInput | Callable[[tuple[str, ...]], StepInput]"


def _clone_wiring(plan: ExecutionPlan, node: OpNode) -> list[_Wire]:
    """Per input of a clone of ``node``: the same ``StepInput`` for every clone (a default, an
    unmapped upstream), or how to make it from the clone's mapping keys. Collect inputs never
    occur here (collectors are made by ``_make_step``)."""
    wiring: list[_Wire] = []
    for name, source in node.inputs.items():
        if isinstance(source, DefaultSource):
            wiring.append(StepInput(name, default=source.value))
            continue
        members = source.members if isinstance(source, ListSource) else (source,)
        if all(_static_member(plan, m) for m in members):
            handles = tuple(_member_handle(plan, m, ()) for m in members)
            wiring.append(StepInput(name, handles, collect=isinstance(source, ListSource)))
        else:
            wiring.append(_keyed_input(plan, name, source))
    return wiring


def _static_member(plan: ExecutionPlan, source: NodeSource) -> bool:
    """Whether every clone reads the same output for ``source`` (an unmapped node's value)."""
    return source.mode == "value" and not plan.nodes[source.node].mapped_over


def _member_handle(
    plan: ExecutionPlan, source: NodeSource, mapping_keys: tuple[str, ...]
) -> StepOutputHandle:
    """The output a step with ``mapping_keys`` reads for a ``value`` or ``piece`` source: the
    upstream's own clone (its keys are a prefix of the step's) and, for a piece, the key of that
    fan-out's level, which need not be the step's last (an outer piece in a nested map)."""
    depth = len(plan.nodes[source.node].mapped_over)
    key = step_key_for(source.node, mapping_keys[:depth])
    if source.mode == "piece":
        return StepOutputHandle(key, source.output, mapping_keys[depth])
    return StepOutputHandle(key, source.output)


def _keyed_input(
    plan: ExecutionPlan, name: str, source: NodeSource | ListSource
) -> Callable[[tuple[str, ...]], StepInput]:
    def make(mapping_keys: tuple[str, ...]) -> StepInput:
        if isinstance(source, ListSource):
            handles = tuple(_member_handle(plan, m, mapping_keys) for m in source.members)
            return StepInput(name, handles, collect=True)
        return StepInput(name, (_member_handle(plan, source, mapping_keys),))

    return make


def _make_step(
    plan: ExecutionPlan,
    node: OpNode,
    mapping_keys: tuple[str, ...],
    pieces_of: Mapping[tuple[str, str], Sequence[str]],
) -> ExecutionStep:
    """A collector at ``mapping_keys``, its collect inputs wired to the pieces ``pieces_of``
    gives per gathered fan-out."""
    inputs = []
    for name, source in node.inputs.items():
        if isinstance(source, DefaultSource):
            inputs.append(StepInput(name, default=source.value))
        elif isinstance(source, ListSource):
            handles = tuple(_member_handle(plan, m, mapping_keys) for m in source.members)
            inputs.append(StepInput(name, handles, collect=True))
        elif source.mode == "collect":
            keys = pieces_of[gathered_fan_out(plan.nodes, source)]
            upstream = plan.nodes[source.node]
            if upstream.op_def.outs[source.output].is_dynamic:
                handles = tuple(
                    StepOutputHandle(step_key_for(upstream.path, mapping_keys), source.output, k)
                    for k in keys
                )
            else:
                handles = tuple(
                    StepOutputHandle(step_key_for(upstream.path, (*mapping_keys, k)), source.output)
                    for k in keys
                )
            inputs.append(StepInput(name, handles, collect=True))
        else:
            inputs.append(StepInput(name, (_member_handle(plan, source, mapping_keys),)))
    key = step_key_for(node.path, mapping_keys)
    gathered_from = tuple(sorted({step_key_for(path, mapping_keys) for path, _ in pieces_of}))
    return ExecutionStep(
        key,
        node,
        tuple(inputs),
        plan.run_config.op_config.get(node.path),
        mapping_keys,
        gathered_from=gathered_from,
    )


def pieces_from_addresses(step: ExecutionStep, addresses: Sequence[object]) -> dict[str, list[str]]:
    """Mapping keys per dynamic output, in emission order, from a step's stored addresses."""
    pieces: dict[str, list[str]] = {
        name: [] for name, out in step.op_def.outs.items() if out.is_dynamic
    }
    for address in addresses:
        name = address.output_name  # type: ignore[attr-defined]
        key = address.mapping_key  # type: ignore[attr-defined]
        if name in pieces and key is not None:
            pieces[name].append(key)
    return pieces


def expand_from_addresses(
    plan: ExecutionPlan,
    steps: dict[str, ExecutionStep],
    addresses: Mapping[tuple[str, str, str | None], object],
    completed: Collection[str] = (),
) -> dict[str, str]:
    """Expand every fan-out whose pieces ``addresses`` (a parent run's outputs) hold, or that is
    among the ``completed`` steps (it may have yielded no piece), repeatedly, so clones like
    ``double[k7]`` and collectors exist in ``steps`` (a run's steps). Returns created step key
    -> source step key."""
    pieces_by_step: dict[str, dict[str, list[str]]] = {}
    for step_key, output, mapping_key in addresses:
        if mapping_key is not None:
            pieces_by_step.setdefault(step_key, {}).setdefault(output, []).append(mapping_key)
    created_by: dict[str, str] = {}
    # first in, first out: fan-outs expand (and their clones enter the plan) in emission order
    queue = deque(s for s in steps.values() if s.op_def.has_dynamic_output)
    while queue:
        step = queue.popleft()
        if step.key not in pieces_by_step and step.key not in completed:
            continue
        found = pieces_by_step.get(step.key, {})
        pieces = {
            name: found.get(name, []) for name, out in step.op_def.outs.items() if out.is_dynamic
        }
        for new in expand_mapped(plan, steps, step, pieces):
            created_by[new.key] = step.key
            if new.op_def.has_dynamic_output:
                queue.append(new)
    return created_by


def drop_expansions_of(
    steps: dict[str, ExecutionStep], created_by: Mapping[str, str], selected: set[str]
) -> dict[str, str]:
    """Remove what was expanded from the parent's pieces of fan-outs that will re-run (they are
    expanded again from the new pieces), and those steps from ``selected``. Returns each removed
    step key -> the re-running fan-out source it came from."""
    rerun = {key for key in selected if steps[key].op_def.has_dynamic_output}
    if not rerun:
        return {}
    doomed = set()
    changed = True
    while changed:
        changed = False
        for key, source in created_by.items():
            # a collector of several fan-outs is made again if any of them re-runs
            sources = (source, *steps[key].gathered_from)
            if key not in doomed and any(s in rerun or s in doomed for s in sources):
                doomed.add(key)
                changed = True
    dropped = {}
    for key in doomed:
        source = created_by[key]
        gathered = [s for s in steps[key].gathered_from if s in rerun or s in doomed]
        if source not in rerun and source not in doomed and gathered:
            source = gathered[0]  # made again because another fan-out it gathers re-runs
        while source not in rerun:
            source = created_by[source]
        dropped[key] = source
        steps.pop(key, None)
        selected.discard(key)
    for key in rerun - doomed:
        # its pieces come from the new run: collectors wait for them, not the parent's
        steps[key] = replace(steps[key], pieces=None)
    return dropped


def reexpanded_inputs(plan: ExecutionPlan, rerun: Collection[str]) -> set[tuple[str, str]]:
    """``(node path, output)`` of the nodes whose outputs feed templates that a re-execution
    expands afresh (mapped nodes and collectors below the re-running fan-out sources ``rerun``,
    node paths) and that are not re-created themselves: a static ``ten()`` beside the piece. The
    run must load those from the parent run although no selected step names them yet."""
    consumers: dict[str, list[str]] = {}
    for node in plan.nodes.values():
        for source in _node_sources(node):
            consumers.setdefault(source.node, []).append(node.path)
    below: set[str] = set()
    frontier = list(rerun)
    while frontier:
        path = frontier.pop()
        for consumer in consumers.get(path, ()):
            if consumer not in below:
                below.add(consumer)
                frontier.append(consumer)
    needed: set[tuple[str, str]] = set()
    for path in below:
        node = plan.nodes[path]
        if not (node.is_mapped or _has_collect(node)):
            continue  # a static step: selected, or loaded from the parent like any other
        for source in _node_sources(node):
            if source.node in rerun:
                continue
            upstream = plan.nodes[source.node]
            if source.node in below and (upstream.is_mapped or _has_collect(upstream)):
                continue  # re-created from the new pieces
            needed.add((source.node, source.output))
    return needed


def never_made(
    plan: ExecutionPlan,
    steps: Mapping[str, ExecutionStep],
    failed: Mapping[tuple[str, tuple[str, ...]], str],
) -> dict[str, str]:
    """The clones and collectors fan-out steps that yielded no pieces (``failed``: (node path,
    mapping keys) -> why) would have made, as step keys with ``*`` for pieces never known
    (``double[*]``, ``scale[k0,*]``, ``total``) -> why; a never-made fan-out's own clones too."""
    failed = dict(failed)
    found: dict[str, str] = {}
    for node in plan.nodes.values():  # in topological order: a fan-out first
        creation = made_by(plan, node)
        if creation is None:
            continue
        fan_outs, is_clone = creation
        for (path, keys), why in list(failed.items()):
            if all(path != fan_out for fan_out, _ in fan_outs):
                continue
            made_keys = (*keys, "*") if is_clone else keys
            key = step_key_for(node.path, made_keys)
            if key in steps or key in found:
                continue
            found[key] = why
            if node.op_def.has_dynamic_output:
                failed[(node.path, made_keys)] = why
    return found


def _node_sources(node: OpNode) -> list[NodeSource]:
    """The node sources of ``node``'s inputs, fan-in list members included."""
    found: list[NodeSource] = []
    for source in node.inputs.values():
        if isinstance(source, NodeSource):
            found.append(source)
        elif isinstance(source, ListSource):
            found.extend(source.members)
    return found
