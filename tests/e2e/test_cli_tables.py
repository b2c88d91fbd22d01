"""End to end: table outputs in the CLI. ``runs show`` and ``list-versions`` name each table where
users query it (``duckdb:<file>#<schema>.<table>``, ``postgresql://user@host:port/db#...``, no
password), ``tables list`` shows committed stages read-only, and a re-execution of part of a
stage commits the whole stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from cli_process import run_memodag

JOB = """
import os
import pandas as pd
from memodag import Stage, Table, job, materialize

@materialize(version="1")
def orders():
    return Table(pd.DataFrame({"order_id": [1, 2, 3], "amount": [1.5, 2.5, 3.0]}),
                 name="orders", primary_key="order_id")

@materialize(version=os.environ.get("BIG_VERSION", "1"))
def big_orders(orders: pd.DataFrame):
    if os.environ.get("FAIL_BIG"):
        raise ValueError("big_orders fails")
    return Table(orders[orders.amount > float(os.environ.get("OVER", "2"))], name="big")

@materialize(version="1")
def totals(orders: pd.DataFrame):
    return Table(pd.DataFrame({"total": [orders.amount.sum()]}), name="totals")

@job
def warehouse():
    with Stage("raw"):
        o = orders()
    with Stage("model"):
        big_orders(o)
        totals(o)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOB))
    return tmp_path


def _memodag(project: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    return run_memodag(*args, cwd=project, home=project / "home", env=env, check=check)


def _execute(project: Path, env: dict[str, str] | None = None, check: bool = True) -> str:
    ran = _memodag(project, "job", "execute", "-f", "jobs.py", "--json", env=env, check=check)
    return str(json.loads(ran.stdout)["run_id"])


def test_runs_show_and_list_versions_name_tables_where_users_query_them(project: Path) -> None:
    run_id = _execute(project)
    database = project / "home" / "tables.duckdb"
    shown = _memodag(project, "runs", "show", run_id)
    assert f"duckdb:{database}#raw.orders (version " in shown.stdout
    assert f"duckdb:{database}#model.big (version " in shown.stdout
    assert "table:pandas" not in shown.stdout  # the internal URI is not what users see
    steps = json.loads(_memodag(project, "runs", "show", run_id, "--json").stdout)["steps"]
    outputs = {s["step_key"]: s["outputs"]["result"] for s in steps}
    assert outputs["totals"]["location"] == f"duckdb:{database}#model.totals"
    # a memoized run names the tables it reuses the same way
    again = _execute(project)
    memoized = _memodag(project, "runs", "show", again, "--json").stdout
    assert json.loads(memoized)["steps"][0]["outputs"]["result"]["location"] == (
        f"duckdb:{database}#raw.orders"
    )

    listed = _memodag(project, "job", "list-versions", "-f", "jobs.py")
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[2:-1]}
    assert "Location" in listed.stdout.splitlines()[1]
    assert "stored" in lines["orders.result"]
    assert lines["orders.result"].endswith(f"duckdb:{database}#raw.orders")
    rows = json.loads(_memodag(project, "job", "list-versions", "-f", "jobs.py", "--json").stdout)[
        "outputs"
    ]
    assert {r["step"]: r.get("location") for r in rows} == {
        "orders": f"duckdb:{database}#raw.orders",
        "big_orders": f"duckdb:{database}#model.big",
        "totals": f"duckdb:{database}#model.totals",
    }
    # an output to be recomputed has no table at its new version yet: no location
    changed = json.loads(
        _memodag(
            project, "job", "list-versions", "-f", "jobs.py", "--json", env={"BIG_VERSION": "2"}
        ).stdout
    )["outputs"]
    big = next(r for r in changed if r["step"] == "big_orders")
    assert big["status"] == "to-be-recomputed" and "location" not in big


