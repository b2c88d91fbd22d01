"""Running the ``memodag`` command in a subprocess, as a user's shell would, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_memodag(
    *args: str,
    cwd: Path,
    home: Path | None = None,
    instance_url: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``memodag ARGS`` run in ``cwd``, with the instance at ``home`` (``$MEMODAG_HOME``) or
    ``instance_url`` (none set: the CLI finds one as a user's would). With ``check``, a non-zero
    exit fails the test with both streams shown."""
    full_env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "250"}
    for name in ("MEMODAG_HOME", "MEMODAG_INSTANCE_URL", "MEMODAG_DEBUG"):
        full_env.pop(name, None)
    if home is not None:
        full_env["MEMODAG_HOME"] = str(home)
    if instance_url is not None:
        full_env["MEMODAG_INSTANCE_URL"] = instance_url
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "memodag.cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result
