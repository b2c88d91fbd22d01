"""``memodag job list-versions`` and ``memodag job explain``: what a memoized run would recompute.

Both run no op: they compute every output's version and look it up in the instance's index
(``memodag.versioning.report``).
"""

from __future__ import annotations

import click

from memodag.cli.console import echo_json, make_console
from memodag.cli.loading import JobSpec, job_options

_STATUS_STYLE = {"stored": "green", "to-be-recomputed": "yellow", "unversioned": "red"}


def _rows(spec: JobSpec, explain: bool) -> tuple[str, list]:
    from memodag.storage.instance import Instance
    from memodag.versioning.report import list_versions

    loaded = spec.load()
    instance = Instance.get()
    try:
        return loaded.job.name, list_versions(
            loaded.job, spec.run_config(), instance, explain=explain
        )
    finally:
        instance.close()


def _print(job_name: str, rows: list, why: bool, as_json: bool) -> None:
    if as_json:
        echo_json({"job": job_name, "outputs": [r.to_dict() for r in rows]})
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"job {job_name}", title_justify="left", header_style="bold")
    table.add_column("Step Output")
    table.add_column("Version")
    table.add_column("Status of Output")
    if why:
        table.add_column("Why")
    for row in rows:
        style = _STATUS_STYLE.get(row.status, "")
        cells = [
            escape(row.step_output),
            row.version or "-",
            f"[{style}]{row.status}[/]" if style else row.status,
        ]
        if why:
            cells.append(escape("; ".join(row.reasons)) if row.status != "stored" else "")
        table.add_row(*cells)
    console = make_console()
    console.print(table)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    console.print(", ".join(f"{n} {status}" for status, n in counts.items()))


@click.command("list-versions")
@job_options()
@click.option(
    "--why", is_flag=True, help="Say why each output is to be recomputed (same as `job explain`)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_versions_cmd(spec: JobSpec, why: bool, as_json: bool) -> None:
    """Show each output's version and whether it is stored or will be recomputed.

    Nothing runs: versions are computed from code, config, resources and upstream versions and
    looked up in the instance.

    \b
    Example:
      memodag job list-versions -f pipeline.py -c prod.yaml
    """
    job_name, rows = _rows(spec, explain=why)
    _print(job_name, rows, why, as_json)


@click.command("explain")
@job_options()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def explain_cmd(spec: JobSpec, as_json: bool) -> None:
    """Say, for each output a memoized run would recompute, what changed since it was stored:
    the op's code version, a config field, a resource, an upstream input, or never stored."""
    job_name, rows = _rows(spec, explain=True)
    _print(job_name, rows, True, as_json)
