"""Source digests are kept between processes (``$MEMODAG_CACHE_DIR``), so a warm run does not
parse its ops' files again; and the cache is never stale: an edit is seen however it was made
(same size, mtime set back, the file replaced by another of the same size and mtime), and a file
changed just before it was read is not trusted by the next process.

Each run is a fresh interpreter (``python run.py``) over a project of two modules: ``pipe.py``
(the job) and ``helpers.py`` (what its op calls), with an instance and a cache of the test's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PIPE = """
from memodag import SourceHashVersionStrategy, job, op

import helpers


@op
def scaled():
    return helpers.scale(7)


@job(version_strategy=SourceHashVersionStrategy())
def pipeline():
    scaled()
"""

HELPERS = "def scale(x):\n    return {factor} * x\n"

RUN = """
import importlib, json, sys
sys.path.insert(0, ".")
from memodag.versioning import source_cache, source_index

if {coarse!r}:  # a file system whose timestamps tick every 1,000 s (FAT ticks every 2 s)
    exact = source_cache.file_signature
    def coarse(filename):
        found = exact(filename)
        tick = 10**12
        return found and (*found[:3], found[3] // tick * tick, found[4] // tick * tick)
    source_cache.file_signature = source_index.file_signature = coarse
    source_cache.RACY_SECONDS = 2_000
parsed = []
original = source_index._source_index
def counting(filename, namespace):
    parsed.append(filename)
    return original(filename, namespace)
source_index._source_index = counting

from memodag import Instance
import helpers, pipe

instance = Instance.from_url("sqlite:///instance.db", storage_dir="storage")
runs = []
for edit in [None, *{edits!r}]:
    if edit is not None:  # a long-lived process: edit the helper and reload it
        with open("helpers.py", "w") as f:
            f.write(edit)
        importlib.reload(helpers)
    result = pipe.pipeline.execute_in_process(instance=instance)
    runs.append({{"executed": result.executed_step_keys, "value": result.output_for_node("scaled")}})
import glob
written = bool(glob.glob("cache/source-digests-*.json"))  # before this process exits
parsed = sorted({{p.rpartition("/")[2] for p in parsed}})
print(json.dumps({{"runs": runs, "parsed": parsed, "written": written}}))
"""


def _run(project: Path, *, coarse: bool = False, edits: tuple[str, ...] = ()) -> dict:
    (project / "run.py").write_text(RUN.format(coarse=coarse, edits=list(edits)))
    result = subprocess.run(
        [sys.executable, "run.py"],
        cwd=project,
        env={**os.environ, "MEMODAG_CACHE_DIR": str(project / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipe.py").write_text(PIPE)
    (tmp_path / "helpers.py").write_text(HELPERS.format(factor=2))
    return tmp_path


def test_a_warm_process_parses_no_source_file(project: Path) -> None:
    first = _run(project)
    assert first["runs"] == [{"executed": ["scaled"], "value": 14}]
    assert first["parsed"] == ["helpers.py", "pipe.py"]
    second = _run(project)
    assert second["runs"] == [{"executed": [], "value": 14}]
    assert second["parsed"] == []


def test_an_edit_of_a_helper_in_the_same_second_with_its_mtime_kept_is_seen(
    project: Path,
) -> None:
    _run(project)
    helpers = project / "helpers.py"
    before = helpers.stat()
    helpers.write_text(HELPERS.format(factor=3))  # same size
    os.utime(helpers, ns=(before.st_atime_ns, before.st_mtime_ns))  # a coarse clock's tick
    assert (helpers.stat().st_size, helpers.stat().st_mtime_ns) == (
        before.st_size,
        before.st_mtime_ns,
    )
    after = _run(project)
    assert after["runs"] == [{"executed": ["scaled"], "value": 21}]
    assert after["parsed"] == ["helpers.py"]  # the op's own file is still served


def test_a_file_replaced_by_one_of_the_same_size_and_mtime_is_seen(project: Path) -> None:
    _run(project)
    helpers = project / "helpers.py"
    before = helpers.stat()
    replacement = project / "helpers.py.new"
    replacement.write_text(HELPERS.format(factor=5))
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, helpers)  # what rsync or an editor's atomic save does
    assert helpers.stat().st_ino != before.st_ino
    after = _run(project)
    assert after["runs"] == [{"executed": ["scaled"], "value": 35}]


def test_a_long_lived_process_served_from_the_cache_sees_a_reloaded_edit(project: Path) -> None:
    _run(project)
    # nothing is parsed in this process before the edit: the served files are watched too
    runs = _run(project, edits=(HELPERS.format(factor=4),))["runs"]
    assert runs == [{"executed": [], "value": 14}, {"executed": ["scaled"], "value": 28}]


def test_a_file_edited_in_the_tick_it_was_read_in_is_seen(project: Path) -> None:
    # Timestamps that tick every 1,000 s: the edit keeps size, inode and (coarse) times; only
    # its content tells it, and the file was changed too recently for its signature to count.
    assert _run(project, coarse=True)["runs"] == [{"executed": ["scaled"], "value": 14}]
    (project / "helpers.py").write_text(HELPERS.format(factor=6))
    after = _run(project, coarse=True)
    assert after["runs"] == [{"executed": ["scaled"], "value": 42}]
    assert after["parsed"] == ["helpers.py"]


def test_a_touched_file_is_served_by_its_content(project: Path) -> None:
    _run(project)
    later = time.time() + 5
    for name in ("helpers.py", "pipe.py"):
        os.utime(project / name, (later, later))  # a checkout back and forth, ``touch``
    assert _run(project)["parsed"] == []


def test_a_cache_written_by_other_hashing_code_is_ignored(project: Path) -> None:
    _run(project)
    [cache] = (project / "cache").glob("source-digests-*.json")
    data = json.loads(cache.read_text())
    for entry in data["files"].values():  # what an older memodag's parser said
        for key in entry["functions"]:
            entry["functions"][key][0] = "ast:stale"
    cache.write_text(json.dumps({**data, "key": "an older memodag"}))
    assert _run(project)["parsed"] == ["helpers.py", "pipe.py"]
    cache_key = json.loads(cache.read_text())["key"]
    assert cache_key != "an older memodag"


def test_a_long_lived_process_hands_its_digests_on_at_its_next_run(project: Path) -> None:
    # a notebook: the second run (after a reload) writes what the first one parsed, so a
    # process started meanwhile is served without waiting for the notebook to exit
    assert _run(project)["written"] is False
    (project / "cache").rename(project / "first-cache")
    assert _run(project, edits=(HELPERS.format(factor=2),))["written"] is True
