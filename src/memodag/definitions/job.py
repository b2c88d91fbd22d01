"""``@job`` and ``JobDefinition``: a graph bound to resources, default config, tags and an executor.

Defining a job validates its wiring and its resources (every required key is provided), runs no
user code besides the composition body and touches no storage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memodag.definitions.composition import GraphDefinition, build_graph
from memodag.definitions.io import DEFAULT_IO_MANAGER_KEY, check_name
from memodag.definitions.resources import ResourceDefinition, as_resource_definition
from memodag.definitions.tables import MATERIALIZE_TAG, TABLE_STORE_KEY
from memodag.errors import DefinitionError

if TYPE_CHECKING:
    from memodag.definitions.executor import ExecutorDefinition
    from memodag.engine.result import ExecuteInProcessResult
    from memodag.storage.instance import Instance
    from memodag.versioning.strategy import VersionStrategy


#: the io manager of a job that names none: storage's ``fs_io_manager``, named rather than imported
#: (definitions never import storage; storage builds on definitions' ``@io_manager``)
DEFAULT_IO_MANAGER = "memodag.storage.io_managers.fs:fs_io_manager"


#: the table store of a job with table outputs that names none, and the version strategy of a
#: job with ``@materialize`` ops that names none (named, as above, not imported)
DEFAULT_TABLE_STORE = "memodag.tables.default:default_table_store"
DEFAULT_TABLE_VERSION_STRATEGY = "memodag.versioning.source_hash:SourceHashVersionStrategy"


def _named(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def default_resource_defs() -> dict[str, ResourceDefinition]:
    return {DEFAULT_IO_MANAGER_KEY: _named(DEFAULT_IO_MANAGER)}


def _table_use(graph: GraphDefinition) -> tuple[bool, bool]:
    """Whether any op of ``graph`` stores an output in the table store, and whether any is a
    ``@materialize`` op."""
    uses_tables = materializes = False
    for _, op_def in graph.iter_ops():
        materializes = materializes or MATERIALIZE_TAG in op_def.tags
        uses_tables = uses_tables or any(
            out.io_manager_key == TABLE_STORE_KEY for out in op_def.outs.values()
        )
    return uses_tables, materializes


@dataclass(frozen=True, eq=False)
class JobDefinition:
    """A runnable graph. Build one with ``@job`` or ``graph.to_job()``.

    Attributes:
        config: default run config, merged under the run config given at execution.
        tags: run tags; ``MEMOIZED_RUN_TAG`` here turns memoization on for every run of the job.
        version_strategy: computes op/resource versions; setting it turns memoization on.
        early_cutoff: downstream versions use the data hash of outputs that re-ran.
    """

    name: str
    graph: GraphDefinition
    resource_defs: Mapping[str, ResourceDefinition]
    config: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    executor_def: ExecutorDefinition | None = None
    version_strategy: VersionStrategy | None = None
    early_cutoff: bool = False

    @classmethod
    def from_graph(
        cls,
        graph: GraphDefinition,
        name: str | None = None,
        resource_defs: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        executor_def: ExecutorDefinition | None = None,
        version_strategy: VersionStrategy | None = None,
        early_cutoff: bool = False,
    ) -> JobDefinition:
        if graph.input_names:
            raise DefinitionError(
                f"job '{name or graph.name}': a job body takes no parameters, got "
                f"{list(graph.input_names)}; produce the values with ops, or use @graph for a "
                "reusable piece with inputs"
            )
        resources = default_resource_defs()
        for key, value in (resource_defs or {}).items():
            resources[check_name(key, "resource key")] = as_resource_definition(key, value)
        uses_tables, materializes = _table_use(graph)
        if uses_tables and TABLE_STORE_KEY not in resources:
            resources[TABLE_STORE_KEY] = _named(DEFAULT_TABLE_STORE)
        if materializes and version_strategy is None:
            # @materialize ops memoize by default, as pipedag's users expect (docs/tables.md)
            version_strategy = _named(DEFAULT_TABLE_VERSION_STRATEGY)()
        job = cls(
            name=check_name(name or graph.name, "job"),
            graph=graph,
            resource_defs=resources,
            config=dict(config or {}),
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            description=description or graph.description,
            executor_def=executor_def,
            version_strategy=version_strategy,
            early_cutoff=early_cutoff,
        )
        job._check_resources()
        return job

    def _check_resources(self) -> None:
        missing: list[str] = []
        for path, op_def in self.graph.iter_ops():
            for key in sorted(op_def.required_resource_keys):
                if key not in self.resource_defs:
                    missing.append(f"op '{path}' requires resource '{key}'")
            for out_name, out in op_def.outs.items():
                key = out.io_manager_key
                if key not in self.resource_defs:
                    missing.append(f"op '{path}' output '{out_name}' uses io manager '{key}'")
                elif not self.resource_defs[key].is_io_manager:
                    missing.append(
                        f"op '{path}' output '{out_name}': resource '{key}' is not an io manager"
                    )
        for key, rdef in self.resource_defs.items():
            for needed in sorted(rdef.required_resource_keys):
                if needed not in self.resource_defs:
                    missing.append(f"resource '{key}' requires resource '{needed}'")
        cycle = _resource_cycle(self.resource_defs)
        if cycle:
            missing.append(f"resources depend on each other in a cycle: {' -> '.join(cycle)}")
        if missing:
            provided = sorted(self.resource_defs)
            raise DefinitionError(
                f"job '{self.name}': resources not provided (resource_defs has {provided}):\n"
                + "\n".join(f"  - {m}" for m in missing)
            )

    def execute_in_process(
        self,
        run_config: Mapping[str, Any] | None = None,
        instance: Instance | None = None,
        tags: Mapping[str, str] | None = None,
        raise_on_error: bool = True,
        parent_run_id: str | None = None,
        step_selection: Sequence[str] | None = None,
        run_id: str | None = None,
    ) -> ExecuteInProcessResult:
        """Run this job and return its result.

        Args:
            run_config: ``{"ops": {...}, "resources": {...}, "execution": {...}}``; validated in
                full before any step runs.
            instance: where runs, events and the output index are kept; ``Instance.get()`` if None.
            tags: run tags (a run's ``MEMOIZED_RUN_TAG`` overrides the job's).
            raise_on_error: raise the first step failure instead of returning a failed result.
            parent_run_id, step_selection: re-execute only the selected steps (``"op"``,
                ``"op*"`` for an op and everything downstream, ``"*op"`` upstream), loading all
                other inputs from the parent run's recorded outputs.
        """
        from memodag.engine.execute import execute_job

        return execute_job(
            self,
            run_config=run_config,
            instance=instance,
            tags=tags,
            raise_on_error=raise_on_error,
            parent_run_id=parent_run_id,
            step_selection=step_selection,
            run_id=run_id,
        )

    def __repr__(self) -> str:
        return f"<job {self.name}>"


def _resource_cycle(resource_defs: Mapping[str, ResourceDefinition]) -> list[str]:
    """One cycle among resources requiring each other (as a path that closes), or []."""
    done: set[str] = set()

    def visit(key: str, path: list[str]) -> list[str]:
        if key in path:
            return [*path[path.index(key) :], key]
        if key in done or key not in resource_defs:
            return []
        for needed in sorted(resource_defs[key].required_resource_keys):
            found = visit(needed, [*path, key])
            if found:
                return found
        done.add(key)
        return []

    for key in sorted(resource_defs):
        found = visit(key, [])
        if found:
            return found
    return []


def job(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    resource_defs: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    executor_def: ExecutorDefinition | None = None,
    version_strategy: VersionStrategy | None = None,
    early_cutoff: bool = False,
) -> Any:
    """Declare a job: a body calling ops, bound to resources and run defaults."""

    def decorate(func: Callable[..., Any]) -> JobDefinition:
        graph = build_graph(func, name)
        return JobDefinition.from_graph(
            graph,
            name=name,
            resource_defs=resource_defs,
            config=config,
            tags=tags,
            description=description,
            executor_def=executor_def,
            version_strategy=version_strategy,
            early_cutoff=early_cutoff,
        )

    return decorate(fn) if fn is not None else decorate
