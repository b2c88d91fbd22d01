"""The executor interface and ``ExecutorDefinition`` (what ``@job(executor_def=...)`` takes).

An executor receives ``StepTask``s, runs them somewhere, and returns ``StepOutcome``s from
``wait``. The engine loop, single-threaded in the driver, is the only place that decides what runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from memodag.definitions.config import NO_DEFAULT, ConfigType, normalize_schema, validate_config

if TYPE_CHECKING:
    from memodag.runtime.step import StepOutcome, StepTask


@dataclass(frozen=True)
class RunPayload:
    """What a worker process needs to serve a run: how to rebuild its resources."""

    run_id: str
    job: Any
    resource_config: Mapping[str, Any]
    resource_keys: frozenset[str]
    instance_url: str | None
    storage_dir: str | None


class Executor(ABC):
    """Runs step attempts. ``submit`` must not block on the attempt unless the executor is in-process."""

    #: whether steps run in the driver's process (in-memory io managers work only then)
    in_process: bool = False

    def start(self, payload: RunPayload, runtime: Any) -> None:
        """Called once before the first submit; ``runtime`` is the driver's ``StepRuntime`` or None."""

    @abstractmethod
    def submit(self, task: StepTask) -> None:
        """Start an attempt."""

    @abstractmethod
    def wait(self, timeout: float | None) -> list[StepOutcome]:
        """Outcomes of finished attempts: at least one unless ``timeout`` passes or none are in flight."""

    def can_submit(self) -> bool:
        """Whether another attempt may start now (concurrency limit)."""
        return True

    @property
    def in_flight(self) -> int:
        return 0

    def shutdown(self, cancel: bool = False) -> None:
        """Release workers; with ``cancel``, stop in-flight attempts."""


@dataclass(frozen=True)
class ExecutorDefinition:
    """A named executor factory with a config schema; ``.configured({...})`` presets its config.

    ``check`` finds what the schema cannot say (ranges, fields that exclude each other) in the
    schema-validated config, as ``(field, message)`` pairs (``""`` for the config as a whole); it
    runs even when the schema found problems, so every problem is reported at once, and must
    therefore not trust a field's type (``type(v) is int``: a bool is an int, and the schema
    reports it already).
    """

    name: str
    factory: Callable[[Mapping[str, Any]], Executor]
    config_schema: Any = None
    preset_config: Any = NO_DEFAULT
    check: Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None = None

    @property
    def config_type(self) -> ConfigType | None:
        return normalize_schema(self.config_schema, f"executor '{self.name}' config_schema")

    def configured(self, config: Mapping[str, Any]) -> ExecutorDefinition:
        return replace(self, preset_config=dict(config))

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
