"""``RunProgress``: the event listener that shows a run as it executes.

On a terminal: a live bar (steps done / total, the last step finished, elapsed time), with
failures, retries and skips printed above it. Elsewhere (pipes, CI logs): one plain line per step
event, e.g. ``✓ load 0.12s`` or ``✗ train: ValueError: ...``. It also keeps each step's state,
from which the end-of-run summary is drawn.

Memoized steps cost next to nothing, so a rerun may report thousands of them in a burst: a burst
of more than ``MEMOIZED_LINES`` consecutive memoized steps prints one summary line (and updates
the bar once every ``_BAR_EVERY`` steps), never a line each. Executed steps still print their line
as they end. Per-event work is O(1): counts are kept per status, never recounted.

The total starts at the plan's step count and grows as mapped (dynamic) steps appear. A listener
runs inside the engine loop, so nothing here may raise or block.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from memodag.storage.instance.records import Event

DONE = frozenset({"success", "failed", "skipped", "memoized"})

#: a burst of at most this many consecutive memoized steps prints a line per step
MEMOIZED_LINES = 10
_BAR_EVERY = 500  # memoized steps between two bar updates within a burst

_UNICODE_SYMBOLS = {"success": "✓", "failed": "✗", "skipped": "-", "memoized": "○", "retry": "↻"}
_ASCII_SYMBOLS = {"success": "ok", "failed": "X", "skipped": "-", "memoized": "o", "retry": "~"}
_STYLES = {
    "success": "green",
    "failed": "red",
    "skipped": "yellow",
    "memoized": "cyan",
    "retry": "yellow",
}


@dataclass
class StepState:
    """What the run has told us about one step so far."""

    status: str = "running"
    attempts: int = 0
    duration: float | None = None
    error: dict[str, Any] | None = None
    message: str = ""


class RunProgress:
    """Listener for ``execute_job(listeners=[...])``; a context manager around the run."""

    def __init__(
        self,
        console: Console,
        job_name: str,
        planned_steps: Iterable[str],
        live: bool | None = None,
        steps_pending: bool = False,
        silent: bool = False,
    ) -> None:
        self.console = console
        self.job_name = job_name
        self.planned = set(planned_steps)
        self.live = (console.is_terminal if live is None else live) and not silent
        self.silent = silent
        self.steps_pending = steps_pending
        self.steps: dict[str, StepState] = {}
        self.run_id: str | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        self._discovered = 0
        self._by_status: dict[str, int] = {}
        self._memoized_burst: list[str] = []  # consecutive memoized steps not printed yet
        self._last = ""
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        utf = (console.encoding or "").lower().replace("-", "").startswith("utf")
        self._symbols = _UNICODE_SYMBOLS if utf else _ASCII_SYMBOLS
        self._ellipsis = "…" if utf else "..."

    # -- counts for the summary ---------------------------------------------------------------

    @property
    def total(self) -> int:
        return len(self.planned) + self._discovered

    @property
    def done(self) -> int:
        return sum(n for status, n in self._by_status.items() if status in DONE)

    def counts(self) -> dict[str, int]:
        by_status = self._by_status
        return {
            "executed": by_status.get("success", 0),
            "memoized": by_status.get("memoized", 0),
            "failed": by_status.get("failed", 0),
            "skipped": by_status.get("skipped", 0),
        }

    def failures(self) -> list[tuple[str, StepState]]:
        return [(k, s) for k, s in self.steps.items() if s.status == "failed"]

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> RunProgress:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._description(), total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = time.monotonic()
        with contextlib.suppress(Exception):
            self._end_memoized_burst()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- the listener -----------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        try:
            self._handle(event)
        except Exception:
            # a broken display must never fail the run it is showing
            pass

    def _handle(self, event: Event) -> None:
        kind = event.event_type.value
        key = event.step_key
        if kind == "STEP_MEMOIZED" and key is not None:
            self._memoized(key)
            return
        if self._memoized_burst:
            self._end_memoized_burst()
        data = event.data or {}
        if kind == "RUN_START":
            self.run_id = event.run_id
            steps = f"{self.total} step{'s' if self.total != 1 else ''}"
            if self.steps_pending:
                steps = (
                    f"{steps}, more as fan-outs produce their pieces"
                    if self.total
                    else "steps counted as fan-outs produce their pieces"
                )
            self._line(f"Run {event.run_id} started: job {self.job_name} ({steps})")
            return
        if kind == "LOG":
            self._log_line(key, event.message, str(data.get("level", "INFO")))
            return
        if key is None:
            return
        state = self._state(key)
        if kind == "STEP_START":
            self._set(state, "running")
            state.attempts = int(data.get("attempt", 0)) + 1
        elif kind == "STEP_SUCCESS":
            self._set(state, "success")
            state.duration = data.get("duration")
            state.attempts = max(state.attempts, int(data.get("attempt", 0)) + 1)
            self._step_line("success", f"{key} {_seconds(state.duration)}".rstrip(), quiet=True)
        elif kind == "STEP_FAILURE":
            self._set(state, "failed")
            state.duration = data.get("duration")
            state.error = dict(data.get("error") or {})
            state.message = event.message
            state.attempts = max(state.attempts, int(data.get("attempt", 0)) + 1)
            self._step_line("failed", f"{key}: {event.message}")
        elif kind == "STEP_RETRY":
            self._set(state, "retrying")
            self._step_line("retry", f"{key}: {event.message}")
        elif kind == "STEP_SKIPPED":
            self._set(state, "skipped")
            state.message = event.message
            self._step_line("skipped", f"{key} skipped: {event.message}")
        else:
            return
        self._last = key
        self._refresh()

    def _state(self, key: str) -> StepState:
        state = self.steps.get(key)
        if state is None:
            state = self.steps[key] = StepState()
            self._by_status["running"] = self._by_status.get("running", 0) + 1
            if key not in self.planned:
                self._discovered += 1
        return state

    def _set(self, state: StepState, status: str) -> None:
        by_status = self._by_status
        by_status[state.status] -= 1
        by_status[status] = by_status.get(status, 0) + 1
        state.status = status

    def _memoized(self, key: str) -> None:
        """A memoized step: counted now, printed with the rest of its burst when it ends."""
        self._set(self._state(key), "memoized")
        self._last = key
        burst = self._memoized_burst
        burst.append(key)
        if len(burst) % _BAR_EVERY == 1:
            self._refresh()

    def _end_memoized_burst(self) -> None:
        burst, self._memoized_burst = self._memoized_burst, []
        if not burst:
            return
        if len(burst) <= MEMOIZED_LINES:
            for key in burst:
                self._step_line("memoized", f"{key} memoized", quiet=True)
        else:
            self._step_line(
                "memoized",
                f"{len(burst)} steps memoized ({burst[0]} {self._ellipsis} {burst[-1]})",
                quiet=True,
            )
        self._refresh()

    # -- drawing ------------------------------------------------------------------------------

    def _description(self) -> str:
        last = f" · {self._last}" if self._last else ""
        return f"[bold]{self.job_name}[/bold]{_escape(last)}"

    def _refresh(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task,
                total=self.total,
                completed=self.done,
                description=self._description(),
            )

    def _step_line(self, kind: str, text: str, quiet: bool = False) -> None:
        # On a terminal the bar shows progress; only what needs attention is printed above it.
        if self.silent or (self.live and quiet):
            return
        from rich.text import Text

        line = Text()
        line.append(self._symbols[kind], style=_STYLES[kind])
        line.append(" " + text)
        self.console.print(line)

    def _log_line(self, key: str | None, message: str, level: str) -> None:
        """``context.log`` output, as it happens: what the op wanted the user to see."""
        if self.silent or level == "DEBUG":
            return
        from rich.text import Text

        style = {"WARNING": "yellow", "ERROR": "red"}.get(level, "dim")
        prefix = f"  {key or 'run'} | "
        lines = message.splitlines() or [""]
        text = Text(prefix, style=style)
        text.append(lines[0])
        for more in lines[1:]:
            text.append("\n" + " " * len(prefix) + more)
        self.console.print(text)

    def _line(self, text: str) -> None:
        if self.silent:
            return
        from rich.text import Text

        self.console.print(Text(text, style="bold"))


def _seconds(value: Any) -> str:
    from memodag.cli.console import format_duration

    return format_duration(float(value)) if isinstance(value, int | float) else ""


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
