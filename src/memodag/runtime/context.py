"""What an op body sees: ``OpExecutionContext`` (config, resources, log, run id) and
``build_op_context`` for calling ops directly in unit tests."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from memodag.storage.instance.records import Event, EventType

_LOGGER = logging.getLogger("memodag")


class Resources(SimpleNamespace):
    """Initialized resources, by attribute (``context.resources.db``) or key (``["db"]``)."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return hasattr(self, key)

    def __getattr__(self, key: str) -> Any:
        raise AttributeError(
            f"resource '{key}' is not available here; declare it in the op's required_resource_keys and the job's resource_defs"
        )


class RunLogger:
    """``context.log``: Python logging plus a LOG event in the run's event log."""

    __slots__ = ("_events", "_live", "_run_id", "_step_key")

    def __init__(
        self,
        run_id: str,
        step_key: str | None,
        events: list[Event] | None,
        live: Callable[[Event], Any] | None = None,
    ) -> None:
        self._run_id = run_id
        self._step_key = step_key
        self._events = events
        self._live = live

    def _log(self, level: int, msg: str, *args: Any) -> None:
        text = msg % args if args else str(msg)
        _LOGGER.log(level, "%s - %s", self._step_key or self._run_id[:8], text)
        if self._events is not None:
            event = Event(
                EventType.LOG,
                self._run_id,
                time.time(),
                self._step_key,
                text,
                {"level": logging.getLevelName(level)},
            )
            self._events.append(event)
            if self._live is not None:
                self._live(event)  # shown now; stored with the attempt's outcome

    def debug(self, msg: str, *args: Any) -> None:
        self._log(logging.DEBUG, msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self._log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._log(logging.WARNING, msg, *args)

    warn = warning

    def error(self, msg: str, *args: Any) -> None:
        self._log(logging.ERROR, msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        """Log at ERROR with the traceback of the exception being handled."""
        text = msg % args if args else str(msg)
        if sys.exc_info()[0] is not None:
            text = f"{text}\n{traceback.format_exc().rstrip()}"
        self._log(logging.ERROR, text)


class OpExecutionContext:
    """The ``context`` argument of an op body.

    Attributes:
        op_config: the op's processed config (defaults filled; a pydantic model if the schema is one).
        resources: the run's initialized resources.
        log: a logger whose records also go to the run's event log.
        run_id, step_key, op_def, mapping_key (the piece key in a mapped clone), instance.
    """

    __slots__ = (
        "_teardown",
        "instance",
        "log",
        "mapping_key",
        "op_config",
        "op_def",
        "resources",
        "retry_number",
        "run_id",
        "step_key",
        "tags",
    )

    def __init__(
        self,
        op_config: Any,
        resources: Any,
        log: RunLogger,
        run_id: str,
        step_key: str,
        op_def: Any,
        mapping_key: str | None = None,
        instance: Any = None,
        retry_number: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.op_config = op_config
        self.resources = resources
        self.log = log
        self.run_id = run_id
        self.step_key = step_key
        self.op_def = op_def
        self.mapping_key = mapping_key
        self.instance = instance
        self.retry_number = retry_number
        self.tags = tags or {}
        self._teardown: contextlib.ExitStack | None = None

    def __enter__(self) -> OpExecutionContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Tear down generator resources built by ``build_op_context`` (code after their yield)."""
        if self._teardown is not None:
            stack, self._teardown = self._teardown, None
            stack.close()

    def get_mapping_key(self) -> str | None:
        return self.mapping_key

    def has_tag(self, key: str) -> bool:
        return key in self.tags

    @property
    def op_handle(self) -> str:
        return self.step_key

    def for_op(self, op_def: Any) -> OpExecutionContext:
        """This (test) context bound to ``op_def``: validates its config against the op's schema."""
        from memodag.definitions.config import validate_config
        from memodag.errors import ConfigError, DefinitionError

        missing = sorted(k for k in op_def.required_resource_keys if k not in self.resources)
        if missing:
            raise DefinitionError(
                f"op '{op_def.name}' requires resource(s) {missing}; pass them to "
                f"build_op_context(resources={{...}}) (given: {sorted(vars(self.resources))})"
            )
        errors: list[str] = []
        raw = (
            self.op_config if not isinstance(self.op_config, _Unvalidated) else self.op_config.value
        )
        config = validate_config(op_def.config_type, raw, f"op '{op_def.name}' config", errors)
        if errors:
            raise ConfigError(errors, f"config for op '{op_def.name}'")
        return OpExecutionContext(
            config,
            self.resources,
            self.log,
            self.run_id,
            op_def.name,
            op_def,
            self.mapping_key,
            self.instance,
            0,
            op_def.tags,
        )


class _Unvalidated:
    """Config given to ``build_op_context``: validated once the op it is used with is known."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def build_op_context(
    config: Any = None,
    resources: Mapping[str, Any] | None = None,
    op_config: Any = None,
    instance: Any = None,
    mapping_key: str | None = None,
) -> OpExecutionContext:
    """A context for calling an op directly: ``my_op(build_op_context(config={...}), x)``.

    ``config`` (or its alias ``op_config``) is validated against the op's schema, with defaults
    filled, when the op is called. ``resources`` values may be plain objects or resource
    definitions; a definition is built with its ``.configured(...)`` config (or its schema's
    defaults) and may require the other resources given. Use the context as a context manager
    (``with build_op_context(...) as context:``) to run generator resources' teardown.

    Raises:
        ConfigError: a resource definition's config does not match its schema.
    """
    from memodag.definitions.config import NO_DEFAULT, validate_config
    from memodag.definitions.resources import as_resource_definition
    from memodag.errors import ConfigError
    from memodag.runtime.resources import initialized_resources

    run_id = f"direct-{uuid.uuid4()}"
    definitions = {
        key: as_resource_definition(key, value) for key, value in (resources or {}).items()
    }
    errors: list[str] = []
    resource_config: dict[str, Any] = {}
    for key, definition in definitions.items():
        given = None if definition.preset_config is NO_DEFAULT else definition.preset_config
        resource_config[key] = validate_config(
            definition.config_type, given, f"resources.{key}.config", errors
        )
    if errors:
        raise ConfigError(errors, "resource config given to build_op_context")
    stack = contextlib.ExitStack()
    built = stack.enter_context(
        initialized_resources(definitions, resource_config, set(definitions), instance, run_id)
    )
    context = OpExecutionContext(
        _Unvalidated(config if config is not None else op_config),
        built,
        RunLogger(run_id, None, None),
        run_id,
        "",
        None,
        mapping_key,
        instance,
    )
    context._teardown = stack
    return context
