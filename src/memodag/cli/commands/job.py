"""``memodag job``: execute a job, re-execute a run, list the jobs a file or module defines.

Every command here takes its job through ``memodag.cli.loading.job_options``; commands being
added elsewhere (``list-versions``, ``explain``) are registered lazily in ``JOB_SUBCOMMANDS``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click

from memodag.cli.errors import enable_debug
from memodag.cli.lazy import LazyGroup
from memodag.cli.loading import (
    CODE_LOCATION_TAGS,
    CodeLocation,
    JobSpec,
    LoadedJob,
    job_options,
    parse_tags,
)

if TYPE_CHECKING:
    from memodag.storage.instance import Instance

# name -> "module:command", imported on first use. Add e.g.
#   "list-versions": "memodag.cli.commands.versions:list_versions",
#   "explain": "memodag.cli.commands.explain:explain",
JOB_SUBCOMMANDS: dict[str, str] = {
    "list-versions": "memodag.cli.commands.versions:list_versions_cmd",
    "explain": "memodag.cli.commands.versions:explain_cmd",
}
# alias -> name; accepted on the command line, not listed in --help. E.g.
#   "list_versions": "list-versions",
JOB_ALIASES: dict[str, str] = {"list_versions": "list-versions"}

tag_option = click.option(
    "--tag",
    "tag_values",
    multiple=True,
    metavar="KEY=VALUE",
    help="Tag the run; repeat for several.",
)
json_summary_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print only a JSON summary of the run (run id, status, step counts, failures).",
)
verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show full tracebacks of failed steps (and of errors).",
)


@click.group(cls=LazyGroup, lazy_subcommands=JOB_SUBCOMMANDS, aliases=JOB_ALIASES)
def job() -> None:
    """Run jobs and inspect the jobs a file or module defines."""


@job.command("execute")
@job_options()
@tag_option
@click.option(
    "--memoize/--no-memoize",
    default=None,
    help="Force memoization on (skip steps stored at their current version) or off (run every "
    "step). Default: the job's setting: on for a job with a version_strategy, which a job of "
    "@materialize ops has unless it sets one.",
)
@click.option(
    "--cache-validation",
    type=click.Choice(["normal", "ignore_fresh_input", "force_fresh_input", "force_cache_invalid"]),
    default=None,
    help="How outputs of data that changes outside memodag count (the run config's "
    "cache_validation): ignore_fresh_input reuses them, force_fresh_input re-runs the ops "
    "with cache=/data_version= and all after them, force_cache_invalid re-runs every op. "
    "Default: normal.",
)
@json_summary_option
@verbose_option
@click.pass_context
def execute(
    ctx: click.Context,
    spec: JobSpec,
    tag_values: tuple[str, ...],
    memoize: bool | None,
    cache_validation: str | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Execute a job defined in a Python file (-f) or module (-m).

    \b
    Examples:
      memodag job execute -f pipeline.py
      memodag job execute -m my_project.jobs -j daily -c base.yaml -c prod.yaml --tag team=data
    """
    if verbose:
        enable_debug(ctx)
    tags = parse_tags(tag_values)
    loaded = spec.load()
    run_config = spec.run_config()
    if cache_validation is not None:
        run_config = {**run_config, "cache_validation": cache_validation}
    if memoize is not None:
        from memodag.versioning.strategy import MEMOIZED_RUN_TAG

        tags[MEMOIZED_RUN_TAG] = "true" if memoize else "false"
    from memodag.cli.launch import launch_run

    instance = _open_instance(loaded, as_json)
    try:
        code = launch_run(loaded, instance, run_config, tags, verbose=verbose, as_json=as_json)
    finally:
        instance.close()
    ctx.exit(code)


