"""The io manager interface, the run lifecycle storage hears, and the contexts both receive.

Owns no decisions about what runs. ``handle_output`` stores a value and returns its address (a
URI) or ``None``; the engine records the address in the event log, so consumers in this run or a
later one load it back through ``load_input``, whose context carries the address and the
producing ``OutputContext``. ``exists``/``delete`` let ``memodag gc`` drive any store; the
``RunLifecycle`` hooks (docs/storage.md, "Run lifecycle") let a store commit or discard what a
run wrote when it ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memodag.storage.jsonenc import encode

#: the serializer of an output with a version but no stored data (a table handed over in
#: memory, docs/tables.md "Inline hand-over"): a consumer that must run re-runs its producer
INLINE = "inline"


@dataclass(frozen=True, slots=True)
class Address:
    """Where a stored output lives: manager key, URI (if the manager gives one) and format,
    plus the run/step/output that produced it and its version."""

    io_manager_key: str
    uri: str | None
    serializer: str | None
    run_id: str
    step_key: str
    output_name: str
    mapping_key: str | None = None
    version: str | None = None
    data_hash: str | None = None
    #: bytes the io manager wrote, and their content hash (``content_hash`` of ``hashing``), when
    #: it reported them: what loading and ``memodag verify`` check the stored data against
    size: int | None = None
    content_hash: str | None = None
    #: the stored data's column schema, when the io manager tells it (a table store: its Arrow
    #: schema, ``memodag.tables.schema_text``): consumers versioned by what they would build
    #: from it (``AUTO_VERSION``) need no read of the data or the store
    schema: str | None = None
    #: ``to_json()``'s text, made once: an address is written up to three times per output
    #: (stored, loaded, indexed)
    _json: str | None = field(default=None, init=False, repr=False, compare=False)

    def to_json(self) -> str:
        """``to_dict()`` as JSON text (computed once per address)."""
        text = self._json
        if text is None:
            text = encode(self.to_dict())
            object.__setattr__(self, "_json", text)
        return text

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "io_manager_key": self.io_manager_key,
            "uri": self.uri,
            "serializer": self.serializer,
            "run_id": self.run_id,
            "step_key": self.step_key,
            "output_name": self.output_name,
            "mapping_key": self.mapping_key,
            "version": self.version,
            "data_hash": self.data_hash,
        }
        # only when known: addresses of managers that report nothing stay as they were
        if self.size is not None:
            found["size"] = self.size
        if self.content_hash is not None:
            found["content_hash"] = self.content_hash
        if self.schema is not None:
            found["schema"] = self.schema
        return found

    def describe(self) -> str:
        """``step.output[piece]`` of run ``<id>`` at ``<uri>``: how warnings name an output."""
        piece = f"[{self.mapping_key}]" if self.mapping_key is not None else ""
        where = f" at {self.uri}" if self.uri else ""
        return f"output '{self.step_key}.{self.output_name}{piece}' of run {self.run_id[:8]}{where}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Address:
        try:
            return cls(**data)
        except TypeError:  # written by another memodag version: fewer or other keys
            return cls(**{k: data.get(k) for k in _ADDRESS_FIELDS})  # type: ignore[arg-type]


_ADDRESS_FIELDS = tuple(f for f in Address.__slots__ if f != "_json")  # type: ignore[attr-defined]


class StoredData(str):
    """The URI ``handle_output`` returns, telling also what was written, so the data can be
    checked when it is loaded or verified (``IOManager.verify``). A ``str`` (the URI itself):
    code that treats the return value as the URI keeps working.

    Attributes:
        size: bytes written, or None if unknown.
        content_hash: ``hashing.content_hasher``'s hex digest of those bytes, or None.
        data_hash: the output's version as the store decided it (a lazy table's query hash),
            recorded as the address's ``data_hash`` in place of a hash of the returned value:
            under early cutoff, consumers are versioned by it. None: the usual value hash.
        schema: the data's column schema as text (``Address.schema``), or None.
    """

    size: int | None
    content_hash: str | None
    data_hash: str | None
    schema: str | None

    def __new__(
        cls,
        uri: str,
        size: int | None = None,
        content_hash: str | None = None,
        data_hash: str | None = None,
        schema: str | None = None,
    ) -> StoredData:
        made = super().__new__(cls, uri)
        made.size = size
        made.content_hash = content_hash
        made.data_hash = data_hash
        made.schema = schema
        return made


@dataclass(slots=True)
class OutputContext:
    """What ``handle_output`` (and ``has_output``) receives about the output being stored."""

    step_key: str
    name: str
    run_id: str
    op_def: Any = None
    out: Any = None  # the Out definition
    mapping_key: str | None = None
    version: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    resource_config: Any = None
    resources: Any = None
    log: Any = None
    #: the step's tags (op tags and node tags, e.g. the table stage ``memodag/stage``)
    tags: Mapping[str, str] = field(default_factory=dict)
    #: the output is early cutoff: a store that can hash its data returns ``StoredData`` with
    #: a ``data_hash`` (consumers are versioned by it)
    early_cutoff: bool = False

    @property
    def has_partition_key(self) -> bool:
        return False

    @classmethod
    def of_address(cls, address: Address, out: Any = None) -> OutputContext:
        """The context of the output stored at ``address`` (what ``load_input`` sees upstream)."""
        return cls(
            address.step_key,
            address.output_name,
            address.run_id,
            None,
            out,
            address.mapping_key,
            address.version,
        )

    def get_identifier(self) -> list[str]:
        """Run id, step key, output name (and piece key): unique within the instance."""
        ids = [self.run_id, self.step_key, self.name]
        if self.mapping_key is not None:
            ids.append(self.mapping_key)
        return ids


@dataclass(slots=True)
class InputContext:
    """What ``load_input`` receives: the consuming input, and the stored output to load."""

    name: str
    step_key: str
    upstream_output: OutputContext
    address: Address | None = None
    op_def: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    resource_config: Any = None
    resources: Any = None
    log: Any = None
    #: the consuming step's tags (op and node tags, e.g. which table of a ``RawSql`` output)
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The run a lifecycle hook is about, and the resource key the hooked object is bound to.

    ``whole_job`` is False for a run of a subset of the job's steps (``step_selection``): what
    it stores is not all the job makes (a table store then leaves other tables' views alone).
    """

    run_id: str
    job_name: str
    resource_key: str
    tags: Mapping[str, str] = field(default_factory=dict)
    #: the steps a run of part of the job selected (``step_selection``); None: the whole job
    step_selection: tuple[str, ...] | None = None

    @property
    def whole_job(self) -> bool:
        """Whether the run runs the whole job (no ``step_selection``)."""
        return not self.step_selection


