"""``mem_io_manager``: outputs kept in the process's memory for the length of one run."""

from __future__ import annotations

from typing import Any

from memodag.definitions.resources import io_manager
from memodag.errors import StorageError
from memodag.storage.io_manager import Address, InputContext, MemoizableIOManager, OutputContext


class InMemoryIOManager(MemoizableIOManager):
    """Keeps values in a dict; nothing survives the run, and nothing crosses processes."""

    in_process_only = True

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], Any] = {}

    def handle_output(self, context: OutputContext, obj: Any) -> str:
        key = tuple(context.get_identifier())
        self.values[key] = obj
        return "memory://" + "/".join(key)

    def load_input(self, context: InputContext) -> Any:
        key = tuple(context.upstream_output.get_identifier())
        try:
            return self.values[key]
        except KeyError:
            raise StorageError(
                f"mem_io_manager has no value for {'/'.join(key)}: in-memory outputs live only for "
                "one run in one process; use fs_io_manager to load outputs across runs"
            ) from None

    def has_output(self, context: OutputContext) -> bool:
        return tuple(context.get_identifier()) in self.values

    def exists(self, address: Address) -> bool:
        return tuple(OutputContext.of_address(address).get_identifier()) in self.values

    def delete(self, address: Address) -> None:
        self.values.pop(tuple(OutputContext.of_address(address).get_identifier()), None)


@io_manager(in_process_only=True)
def mem_io_manager() -> InMemoryIOManager:
    """Keeps outputs in memory for one in-process run (fast tests; nothing is persisted)."""
    return InMemoryIOManager()
