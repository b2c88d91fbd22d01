"""Records the instance keeps: runs and events. Plain data, JSON-able."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class RunStatus(enum.StrEnum):
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELED = "CANCELED"
    #: recorded as STARTED by a process found gone: it will never record an end
    DIED = "DIED"


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
    #: ``data`` as JSON text, when whoever made the event had it at hand (an address's cached
    #: JSON): the instance stores it as is instead of encoding ``data`` again
    encoded: str | None = field(default=None, repr=False, compare=False)

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
    #: when the run's driver last said it is alive (STARTED runs; None before memodag kept it)
    heartbeat: float | None = None

    @property
    def duration(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


class IndexEntry:
    """One row of the output index: output ``output_key`` is stored at ``version`` at ``address``.

    ``recipe`` is what the version was computed from (code version, config, resources, input
    versions), kept so ``explain`` can say what changed; read from the database it is parsed only
    when asked for (a memoized run reads thousands of entries and needs few recipes).
    ``version_scheme`` is the scheme the version was computed by (``versioning/scheme.py``); an
    entry counts as stored only under that scheme (1 where none is stated: memodag 0.1's).
    """

    __slots__ = (
        "_recipe",
        "_recipe_json",
        "address",
        "created_at",
        "output_key",
        "size_bytes",
        "version",
        "version_scheme",
    )

    def __init__(
        self,
        output_key: str,
        version: str,
        address: Any,
        created_at: float,
        size_bytes: int | None = None,
        recipe: Mapping[str, Any] | None = None,
        recipe_json: str | None = None,
        version_scheme: int = 1,
    ) -> None:
        self.output_key = output_key
        self.version = version
        self.address = address
        self.created_at = created_at
        self.size_bytes = size_bytes
        self._recipe = recipe
        self._recipe_json = recipe_json
        self.version_scheme = version_scheme

    @property
    def recipe(self) -> Mapping[str, Any] | None:
        if self._recipe is None and self._recipe_json:
            self._recipe = json.loads(self._recipe_json)
        return self._recipe

    def __repr__(self) -> str:
        return f"IndexEntry({self.output_key!r}, {self.version!r}, {self.address!r})"

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.output_key,
            self.version,
            self.address,
            self.created_at,
            self.size_bytes,
            self.recipe,
            self.version_scheme,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IndexEntry) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Pin:
    """Something a run relies on while it lives, which gc must keep.

    ``kind`` is ``"key"`` (every stored version of the output key ``target``, which the run read
    from the index and has not decided about yet), ``"entry"`` (one version it reuses: ``target``
    is the JSON ``[output_key, version]``) or ``"run"`` (every output the run ``target`` recorded: an ancestor whose
    outputs a re-execution loads). ``created_at``: seconds since the epoch.
    """

    run_id: str
    kind: str
    target: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds ``lease_key``: a run computing a step at a version (or a gc deleting).

    ``process`` is the holder's ``process_identity()`` (host, pid, start); ``heartbeat_at`` when
    the holder last said it was alive (seconds since the epoch): as read, its run's heartbeat
    when newer than the time the lease was taken (a lease is not written to stay alive).
    """

    lease_key: str
    run_id: str
    step_key: str | None
    process: Mapping[str, Any]
    acquired_at: float
    heartbeat_at: float
