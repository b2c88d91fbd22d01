"""``memodag job list-versions`` and ``memodag job explain``: what a memoized run would recompute.

Both run no op: they dry-run the engine's own walk (``memodag.engine.dry_run``) against the
instance's index. ``list-versions`` shows every output, ``explain`` only what will run and why.
In a terminal a mapped node's clones fold into one row with counts per status (``--all``
unfolds them); ``--json`` always gives every row. Rendering is plain aligned text: a rich table
of 10,000 rows costs seconds.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from typing import Any

import click

from memodag.cli.loading import JobSpec, job_options

_STATUS_COLOR = {
    "stored": "green",
    "to-be-recomputed": "yellow",
    "depends-on-data": "cyan",
    "unversioned": "red",
    "skipped": "magenta",
}
_STATUSES = tuple(_STATUS_COLOR)


def _rows(spec: JobSpec, explain: bool) -> tuple[str, list[Any]]:
    from memodag.engine.dry_run import list_versions
    from memodag.storage.instance import Instance

    loaded = spec.load()
    instance = Instance.get()
    try:
        return loaded.job.name, list_versions(
            loaded.job, spec.run_config(), instance, explain=explain
        )
    finally:
        instance.close()


def _select(rows: list[Any], statuses: Sequence[str], steps: Sequence[str]) -> list[Any]:
    """Rows whose status is among ``statuses`` and whose step (key or node name, globs allowed)
    matches one of ``steps``; an empty filter keeps everything."""
    if statuses:
        wanted = set(statuses)
        rows = [r for r in rows if r.status in wanted]
    if steps:
        rows = [r for r in rows if any(_step_matches(r.step_key, p) for p in steps)]
    return rows


def _check_steps(job_name: str, rows: list[Any], steps: Sequence[str]) -> None:
    """A ``--step`` that names no step of the job is a mistake, not an empty table."""
    for pattern in steps:
        if not any(_step_matches(r.step_key, pattern) for r in rows):
            import difflib

            from memodag.cli.errors import CliError

            names = sorted({r.step_key.split("[", 1)[0] for r in rows})
            close = difflib.get_close_matches(pattern, names, n=3)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise CliError(
                f"--step {pattern!r} matches no step of job '{job_name}' (its steps: {shown})",
                hint=hint,
            )


def _step_matches(step_key: str, pattern: str) -> bool:
    node = step_key.split("[", 1)[0]
    escaped = pattern.replace("[", "[[]")
    return (
        step_key == pattern
        or node == pattern
        or fnmatch.fnmatchcase(step_key, escaped)
        or fnmatch.fnmatchcase(node, escaped)
    )


Cells = tuple[str, str, str, str, str]


def _fold(rows: list[Any], why: bool) -> list[Cells]:
    """``(step output, version, status, location, why)`` cells: clones of one mapped node (same
    output) become one row with counts per status, in the place of the node's first clone."""
    folded: list[Cells] = []
    groups: dict[tuple[str, str], list[Any]] = {}
    order: list[tuple[str, str] | Any] = []
    for row in rows:
        key = row.step_key
        if "[" not in key or key.endswith("*]"):
            order.append(row)
            continue
        output = row.step_output[len(key) + 1 :]
        group = (key.split("[", 1)[0], output)
        if group not in groups:
            groups[group] = []
            order.append(group)
        groups[group].append(row)
    for item in order:
        if not isinstance(item, tuple):
            folded.append(_cells(item, why))
            continue
        members = groups[item]
        if len(members) == 1:
            folded.append(_cells(members[0], why))
            continue
        counts: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for row in members:
            counts[row.status] = counts.get(row.status, 0) + 1
            if why and row.status != "stored":
                text = "; ".join(row.reasons)
                reasons[text] = reasons.get(text, 0) + 1
        node, output = item
        status = ", ".join(f"{n} {_color(s)}" for s, n in counts.items())
        because = "; ".join(
            f"{text} ({n} clone{'s' if n != 1 else ''})" if len(reasons) > 1 else text
            for text, n in reasons.items()
        )
        folded.append((f"{node}[...].{output} ({len(members)} clones)", "-", status, "", because))
    return folded


#: ``versioning.report.DECIDED_AT_RUN_TIME`` (not imported: the CLI starts light)
_DECIDED_AT_RUN_TIME = "decided at run time (content hash)"


def _cells(row: Any, why: bool) -> Cells:
    because = "; ".join(row.reasons) if why and row.status != "stored" else ""
    if row.status == "stored" and row.reasons and row.reasons[0].startswith("inline:"):
        because = row.reasons[0]  # said always: a consumer that runs recomputes it
    version = row.version or "-"
    if row.version is None and row.reasons and row.reasons[0].startswith(_DECIDED_AT_RUN_TIME):
        # a lazy task returning a frame: its content decides (versioning.report says so)
        version = _DECIDED_AT_RUN_TIME
    return (row.step_output, version, _color(row.status), row.location or "", because)


