"""The io manager interface and the contexts it receives. Owns no decisions about what runs.

``handle_output`` stores a value and returns its address (a URI) or ``None``; the engine records
the address in the event log, so consumers in this run or a later one load it back through
``load_input``, whose context carries the address and the producing ``OutputContext``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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

    def to_dict(self) -> dict[str, Any]:
        return {
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Address:
        try:
            return cls(**data)
        except TypeError:  # written by another memodag version: fewer or other keys
            return cls(**{k: data.get(k) for k in cls.__slots__})  # type: ignore[arg-type]


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


class IOManager(ABC):
    """Stores op outputs and loads them as inputs.

    Implementations must write atomically: a reader never sees a half-written value at an address.
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

    @abstractmethod
    def handle_output(self, context: OutputContext, obj: Any) -> str | None:
        """Store ``obj``; return its URI (recorded as its address) or ``None``."""

    @abstractmethod
    def load_input(self, context: InputContext) -> Any:
        """Load the value stored for ``context.upstream_output`` (at ``context.address``)."""

    def serializer_name(self, context: OutputContext) -> str | None:
        """The format recorded in the address (file-based managers say which serializer)."""
        return None


class MemoizableIOManager(IOManager):
    """An io manager that can tell whether an output is stored at its version (memoization)."""

    @abstractmethod
    def has_output(self, context: OutputContext) -> bool:
        """Whether the output named by ``context`` is stored at ``context.version``."""
