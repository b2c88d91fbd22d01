"""Installed code counts by ``Dist==version``; what was read of installed distributions is cached
between runs, and an install, upgrade or edit of one is seen by the next run (never stale).

Each look-up runs in a fresh interpreter with a fake distribution on ``sys.path``, as a pip
install would leave it, and the cache in a folder of the test's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
sys.path[:0] = [{site!r}, "."]
from memodag.versioning import distributions
if {forbid_reading!r}:
    def refuse(path, signature):
        raise AssertionError("read " + path + " again: the cache was not used")
    distributions._read_entry = refuse
from memodag import SourceHashVersionStrategy
from probe_ops import body

explained = SourceHashVersionStrategy().explain_op(body)
print(json.dumps([name for kind, name, _ in explained if kind == "package"]))
"""


def _install(site: Path, version: str, top_level: str = "fakepkg") -> Path:
    (site / "fakepkg").mkdir(parents=True, exist_ok=True)
    (site / "fakepkg" / "__init__.py").write_text("def twice(x):\n    return 2 * x\n")
    for old in site.glob("fakepkg-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"fakepkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")
    (info / "top_level.txt").write_text(top_level + "\n")
    return info


OPS = """
from memodag import op


@op
def body(x):
    import fakepkg

    return fakepkg.twice(x)
"""


def _packages(site: Path, cache: Path, cwd: Path, *, forbid_reading: bool = False) -> list[str]:
    (cwd / "probe_ops.py").write_text(OPS)
    code = PROBE.format(site=str(site), forbid_reading=forbid_reading)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, "MEMODAG_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [p for p in json.loads(result.stdout) if p.startswith("fakepkg")]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    site, cache, cwd = tmp_path / "site", tmp_path / "cache", tmp_path / "work"
    site.mkdir()
    cwd.mkdir()
    return site, cache, cwd


def test_a_package_counts_by_its_version_and_the_cache_spares_reading_it_again(
    dirs: tuple[Path, Path, Path],
) -> None:
    site, cache, cwd = dirs
    _install(site, "1.0")
    assert _packages(site, cache, cwd) == ["fakepkg==1.0"]
    assert list(cache.glob("distributions-*.json"))
    # nothing changed: the next run reads no distribution's metadata
    assert _packages(site, cache, cwd, forbid_reading=True) == ["fakepkg==1.0"]


def test_an_upgrade_or_an_edited_metadata_file_is_seen_by_the_next_run(
    dirs: tuple[Path, Path, Path],
) -> None:
    site, cache, cwd = dirs
    _install(site, "1.0")
    assert _packages(site, cache, cwd) == ["fakepkg==1.0"]
    _install(site, "2.0")  # pip: old dist-info removed, new one written
    assert _packages(site, cache, cwd) == ["fakepkg==2.0"]
    # the same folder, its METADATA rewritten in place (same length, so only the mtime tells)
    metadata = site / "fakepkg-2.0.dist-info" / "METADATA"
    metadata.write_text(metadata.read_text().replace("2.0", "2.1"))
    stat = metadata.stat()
    os.utime(metadata, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert _packages(site, cache, cwd) == ["fakepkg==2.1"]


def test_an_unreadable_cache_only_costs_reading_again(dirs: tuple[Path, Path, Path]) -> None:
    site, cache, cwd = dirs
    _install(site, "3.0")
    assert _packages(site, cache, cwd) == ["fakepkg==3.0"]
    for file in cache.glob("distributions-*.json"):
        file.write_text("{not json")
    assert _packages(site, cache, cwd) == ["fakepkg==3.0"]
