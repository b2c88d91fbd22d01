"""``memodag runs``: the runs the instance holds, and what each step of one run did."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from memodag.storage.instance import Event, Instance, RunRecord

RUN_STATUSES = ("STARTED", "SUCCESS", "FAILURE", "CANCELED", "DIED")


@click.group()
def runs() -> None:
    """Inspect the runs kept in the instance: $MEMODAG_INSTANCE_URL, $MEMODAG_HOME, or the
    nearest .memodag folder in the current directory or above."""


@runs.command("list")
@click.option("-n", "--limit", default=20, show_default=True, help="Show at most N runs.")
@click.option("-j", "--job", "job_name", metavar="NAME", help="Only runs of this job.")
@click.option(
    "-s",
    "--status",
    type=click.Choice(RUN_STATUSES, case_sensitive=False),
    help="Only runs with this status.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_runs(limit: int, job_name: str | None, status: str | None, as_json: bool) -> None:
    """List runs, newest first."""
    from memodag.storage.instance import RunStatus
    from memodag.storage.liveness import mark_dead_runs

    with _existing_instance() as instance:
        gone: set[str] = set()
        if instance is None:
            records, where = [], f"none ({_missing_home_note()})"
        else:
            where = instance_location(instance)
            wanted = RunStatus(status.upper()) if status else None
            # STARTED runs whose process is gone (killed) will never record an end: marked
            # DIED as they are found (asked for DIED runs, STARTED ones are looked at too)
            records = instance.get_runs(
                limit, job_name, RunStatus.STARTED if wanted is RunStatus.DIED else wanted
            )
            gone = mark_dead_runs(instance, records)
            if wanted is RunStatus.STARTED:
                records = [r for r in records if r.run_id not in gone]
            elif wanted is RunStatus.DIED:
                records = instance.get_runs(limit, job_name, wanted)
    if as_json:
        from memodag.cli.console import echo_json

        echo_json(
            [
                {**run_to_dict(r), "process_gone": r.run_id in gone or r.status is RunStatus.DIED}
                for r in records
            ]
        )
        return
    from rich.table import Table

    from memodag.cli.console import (
        format_duration,
        format_time,
        make_console,
        short_id,
        styled_status,
    )

    console = make_console()
    console.print(f"Instance: {where}", style="dim", markup=False)
    if not records:
        console.print("No runs found.")
        return
    table = Table()
    table.add_column("Run ID", no_wrap=True, style="bold")
    table.add_column("Job", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Started", no_wrap=True)
    table.add_column("Duration", justify="right", no_wrap=True)
    table.add_column("Parent", no_wrap=True)
    for run in records:
        table.add_row(
            short_id(run.run_id),
            _escape(run.job_name),
            styled_status(run.status.value),
            format_time(run.start_time),
            format_duration(run.duration),
            short_id(run.parent_run_id),
        )
    console.print(table)


@runs.command("show")
@click.argument("run_id")
@click.option(
    "--logs",
    "show_logs",
    is_flag=True,
    help="Also print the messages ops logged with context.log (always in --json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def show_run(run_id: str, show_logs: bool, as_json: bool) -> None:
    """Show run RUN_ID (an id or a unique prefix): its steps, statuses, durations, attempts and
    where each output was stored; with --logs, what its ops logged."""
    with _existing_instance() as instance:
        if instance is None:
            from memodag.cli.errors import CliError

            raise CliError(
                f"no run '{run_id}': there is no instance ({_missing_home_note()})",
                hint="run from the folder where the job ran (or below it), or set MEMODAG_HOME.",
            )
        record = _find_run(instance, run_id)
        from memodag.storage.liveness import mark_dead_runs

        mark_dead_runs(instance, [record])  # a run found dead is shown, and kept, as DIED
        events = instance.get_events(record.run_id)
        steps = summarize_steps(events)
    # why a run failed or was canceled as a whole (it may have failed before any step ran)
    reason = next(
        (
            e.message
            for e in reversed(events)
            if e.step_key is None and e.event_type.name in ("RUN_FAILURE", "RUN_CANCELED")
        ),
        "",
    )
    if as_json:
        from memodag.cli.console import echo_json

        echo_json(
            {
                "run": {**run_to_dict(record), "reason": reason},
                "steps": steps,
                "logs": summarize_logs(events),
            }
        )
        return
    _print_run(record, steps, reason)
    _print_logs(summarize_logs(events), show_logs)


# -- data ---------------------------------------------------------------------------------


def run_to_dict(run: RunRecord) -> dict[str, Any]:
    from memodag.cli.console import iso_time
    from memodag.definitions.secrets import masked_config

    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "status": run.status.value,
        "start_time": iso_time(run.start_time),
        "end_time": iso_time(run.end_time),
        "duration": run.duration,
        "parent_run_id": run.parent_run_id,
        "root_run_id": run.root_run_id,
        "step_selection": run.step_selection,
        "tags": dict(run.tags),
        # masked again: runs recorded before passwords were masked when stored
        "run_config": masked_config(run.run_config),
    }


def summarize_steps(events: list[Event]) -> list[dict[str, Any]]:
    """One dict per step, in the order steps first appear in the event log.

    Each has ``step_key``, ``status`` (success, failed, skipped, memoized, or running when the
    log ends mid-step), ``attempts``, ``duration`` (seconds, the last attempt), ``start_time``,
    ``outputs`` (name -> address dict; a table's also has ``location``,
    ``duckdb:<file>#<schema>.<table>``), ``error`` and ``message``.
    """
    from memodag.cli.console import iso_time

    steps: dict[str, dict[str, Any]] = {}
    for event in events:
        key = event.step_key
        if key is None:
            continue
        step = steps.get(key)
        if step is None:
            step = steps[key] = {
                "step_key": key,
                "status": "running",
                "attempts": 0,
                "duration": None,
                "start_time": None,
                "outputs": {},
                "error": None,
                "message": "",
            }
        kind = event.event_type.value
        data = event.data or {}
        if kind == "STEP_START":
            step["attempts"] = max(step["attempts"], int(data.get("attempt", 0)) + 1)
            step["status"] = "running"
            step["start_time"] = step["start_time"] or iso_time(event.timestamp)
        elif kind == "STEP_SUCCESS":
            step["status"] = "success"
            step["duration"] = data.get("duration")
        elif kind == "STEP_FAILURE":
            step["status"] = "failed"
            step["duration"] = data.get("duration")
            step["error"] = data.get("error")
            step["message"] = event.message
        elif kind == "STEP_RETRY":
            step["status"] = "retrying"
            step["message"] = event.message
        elif kind == "STEP_SKIPPED":
            step["status"] = "skipped"
            step["message"] = event.message
        elif kind == "STEP_MEMOIZED":
            step["status"] = "memoized"
            step["start_time"] = step["start_time"] or iso_time(event.timestamp)
            for name, address in _memoized_addresses(data.get("addresses")):
                step["outputs"][_output_label(name, address)] = _with_location(address)
        elif kind == "HANDLED_OUTPUT":
            address = data.get("address") or {}
            name = data.get("output") or address.get("output_name") or "result"
            step["outputs"][_output_label(name, address)] = _with_location(address)
    return list(steps.values())


def summarize_logs(events: list[Event]) -> list[dict[str, Any]]:
    """The run's ``context.log`` messages in the order they were logged: ``time`` (ISO),
    ``step_key`` (None for run-level messages), ``level`` and ``message``."""
    from memodag.cli.console import iso_time

    return [
        {
            "time": iso_time(event.timestamp),
            "step_key": event.step_key,
            "level": (event.data or {}).get("level", "INFO"),
            "message": event.message,
        }
        for event in events
        if event.event_type.value == "LOG"
    ]


def _memoized_addresses(addresses: Any) -> list[tuple[str, dict[str, Any]]]:
    """(output name, address) pairs of a STEP_MEMOIZED event: a list of address dicts (several
    pieces of one dynamic output share a name), or a mapping name -> address."""
    if isinstance(addresses, dict):
        return list(addresses.items())
    return [(a.get("output_name") or "result", a) for a in addresses or () if isinstance(a, dict)]


def _with_location(address: dict[str, Any]) -> dict[str, Any]:
    """``address`` with ``location`` added for a table (``duckdb:<file>#<schema>.<table>``, or
    that an inline table is in no database)."""
    if address.get("serializer") not in ("table", "inline"):
        return address
    from memodag.tables.io_manager import table_location

    location = table_location(address.get("uri"))
    return {**address, "location": location} if location else address


def _output_label(name: str, address: dict[str, Any]) -> str:
    key = address.get("mapping_key")
    return f"{name}[{key}]" if key is not None else name


# -- rendering ----------------------------------------------------------------------------


def _print_run(record: RunRecord, steps: list[dict[str, Any]], reason: str = "") -> None:
    from rich.table import Table

    from memodag.cli.console import (
        format_duration,
        format_time,
        make_console,
        short_id,
        styled_status,
    )

    console = make_console()
    console.print(f"[bold]Run {record.run_id}[/bold]  {styled_status(record.status.value)}")
    details = [
        ("Job", record.job_name),
        ("Started", format_time(record.start_time)),
        ("Ended", format_time(record.end_time)),
        ("Duration", format_duration(record.duration)),
        ("Parent", record.parent_run_id or ""),
        ("Steps selected", ", ".join(record.step_selection or [])),
        ("Tags", ", ".join(f"{k}={v}" for k, v in sorted(record.tags.items()))),
        ("Reason", reason),
    ]
    for label, value in details:
        if value:
            console.print(f"  {label}: {_escape(value)}")
    if not steps:
        console.print("No step events recorded.")
        return
    table = Table()
    table.add_column("Step", no_wrap=True, style="bold")
    table.add_column("Status", no_wrap=True)
    table.add_column("Attempts", justify="right")
    table.add_column("Duration", justify="right", no_wrap=True)
    table.add_column("Outputs / error", overflow="fold")
    for step in steps:
        lines = [f"{label}: {_where(address)}" for label, address in step["outputs"].items()]
        # a failed step may have stored some outputs (a fan-out's first pieces): its error
        # comes first, never hidden behind them
        if step["message"] and (step["status"] != "success" or not lines):
            lines.insert(0, step["message"])
        detail = "\n".join(lines)
        table.add_row(
            _escape(step["step_key"]),
            styled_status(step["status"]),
            str(step["attempts"] or ""),
            format_duration(step["duration"]),
            _escape(detail),
        )
    console.print(table)
    if record.parent_run_id and record.step_selection:
        console.print(
            f"Steps not selected loaded their inputs from run {short_id(record.parent_run_id)}.",
            style="dim",
        )


_LEVEL_STYLES = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red", "DEBUG": "dim"}


def _print_logs(logs: list[dict[str, Any]], show: bool) -> None:
    from rich.text import Text

    from memodag.cli.console import make_console

    console = make_console()
    if not show:
        if logs:
            console.print(
                f"{len(logs)} log message(s) recorded; show them with --logs.", style="dim"
            )
        return
    if not logs:
        console.print("No log messages recorded.")
        return
    console.print(Text("Logs:", style="bold"))
    for entry in logs:
        line = Text("  ")
        line.append(str(entry["time"] or "")[11:23])  # the clock time; the date is the run's
        line.append(f"  {entry['step_key'] or '(run)'}  ")
        level = str(entry["level"])
        line.append(f"{level:<7}", style=_LEVEL_STYLES.get(level, ""))
        line.append(f"  {entry['message']}")
        console.print(line)


def _where(address: dict[str, Any]) -> str:
    location = address.get("location")
    if location:  # a table: where users query it, and which version it shows
        version = _stored_at(address)
        return f"{location} (version {str(version)[:12]})" if version else str(location)
    uri = address.get("uri")
    if uri:
        return str(uri)
    return f"(io manager '{address.get('io_manager_key')}', no URI)"


def _stored_at(address: dict[str, Any]) -> Any:
    """The version a table is stored at: a lazy table's is its query's (or frame's) version,
    its ``data_hash``, which names its physical table; any other's is the step's version."""
    data_hash = address.get("data_hash")
    if data_hash:
        from memodag.errors import StorageError
        from memodag.tables.io_manager import TableAddress

        try:
            physical = TableAddress.parse(address.get("uri")).physical
        except StorageError:
            physical = ""
        if str(data_hash)[:12] in physical:
            return data_hash
    return address.get("version")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -- instance -----------------------------------------------------------------------------


def instance_location(instance: Instance) -> str:
    """Where an instance is, for one line of output: its home folder (the default SQLite
    instance) or its database URL (password removed)."""
    return str(instance.home) if instance.home is not None else instance.url


def _missing_home_note() -> str:
    import os

    from memodag.storage.instance import HOME_ENV, find_home

    home = find_home()
    if os.environ.get(HOME_ENV):
        return f"${HOME_ENV}={home} does not exist yet"
    return f"no .memodag folder in {home.parent} or above; a run creates {home}"


class _existing_instance:
    """``with _existing_instance() as instance``: the default instance, closed afterwards; None
    when none exists yet, so that looking at runs never leaves a stray ``.memodag`` behind (later
    runs below it would find and use it)."""

    def __init__(self) -> None:
        self.instance: Instance | None = None

    def __enter__(self) -> Instance | None:
        import os

        from memodag.storage.instance import URL_ENV, Instance, find_home

        if os.environ.get(URL_ENV) or find_home().is_dir():
            self.instance = Instance.get()
        return self.instance

    def __exit__(self, *exc: object) -> None:
        if self.instance is not None:
            self.instance.close()


def _find_run(instance: Instance, run_id: str) -> RunRecord:
    from memodag.cli.errors import CliError

    record = instance.get_run(run_id)
    if record is None:
        raise CliError(
            f"no run with id or unique id prefix '{run_id}' in {instance.url}",
            hint="`memodag runs list` shows the runs.",
        )
    return record
