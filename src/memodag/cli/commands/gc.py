"""``memodag gc``: drop stored outputs no recent run uses, and orphan files of runs that are
over, through the io managers that stored them (dry run unless --yes). ``-f``/``-m`` supply
jobs whose own io managers gc uses (docs/storage.md, "Garbage collection")."""

from __future__ import annotations

import datetime as dt
import re
import time

import click

from memodag.cli.console import echo_json, format_time, make_console
from memodag.cli.loading import JobSpec, find_jobs, job_options, pick_job

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
#: what gc does without -f/-m (``job_options`` puts it in their help)
_NO_CODE = "default: none, only built-in file and object store io managers are rebuilt"
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
@job_options(config=False, required=False, default_location=_NO_CODE)
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
def gc(
    spec: JobSpec, keep_last: int | None, older_than: str | None, confirm: bool, as_json: bool
) -> None:
    """Drop stored outputs that no recent run uses, and files runs never recorded.

    With --keep-last N, an output survives if one of the newest N runs produced or reused it;
    with --older-than, if it was stored after that time; with both, if either holds. Files of
    attempts that never recorded an outcome go once their run has ended or its process is gone.
    Nothing is deleted without --yes.

    Each output is deleted through the io manager that stored it: built-in file and object
    store managers are rebuilt from the address; for custom io managers (table stores, your
    own), give the code defining the jobs with -f/-m (all its jobs, or -j JOB). Outputs whose
    io manager gc cannot get are listed and kept.

    \b
    Examples:
      memodag gc --keep-last 10
      memodag gc --older-than 30d --yes
      memodag gc -f pipeline.py --keep-last 5 --yes
    """
    if keep_last is None and older_than is None:
        raise click.UsageError("say what to keep: --keep-last N and/or --older-than DATE|AGE")
    from memodag.storage.instance import Instance
    from memodag.versioning.gc import collect_garbage

    cutoff = parse_when(older_than) if older_than else None
    jobs = {}
    if spec.has_location:
        location = spec.location()
        found = find_jobs(location.load())
        jobs = {spec.job_name: pick_job(found, spec.job_name, location)} if spec.job_name else found
    elif spec.job_name:
        raise click.UsageError("-j JOB needs the code that defines it: -f FILE.py or -m MODULE")
    instance = Instance.get()
    try:
        report = collect_garbage(
            instance, keep_runs=keep_last, older_than=cutoff, dry_run=not confirm, jobs=jobs
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
                        "io_manager": i.io_manager_key,
                        "orphan": i.orphan,
                    }
                    for i in report.items
                ],
                "unavailable": [
                    {
                        "uri": i.uri,
                        "step_key": i.step_key,
                        "output": i.output_name,
                        "run_id": i.run_id,
                        "io_manager": i.io_manager_key,
                        "reason": i.reason,
                    }
                    for i in report.unavailable
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
                escape(
                    f"{item.step_key} (orphan)"
                    if item.orphan
                    else f"{item.step_key}.{item.output_name}"
                ),
                item.run_id[:8],
                format_time(item.created_at),
                _size(item.size_bytes),
                escape(item.uri or f"(io manager '{item.io_manager_key}')"),
            )
        console.print(table)
    verb = "to delete" if report.dry_run else "deleted"
    kept = report.kept + len(report.unavailable)
    console.print(
        f"{len(report.items)} output(s) {verb} ({_size(report.total_bytes)}); {kept} kept."
    )
    if report.unavailable:
        # one line per reason: a job's outputs share their io manager, hence their reason
        reasons: dict[str, int] = {}
        for item in report.unavailable:
            reasons[item.reason] = reasons.get(item.reason, 0) + 1
        console.print(
            f"[yellow]{len(report.unavailable)} of them because gc cannot delete them:[/]"
        )
        for reason, count in reasons.items():
            console.print(f"  {count} output(s): {escape(reason)}")
    if report.dry_run and report.items:
        console.print("Dry run: nothing was deleted. Run again with --yes to delete.")
    for error in report.errors:
        console.print(f"[red]could not delete[/] {error}")
    if report.errors:
        raise click.exceptions.Exit(1)
