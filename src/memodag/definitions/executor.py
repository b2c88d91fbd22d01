"""``ExecutorDefinition``, the built-in executors' definitions, and which one a run uses.

An executor definition is a name, a config schema with its checks and a *reference* to the factory
that builds the executor (``"memodag.executors.multiprocess:create"``), resolved when a run starts:
this module imports nothing of ``memodag.executors`` (annotations aside), so validating run config,
listing versions or importing memodag loads no executor code. Run config ``execution`` may be
``{"config": {...}}`` (configures the job's executor) or ``{"multiprocess": {"config": {...}}}``
(names one).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from memodag.definitions.config import (
    NO_DEFAULT,
    ConfigType,
    Field,
    Noneable,
    normalize_schema,
    validate_config,
)
from memodag.errors import ConfigError, DefinitionError

if TYPE_CHECKING:
    from memodag.executors.base import Executor

ExecutorFactory = Callable[[Mapping[str, Any]], "Executor"]


@dataclass(frozen=True)
class ExecutorDefinition:
    """A named executor factory with a config schema; ``.configured({...})`` presets its config.

    ``factory`` is a callable taking the validated config, or a ``"package.module:function"``
    reference to one, imported only when a run creates the executor (``create``).

    ``check`` finds what the schema cannot say (ranges, fields that exclude each other) in the
    schema-validated config, as ``(field, message)`` pairs (``""`` for the config as a whole); it
    runs even when the schema found problems, so every problem is reported at once, and must
    therefore not trust a field's type (``type(v) is int``: a bool is an int, and the schema
    reports it already).
    """

    name: str
    factory: ExecutorFactory | str
    config_schema: Any = None
    preset_config: Any = NO_DEFAULT
    check: Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.factory, str):
            module, _, attribute = self.factory.partition(":")
            if not module or not attribute:
                raise DefinitionError(
                    f"executor '{self.name}': factory {self.factory!r} is not a reference; "
                    "expected 'package.module:function' or a callable"
                )
        elif not callable(self.factory):
            raise DefinitionError(
                f"executor '{self.name}': factory must be a callable or a "
                f"'package.module:function' reference, got {type(self.factory).__name__}"
            )

    @property
    def config_type(self) -> ConfigType | None:
        return normalize_schema(self.config_schema, f"executor '{self.name}' config_schema")

    def configured(self, config: Mapping[str, Any]) -> ExecutorDefinition:
        return replace(self, preset_config=dict(config))

    def create(self, config: Mapping[str, Any]) -> Executor:
        """A new executor for one run; ``config`` was validated by ``validated_config``.

        Raises:
            DefinitionError: the factory reference names no importable function.
        """
        factory = self.factory
        if isinstance(factory, str):
            factory = _resolve(self.name, factory)
        return factory(config)

    def validated_config(
        self, config: Mapping[str, Any] | None, path: str = "execution.config"
    ) -> tuple[Mapping[str, Any], list[str]]:
        """``config`` (``None``: the preset) validated, and every problem found in it, each under
        ``path``, where the user wrote it (the preset's own path for a preset)."""
        raw: Any = config
        if config is None:
            raw = {}
            if self.preset_config is not NO_DEFAULT:
                raw, path = self.preset_config, f"{self.name}_executor.configured(...)"
        errors: list[str] = []
        value = (
            validate_config(self.config_type, raw, path, errors)
            if self.config_schema is not None
            else {}
        )
        if not isinstance(value, Mapping):
            value = {}
        if self.check is not None:
            errors.extend(
                f"{path}.{field}: {message}" if field else f"{path}: {message}"
                for field, message in self.check(value)
            )
        return value, errors


def _resolve(name: str, reference: str) -> ExecutorFactory:
    module_name, _, attribute = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise DefinitionError(
            f"executor '{name}': cannot load its factory {reference!r} ({exc}); "
            "check the module is installed and names that function"
        ) from exc
    if not callable(factory):
        raise DefinitionError(f"executor '{name}': {reference!r} is not callable")
    return factory  # type: ignore[no-any-return]


# --- the built-in executors' config: what users write under `execution` ------------------------

TAG_CONCURRENCY_LIMITS_FIELD = Field(
    [{"key": str, "value": Field(str, is_required=False), "limit": int}],
    default_value=[],
    description=(
        "At most `limit` steps whose op tags have `key` (equal to `value` if given) run at once, "
        'e.g. [{"key": "db", "limit": 2}].'
    ),
)

#: how multiprocess workers may start; never 'fork' (see executors/multiprocess.py)
START_METHODS = ("forkserver", "spawn")


def tag_limit_problems(raw: Any) -> list[tuple[str, str]]:
    """What is wrong with schema-validated ``tag_concurrency_limits`` entries, as
    ``ExecutorDefinition.check`` pairs."""
    problems = []
    for i, entry in enumerate(raw if isinstance(raw, list | tuple) else ()):
        limit = entry.get("limit") if isinstance(entry, Mapping) else None
        if type(limit) is int and limit < 1:
            problems.append(
                (f"tag_concurrency_limits[{i}].limit", f"expected an int >= 1, got {limit}")
            )
    return problems


def _check_multiprocess(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    max_concurrent = config.get("max_concurrent")
    if type(max_concurrent) is int and max_concurrent < 1:
        problems.append(("max_concurrent", f"expected an int >= 1, got {max_concurrent}"))
    start_method = config.get("start_method")
    if isinstance(start_method, str) and start_method not in START_METHODS:
        problems.append(
            ("start_method", f"expected one of {list(START_METHODS)}, got {start_method!r}")
        )
    return problems + tag_limit_problems(config.get("tag_concurrency_limits"))


def _address_problem(address: str) -> str:
    """Why ``address`` cannot name a Dask scheduler ("" if it can): checked before the run starts,
    since a malformed one fails inside ``Client`` and leaves it hanging at interpreter exit."""
    expected = "expected a Dask scheduler address such as tcp://host:8786 or host:8786"
    if not address.strip():
        return f"is empty; {expected}, or leave it out to start a local cluster"
    try:
        from distributed.comm import get_address_host_port
    except ImportError:
        return ""  # reported when the executor is created: Dask is not installed
    try:
        get_address_host_port(address)
    except ValueError as exc:
        if "extract host and port" in str(exc):
            return ""  # a known scheme without host:port (inproc://, ucx://): Dask connects
        return f"got {address!r} ({exc}); {expected}"
    return ""


def _check_dask(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    address = config.get("address")
    if isinstance(address, str):
        problem = _address_problem(address)
        if problem:
            problems.append(("address", problem))
    if address and config.get("n_workers") is not None:
        problems.append(
            (
                "",
                "give either 'address' (an existing scheduler) or 'n_workers' (a local cluster), not both",
            )
        )
    for name in ("n_workers", "threads_per_worker", "max_concurrent"):
        value = config.get(name)
        if type(value) is int and value < 1:
            problems.append((name, f"expected an int >= 1, got {value}"))
    return problems + tag_limit_problems(config.get("tag_concurrency_limits"))


# no fields: any config given to it is a mistake (such as max_concurrent meant for another executor)
in_process_executor = ExecutorDefinition("in_process", "memodag.executors.in_process:create", {})
"""Runs each step in the driver's process, one at a time (the default)."""

multiprocess_executor = ExecutorDefinition(
    "multiprocess",
    "memodag.executors.multiprocess:create",
    {
        "max_concurrent": Field(
            Noneable(int),
            default_value=None,
            description="Worker processes running steps at once; default one per core.",
        ),
        "start_method": Field(
            Noneable(str),
            default_value=None,
            description="How workers start: 'forkserver' (default where available) or 'spawn'; never 'fork'.",
        ),
        "tag_concurrency_limits": TAG_CONCURRENCY_LIMITS_FIELD,
    },
    check=_check_multiprocess,
)
"""Runs each step in a worker process; outputs must go to storage every process can reach."""

dask_executor = ExecutorDefinition(
    "dask",
    "memodag.executors.dask:create",
    {
        "address": Field(
            Noneable(str),
            default_value=None,
            description="Scheduler address (tcp://host:8786); default: start a LocalCluster for the run.",
        ),
        "n_workers": Field(
            Noneable(int),
            default_value=None,
            description="Worker processes of the local cluster; default one per core.",
        ),
        "threads_per_worker": Field(
            int, default_value=1, description="Threads per local worker process."
        ),
        "max_concurrent": Field(
            Noneable(int),
            default_value=None,
            description="Steps handed to Dask at once; default every ready step (up to 10,000).",
        ),
        "tag_concurrency_limits": TAG_CONCURRENCY_LIMITS_FIELD,
    },
    check=_check_dask,
)
"""Runs each step on a Dask distributed worker; outputs must go to storage every worker can reach."""


def known_executors() -> dict[str, ExecutorDefinition]:
    """The executors run config may name under ``execution``."""
    return {
        "in_process": in_process_executor,
        "multiprocess": multiprocess_executor,
        "dask": dask_executor,
    }


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
