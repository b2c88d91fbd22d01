"""The README's quick start works as written: its first command installs extras the package
defines and runs the flagship example, whose tables the next command reads."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from cli_process import run_memodag

ROOT = Path(__file__).resolve().parents[2]


def quick_start_commands() -> list[str]:
    """The command lines of the ```bash blocks under "## Quick start", in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [
        line
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_the_first_command_installs_defined_extras_and_runs_the_warehouse(tmp_path):
    first, *rest = quick_start_commands()
    steps = [shlex.split(part) for part in first.split("&&")]
    install = next(s for s in steps if "pip" in s[0])
    extras = re.fullmatch(r"\.\[(.*)\]", install[-1])
    assert extras is not None, install
    defined = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(extras.group(1).split(",")) <= set(defined)
    execute = steps[-1]
    assert execute[0] == ".venv/bin/memodag"
    assert execute[-1] == "examples/warehouse/warehouse.py"

    # the example as a user's clone has it, run from the clone's root
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    run = run_memodag(*execute[1:], cwd=tmp_path)
    assert "SUCCESS" in run.stdout
    again = run_memodag(*execute[1:], cwd=tmp_path)
    # the lazy SQL task's body runs on every run; its stored query executes nothing
    assert "1 executed, 3 memoized" in again.stdout

    # the README's next command reads a stage with the DuckDB client
    (read,) = (c for c in rest if "duckdb" in c)
    argv = shlex.split(read)
    assert argv[0] == ".venv/bin/python"
    out = subprocess.run(
        [sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "15.5" in out.stdout  # customer 1's total
