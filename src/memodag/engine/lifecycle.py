"""Tells a run's resources and io managers when it starts, records outputs and ends.

Driver-side only, single-threaded, on every executor. Holds no decision about what runs: it
turns the run's milestones into ``RunLifecycle`` calls and hook failures into one message for the
run's final status. Semantics: docs/storage.md, "Run lifecycle".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from memodag.errors import ExecutionError
from memodag.storage.instance.records import Event, EventType
from memodag.storage.io_manager import Address, IOManager, RunEnd, RunInfo, RunLifecycle


def _kind(hooked: Any) -> str:
    return "io manager" if isinstance(hooked, IOManager) else "resource"


class RunHooks:
    """The lifecycle calls of one run, on the hooked objects among ``resources`` (key -> object,
    in the order they were built: dependencies first)."""

    def __init__(
        self,
        run_id: str,
        job_name: str,
        tags: Mapping[str, str],
        resources: Mapping[str, Any],
        step_selection: Iterable[str] | None = None,
    ) -> None:
        self.hooked = {k: v for k, v in resources.items() if isinstance(v, RunLifecycle)}
        selection = tuple(step_selection) if step_selection is not None else None
        self._infos = {k: RunInfo(run_id, job_name, k, dict(tags), selection) for k in self.hooked}
        self._started: list[str] = []
        # addresses of attempts whose outcome has not been stored yet, by step key
        self._pending: dict[str, list[Address]] = {}
        self._errors: list[str] = []

    @property
    def listens_for_outputs(self) -> bool:
        """Whether any io manager overrides ``on_output_recorded`` (else the run's events need
        not be read at all: no per-step cost for managers that ignore the hook)."""
        return any(
            isinstance(v, IOManager)
            and type(v).on_output_recorded is not RunLifecycle.on_output_recorded
            for v in self.hooked.values()
        )

    def start(self) -> None:
        """``on_run_start`` on each hooked object, dependencies first.

        Raises:
            ExecutionError: naming the resource whose hook raised (the run then fails before
                any step; objects already started still hear ``on_run_end``).
        """
        for key, hooked in self.hooked.items():
            try:
                hooked.on_run_start(self._infos[key])
            except Exception as exc:
                raise ExecutionError(
                    f"{_kind(hooked)} '{key}' failed at run start (on_run_start): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self._started.append(key)

    def stored(self, events: Iterable[Event]) -> None:
        """Events just written to the instance: each output of a successful attempt, and each
        output a memoized step reuses, goes to ``on_output_recorded`` of the manager that stored
        it. A hook that raises is remembered and fails the run at its end."""
        for event in events:
            kind = event.event_type
            key = event.step_key or ""
            if kind is EventType.STEP_START:
                self._pending[key] = []
            elif kind is EventType.HANDLED_OUTPUT:
                self._pending.setdefault(key, []).append(Address.from_dict(event.data["address"]))
            elif kind is EventType.STEP_SUCCESS:
                for address in self._pending.pop(key, []):
                    self._recorded(address, False)
            elif kind is EventType.STEP_FAILURE:
                self._pending.pop(key, None)
            elif kind is EventType.STEP_MEMOIZED:
                for data in event.data.get("addresses", ()):
                    self._recorded(Address.from_dict(data), True)

    def inherited(self, addresses: Iterable[Address]) -> None:
        """Outputs a re-execution keeps from its parent run (steps it does not select): each
        goes to ``on_output_recorded`` as reused (``memoized``), so a stage a table store
        commits shows them as the parent run left them beside what this run re-executes."""
        if not self.listens_for_outputs:
            return
        for address in addresses:
            self._recorded(address, True)

    def _recorded(self, address: Address, memoized: bool) -> None:
        key = address.io_manager_key
        hooked = self.hooked.get(key)
        if not isinstance(hooked, IOManager) or key not in self._started:
            return
        try:
            hooked.on_output_recorded(self._infos[key], address, memoized)
        except Exception as exc:
            self._errors.append(
                f"io manager '{key}' failed on output {address.step_key}.{address.output_name} "
                f"(on_output_recorded): {type(exc).__name__}: {exc}"
            )

    def end(self, status: str, message: str) -> str | None:
        """``on_run_end`` on each started object, dependents first; every one is called even
        when another raises. Returns why the run must count as failed because of a hook
        (``on_output_recorded`` or ``on_run_end`` raised), or None."""
        end = RunEnd(status, message)
        for key in reversed(self._started):
            hooked = self.hooked[key]
            try:
                hooked.on_run_end(self._infos[key], end)
            except Exception as exc:
                self._errors.append(
                    f"{_kind(hooked)} '{key}' failed at run end (on_run_end): "
                    f"{type(exc).__name__}: {exc}"
                )
        self._started.clear()
        return "; ".join(self._errors) if self._errors else None
