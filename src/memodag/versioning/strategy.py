"""How op and resource versions are obtained: by hand (``version=``) or from a ``VersionStrategy``.

A strategy is consulted once per definition per run (not per step): its answers are cached by the
version resolver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

MEMOIZED_RUN_TAG = "memodag/is_memoized_run"


@dataclass(frozen=True)
class OpVersionContext:
    """What ``VersionStrategy.get_op_version`` receives: the op and its processed config."""

    op_def: Any
    op_config: Any


@dataclass(frozen=True)
class ResourceVersionContext:
    """What ``VersionStrategy.get_resource_version`` receives: the resource and its processed config."""

    resource_def: Any
    resource_config: Any


class VersionStrategy(ABC):
    """Computes code versions for ops (and optionally resources) that were not given one."""

    @abstractmethod
    def get_op_version(self, context: OpVersionContext) -> str:
        """A version string for the op's code; equal code, equal version."""

    def get_resource_version(self, context: ResourceVersionContext) -> str | None:
        """A version for the resource, or None to treat it as unversioned."""
        return None

    def begin_run(self) -> None:
        """Called once as a run (or a version listing) starts, before any version is asked:
        a strategy that caches across runs checks here that what it cached still holds."""
