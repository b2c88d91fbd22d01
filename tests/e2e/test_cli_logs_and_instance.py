"""End to end in a subprocess: ``runs show --logs`` prints what ops logged, and the CLI finds
its instance as git finds a repository (the nearest ``.memodag`` upward, or ``MEMODAG_HOME``)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from cli_process import run_memodag

LOGGING_JOB = """
from memodag import op, job

@op
def fetch(context):
    context.log.info("fetched %d rows", 3)
    return [1, 2, 3]

@op
def check(context, rows):
    context.log.warning("row 2 looks odd")
    return sum(rows)

@job
def logged():
    check(fetch())
"""


def _memodag(
    *args: str, cwd: Path, home: Path | None = None, instance_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_memodag(*args, cwd=cwd, home=home, instance_url=instance_url)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_runs_show_logs_prints_what_each_op_logged(tmp_path: Path) -> None:
    job_file = _write(tmp_path / "pipeline.py", LOGGING_JOB)
    home = tmp_path / "home"
    _memodag("job", "execute", "-f", str(job_file), cwd=tmp_path, home=home)
    (run,) = json.loads(_memodag("runs", "list", "--json", cwd=tmp_path, home=home).stdout)

    shown = _memodag("runs", "show", run["run_id"][:8], "--logs", cwd=tmp_path, home=home).stdout
    lines = shown.splitlines()
    fetched = next(i for i, line in enumerate(lines) if "fetched 3 rows" in line)
    odd = next(i for i, line in enumerate(lines) if "row 2 looks odd" in line)
    assert fetched < odd  # in the order they were logged
    assert "fetch" in lines[fetched] and "INFO" in lines[fetched]
    assert "check" in lines[odd] and "WARNING" in lines[odd]

    # without --logs: the steps, and a hint that there is more
    plain = _memodag("runs", "show", run["run_id"][:8], cwd=tmp_path, home=home).stdout
    assert "fetched 3 rows" not in plain
    assert "2 log message(s) recorded; show them with --logs" in plain

    detail = json.loads(
        _memodag("runs", "show", run["run_id"], "--json", cwd=tmp_path, home=home).stdout
    )
    assert [(e["step_key"], e["level"], e["message"]) for e in detail["logs"]] == [
        ("fetch", "INFO", "fetched 3 rows"),
        ("check", "WARNING", "row 2 looks odd"),
    ]
    assert all(e["time"] for e in detail["logs"])


MEMOIZED_JOB = """
import os
from memodag import op, job, SourceHashVersionStrategy

@op
def orders():
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write("orders ran\\n")
    return [3, 4]

@op
def total(rows):
    return sum(rows)

@job(version_strategy=SourceHashVersionStrategy())
def daily():
    total(orders())
"""


def _instance_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("Instance: "))


@pytest.fixture
def side_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file ops note that they ran in (the subprocesses inherit the variable); and no
    ``.memodag`` above the test's folder, or the search would rightly find that one."""
    from memodag.storage.instance import find_home

    monkeypatch.delenv("MEMODAG_HOME")
    stray = find_home(tmp_path)
    if stray.is_dir():
        pytest.skip(f"a .memodag above the test folder ({stray}) would be found first")
    path = tmp_path / "ran.txt"
    monkeypatch.setenv("SIDE_EFFECTS", str(path))
    return path


def test_the_instance_is_found_upward_from_any_subfolder_like_git(
    tmp_path: Path, side_effects: Path
) -> None:
    project = tmp_path / "project"
    _write(project / "pipe" / "orders.py", MEMOIZED_JOB)
    # first run at the project root: a new instance there, said so
    first = _memodag("job", "execute", "-f", "pipe/orders.py", cwd=project).stdout
    assert _instance_line(first) == (
        f"Instance: {project / '.memodag'} (new: no .memodag folder in {project} or above)"
    )
    # from the code's own folder the same instance is found: nothing is recomputed
    second = _memodag("job", "execute", "-f", "orders.py", cwd=project / "pipe").stdout
    assert _instance_line(second) == f"Instance: {project / '.memodag'}"
    assert "0 executed, 2 memoized" in second
    assert side_effects.read_text().splitlines() == ["orders ran"]
    assert not (project / "pipe" / ".memodag").exists()

    deeper = project / "pipe" / "notebooks"
    deeper.mkdir()
    table = _memodag("runs", "list", cwd=deeper).stdout
    assert _instance_line(table) == f"Instance: {project / '.memodag'}"
    assert table.count("daily") == 2
    listed = json.loads(_memodag("runs", "list", "--json", cwd=deeper).stdout)  # JSON stays JSON
    assert [run["job_name"] for run in listed] == ["daily", "daily"]

    # MEMODAG_HOME wins over the folder search
    elsewhere = tmp_path / "elsewhere"
    empty = _memodag("runs", "list", cwd=deeper, home=elsewhere).stdout
    assert _instance_line(empty) == f"Instance: none ($MEMODAG_HOME={elsewhere} does not exist yet)"
    assert "No runs found." in empty
    assert not elsewhere.exists()  # looking at runs creates no instance


def test_a_run_from_outside_the_project_says_where_earlier_runs_are(
    tmp_path: Path, side_effects: Path
) -> None:
    project = tmp_path / "project"
    _write(project / "pipe" / "orders.py", MEMOIZED_JOB)
    _memodag("job", "execute", "-f", "orders.py", cwd=project / "pipe")
    outside = _memodag("job", "execute", "-f", "project/pipe/orders.py", cwd=tmp_path).stdout
    lines = outside.splitlines()
    assert lines[0].startswith(f"Instance: {tmp_path / '.memodag'} (new: ")
    assert lines[1] == (
        f"Note: earlier runs of this file may be in {project / 'pipe' / '.memodag'}; run from "
        f"{project / 'pipe'} (or below), or set MEMODAG_HOME={project / 'pipe' / '.memodag'}"
    )


def test_an_instance_on_postgres_is_named_by_its_url_without_password(
    tmp_path: Path, postgres_url: str
) -> None:
    job_file = _write(tmp_path / "pipeline.py", LOGGING_JOB)
    home = tmp_path / "home"
    ran = _memodag(
        "job", "execute", "-f", str(job_file), cwd=tmp_path, home=home, instance_url=postgres_url
    ).stdout
    listed = _memodag("runs", "list", cwd=tmp_path, home=home, instance_url=postgres_url).stdout
    for output in (ran, listed):
        line = _instance_line(output)
        assert line.startswith("Instance: postgresql://"), line
        assert "(new" not in line
    assert "logged" in listed
