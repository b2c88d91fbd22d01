"""End to end on the real PostgreSQL: a table job configured by an environment variable runs
from the CLI, its stage is readable by psql's driver, and nothing stored or shown holds the
password."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest

from cli_process import run_memodag

JOB = """
import pandas as pd
from memodag import Stage, Table, job, materialize, postgres_table_store

@materialize(version="1")
def orders():
    return Table(pd.DataFrame({"order_id": [1, 2], "amount": [1.5, 2.5]}), name="orders",
                 primary_key="order_id")

@job(resource_defs={"table_store": postgres_table_store})
def warehouse():
    with Stage("raw"):
        orders()
"""


@pytest.fixture
def pg_url():
    base = os.environ.get("MEMODAG_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("MEMODAG_TEST_POSTGRES_URL not set: no PostgreSQL for this run")
    return base


def test_a_table_store_url_from_the_environment_through_the_cli(tmp_path: Path, pg_url) -> None:
    import psycopg

    home = tmp_path / "home"
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOB))
    (tmp_path / "run.yaml").write_text(
        "resources:\n  table_store:\n    config:\n"
        f"      url: {{env: TEST_WAREHOUSE_PG}}\n      schema_prefix: {prefix}\n"
    )
    # a password psql ignores on this trust-auth server stands for a real one
    user, rest = pg_url.split("://", 1)[1].split("@", 1)
    secret_url = f"postgresql://{user}:s3cr3t-pw@{rest}"
    env = {"TEST_WAREHOUSE_PG": secret_url}
    try:
        ran = run_memodag(
            "job", "execute", "-f", "jobs.py", "-c", "run.yaml", "--json",
            cwd=tmp_path, home=home, env=env,
        )  # fmt: skip
        run_id = json.loads(ran.stdout)["run_id"]
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute(f'SELECT * FROM "{prefix}raw".orders ORDER BY 1').fetchall()
        assert rows == [(1, 1.5), (2, 2.5)]
        versions = run_memodag(
            "job", "list-versions", "-f", "jobs.py", "-c", "run.yaml",
            cwd=tmp_path, home=home, env=env,
        )  # fmt: skip
        assert "orders" in versions.stdout and "stored" in versions.stdout.lower()
        shown = run_memodag("runs", "show", run_id, "--json", cwd=tmp_path, home=home)
        config = json.loads(shown.stdout)["run"]["run_config"]
        assert config["resources"]["table_store"]["config"]["url"] == {"env": "TEST_WAREHOUSE_PG"}
        everything = ran.stdout + ran.stderr + versions.stdout + versions.stderr + shown.stdout
        assert "s3cr3t-pw" not in everything
        assert b"s3cr3t-pw" not in (home / "instance.db").read_bytes()
        again = run_memodag(
            "job", "execute", "-f", "jobs.py", "-c", "run.yaml", "--json",
            cwd=tmp_path, home=home, env=env,
        )  # fmt: skip
        assert json.loads(again.stdout)["steps"]["memoized"] == 1
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for (schema,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
            ).fetchall():
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
