"""``ExecuteInProcessResult``: what ``execute_in_process`` returns."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from memodag.definitions.composition import GraphDefinition
from memodag.definitions.io import DEFAULT_OUTPUT
from memodag.engine.engine import AddressKey, EngineResult
from memodag.errors import MemodagError
from memodag.plan.dynamic import parse_step_key
from memodag.storage.instance.records import Event, EventType
from memodag.storage.io_manager import Address, InputContext, IOManager, OutputContext

if TYPE_CHECKING:
    from memodag.definitions.job import JobDefinition


class ExecuteInProcessResult:
    """The outcome of a run: ``success``, ``run_id``, per-step status, and outputs by node.

    Output values are loaded on demand from their recorded addresses, so a result costs no
    memory for outputs nobody asks for. Each request builds the io managers it needs afresh (with
    the run's resource config) and tears them down after loading: the run's own were torn down
    when it ended, and a manager holding a connection must not be used after that. Only managers
    whose values live in the run's process memory (``mem_io_manager``) are the run's own.
    """

    def __init__(
        self,
        job: JobDefinition,
        run_id: str,
        engine_result: EngineResult,
        instance: Any,
        io_managers: Mapping[str, IOManager],
        canceled: bool = False,
        resource_config: Mapping[str, Any] | None = None,
        run_failure: str | None = None,
    ) -> None:
        #: why the run failed although every step succeeded (a storage lifecycle hook raised)
        self.run_failure = run_failure
        self._resource_config = dict(resource_config or {})
        self.job = job
        self.run_id = run_id
        self._result = engine_result
        self.instance = instance
        self._io_managers = dict(io_managers)
        self.canceled = canceled
        self._piece_indexes: dict[tuple[str, str], dict[str, int]] | None = None
        self._ancestor_piece_indexes: dict[tuple[str, str], dict[str, int]] | None = None

    @property
    def success(self) -> bool:
        return self._result.success and not self.canceled and self.run_failure is None

    @property
    def step_status(self) -> dict[str, str]:
        """Status of each step: success, memoized, failed, skipped or external (not selected)."""
        return dict(self._result.status)

    @property
    def executed_step_keys(self) -> list[str]:
        return [k for k, s in self._result.status.items() if s == "success"]

    @property
    def memoized_step_keys(self) -> list[str]:
        return [k for k, s in self._result.status.items() if s == "memoized"]

    @property
    def failed_step_keys(self) -> list[str]:
        return [k for k, s in self._result.status.items() if s == "failed"]

    @property
    def all_events(self) -> list[Event]:
        """Every event of the run, in order (read from the instance)."""
        return self.instance.get_events(self.run_id)

    def events_for_node(self, node: str) -> list[Event]:
        return [
            e
            for e in self.all_events
            if e.step_key
            and (
                e.step_key == node
                or e.step_key.startswith(node + "[")
                or e.step_key.startswith(node + ".")
            )
        ]

    def get_step_failure_events(self) -> list[Event]:
        return self.instance.get_events(self.run_id, [EventType.STEP_FAILURE])

    def output_address(self, node: str, output_name: str = DEFAULT_OUTPUT) -> Address:
        step_key, output = self._resolve(node, output_name)
        address = self._result.addresses.get((step_key, output, None))
        if address is None and self._result.status.get(step_key) == "external":
            address = self._from_ancestors((step_key, output, None))
        if address is None:
            raise MemodagError(
                f"run {self.run_id[:8]}: node '{node}' stored no output '{output_name}' (step status: {self._result.status.get(step_key, 'not in run')})"
            )
        return address

    def output_for_node(
        self, node: str, output_name: str = DEFAULT_OUTPUT, *, as_type: Any = None
    ) -> Any:
        """The value of ``node``'s output. For a mapped node (or a dynamic output), a dict
        ``{mapping_key: value}`` in emission order, of the pieces this run produced (executed
        or memoized): a re-execution leaves out those it loaded from its parent run, as Dagster
        does (``step_status`` tells them as ``external``).

        ``as_type``: for a table (docs/tables.md), the type to load it as (``pandas.DataFrame``,
        ``polars.DataFrame``/``LazyFrame``, ``pyarrow.Table``, ...; default the type the op
        returned); for any other output, the value when it already is of that type, else an
        error naming the node and output (nothing is converted)."""
        step_key, output = self._resolve(node, output_name)
        pieces = self._pieces(step_key, output)
        if pieces is not None:
            values = self._load_pieces(pieces, as_type)
            for value in values.values():
                self._check_type(value, as_type, node, output_name)
            return values
        value = self._load(self.output_address(node, output_name), as_type)
        return self._check_type(value, as_type, node, output_name)

    @staticmethod
    def _check_type(value: Any, as_type: Any, node: str, output_name: str) -> Any:
        if as_type is None or not isinstance(as_type, type) or isinstance(value, as_type):
            return value
        raise MemodagError(
            f"output '{output_name}' of node '{node}' is a {type(value).__name__}, not a "
            f"{as_type.__name__}; as_type converts only tables (outputs stored in a table "
            "store): leave as_type out to get the value as stored"
        )

    def output_value(self, output_name: str = DEFAULT_OUTPUT) -> Any:
        """The value of the job's own output ``output_name`` (what its body returned)."""
        mappings = self.job.graph.output_mappings
        if output_name not in mappings:
            raise MemodagError(
                f"job '{self.job.name}' has no output '{output_name}' (outputs: {list(mappings)}); "
                "return an op's output from the job body, or use output_for_node"
            )
        node, output = mappings[output_name]
        step_key, inner_output = self._resolve_in(self.job.graph, "", node, output)
        pieces = self._pieces(step_key, inner_output)
        if pieces is not None:
            return self._load_pieces(pieces)
        address = self._result.addresses.get((step_key, inner_output, None))
        if address is None:
            raise MemodagError(
                f"run {self.run_id[:8]}: job output '{output_name}' (from {step_key}.{inner_output}) "
                f"was not stored (step status: {self._result.status.get(step_key, 'not in run')})"
            )
        return self._load(address)

    def _pieces(self, step_key: str, output: str) -> list[tuple[str, Address]] | None:
        plan_node = self._plan_node(step_key)
        if plan_node is None:
            return None
        if plan_node.is_mapped:
            prefix = step_key + "["
            found = [
                (k, a)
                for k, a in self._address_items()
                if k[0].startswith(prefix) and k[1] == output
            ]
            # addresses arrive as clones finish: put them back in the order their pieces were
            # emitted, level by level for nested fan-outs
            found.sort(key=lambda item: self._emission_position(plan_node, item[0][0]))
            return [(a.step_key[len(step_key) + 1 : -1], a) for _, a in found]
        if plan_node.op_def.outs[output].is_dynamic:
            return [
                (k[2], a)
                for k, a in self._address_items()
                if k[0] == step_key and k[1] == output and k[2] is not None
            ]
        return None

    def _from_ancestors(self, key: AddressKey) -> Address | None:
        """A step this re-execution did not select: its output as the nearest ancestor run stored it."""
        for addresses in self._ancestor_addresses():
            address = addresses.get(key)
            if address is not None:
                return address
        return None

    def _ancestor_addresses(self) -> Iterator[dict[AddressKey, Address]]:
        """The outputs of this run's parent, then of its parent, and so on (re-executions)."""
        record = self.instance.get_run(self.run_id)
        seen: set[str] = set()
        while record is not None and record.parent_run_id and record.parent_run_id not in seen:
            seen.add(record.parent_run_id)
            yield self.instance.get_output_addresses(record.parent_run_id)
            record = self.instance.get_run(record.parent_run_id)

    def _emission_position(self, plan_node: Any, clone_key: str) -> tuple[int, ...]:
        """Where each of a clone's mapping keys came in its fan-out's pieces: ``b[k1,j0]`` is
        (index of k1 among the source's pieces, index of j0 among ``inner[k1]``'s pieces)."""
        from memodag.plan.dynamic import step_key_for

        keys = parse_step_key(clone_key)[1]
        position = []
        for level, key in enumerate(keys):
            if level >= len(plan_node.mapped_over):
                break
            source, output = plan_node.mapped_over[level]
            pieces = self._piece_index(step_key_for(source, keys[:level]), output)
            position.append(pieces.get(key, len(pieces)))
        return tuple(position)

    def _piece_index(self, step_key: str, output: str) -> dict[str, int]:
        """A dynamic output's mapping keys -> their emission order (addresses of one step's
        pieces are recorded in the order it yielded them)."""
        if self._piece_indexes is None:
            self._piece_indexes = _index_pieces([self._result.addresses])
        found = self._piece_indexes.get((step_key, output))
        if found is None:
            # a re-execution that did not need the fan-out's source has its pieces in an ancestor
            if self._ancestor_piece_indexes is None:
                self._ancestor_piece_indexes = _index_pieces(self._ancestor_addresses())
            found = self._ancestor_piece_indexes.get((step_key, output), {})
        return found

    def _address_items(self) -> list[tuple[AddressKey, Address]]:
        """The outputs this run produced: not those a re-execution loaded from its parent."""
        status = self._result.status
        return [(k, a) for k, a in self._result.addresses.items() if status.get(k[0]) != "external"]

    def _plan_node(self, step_key: str) -> Any:
        from memodag.plan.plan import flatten_graph

        if not hasattr(self, "_nodes"):
            self._nodes = flatten_graph(self.job.graph)
        return self._nodes.get(step_key)

    def _resolve(self, node: str, output_name: str) -> tuple[str, str]:
        graph = self.job.graph
        parts = node.split(".")
        prefix = ""
        for i, part in enumerate(parts):
            invocation = graph.nodes.get(part)
            if invocation is None:
                hint = ""
                if "[" in node:
                    base, key = node.split("[", 1)
                    hint = f"; a mapped node's outputs are keyed by piece: output_for_node({base!r})[{key.rstrip(']')!r}]"
                raise MemodagError(
                    f"job '{self.job.name}' has no node '{node}'; top-level nodes are {sorted(self.job.graph.nodes)}{hint}"
                )
            if isinstance(invocation.definition, GraphDefinition):
                if i == len(parts) - 1:
                    if output_name not in invocation.definition.output_mappings:
                        raise MemodagError(
                            f"graph node '{node}' has no output '{output_name}' (outputs: {list(invocation.definition.output_mappings)})"
                        )
                    inner, inner_out = invocation.definition.output_mappings[output_name]
                    return self._resolve_in(
                        invocation.definition, f"{prefix}{part}.", inner, inner_out
                    )
                graph = invocation.definition
                prefix += part + "."
            elif i != len(parts) - 1:
                raise MemodagError(
                    f"'{'.'.join(parts[: i + 1])}' is an op, not a graph; cannot look inside it"
                )
            else:
                outs = invocation.definition.outs
                if output_name == DEFAULT_OUTPUT and output_name not in outs and len(outs) == 1:
                    output_name = next(iter(outs))  # the op's only output, whatever its name
                if output_name not in invocation.definition.outs:
                    raise MemodagError(
                        f"op node '{node}' has no output '{output_name}' (outputs: {list(invocation.definition.outs)})"
                    )
                return f"{prefix}{part}", output_name
        raise AssertionError("unreachable")

    def _resolve_in(
        self, graph: GraphDefinition, prefix: str, node: str, output: str
    ) -> tuple[str, str]:
        return graph.resolve_output(node, output, prefix)

    @contextlib.contextmanager
    def _live_managers(self, keys: Iterable[str]) -> Iterator[dict[str, IOManager]]:
        """The io managers named by ``keys``, built for this load and torn down after it."""
        from memodag.runtime.resources import initialized_resources

        keys = set(keys)
        defs = self.job.resource_defs
        fresh = {
            k
            for k in keys
            if k in defs
            and defs[k].is_io_manager
            and not defs[k].keeps_values_in_process(self._resource_config.get(k))
        }
        managers = {k: m for k, m in self._io_managers.items() if k in keys - fresh}
        if not fresh:
            yield managers
            return
        with initialized_resources(
            defs, self._resource_config, fresh, self.instance, self.run_id
        ) as resources:
            yield {**managers, **{k: getattr(resources, k) for k in fresh}}

    def _load_pieces(
        self, pieces: list[tuple[str, Address]], as_type: Any = None
    ) -> dict[str, Any]:
        with self._live_managers({a.io_manager_key for _, a in pieces}) as managers:
            return {key: self._load_with(managers, address, as_type) for key, address in pieces}

    def _load(self, address: Address, as_type: Any = None) -> Any:
        with self._live_managers([address.io_manager_key]) as managers:
            return self._load_with(managers, address, as_type)

    def _load_with(
        self, managers: Mapping[str, IOManager], address: Address, as_type: Any = None
    ) -> Any:
        manager = managers.get(address.io_manager_key)
        if manager is None:
            raise MemodagError(
                f"io manager '{address.io_manager_key}' of this run is not available to load {address.step_key}.{address.output_name}"
            )
        out = None
        node = self._plan_node(parse_step_key(address.step_key)[0])
        if node is not None:
            out = node.op_def.outs.get(address.output_name)
        upstream = OutputContext.of_address(address, out)
        # the same context a consuming step would give the manager, config included
        context = InputContext(
            address.output_name,
            address.step_key,
            upstream,
            address,
            # a table store loads the table as this type (tables/io_manager.py)
            metadata={"as_type": as_type} if as_type is not None else {},
            resource_config=self._resource_config.get(address.io_manager_key),
        )
        return manager.load_input(context)

    def __repr__(self) -> str:
        return f"<ExecuteInProcessResult run={self.run_id[:8]} success={self.success}>"


def _index_pieces(
    runs: Iterable[Mapping[AddressKey, Address]],
) -> dict[tuple[str, str], dict[str, int]]:
    """(step, output) -> {mapping key: emission index} for every dynamic output the runs stored,
    in one pass; a nearer run (earlier in ``runs``) wins for a step both hold."""
    indexes: dict[tuple[str, str], dict[str, int]] = {}
    for addresses in runs:
        this_run: dict[tuple[str, str], dict[str, int]] = {}
        for step_key, output, mapping_key in addresses:
            if mapping_key is not None:
                pieces = this_run.setdefault((step_key, output), {})
                pieces.setdefault(mapping_key, len(pieces))
        for key, pieces in this_run.items():
            indexes.setdefault(key, pieces)
    return indexes
