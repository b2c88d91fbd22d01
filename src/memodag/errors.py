"""Every exception memodag raises on purpose: one base class, a few kinds users catch.

Messages name the op, field or value at fault and what was expected.
"""

from __future__ import annotations


class MemodagError(Exception):
    """Base class of every error memodag raises on purpose."""


class DefinitionError(MemodagError):
    """An op, graph, job, resource or io manager is declared or wired wrongly."""


class ConfigError(MemodagError):
    """Run config (or a resource/op config) does not match its schema.

    ``errors`` holds every problem found, each as ``"path: message"``, so a user fixes them all
    in one go rather than one per run.
    """

    def __init__(self, errors: list[str], what: str = "run config") -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"Invalid {what} ({len(self.errors)} problem(s)):\n{lines}")


class ExecutionError(MemodagError):
    """A run could not be executed as asked (bad step selection, missing parent run, ...)."""


class StepExecutionError(ExecutionError):
    """User code in a step raised; the original exception is ``__cause__``."""

    def __init__(self, step_key: str, message: str) -> None:
        self.step_key = step_key
        self.reason = message
        super().__init__(f"Step '{step_key}' failed: {message}")


class StorageError(MemodagError):
    """Storage (io manager, object store, instance) could not read or write what was asked."""


class MemoizationError(MemodagError):
    """Memoization was asked for but cannot be honoured (e.g. ops without a version)."""


class DataVersionError(MemoizationError):
    """An op's ``data_version`` function raised, or returned something that is not JSON: user
    code failed while versions were computed (the CLI exits 1, as for a failed step)."""


class OutputLostError(StorageError):
    """A stored output is gone, or is not what was recorded when it was written (its size or
    content hash differs). ``address`` is the output's recorded address. A memoized run treats
    it as never stored and recomputes it (docs/reliability.md)."""

    def __init__(self, message: str, address: object = None) -> None:
        self.address = address
        super().__init__(message)
