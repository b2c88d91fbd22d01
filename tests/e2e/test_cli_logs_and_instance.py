"""End to end in a subprocess: ``runs show --logs`` prints what ops logged, and the CLI finds
its instance as git finds a repository (the nearest ``.memodag`` upward, or ``MEMODAG_HOME``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
    *args: str, cwd: Path, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "250"}
    for name in ("MEMODAG_HOME", "MEMODAG_INSTANCE_URL", "MEMODAG_DEBUG"):
        env.pop(name, None)
    if home is not None:
        env["MEMODAG_HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-m", "memodag.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


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
