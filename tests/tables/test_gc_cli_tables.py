"""``memodag gc`` on a table job through the CLI: what a committed stage shows stays reusable."""

from __future__ import annotations

import json

from cli_process import run_memodag

TABLE_JOB = """
import pandas as pd
from memodag import Stage, job, materialize


@materialize
def customers():
    return pd.DataFrame({"id": [1, 2]})


@materialize
def orders(customers):
    return customers.assign(n=1)


@job
def warehouse():
    with Stage("shop"):
        orders(customers())
"""

OTHER_JOB = """
from memodag import job, op


@op
def one():
    return 1


@job
def other():
    one()
"""


def test_gc_keeps_the_index_entries_of_tables_a_committed_stage_shows(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "tables_job.py").write_text(TABLE_JOB)
    (project / "other.py").write_text(OTHER_JOB)
    home = tmp_path / "home"
    home.mkdir()
    run_memodag("job", "execute", "-f", "tables_job.py", cwd=project, home=home)
    for _ in range(3):
        run_memodag("job", "execute", "-f", "other.py", cwd=project, home=home)

    done = run_memodag(
        "gc", "-f", "tables_job.py", "--keep-last", "3", "--yes", "--json", cwd=project, home=home
    )
    report = json.loads(done.stdout)
    assert [i["step_key"] for i in report["items"]] == []  # both tables are still shown
    assert report["kept"] >= 2

    # the tables' entries stayed: the next run reuses them instead of recomputing
    again = run_memodag("job", "execute", "-f", "tables_job.py", "--json", cwd=project, home=home)
    steps = json.loads(again.stdout)["steps"]
    assert (steps["executed"], steps["memoized"]) == (0, 2)


def test_gc_without_the_job_keeps_tables_and_says_to_give_it(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "tables_job.py").write_text(TABLE_JOB)
    home = tmp_path / "home"
    home.mkdir()
    run_memodag("job", "execute", "-f", "tables_job.py", cwd=project, home=home)

    # no -f: a table is not a file gc could unlink; dropping its entry alone loses it
    done = run_memodag("gc", "--keep-last", "0", "--yes", cwd=project, home=home)
    assert "0 output(s) deleted" in done.stdout
    assert "2 output(s): a table of job 'warehouse'" in done.stdout
    assert "memodag gc -f FILE.py" in done.stdout

    again = run_memodag("job", "execute", "-f", "tables_job.py", "--json", cwd=project, home=home)
    assert json.loads(again.stdout)["steps"]["executed"] == 0