def _color(status: str) -> str:
    color = _STATUS_COLOR.get(status)
    return click.style(status, fg=color) if color else status


def _visible_len(text: str) -> int:
    return len(click.unstyle(text)) if "\x1b" in text else len(text)


def _print(
    job_name: str,
    rows: list[Any],
    why: bool,
    as_json: bool,
    unfold: bool,
    total: int,
) -> None:
    if as_json:
        # one output per line, each encoded by json's C encoder (``indent`` would force the
        # pure-Python one: a third of a second at 10,000 rows)
        encoded = ",\n    ".join(json.dumps(r.to_dict()) for r in rows)
        body = f"\n    {encoded}\n  " if rows else ""
        click.echo(f'{{\n  "job": {json.dumps(job_name)},\n  "outputs": [{body}]\n}}')
        return
    cells = [_cells(r, why) for r in rows] if unfold else _fold(rows, why)
    # the location column only for jobs with outputs that have one (tables); a "why" shown
    # without --why (an inline table's note) brings its column
    shown = [0, 1, 2] + ([3] if any(c[3] for c in cells) else [])
    shown += [4] if why or any(c[4] for c in cells) else []
    header = tuple(
        ("Step Output", "Version", "Status of Output", "Location", "Why")[i] for i in shown
    )
    cells = [tuple(c[i] for i in shown) for c in cells]  # type: ignore[misc]
    columns = len(shown)
    # every column but the last is padded to its widest cell (ANSI colors take no width)
    widths = [
        max([len(header[i])] + [_visible_len(c[i]) for c in cells]) for i in range(columns - 1)
    ]
    lines = [f"job {job_name}"]
    for cell in [header, *(c[:columns] for c in cells)]:
        parts = [c + " " * (w - _visible_len(c)) for c, w in zip(cell, widths, strict=False)]
        parts.append(cell[columns - 1])
        lines.append("  ".join(parts).rstrip())
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items()) or "no outputs"
    if len(rows) < total:
        summary += f" (of {total} outputs; filters applied)"
    lines.append(summary)
    click.echo("\n".join(lines))


_status_option = click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(_STATUSES),
    help="Show only outputs with this status (repeatable).",
)
_step_option = click.option(
    "--step",
    "steps",
    multiple=True,
    help="Show only these steps: a step key, a mapped node's name, or a glob (repeatable).",
)
_all_option = click.option(
    "--all", "unfold", is_flag=True, help="One row per clone of a mapped node (no folding)."
)
_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON, one entry per output, instead of a table."
)


@click.command("list-versions")
@job_options()
@click.option(
    "--why", is_flag=True, help="Say why each output is to be recomputed (as `job explain` does)."
)
@_status_option
@_step_option
@_all_option
@_json_option
def list_versions_cmd(
    spec: JobSpec,
    why: bool,
    statuses: tuple[str, ...],
    steps: tuple[str, ...],
    unfold: bool,
    as_json: bool,
) -> None:
    """Show every output's version and whether it is stored or will be recomputed.

    Nothing runs: the engine's walk is dry-run, versions are computed from code, config,
    resources and upstream versions and looked up in the instance. Statuses: stored,
    to-be-recomputed, depends-on-data (an early-cutoff upstream re-runs; its data decides),
    unversioned.

    \b
    Example:
      memodag job list-versions -f pipeline.py -c prod.yaml --status to-be-recomputed
    """
    job_name, rows = _rows(spec, explain=why)
    _check_steps(job_name, rows, steps)
    shown = _select(rows, statuses, steps)
    _print(job_name, shown, why, as_json, unfold, len(rows))


@click.command("explain")
@job_options()
@_step_option
@_all_option
@_json_option
def explain_cmd(spec: JobSpec, steps: tuple[str, ...], unfold: bool, as_json: bool) -> None:
    """Show only what a memoized run would run, and why: the op's code (naming the edited
    helper), a config field, a resource's config, an upstream input, or never stored.

    Each output is compared with what is stored for the closest recipe (the same config and
    inputs first), so explaining an older config blames what differs from that config's run.
    """
    job_name, rows = _rows(spec, explain=True)
    _check_steps(job_name, rows, steps)
    will_run = [r for r in rows if r.status != "stored"]
    shown = _select(will_run, (), steps)
    if not as_json and not shown:
        click.echo(f"job {job_name}: nothing to run, every output is stored at its version")
        return
    _print(job_name, shown, True, as_json, unfold, len(will_run))
