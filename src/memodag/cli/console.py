"""Output helpers shared by commands: rich consoles, JSON, and formatting of ids, times, durations."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

STATUS_STYLES = {
    "SUCCESS": "green",
    "FAILURE": "red",
    "STARTED": "yellow",
    "CANCELED": "magenta",
    "DIED": "red",
    "success": "green",
    "memoized": "cyan",
    "failed": "red",
    "skipped": "yellow",
    "running": "yellow",
    "retrying": "yellow",
}


def make_console(stderr: bool = False) -> Console:
    """A rich console; when not writing to a terminal it neither wraps lines nor squeezes tables
    into 80 columns, so piped output stays greppable."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    console = Console(file=stream, highlight=False)
    if not console.is_terminal:
        width = int(os.environ.get("COLUMNS") or 0) or 200
        console = Console(file=stream, highlight=False, soft_wrap=True, width=width)
    return console


def echo_json(data: Any) -> None:
    """Print JSON to stdout (plain, never reformatted by rich)."""
    click.echo(json.dumps(data, indent=2, default=str))


def short_id(run_id: str | None) -> str:
    return run_id[:8] if run_id else ""


def format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{secs:02.0f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes):02d}m"


def styled_status(status: str) -> str:
    """Rich markup for a run or step status."""
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status
