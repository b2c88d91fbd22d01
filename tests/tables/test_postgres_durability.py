"""PostgreSQL table writes commit asynchronously (no WAL flush each), yet every table a run
wrote is durable before the run's end is recorded: the stage commit or the store's close
flushes the WAL, also for a failed run whose stage was not committed."""

from __future__ import annotations

import json

import pandas as pd
import psycopg

from cli_process import run_memodag
from memodag import Stage, job, materialize

from .test_postgres import pg  # noqa: F401 (the fixture: a schema prefix on the real server)


def lsn(url: str, function: str) -> int:
    with psycopg.connect(url) as conn:
        text = conn.execute(f"SELECT {function}()::text").fetchone()[0]
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def test_a_failed_runs_tables_are_flushed_before_its_end_is_recorded(pg, instance):  # noqa: F811
    written: list[int] = []

    @materialize(version="1")
    def orders():
        return pd.DataFrame({"order_id": [1, 2]})

    @materialize(version="1")
    def broken(orders):
        # orders' table is written (asynchronously committed): its WAL ends before this point
        written.append(lsn(pg.url, "pg_current_wal_insert_lsn"))
        raise RuntimeError("the op fails: stage raw is not committed")

    @job(resource_defs={"table_store": pg.store()})
    def failing():
        with Stage("raw"):
            broken(orders())

    result = failing.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert result.executed_step_keys == ["orders"]
    # nothing was committed, yet orders' table (recorded in the instance) is on disk
    assert lsn(pg.url, "pg_current_wal_flush_lsn") >= written[0]


JOB = """
import os
import pandas as pd
from memodag import Stage, job, materialize, postgres_table_store

@materialize(version="1")
def orders():
    return pd.DataFrame({"order_id": [1, 2]})

@materialize(version="1")
def checked(orders):
    if os.environ.get("FAIL"):
        raise RuntimeError("failing as asked")
    return orders

store = postgres_table_store.configured(
    {"url": os.environ["PG_URL"], "schema_prefix": os.environ["PG_PREFIX"]}
)

@job(resource_defs={"table_store": store})
def shop():
    with Stage("raw"):
        checked(orders())
"""


def test_verify_finds_a_lost_table_and_repair_lets_the_next_run_recompute_it(pg, tmp_path):  # noqa: F811
    home, job_file = tmp_path / "home", tmp_path / "shop.py"
    job_file.write_text(JOB)
    env = {"PG_URL": pg.url, "PG_PREFIX": pg.prefix}
    failed = run_memodag(
        "job",
        "execute",
        "-f",
        str(job_file),
        cwd=tmp_path,
        home=home,
        env={**env, "FAIL": "1"},
        check=False,
    )
    assert failed.returncode != 0  # orders recorded, stage raw not committed
    # what a server crash during that run could lose: orders' table and its bookkeeping row
    data = f"{pg.prefix}memodag_data"
    ((physical,),) = pg.query(f'SELECT physical FROM "{pg.prefix}memodag_meta".tables')
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{data}"."{physical}"')
        conn.execute(f'DELETE FROM "{pg.prefix}memodag_meta".tables')

    found = run_memodag(
        "verify", "-f", str(job_file), "--json", cwd=tmp_path, home=home, env=env, check=False
    )
    assert found.returncode == 1, found.stdout + found.stderr
    assert [i["reason"] for i in json.loads(found.stdout)["items"]] == ["missing"]
    run_memodag("verify", "-f", str(job_file), "--repair", cwd=tmp_path, home=home, env=env)
    again = run_memodag("job", "execute", "-f", str(job_file), cwd=tmp_path, home=home, env=env)
    assert "2 executed" in again.stdout
    assert pg.query(f'SELECT count(*) FROM "{pg.prefix}raw".orders') == [(2,)]
