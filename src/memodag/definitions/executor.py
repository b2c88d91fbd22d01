"""Which executor a run uses: run config ``execution`` over the job's ``executor_def``.

``execution`` may be ``{"config": {...}}`` (configures the job's executor) or
``{"multiprocess": {"config": {...}}}`` (names one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memodag.definitions.config import NO_DEFAULT
from memodag.errors import ConfigError
from memodag.executors.base import ExecutorDefinition
from memodag.executors.in_process import in_process_executor


def known_executors() -> dict[str, ExecutorDefinition]:
    found = {"in_process": in_process_executor}
    try:
        from memodag.executors.multiprocess import multiprocess_executor

        found["multiprocess"] = multiprocess_executor
    except ImportError:  # pragma: no cover - the module ships with the package
        pass
    try:
        from memodag.executors.dask import dask_executor

        found["dask"] = dask_executor
    except ImportError:
        pass
    return found


def resolve_executor(
    executor_def: ExecutorDefinition | None, execution: Mapping[str, Any]
) -> tuple[ExecutorDefinition, Mapping[str, Any] | None, str]:
    """The run's executor, its config from run config (``None``: none given there) and the
    path the user wrote that config under, for error messages."""
    definition = executor_def or in_process_executor
    if not execution:
        return definition, None, "execution.config"
    if set(execution) <= {"config"}:
        config = execution.get("config")
        if config is not None and definition.preset_config is not NO_DEFAULT:
            # as for resources: one place for an executor's config, not a silent replacement
            raise ConfigError(
                [
                    f"execution.config: the job's {definition.name} executor is already configured "
                    f"with .configured(...); name an executor to configure it here instead "
                    f"(execution: {{{definition.name}: {{config: ...}}}})"
                ]
            )
        return definition, config, "execution.config"
    known = known_executors()
    if len(execution) != 1:
        raise ConfigError([f"execution: name one executor, got {sorted(execution)}"])
    ((name, section),) = execution.items()
    if name not in known:
        raise ConfigError([f"execution.{name}: unknown executor; expected one of {sorted(known)}"])
    section = section or {}
    if not isinstance(section, Mapping) or set(section) - {"config"}:
        raise ConfigError([f"execution.{name}: expected {{config: {{...}}}}"])
    return known[name], section.get("config"), f"execution.{name}.config"
