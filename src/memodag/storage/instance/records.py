"""Records the instance keeps: runs and events. Plain data, JSON-able."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class RunStatus(enum.StrEnum):
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELED = "CANCELED"


class EventType(enum.StrEnum):
    RUN_START = "RUN_START"
    RUN_SUCCESS = "RUN_SUCCESS"
    RUN_FAILURE = "RUN_FAILURE"
    RUN_CANCELED = "RUN_CANCELED"
    STEP_START = "STEP_START"
    STEP_SUCCESS = "STEP_SUCCESS"
    STEP_FAILURE = "STEP_FAILURE"
    STEP_RETRY = "STEP_RETRY"
    STEP_SKIPPED = "STEP_SKIPPED"
    STEP_MEMOIZED = "STEP_MEMOIZED"
    STEP_OUTPUT = "STEP_OUTPUT"
    HANDLED_OUTPUT = "HANDLED_OUTPUT"
    LOADED_INPUT = "LOADED_INPUT"
    DYNAMIC_MANIFEST = "DYNAMIC_MANIFEST"
    LOG = "LOG"


@dataclass(slots=True)
class Event:
    """One entry of a run's event log. ``data`` is JSON-able (addresses, errors, durations)."""

    event_type: EventType
    run_id: str
    timestamp: float
    step_key: str | None = None
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<Event {self.event_type.value} {self.step_key or ''}>"


@dataclass(slots=True)
class RunRecord:
    """A run of a job, as stored."""

    run_id: str
    job_name: str
    status: RunStatus
    tags: Mapping[str, str] = field(default_factory=dict)
    run_config: Mapping[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None
    root_run_id: str | None = None
    step_selection: list[str] | None = None
    start_time: float | None = None
    end_time: float | None = None

    @property
    def duration(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


@dataclass(slots=True)
class IndexEntry:
    """One row of the output index: output ``output_key`` is stored at ``version`` at ``address``.

    ``recipe`` is what the version was computed from (code version, config, resources, input
    versions), kept so ``explain`` can say what changed.
    """

    output_key: str
    version: str
    address: Any
    created_at: float
    size_bytes: int | None = None
    recipe: Mapping[str, Any] | None = None
