"""The built wheel: what it ships (``py.typed``, every layer's package) and its one version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import memodag

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # built offline with the hatchling the test extra installs (no build isolation, no index)
    pytest.importorskip("hatchling", reason="the test extra installs hatchling to build the wheel")
    source = tmp_path_factory.mktemp("source") / "memodag"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".memodag", "__pycache__", ".*_cache", "benchmarks"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            *offline,
            "--wheel-dir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("memodag-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_py_typed_and_every_layer(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "memodag/py.typed" in names
    for module in (
        "definitions/executor.py",
        "plan/plan.py",
        "runtime/step.py",
        "versioning/strategy.py",
        "executors/base.py",
        "engine/engine.py",
        "cli/main.py",
        "tables/store.py",
        "hashing.py",
    ):
        assert f"memodag/{module}" in names


def test_one_version_in_the_wheel_the_package_and_the_cli(wheel: zipfile.ZipFile) -> None:
    (metadata,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    assert Parser().parsestr(wheel.read(metadata).decode())["Version"] == memodag.__version__
    cli = subprocess.run(
        [sys.executable, "-m", "memodag.cli.main", "--version"],
        capture_output=True,
        text=True,
        env=os.environ,
        check=True,
    )
    assert cli.stdout.strip() == f"memodag, version {memodag.__version__}"