@job.command("reexecute")
@click.argument("run_id")
@click.option(
    "-s",
    "--steps",
    "--step",
    "steps",
    multiple=True,
    metavar="STEP",
    help="Steps to run again (repeat, or comma-separate): a key or glob, 'op*' adds everything "
    "downstream, '*op' everything upstream; a mapped op's clone by its key 'op[k0]', all its "
    "clones by 'op' or 'op[?]'. Other inputs load from the parent run. "
    "Default: the whole job.",
)
@job_options(required=False)
@tag_option
@json_summary_option
@verbose_option
@click.pass_context
def reexecute(
    ctx: click.Context,
    run_id: str,
    steps: tuple[str, ...],
    spec: JobSpec,
    tag_values: tuple[str, ...],
    as_json: bool,
    verbose: bool,
) -> None:
    """Re-execute run RUN_ID (an id or a unique prefix), or only some of its steps.

    The job is loaded from where the parent run was launched (recorded in its tags) unless
    -f/-m/-j say otherwise. The run config is the parent's, unless -c files replace it.

    \b
    Examples:
      memodag job reexecute 3f2a1b4c
      memodag job reexecute 3f2a1b4c --steps 'train*'
    """
    if verbose:
        enable_debug(ctx)
    from memodag.cli.errors import CliError
    from memodag.definitions.secrets import masked_paths
    from memodag.storage.instance import Instance

    tags = parse_tags(tag_values)
    # a comma inside brackets belongs to a nested clone's key ('double[k0,j1]'), not a list
    selection = [s.strip() for item in steps for s in re.split(r",(?![^\[]*\])", item) if s.strip()]
    instance = Instance.get()
    try:
        parent = instance.get_run(run_id)
        if parent is None:
            raise CliError(
                f"no run with id or unique id prefix '{run_id}' in {instance.url}",
                hint="`memodag runs list` shows the runs.",
            )
        fallback = CodeLocation.from_tags(parent.tags)
        if fallback is None and not spec.has_location:
            raise CliError(
                f"run {parent.run_id} was not launched from the CLI, so where job "
                f"'{parent.job_name}' is defined is unknown; give -f FILE.py or -m MODULE"
            )
        loaded = spec.load(fallback, fallback_job=parent.job_name)
        if not as_json:
            _print_instance(instance, existed=True, loaded=loaded)
        if loaded.job.name != parent.job_name:
            click.echo(
                f"Warning: re-executing run of job '{parent.job_name}' with job '{loaded.job.name}'",
                err=True,
            )
        run_config = spec.run_config() if spec.config_files else dict(parent.run_config)
        masked = [] if spec.config_files else masked_paths(run_config)
        if masked:
            raise CliError(
                f"run {parent.run_id} was configured with a password in a literal URL "
                f"({', '.join(masked)}), stored masked, so its config cannot be used again",
                hint="give the config again with -c FILE, or write the URL as {env: VARIABLE} "
                "so runs store the reference and read the variable when they start",
            )
        inherited = {k: v for k, v in parent.tags.items() if k not in CODE_LOCATION_TAGS}
        from memodag.cli.launch import launch_run

        code = launch_run(
            loaded,
            instance,
            run_config,
            {**inherited, **tags},
            parent_run_id=parent.run_id,
            step_selection=selection or None,
            verbose=verbose,
            as_json=as_json,
        )
    finally:
        instance.close()
    ctx.exit(code)


@job.command("list")
@job_options(job=False, config=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_jobs(spec: JobSpec, as_json: bool) -> None:
    """List the jobs a Python file (-f) or module (-m) defines."""
    from memodag.cli.loading import find_jobs

    location = spec.location()
    jobs = find_jobs(location.load())
    rows: list[dict[str, Any]] = [
        {
            "name": j.name,
            "ops": sum(1 for _ in j.graph.iter_ops()),
            "resources": sorted(j.resource_defs),
            "description": _first_line(j.description),
        }
        for j in jobs.values()
    ]
    if as_json:
        from memodag.cli.console import echo_json

        echo_json(rows)
        return
    from rich.table import Table

    from memodag.cli.console import make_console

    console = make_console()
    if not rows:
        console.print(f"No jobs in {location.describe()}.", markup=False)
        return
    from rich.markup import escape

    table = Table(title=escape(f"Jobs in {location.describe()}"), title_justify="left")
    table.add_column("Job", style="bold", no_wrap=True)
    table.add_column("Ops", justify="right")
    table.add_column("Resources")
    table.add_column("Description")
    for row in rows:
        table.add_row(row["name"], str(row["ops"]), ", ".join(row["resources"]), row["description"])
    console.print(table)


def _open_instance(loaded: LoadedJob, as_json: bool) -> Instance:
    """The default instance for a run, said in one line (not with --json: stdout is JSON only)."""
    from memodag.storage.instance import Instance, find_home

    existed = find_home().is_dir()
    instance = Instance.get()
    if not as_json:
        _print_instance(instance, existed, loaded)
    return instance


def _print_instance(instance: Instance, existed: bool, loaded: LoadedJob) -> None:
    """``Instance: <where>``; for a new one, say why, and point at the instance that holds this
    file's earlier runs when the user ran it from outside that folder (``-f pipe/orders.py``)."""
    from pathlib import Path

    from rich.text import Text

    from memodag.cli.commands.runs import instance_location
    from memodag.cli.console import make_console
    from memodag.storage.instance import find_home

    console = make_console()
    line = Text(f"Instance: {instance_location(instance)}", style="dim")
    if existed or instance.home is None:
        console.print(line)
        return
    line.append(f" (new: no .memodag folder in {instance.home.parent} or above)")
    console.print(line)
    if loaded.location.file:
        beside_code = find_home(Path(loaded.location.file).parent)
        if beside_code.is_dir() and beside_code != instance.home:
            console.print(
                Text(
                    f"Note: earlier runs of this file may be in {beside_code}; run from "
                    f"{beside_code.parent} (or below), or set MEMODAG_HOME={beside_code}",
                    style="yellow",
                )
            )


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""