def test_tables_list_shows_committed_stages_with_row_counts(project: Path) -> None:
    _execute(project)
    listed = json.loads(_memodag(project, "tables", "list", "--json").stdout)
    database = project / "home" / "tables.duckdb"
    assert listed["store"] == f"duckdb:{database}"
    stages = {s["stage"]: s for s in listed["stages"]}
    assert sorted(stages) == ["model", "raw"]
    assert stages["raw"]["job"] == "warehouse"
    model = {t["name"]: t for t in stages["model"]["tables"]}
    assert model["big"]["rows"] == 2 and model["totals"]["rows"] == 1
    assert model["big"]["view"] == "model.big" and model["big"]["step_key"] == "big_orders"
    assert model["big"]["physical"].startswith("memodag_data.big_orders__result__")

    # a new version of one table: its view shows the new physical table and row count
    _execute(project, env={"BIG_VERSION": "2", "OVER": "0"})
    text = _memodag(project, "tables", "list", "--stage", "model").stdout
    big_line = next(line for line in text.splitlines() if " big " in line)
    assert " 3 " in big_line and model["big"]["physical"] not in big_line
    assert "raw" not in text  # only the stage asked for
    # the job's own store config (-f, -c), here with a schema prefix
    (project / "prefixed.yaml").write_text(
        "resources:\n  table_store:\n    config:\n      schema_prefix: alice_\n"
    )
    _memodag(project, "job", "execute", "-f", "jobs.py", "-c", "prefixed.yaml")
    prefixed = json.loads(
        _memodag(project, "tables", "list", "-f", "jobs.py", "-c", "prefixed.yaml", "--json").stdout
    )
    assert [s["schema"] for s in prefixed["stages"]] == ["alice_model", "alice_raw"]
    assert prefixed["stages"][1]["tables"][0]["view"] == "alice_raw.orders"
    # the default store without a job still lists the unprefixed stages only
    plain = json.loads(_memodag(project, "tables", "list", "--json").stdout)
    assert [s["schema"] for s in plain["stages"]] == ["model", "raw"]
    # ... and with the prefix given as an option, the prefixed ones
    affixed = json.loads(
        _memodag(project, "tables", "list", "--schema-prefix", "alice_", "--json").stdout
    )
    assert [s["schema"] for s in affixed["stages"]] == ["alice_model", "alice_raw"]
    combined = _memodag(
        project, "tables", "list", "-f", "jobs.py", "--schema-prefix", "alice_", check=False
    )
    assert combined.returncode == 2 and "has its own" in combined.stderr


def test_tables_list_finding_no_stage_hints_at_prefixes(project: Path) -> None:
    (project / "prefixed.yaml").write_text(
        "resources:\n  table_store:\n    config:\n      schema_prefix: alice_\n"
    )
    _memodag(project, "job", "execute", "-f", "jobs.py", "-c", "prefixed.yaml")
    listed = _memodag(project, "tables", "list").stdout
    assert "No committed stages." in listed
    assert "--schema-prefix/--schema-suffix" in listed and "-f pipeline.py" in listed


def test_tables_list_usage_mistakes_exit_2(project: Path) -> None:
    missing = _memodag(project, "tables", "list", check=False)
    assert missing.returncode == 2
    assert "no table store found" in missing.stderr and "-f" in missing.stderr
    _execute(project)
    unknown = _memodag(project, "tables", "list", "--stage", "modle", check=False)
    assert unknown.returncode == 2
    assert "'modle'" in unknown.stderr and "model, raw" in unknown.stderr


