"""``memodag tables``: what the committed stages of a table store show, read-only.

Finds the store as a run would (the job's ``table_store`` resource and run config), or from
``--store``, ``$MEMODAG_TABLE_STORE_URL`` or the instance's default ``tables.duckdb``. Must never
open a DuckDB file for writing, nor create a schema, a file or an instance.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from memodag.cli.loading import JobSpec, job_options

if TYPE_CHECKING:
    from memodag.tables.store import TableStore

#: the variable a job without a table store resource reads (docs/tables.md)
STORE_URL_ENV = "MEMODAG_TABLE_STORE_URL"


@click.group()
def tables() -> None:
    """Inspect the tables of a table store: its committed stages and what each view shows."""


@tables.command("list")
@job_options(required=False, default_location="its table_store; default: --store's")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    metavar="STAGE",
    help="Only this stage (repeatable).",
)
@click.option(
    "--store",
    metavar="URL_OR_PATH",
    help="The store: a DuckDB file or a postgresql:// URL (default: the job's table_store with "
    f"-f/-m, else ${STORE_URL_ENV}, else tables.duckdb in the instance's home).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="How long to wait for a DuckDB file another process holds (default: the store's "
    "lock_timeout, 5 s).",
)
@click.option(
    "--schema-prefix",
    default="",
    metavar="PREFIX",
    help="The store's schema_prefix, for a store given by --store or the environment (the "
    "job's table_store has its own).",
)
@click.option(
    "--schema-suffix",
    default="",
    metavar="SUFFIX",
    help="The store's schema_suffix, as --schema-prefix.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_tables(
    spec: JobSpec,
    stages: tuple[str, ...],
    store: str | None,
    wait: float | None,
    schema_prefix: str,
    schema_suffix: str,
    as_json: bool,
) -> None:
    """List the tables committed stages show, with row counts and the physical table (output
    version) behind each view. Reads only: a DuckDB file is opened read-only, and one another
    process holds for writing (a run) is waited for, then named with the holding process.

    \b
    Exit codes: 0 listed; 1 the store could not be read (held, unreachable); 2 a usage or
    config mistake (no store found, an unknown --stage).

    \b
    Examples:
      memodag tables list
      memodag tables list -f pipeline.py -c prod.yaml --stage model
      memodag tables list --store postgresql://me@db:5432/warehouse --json
      memodag tables list --store postgresql://me@db:5432/warehouse --schema-prefix dev_
    """
    affixes = (schema_prefix, schema_suffix)
    if any(affixes) and spec.has_location:
        raise click.UsageError(
            "--schema-prefix/--schema-suffix are for --store or $"
            f"{STORE_URL_ENV}: the job's table_store (-f/-m) has its own"
        )
    with _table_store(spec, store, affixes) as found:
        if wait is not None and hasattr(found, "lock_timeout"):
            found.lock_timeout = wait
        listing = _listing(found, stages)
    if as_json:
        from memodag.cli.console import echo_json

        echo_json(listing)
        return
    # a store found without its job may be one whose stages carry a prefix or suffix
    _print(listing, hint_affixes=not spec.has_location and not any(affixes))


def _listing(store: TableStore, wanted: Sequence[str]) -> dict[str, Any]:
    committed = store.committed_stages()
    names = [s.lower() for s in wanted]
    unknown = [s for s in names if s not in committed]
    if unknown:
        from memodag.cli.errors import CliError

        shown = ", ".join(committed) or "none"
        raise CliError(
            f"no committed stage {', '.join(repr(s) for s in unknown)} in {store.location()} "
            f"(committed stages: {shown})"
        )
    stages = []
    for stage, job_name in committed.items():
        if names and stage not in names:
            continue
        schema = store.schema_name(stage)
        rows = []
        for name, table in sorted(store.stage_tables(stage).items()):
            rows.append(
                {
                    "name": name,
                    "view": f"{schema}.{name}",
                    "rows": store.row_count(table.physical),
                    "physical": f"{store.data_schema}.{table.physical}",
                    "step_key": table.step_key,
                }
            )
        stages.append({"stage": stage, "schema": schema, "job": job_name, "tables": rows})
    return {"store": store.location(), "stages": stages}


def _print(listing: dict[str, Any], hint_affixes: bool = False) -> None:
    from rich.markup import escape
    from rich.table import Table

    from memodag.cli.console import make_console

    console = make_console()
    console.print(f"Table store: {listing['store']}", style="dim", markup=False)
    if not listing["stages"]:
        console.print("No committed stages.")
        if hint_affixes:
            console.print(
                "Stages stored with a schema_prefix or schema_suffix are listed with "
                "--schema-prefix/--schema-suffix, or with the job (-f pipeline.py [-c run.yaml]).",
                style="dim",
                markup=False,
            )
        return
    table = Table()
    table.add_column("Stage", no_wrap=True, style="bold")
    table.add_column("Table", no_wrap=True)
    table.add_column("Rows", justify="right")
    table.add_column("Physical table (version)", overflow="fold")
    table.add_column("Step", no_wrap=True)
    table.add_column("Job", no_wrap=True)
    for stage in listing["stages"]:
        if not stage["tables"]:
            table.add_row(escape(stage["schema"]), "(no tables)", "", "", "", escape(stage["job"]))
        for row in stage["tables"]:
            count = row["rows"]
            table.add_row(
                escape(stage["schema"]),
                escape(row["name"]),
                "missing" if count is None else f"{count:,}",
                escape(row["physical"]),
                escape(row["step_key"]),
                escape(stage["job"]),
            )
    console.print(table)


# -- finding the store ----------------------------------------------------------------------


@contextmanager
def _table_store(
    spec: JobSpec, store: str | None, affixes: tuple[str, str] = ("", "")
) -> Iterator[TableStore]:
    """The store to list, closed afterwards (never opened for writing)."""
    from memodag.cli.errors import CliError

    if store and spec.has_location:
        raise click.UsageError("give either --store or -f/-m (the job's table store), not both")
    if spec.has_location:
        with _job_store(spec) as found:
            yield found
        return
    where = store or os.environ.get(STORE_URL_ENV)
    if not where:
        from memodag.storage.instance import find_home

        default = find_home() / "tables.duckdb"
        if not default.is_file():
            raise CliError(
                f"no table store found: no {default}, no ${STORE_URL_ENV}",
                hint="give the job (-f pipeline.py [-c run.yaml]) or --store FILE.duckdb|URL.",
            )
        where = str(default)
    found = _store_at(where, affixes)
    try:
        yield found
    finally:
        found.close()


def _store_at(where: str, affixes: tuple[str, str] = ("", "")) -> TableStore:
    """A store for a DuckDB path or a ``postgresql://`` URL, its schemas named with
    ``affixes`` (schema prefix, suffix)."""
    from memodag.cli.errors import CliError
    from memodag.errors import StorageError

    prefix, suffix = affixes
    try:
        if where.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
            from memodag.tables.postgres import PostgresTableStore

            return PostgresTableStore(where, schema_prefix=prefix, schema_suffix=suffix)
        from memodag.tables.duckdb import DuckDBTableStore

        if not os.path.isfile(os.path.expanduser(where)):
            raise CliError(f"DuckDB file {where} not found")
        return DuckDBTableStore(where, schema_prefix=prefix, schema_suffix=suffix)
    except StorageError as exc:  # a prefix that cannot name a schema: a usage mistake
        raise click.UsageError(str(exc)) from None


@contextmanager
def _job_store(spec: JobSpec) -> Iterator[TableStore]:
    """The store the job's ``table_store`` resource builds with the run config's resources."""
    from memodag.cli.commands.runs import _existing_instance
    from memodag.cli.errors import CliError
    from memodag.definitions.tables import TABLE_STORE_KEY
    from memodag.plan.run_config import resolve_run_config
    from memodag.runtime.resources import initialized_resources
    from memodag.tables.io_manager import TableIOManager

    job = spec.load().job
    if TABLE_STORE_KEY not in job.resource_defs:
        raise CliError(f"job '{job.name}' stores no tables (it has no '{TABLE_STORE_KEY}')")
    resolved = resolve_run_config(job, spec.run_config())
    with (
        _existing_instance() as instance,
        initialized_resources(
            job.resource_defs, resolved.resource_config, {TABLE_STORE_KEY}, instance, "tables"
        ) as resources,
    ):
        manager = getattr(resources, TABLE_STORE_KEY)
        if not isinstance(manager, TableIOManager):
            raise CliError(
                f"job '{job.name}': resource '{TABLE_STORE_KEY}' is a "
                f"{type(manager).__name__}, not a table store"
            )
        try:
            yield manager.store
        finally:
            manager.store.close()
