"""``@resource`` and ``@io_manager``: things ops use, built once per run (per worker process).

A resource function receives an ``InitResourceContext`` and returns the resource, or yields it
once (code after the ``yield`` runs when the run ends, even when it fails).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from memodag.definitions.config import NO_DEFAULT, ConfigType, normalize_schema, validate_config
from memodag.errors import ConfigError, DefinitionError


@dataclass(frozen=True)
class InitResourceContext:
    """What a resource function receives."""

    resource_config: Any
    resources: Any
    instance: Any = None
    run_id: str | None = None
    log: Any = None


@dataclass(frozen=True, eq=False)
class ResourceDefinition:
    """A resource: a function building it, its config schema and (for memoization) its version.

    ``preset_config``, set by ``.configured(...)``, replaces config from run config.
    """

    resource_fn: Callable[[InitResourceContext], Any]
    config_schema: Any = None
    config_type: ConfigType | None = None
    version: str | None = None
    description: str | None = None
    required_resource_keys: frozenset[str] = frozenset()
    preset_config: Any = NO_DEFAULT
    name: str | None = None
    #: its values live in one process's memory: refused for runs on several processes and as
    #: the source of a re-execution (the memory is gone with the run)
    in_process_only: bool = False
    #: for a resource whose config decides that (``object_store_io_manager`` on ``memory://``):
    #: given its resolved config, whether its values live in one process's memory
    in_process_only_if: Callable[[Any], bool] | None = None
    #: config keys that never enter a version or an index key (how the resource behaves, not
    #: what it computes or where it stores: a table store's ``inline_policy``)
    unversioned_config: frozenset[str] = frozenset()

    @property
    def is_io_manager(self) -> bool:
        return False

    def keeps_values_in_process(self, config: Any) -> bool:
        """Whether, under its resolved ``config``, this resource's values live in one process."""
        if self.in_process_only:
            return True
        return self.in_process_only_if is not None and bool(self.in_process_only_if(config))

    def configured(self, config: Any) -> ResourceDefinition:
        """This resource with its config fixed; run config no longer configures it.

        Raises ``ConfigError`` at once when ``config`` does not match the resource's schema.
        """
        errors: list[str] = []
        validate_config(self.config_type, config, "config", errors)
        if errors:
            raise ConfigError(errors, f"config given to {self!r}.configured(...)")
        return replace(self, preset_config=config)

    @staticmethod
    def hardcoded_resource(value: Any, description: str | None = None) -> ResourceDefinition:
        """A resource that is just ``value``."""
        return ResourceDefinition(
            lambda _: value, description=description, name=type(value).__name__
        )

    def __repr__(self) -> str:
        return f"<resource {self.name or self.resource_fn.__name__}>"


@dataclass(frozen=True, eq=False)
class IOManagerDefinition(ResourceDefinition):
    """A resource whose value is an ``IOManager``; named in ``Out(io_manager_key=...)``."""

    @property
    def is_io_manager(self) -> bool:
        return True


def _decorator(
    cls: type[ResourceDefinition],
    fn: Any,
    config_schema: Any,
    version: str | None,
    description: str | None,
    required_resource_keys: Any,
    in_process_only: bool = False,
) -> Any:
    def decorate(func: Callable[..., Any]) -> ResourceDefinition:
        name = getattr(func, "__name__", "resource")
        params = inspect.signature(func).parameters
        if len(params) > 1:
            raise DefinitionError(
                f"resource '{name}' must take one parameter (the init context) or none"
            )
        call = func if params else (lambda _ctx, _f=func: _f())
        if version is not None and not isinstance(version, str):
            raise DefinitionError(f"resource '{name}': version must be a string, got {version!r}")
        return cls(
            resource_fn=call,
            config_schema=config_schema,
            config_type=normalize_schema(config_schema, f"resource '{name}' config_schema"),
            version=version,
            description=description or inspect.getdoc(func),
            required_resource_keys=frozenset(required_resource_keys or ()),
            name=name,
            in_process_only=in_process_only,
        )

    return decorate(fn) if fn is not None else decorate


def resource(
    fn: Any = None,
    *,
    config_schema: Any = None,
    version: str | None = None,
    description: str | None = None,
    required_resource_keys: Any = None,
) -> Any:
    """Declare a resource. Use bare or as ``@resource(config_schema=..., version=...)``."""
    return _decorator(
        ResourceDefinition, fn, config_schema, version, description, required_resource_keys
    )


def io_manager(
    fn: Any = None,
    *,
    config_schema: Any = None,
    version: str | None = None,
    description: str | None = None,
    required_resource_keys: Any = None,
    in_process_only: bool = False,
    unversioned_config: Any = (),
) -> Any:
    """Declare an io manager: a resource whose function returns an ``IOManager``.
    ``in_process_only=True`` says its outputs live in the run's process memory;
    ``unversioned_config`` names config keys no version or index key sees."""
    made = _decorator(
        IOManagerDefinition,
        fn,
        config_schema,
        version,
        description,
        required_resource_keys,
        in_process_only,
    )
    if not unversioned_config:
        return made
    skip = frozenset(unversioned_config)
    if isinstance(made, ResourceDefinition):
        return replace(made, unversioned_config=skip)
    return lambda f: replace(made(f), unversioned_config=skip)


def as_resource_definition(key: str, value: Any) -> ResourceDefinition:
    """Accept a ``ResourceDefinition`` or any plain object (wrapped as a hard-coded resource)."""
    if isinstance(value, ResourceDefinition):
        return value
    if _is_io_manager(value):
        return IOManagerDefinition(
            lambda _: value,
            name=type(value).__name__,
            in_process_only=value.in_process_only,
        )
    return ResourceDefinition.hardcoded_resource(value)


def _is_io_manager(value: Any) -> bool:
    """Whether ``value`` is a ``storage.io_manager.IOManager``. An instance of one means that module
    is loaded, so the class is looked up there instead of imported: definitions never import
    storage (which builds on them)."""
    module = sys.modules.get("memodag.storage.io_manager")
    return module is not None and isinstance(value, module.IOManager)
