"""The executor interface (``Executor``) and what a worker process needs to serve a run.

``ExecutorDefinition`` (what ``@job(executor_def=...)`` takes) lives in
``memodag.definitions.executor`` and names its executor's factory without importing it.

An executor receives ``StepTask``s, runs them somewhere, and returns ``StepOutcome``s from
``wait``. The engine loop, single-threaded in the driver, is the only place that decides what runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memodag.definitions.job import JobDefinition
    from memodag.runtime.step import StepOutcome, StepRuntime, StepTask


@dataclass(frozen=True)
class RunPayload:
    """What a worker process needs to serve a run: how to rebuild its resources."""

    run_id: str
    job: JobDefinition
    resource_config: Mapping[str, Any]
    resource_keys: frozenset[str]
    instance_url: str | None
    storage_dir: str | None
    #: the run's tags (the job's and the run's own, with ``memodag/cache_validation``):
    #: a worker's io managers must see what the driver's see (a forced run writes anew)
    run_tags: Mapping[str, str] = field(default_factory=dict)


class Executor(ABC):
    """Runs step attempts. ``submit`` must not block on the attempt unless the executor is in-process."""

    #: whether steps run in the driver's process (in-memory io managers work only then)
    in_process: bool = False

    def start(self, payload: RunPayload, runtime: StepRuntime | None) -> None:
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
