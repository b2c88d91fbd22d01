"""The ``Memoizer`` interface: what the engine loop asks about versions and stored outputs.

The engine depends on this small interface, never on the index-backed implementation
(``versioning.memoize.IndexMemoizer``). This base memoizes nothing: every step runs. It owns no
decisions about what runs next (that is the engine's walk) and touches no storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from memodag.plan.plan import ExecutionStep
from memodag.runtime.step import StepOutcome
from memodag.storage.io_manager import Address

#: ``(step key, output name, mapping key)``: one stored output of a run.
AddressKey = tuple[str, str, "str | None"]


class Memoizer:
    """The versioning adapter beside the engine. This base memoizes nothing.

    Invariant: the engine calls ``prepare`` with every batch of steps before it asks ``stored``
    or ``versions`` about any of them, and ``record`` once per successful attempt.
    """

    enabled = False
    #: whether ``claim`` may make the run wait for another (only real, memoized runs share work)
    shares_work = False

    def prepare(self, steps: Iterable[ExecutionStep]) -> None:
        """Called with every batch of steps entering the run (batched index look-ups go here)."""

    def attach_io_managers(self, io_managers: Mapping[str, Any]) -> None:
        """The run's io managers, for custom managers that answer ``has_output`` themselves."""

    def attach_resources(self, resources: Any) -> None:
        """The resources the driver built for the run (``Resources``): what declared data
        versions and custom io managers' ``has_output`` see."""

    def note_addresses(self, addresses: Mapping[AddressKey, Address]) -> None:
        """Outputs the run takes from elsewhere (a parent run)."""

    def versions(self, step: ExecutionStep) -> Mapping[str, str] | None:
        """Each output's version, or None when the step (or an input) has none."""
        return None

    def hash_outputs(self, step: ExecutionStep) -> frozenset[str]:
        """Outputs whose data hash the attempt must record (early cutoff)."""
        return frozenset()

    def stored(self, step: ExecutionStep) -> list[Address] | None:
        """Addresses of all the step's outputs (every piece of a dynamic one) if all are stored
        at their current version, else None."""
        return None

    def settle(self) -> float | None:
        """Called before the engine hands an attempt over or waits: store what the decisions
        since the last call let go of or keep (the index memoizer narrows the run's pins and
        gives up leases). Returns how soon it wants to be called again, if it does."""
        return None

    def claim(self, step: ExecutionStep) -> str | None:
        """Called before ``step`` is handed to an executor: None when this run may compute it;
        else who is computing the same version now (another live run), and the engine waits,
        then asks ``stored`` and ``claim`` again (after ``refresh``)."""
        return None

    def claim_many(
        self,
        steps: list[ExecutionStep],
        events: Sequence[Any] = (),
        index_entries: Sequence[Any] = (),
    ) -> dict[str, str]:
        """``claim`` for several steps at once; the holders of those another run computes,
        by step key (steps left out may run). Only when ``shares_work``: ``events`` and
        ``index_entries`` (an executed step's outcome) are stored in the claim's transaction."""
        return {}

    def refresh(self, step: ExecutionStep) -> None:
        """Read again what is stored for ``step`` (another run may have stored it meanwhile)."""

    def release(self, step: ExecutionStep) -> None:
        """``step``'s attempts are over (its outcome is recorded): give up what ``claim`` took."""

    def record(self, step: ExecutionStep, outcome: StepOutcome) -> list[Any]:
        """Index entries for what a successful attempt stored."""
        return []

    def not_produced(self, step: ExecutionStep, outputs: Iterable[str] | None = None) -> None:
        """``step`` did not produce ``outputs`` (all its outputs if None): an optional output not
        yielded, in this run or the parent run, or the step skipped for one upstream. Fan-in
        lists and collectors that leave such a member out still get a version."""

    def notices(self) -> list[str]:
        """Warnings about the stored outputs seen so far, each given once per run (outputs of an
        older version scheme that will be recomputed, stored outputs found gone or altered)."""
        return []

    def distrust(self, step_key: str, consumers: Iterable[str] = ()) -> None:
        """Stop serving ``step_key``'s stored outputs in this run (one could not be loaded: the
        engine recomputes the step); ``consumers`` get their versions worked out afresh."""

    def forget(self, step: ExecutionStep) -> None:
        """Drop the index entries of ``step``'s stored outputs at their current versions, so the
        next memoized run computes it again (a fan-out whose piece cannot be loaded: this run
        cannot expand it a second time)."""


__all__ = ["AddressKey", "Memoizer"]
