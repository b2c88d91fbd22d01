"""``memodag verify``: check that every indexed output is still stored as written (size and
content hash), and with ``--repair`` mark the index entries of those that are not as lost
(docs/reliability.md). ``-f``/``-m`` supply jobs whose own io managers check their outputs."""

from __future__ import annotations

import click

from memodag.cli.console import echo_json, make_console
from memodag.cli.loading import JobSpec, find_jobs, job_options, pick_job


@click.command("verify")
@job_options(config=False, required=False)
@click.option(
    "--repair",
    is_flag=True,
    help="Mark the index entries of outputs found missing or altered as lost (memoized runs then "
    "recompute them).",
)
@click.option(
    "--quick", is_flag=True, help="Compare sizes only (one stat per output), not content hashes."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def verify(spec: JobSpec, repair: bool, quick: bool, as_json: bool) -> None:
    """Check that every output memoization may reuse is still stored as it was written.

    Each output named by the instance's index is checked through the io manager that stored
    it: missing, or a size or content hash other than the one recorded when it was written,
    is reported. With --repair, their index entries are marked lost, so memoized runs recompute
    them instead of failing (the data left, if any, is for memodag gc). Custom io managers
    check their outputs when the code defining the jobs is given with -f/-m; otherwise their
    outputs are listed as unchecked.

    Exit status: 0 when every checked output is fine (or was repaired), 1 when some are
    missing or altered and were not repaired, 2 on a usage error.

    \b
    Examples:
      memodag verify
      memodag verify --repair
      memodag verify -f pipeline.py --quick
    """
    from memodag.storage.instance import Instance
    from memodag.versioning.verify import BAD, UNCHECKED, verify_outputs

    jobs = {}
    if spec.has_location:
        location = spec.location()
        found = find_jobs(location.load())
        jobs = {spec.job_name: pick_job(found, spec.job_name, location)} if spec.job_name else found
    elif spec.job_name:
        raise click.UsageError("-j JOB needs the code that defines it: -f FILE.py or -m MODULE")
    instance = Instance.get()
    try:
        report = verify_outputs(instance, repair=repair, jobs=jobs, read=not quick)
    finally:
        instance.close()
    bad = report.with_status(BAD)
    unchecked = report.with_status(UNCHECKED)
    if as_json:
        echo_json(
            {
                "checked": len(report.items) - len(unchecked),
                "bad": len(bad),
                "unchecked": len(unchecked),
                "repaired": repair,
                "items": [
                    {
                        "output_key": i.output_key,
                        "version": i.version,
                        "uri": i.uri,
                        "step_key": i.step_key,
                        "output": i.output_name,
                        "run_id": i.run_id,
                        "io_manager": i.io_manager_key,
                        "status": i.status,
                        "reason": i.reason,
                    }
                    for i in report.items
                    if i.status != "ok"
                ],
            }
        )
    else:
        from rich.markup import escape
        from rich.table import Table

        console = make_console()
        if bad:
            table = Table(header_style="bold")
            for column in ("Output", "Run", "Problem", "Location"):
                table.add_column(column)
            for item in bad:
                table.add_row(
                    escape(f"{item.step_key}.{item.output_name}"),
                    item.run_id[:8],
                    escape(item.reason),
                    escape(item.uri or f"(io manager '{item.io_manager_key}')"),
                )
            console.print(table)
        checked = len(report.items) - len(unchecked)
        console.print(f"{checked} output(s) checked: {checked - len(bad)} ok, {len(bad)} bad.")
        if unchecked:
            console.print(f"[yellow]{len(unchecked)} output(s) not checked:[/]")
            for item in unchecked[:20]:
                console.print(
                    f"  {escape(item.step_key)}.{escape(item.output_name)} "
                    f"(run {item.run_id[:8]}): {escape(item.reason)}"
                )
        if bad and repair:
            console.print(
                f"Repaired: {len(bad)} index entr{'y' if len(bad) == 1 else 'ies'} marked lost; "
                "memoized runs recompute them."
            )
        elif bad:
            console.print("Run again with --repair to mark them lost in the index.")
    if bad and not repair:
        raise click.exceptions.Exit(1)
