"""``memodag gc``: drop stored outputs no recent run uses (dry run unless --yes)."""

from __future__ import annotations

import datetime as dt
import re
import time

import click

from memodag.cli.console import echo_json, format_time, make_console

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str) -> float:
    """``7d``, ``12h``, ``30m`` (that long ago) or an ISO date/datetime, as a UNIX timestamp."""
    match = _RELATIVE.match(text.strip())
    if match:
        return time.time() - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected an ISO date (2026-01-31, 2026-01-31T12:00) or an age like 7d, 12h, 30m"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed.timestamp()


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


@click.command("gc")
@click.option(
    "--keep-last",
    "keep_last",
    type=click.IntRange(min=0),
    help="Keep outputs produced or reused by the newest N runs.",
)
@click.option(
    "--older-than",
    "older_than",
    metavar="DATE|AGE",
    help="Drop outputs stored before DATE (ISO) or older than AGE (7d, 12h).",
)
@click.option(
    "--yes",
    "-y",
    "confirm",
    is_flag=True,
    help="Really delete (default: a dry run that only lists).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def gc(keep_last: int | None, older_than: str | None, confirm: bool, as_json: bool) -> None:
    """Drop stored outputs that no recent run uses.

    With --keep-last N, an output survives if one of the newest N runs produced or reused it;
    with --older-than, if it was stored after that time; with both, if either holds. Nothing is
    deleted without --yes.

    \b
    Examples:
      memodag gc --keep-last 10
      memodag gc --older-than 30d --yes
    """
    if keep_last is None and older_than is None:
        raise click.UsageError("say what to keep: --keep-last N and/or --older-than DATE|AGE")
    from memodag.storage.instance import Instance
    from memodag.versioning.gc import collect_garbage

    cutoff = parse_when(older_than) if older_than else None
    instance = Instance.get()
    try:
        report = collect_garbage(
            instance, keep_runs=keep_last, older_than=cutoff, dry_run=not confirm
        )
    finally:
        instance.close()
    if as_json:
        echo_json(
            {
                "dry_run": report.dry_run,
                "total_bytes": report.total_bytes,
                "kept": report.kept,
                "errors": report.errors,
                "items": [
                    {
                        "uri": i.uri,
                        "step_key": i.step_key,
                        "output": i.output_name,
                        "run_id": i.run_id,
                        "size_bytes": i.size_bytes,
                    }
                    for i in report.items
                ],
            }
        )
        return
    from rich.markup import escape
    from rich.table import Table

    console = make_console()
    if report.items:
        table = Table(header_style="bold")
        for column in ("Output", "Run", "Stored", "Size", "Location"):
            table.add_column(column)
        for item in report.items:
            table.add_row(
                escape(f"{item.step_key}.{item.output_name}"),
                item.run_id[:8],
                format_time(item.created_at),
                _size(item.size_bytes),
                escape(item.uri),
            )
        console.print(table)
    verb = "to delete" if report.dry_run else "deleted"
    console.print(
        f"{len(report.items)} output(s) {verb} ({_size(report.total_bytes)}); {report.kept} kept."
    )
    if report.dry_run and report.items:
        console.print("Dry run: nothing was deleted. Run again with --yes to delete.")
    for error in report.errors:
        console.print(f"[red]could not delete[/] {error}")
    if report.errors:
        raise click.exceptions.Exit(1)
