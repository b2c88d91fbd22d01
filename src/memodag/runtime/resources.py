"""Initialize a run's resources in dependency order and tear them down when the run ends.

Runs once per run per process (the driver, or each worker of a multiprocess/Dask run).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from memodag.definitions.resources import InitResourceContext, ResourceDefinition
from memodag.definitions.secrets import resolve_env_vars
from memodag.errors import DefinitionError, ExecutionError, MemodagError
from memodag.runtime.context import Resources, RunLogger


@contextlib.contextmanager
def initialized_resources(
    resource_defs: Mapping[str, ResourceDefinition],
    resource_config: Mapping[str, Any],
    keys: set[str],
    instance: Any,
    run_id: str,
) -> Iterator[Resources]:
    """Yield the resources named in ``keys`` (and what they require), built in order."""
    order = _order(resource_defs, keys)
    built: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for key in order:
            rdef = resource_defs[key]
            context = InitResourceContext(
                # environment variables are read here, when the resource is built, and nowhere else
                resource_config=resolve_env_vars(
                    resource_config.get(key), f"resources.{key}.config"
                ),
                resources=Resources(**{k: built[k] for k in rdef.required_resource_keys}),
                instance=instance,
                run_id=run_id,
                log=RunLogger(run_id, None, None),
            )
            try:
                value = rdef.resource_fn(context)
                if inspect.isgenerator(value):
                    value = stack.enter_context(_generator_resource(value, key))
            except MemodagError:
                raise
            except Exception as exc:
                raise ExecutionError(
                    f"resource '{key}' failed to initialize: {type(exc).__name__}: {exc}"
                ) from exc
            built[key] = value
        yield Resources(**built)


@contextlib.contextmanager
def _generator_resource(gen: Any, key: str) -> Iterator[Any]:
    try:
        value = next(gen)
    except StopIteration:
        raise DefinitionError(
            f"resource '{key}' is a generator that yielded nothing; yield the resource once"
        ) from None
    try:
        yield value
    finally:
        with contextlib.suppress(StopIteration):
            next(gen)


def _order(resource_defs: Mapping[str, ResourceDefinition], keys: set[str]) -> list[str]:
    order: list[str] = []
    visiting: set[str] = set()

    def visit(key: str, chain: tuple[str, ...]) -> None:
        if key in order:
            return
        if key in visiting:
            raise DefinitionError(
                f"resources depend on each other in a cycle: {' -> '.join((*chain, key))}"
            )
        if key not in resource_defs:
            needed_by = f"resource '{chain[-1]}' requires" if chain else "asked for"
            raise DefinitionError(
                f"{needed_by} resource '{key}', which is not provided; resources are {sorted(resource_defs)}"
            )
        visiting.add(key)
        for needed in sorted(resource_defs[key].required_resource_keys):
            visit(needed, (*chain, key))
        visiting.discard(key)
        order.append(key)

    for key in sorted(keys):
        visit(key, ())
    return order