def _hold(database: Path, read_only: bool) -> subprocess.Popen[str]:
    """Another process holding the DuckDB file (for writing, as a run does, or read-only)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            f"c = duckdb.connect({str(database)!r}, read_only={read_only})\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_tables_list_never_takes_the_duckdb_file_and_names_who_holds_it(project: Path) -> None:
    _execute(project)
    database = project / "home" / "tables.duckdb"
    reader = _hold(database, read_only=True)
    try:
        # a writer could not open a file another process reads: tables list opens it read-only
        listed = json.loads(_memodag(project, "tables", "list", "--json").stdout)
        assert {t["rows"] for s in listed["stages"] for t in s["tables"]} == {1, 2, 3}
    finally:
        reader.kill()
        reader.wait()
    writer = _hold(database, read_only=False)
    try:
        held = _memodag(project, "tables", "list", "--wait", "0.2", check=False)
    finally:
        writer.kill()
        writer.wait()
    assert held.returncode == 1
    assert f"PID {writer.pid}" in held.stderr and "held by another process" in held.stderr


def test_reexecuting_part_of_a_stage_commits_the_stage_whole(project: Path) -> None:
    """The parent run failed in stage model (nothing of it committed); re-executing the failed
    step commits model with it and with the table the parent made beside it."""
    failed = _execute(project, env={"FAIL_BIG": "1"}, check=False)
    before = json.loads(_memodag(project, "tables", "list", "--json").stdout)
    assert [s["stage"] for s in before["stages"]] == ["raw"]
    _memodag(project, "job", "reexecute", failed, "--steps", "big_orders", "--json")
    after = json.loads(_memodag(project, "tables", "list", "--stage", "model", "--json").stdout)
    assert sorted(t["name"] for t in after["stages"][0]["tables"]) == ["big", "totals"]

    # the rest of the stage as the parent run left it, even when a later run changed it
    parent = _execute(project)
    shown = json.loads(_memodag(project, "tables", "list", "--json").stdout)
    big_then = next(t for s in shown["stages"] for t in s["tables"] if t["name"] == "big")
    _execute(project, env={"BIG_VERSION": "2", "OVER": "0"})
    _memodag(project, "job", "reexecute", parent, "--steps", "totals")
    final = json.loads(_memodag(project, "tables", "list", "--stage", "model", "--json").stdout)
    big_now = next(t for t in final["stages"][0]["tables"] if t["name"] == "big")
    assert big_now["physical"] == big_then["physical"] and big_now["rows"] == 2


@pytest.fixture
def pg_url() -> str:
    base = os.environ.get("MEMODAG_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("MEMODAG_TEST_POSTGRES_URL not set: no PostgreSQL for this run")
    return base


def test_postgres_tables_are_named_without_password(project: Path, pg_url: str) -> None:
    import psycopg

    prefix = f"t{uuid.uuid4().hex[:10]}_"
    (project / "pg.yaml").write_text(
        "resources:\n  table_store:\n    config:\n"
        f"      url: {{env: TEST_WAREHOUSE_PG}}\n      schema_prefix: {prefix}\n"
    )
    (project / "jobs.py").write_text(
        textwrap.dedent(JOB)
        .replace("from memodag import", "from memodag import postgres_table_store,")
        .replace("@job\n", '@job(resource_defs={"table_store": postgres_table_store})\n')
    )
    user, rest = pg_url.split("://", 1)[1].split("@", 1)
    env = {"TEST_WAREHOUSE_PG": f"postgresql://{user}:s3cr3t-pw@{rest}?connect_timeout=5"}
    expected = f"postgresql://{user}@{rest.split('?')[0]}#{prefix}raw.orders"
    try:
        ran = _memodag(
            project, "job", "execute", "-f", "jobs.py", "-c", "pg.yaml", "--json", env=env
        )
        run_id = json.loads(ran.stdout)["run_id"]
        shown = _memodag(project, "runs", "show", run_id)
        assert expected + " (version " in shown.stdout
        versions = _memodag(
            project, "job", "list-versions", "-f", "jobs.py", "-c", "pg.yaml", "--json", env=env
        )
        assert expected in versions.stdout
        listed = _memodag(
            project, "tables", "list", "-f", "jobs.py", "-c", "pg.yaml", "--json", env=env
        )
        stages = json.loads(listed.stdout)["stages"]
        assert [s["schema"] for s in stages] == [f"{prefix}model", f"{prefix}raw"]
        assert [t["rows"] for t in stages[1]["tables"]] == [3]
        everything = shown.stdout + versions.stdout + listed.stdout + listed.stderr
        assert "s3cr3t-pw" not in everything
        # the store from $MEMODAG_TABLE_STORE_URL, without the job: its prefix given as options
        by_url = {**env, "MEMODAG_TABLE_STORE_URL": env["TEST_WAREHOUSE_PG"]}
        affixed = _memodag(
            project, "tables", "list", "--schema-prefix", prefix, "--json", env=by_url
        )
        assert [s["schema"] for s in json.loads(affixed.stdout)["stages"]] == [
            f"{prefix}model",
            f"{prefix}raw",
        ]
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for (schema,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
            ).fetchall():
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


LAYERED = """
import pandas as pd
import sqlalchemy as sa
from memodag import Stage, Table, job, materialize

@materialize(version="1")
def orders():
    return Table(pd.DataFrame({"customer_id": [1, 1, 2], "amount": [10.0, 5.5, 7.25]}),
                 name="orders")

@materialize(version="1", input_type=pd.DataFrame)
def valid_orders(orders):
    return Table(orders[orders["amount"] > 0], inline=True)

@materialize(version="1", input_type=pd.DataFrame)
def by_customer(orders):
    return Table(orders.groupby("customer_id", as_index=False)["amount"].sum(),
                 name="by_customer")

@materialize(lazy=True)
def top_customers(by_customer: sa.Table):
    return Table(sa.select(by_customer).where(by_customer.c.amount > 6), name="top_customers")

@job
def layered():
    with Stage("raw"):
        o = orders()
    with Stage("model"):
        top_customers(by_customer(valid_orders(o)))
"""


def test_inline_tables_are_in_no_database_and_lazy_tables_are_named_at_their_query_version(
    tmp_path: Path,
) -> None:
    (tmp_path / "layered.py").write_text(textwrap.dedent(LAYERED))

    def run() -> str:
        ran = _memodag(tmp_path, "job", "execute", "-f", "layered.py", "--json")
        return str(json.loads(ran.stdout)["run_id"])

    run()
    again = run()  # the lazy task runs again, finds its query's table stored
    database = tmp_path / "home" / "tables.duckdb"
    rows = json.loads(
        _memodag(tmp_path, "job", "list-versions", "-f", "layered.py", "--json").stdout
    )["outputs"]
    by_step = {r["step"]: r for r in rows}
    assert by_step["valid_orders"]["location"] == "inline (in memory, not stored)"
    top = by_step["top_customers"]
    assert top["status"] == "stored"
    assert top["location"] == f"duckdb:{database}#model.top_customers"

    steps = json.loads(_memodag(tmp_path, "runs", "show", again, "--json").stdout)["steps"]
    outputs = {s["step_key"]: s["outputs"]["result"] for s in steps}
    assert outputs["valid_orders"]["location"] == "inline (in memory, not stored)"
    shown = _memodag(tmp_path, "runs", "show", again).stdout
    # the version its physical table is named by (the query's), as list-versions shows it
    assert f"#model.top_customers (version {top['version'][:12]})" in shown
    assert "table:inline" not in shown