#: the run statuses ``RunEnd.status`` takes (the instance's ``RunStatus`` values)
RUN_SUCCESS, RUN_FAILURE, RUN_CANCELED = "SUCCESS", "FAILURE", "CANCELED"


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ended: ``status`` is ``"SUCCESS"``, ``"FAILURE"`` or ``"CANCELED"`` (Ctrl-C,
    SIGTERM); ``message`` says why it did not succeed."""

    status: str
    message: str = ""

    @property
    def success(self) -> bool:
        return self.status == RUN_SUCCESS

    @property
    def canceled(self) -> bool:
        return self.status == RUN_CANCELED


class RunLifecycle:
    """Hooks a resource hears during a run; every one is a no-op unless overridden.

    Every ``IOManager`` is a ``RunLifecycle``; a plain resource opts in by subclassing it. The
    hooks are called in the driver process only, on every executor, single-threaded: never in
    a worker. Io managers (and the resources they require) hear them on every executor; other
    plain resources where the driver builds them, that is in in-process runs (a multiprocess or
    Dask run builds them in its workers only). See docs/storage.md, "Run lifecycle".
    """

    def on_run_start(self, run: RunInfo) -> None:
        """Before any step of the run starts. Raising fails the run before any step runs."""

    def on_output_recorded(self, run: RunInfo, address: Address, memoized: bool) -> None:
        """Output ``address`` of a successful attempt (or, with ``memoized``, a stored output
        the run reuses: memoized, or kept from the parent run by a re-execution of some steps,
        heard right after ``on_run_start``) is now durably recorded in the instance. Only io
        managers hear this, for outputs they stored (``address.io_manager_key`` is their key)."""

    def on_run_end(self, run: RunInfo, end: RunEnd) -> None:
        """After the last step and after every outcome is recorded, before teardown. Called
        once for every hooked object whose ``on_run_start`` returned, whatever the outcome.
        Raising marks a run that would have succeeded as FAILURE (naming this resource); what
        is stored stays stored and indexed."""


class IOManager(RunLifecycle, ABC):
    """Stores op outputs and loads them as inputs.

    Implementations must write atomically: a reader never sees a half-written value at an address.
    ``exists``/``delete`` are optional: without them ``memodag gc`` reports this manager's
    outputs and keeps them.
    """

    #: the output's address recorded in the instance index stays valid across runs, so the index
    #: alone decides whether an output is stored (memoization); ``has_output`` is not asked
    uses_instance_index: bool = False

    #: values live in the process's memory for one run only (see ``@io_manager(in_process_only=)``)
    in_process_only: bool = False

    def storage_identity(self) -> str:
        """Where this manager keeps outputs (a base path, a bucket), for memoization to tell two
        managers under one resource key apart; the default says nothing beyond the definition."""
        return ""

    def location(self, address: Address) -> str | None:
        """Where a user finds the output at ``address``, when the URI does not say it plainly
        (a table store: ``duckdb:<file>#<schema>.<table>``); shown by ``list-versions``. None
        (the default): the URI is what to show. Must not hold a password."""
        return None

    @abstractmethod
    def handle_output(self, context: OutputContext, obj: Any) -> str | None:
        """Store ``obj``; return its URI (recorded as its address) or ``None``. Returning the
        URI as a ``StoredData`` also records how many bytes were written and their content
        hash, so loads and ``verify`` can tell an altered output from the one written."""

    @abstractmethod
    def load_input(self, context: InputContext) -> Any:
        """Load the value stored for ``context.upstream_output`` (at ``context.address``)."""

    def combine_collected(self, context: InputContext, values: list[Any]) -> Any:
        """What a collected input (``.collect()``, a fan-in list) whose members this manager
        stored is handed to the op as, given each member's ``load_input`` value in order.

        ``context.metadata["collected"]`` is True in these members' ``load_input`` contexts
        and here; ``context.upstream_output.out`` is the collected output's ``Out`` and
        ``context.address`` is None (there may be no members at all). The default: the list.
        """
        return values

    def serializer_name(self, context: OutputContext) -> str | None:
        """The format recorded in the address (file-based managers say which serializer)."""
        return None

    def exists(self, address: Address) -> bool:
        """Whether something is stored at ``address`` (an address this manager returned).

        Raises:
            NotImplementedError: the manager cannot tell (the default).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement exists()")

    def verify(self, address: Address, read: bool = False) -> str | None:
        """Why the data at ``address`` cannot be served, or None if it can (or cannot be told).

        Memoized runs call this (``read=False``) before reusing an output, so it must be cheap:
        one stat, no read. ``read=True`` (``memodag verify``, a memoized run's final outputs) may
        read the data to check its content hash. The default asks ``exists`` and trusts the
        data when the manager cannot tell; a manager that cannot check cheaply opts out by
        returning None.

        Returns:
            None, or a short reason such as ``"missing"`` or ``"12 bytes, 40 recorded"``.
        """
        try:
            return None if self.exists(address) else "missing"
        except NotImplementedError:
            return None

    def delete(self, address: Address) -> None:
        """Remove what is stored at ``address``; nothing there is not an error (idempotent).

        Raises:
            NotImplementedError: the manager cannot delete (the default); gc then keeps the
                output and says so.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement delete()")

    def keeps(self, address: Address) -> bool:
        """Whether the store keeps what ``address`` names even when asked to delete it (a table
        a committed stage still shows). gc then keeps its index entry too and counts it as
        kept: dropping the entry alone would make the next run recompute what is still there.
        The default: False (``delete`` removes what it is given).
        """
        return False

    # ---- worker hand-over (multiprocess and Dask runs; docs/storage.md) -------------------------
    # A store that only the driver may write (a DuckDB file) lets workers hand outputs over
    # and read inputs the driver prepared. All four are no-ops by default.

    def serve_worker(self, run: RunInfo) -> None:
        """In a worker process, once the run's resources are built there, before its first
        attempt: this manager now serves attempts of ``run`` outside the driver. Raising fails
        the worker's attempts of the run, with this error."""

    def release_worker(self, run: RunInfo) -> None:
        """In a worker process, when the run's resources are torn down there."""

    def prepare_worker_input(self, run: RunInfo, address: Address) -> None:
        """In the driver, before an attempt that loads ``address`` (stored by this manager) is
        handed to a worker. Raising fails that attempt as if the input could not be loaded."""

    def accept_worker_output(self, run: RunInfo, context: OutputContext, address: Address) -> None:
        """In the driver, when a worker's successful attempt stored ``address`` through this
        manager, before the output is recorded: complete what the worker could not do itself.
        Raising fails the attempt (its ``RetryPolicy`` applies); nothing is recorded."""


def can_delete(manager: IOManager) -> bool:
    """Whether ``manager`` overrides ``IOManager.delete`` (gc asks before dropping index entries)."""
    return type(manager).delete is not IOManager.delete


class MemoizableIOManager(IOManager):
    """An io manager that can tell whether an output is stored at its version (memoization)."""

    @abstractmethod
    def has_output(self, context: OutputContext) -> bool:
        """Whether the output named by ``context`` is stored at ``context.version``."""
