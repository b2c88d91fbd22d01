"""End to end: the warehouse example through the CLI; list-versions while the file is held."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

from cli_process import run_memodag

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "warehouse"


def test_warehouse_example_runs_memoizes_and_lists_versions_while_the_file_is_held(tmp_path):
    copy = tmp_path / "warehouse"
    shutil.copytree(EXAMPLE, copy)
    home = tmp_path / "home"
    job_file = str(copy / "warehouse.py")

    first = run_memodag("job", "execute", "-f", job_file, cwd=tmp_path, home=home)
    assert "4 executed" in first.stdout
    tables = home / "tables.duckdb"
    with duckdb.connect(str(tables), read_only=True) as conn:
        assert conn.execute("SELECT * FROM model.top_customers").fetchall() == [
            (1, 15.5),
            (2, 7.25),
        ]
        assert conn.execute("SELECT count(*) FROM raw.orders").fetchone() == (6,)

    second = run_memodag("job", "execute", "-f", job_file, cwd=tmp_path, home=home)
    # the lazy SQL task's body runs (cheap: it builds a query) and finds its table stored
    assert "1 executed, 3 memoized" in second.stdout
    with duckdb.connect(str(tables), read_only=True) as conn:
        physical = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'memodag_data'"
        ).fetchone()
    assert physical == (3,)  # nothing was created again; valid_orders is inline: never stored

    # another process holds the file for writing: list-versions never opens it to write
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(tables)!r}); print('ready', "
            "flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        listed = run_memodag(
            "job", "list-versions", "-f", job_file, "--json", cwd=tmp_path, home=home
        )
    finally:
        holder.kill()
        holder.wait()
    rows = json.loads(listed.stdout)["outputs"]
    statuses = {row["step_output"]: row["status"] for row in rows}
    assert set(statuses.values()) == {"stored"}
    reasons = {row["step_output"]: row["reasons"] for row in rows}
    assert reasons["valid_orders.result"] == ["inline: recomputed if a consumer runs"]
    assert reasons["by_customer.result"] == []


def test_editing_an_op_of_the_warehouse_example_runs_it_and_what_depends_on_it(tmp_path):
    # the example's docstring promises it: its ops are versioned by their source
    copy = tmp_path / "warehouse"
    shutil.copytree(EXAMPLE, copy)
    home = tmp_path / "home"
    job_file = copy / "warehouse.py"
    run_memodag("job", "execute", "-f", str(job_file), cwd=tmp_path, home=home)

    source = job_file.read_text()
    edited = source.replace('alias("total"))', 'alias("total") * 2)')
    assert edited != source
    job_file.write_text(edited)
    again = run_memodag("job", "execute", "-f", str(job_file), "--json", cwd=tmp_path, home=home)
    steps = json.loads(again.stdout)["steps"]
    assert steps["memoized"] == 1  # orders; by_customer, its inline input and its consumer ran
    with duckdb.connect(str(home / "tables.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT * FROM model.top_customers").fetchall()[0] == (1, 31.0)
