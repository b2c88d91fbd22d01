"""The version scheme: outputs stored by an older way of computing versions are recomputed, once,
and the run says so once (not per step); under the same scheme they memoize as before.

A memodag that computes versions another way bumps ``VERSION_SCHEME``; these tests stand in for
such a release by raising the number (in-process, and in the CLI's own process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memodag import MEMOIZED_RUN_TAG, DynamicOut, DynamicOutput, EventType, Instance, job, op
from memodag.versioning import scheme

FIXTURES = Path(__file__).parents[1] / "storage" / "fixtures"


def fan_job(calls: list[str]):
    @op(version="1", out=DynamicOut())
    def parts():
        calls.append("parts")
        for name in ("a", "b", "c"):
            yield DynamicOutput(name, mapping_key=name)

    @op(version="1")
    def shout(part: str) -> str:
        calls.append(f"shout {part}")
        return part.upper()

    @op(version="1")
    def joined(shouted: list[str]) -> str:
        calls.append("joined")
        return "".join(shouted)

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def fan():
        joined(parts().map(shout).collect())

    return fan


def _scheme_warnings(result) -> list[str]:
    return [
        e.message
        for e in result.all_events
        if e.event_type is EventType.LOG and e.step_key is None and "version scheme" in e.message
    ]


@pytest.fixture
def sqlite_instance(tmp_path):
    inst = Instance.from_url(f"sqlite:///{tmp_path / 'i.db'}", storage_dir=tmp_path / "storage")
    yield inst
    inst.close()


def test_outputs_of_an_older_scheme_are_recomputed_once_with_one_warning(
    sqlite_instance, monkeypatch
):
    calls: list[str] = []
    fan = fan_job(calls)
    fan.execute_in_process(instance=sqlite_instance)
    assert len(calls) == 5  # parts, shout x3, joined

    same = fan.execute_in_process(instance=sqlite_instance)
    assert same.executed_step_keys == [] and _scheme_warnings(same) == []

    monkeypatch.setattr(scheme, "VERSION_SCHEME", scheme.VERSION_SCHEME + 1)
    calls.clear()
    newer = fan.execute_in_process(instance=sqlite_instance)
    assert len(calls) == 5 and newer.memoized_step_keys == []  # nothing reused across schemes
    assert newer.output_for_node("joined") == "ABC"
    warnings = _scheme_warnings(newer)
    assert len(warnings) == 1, warnings  # one for the run, not one per step
    assert "stored outputs of job 'fan' were computed by an older memodag" in warnings[0]
    assert f"version scheme {scheme.VERSION_SCHEME}): they are recomputed, once" in warnings[0]
    assert [e.data.get("level") for e in newer.all_events if e.message == warnings[0]] == [
        "WARNING"
    ]

    # recomputed under the new scheme: memoized again, and nothing more to say
    calls.clear()
    after = fan.execute_in_process(instance=sqlite_instance)
    assert calls == [] and _scheme_warnings(after) == []


def test_the_cli_says_once_that_outputs_of_the_older_scheme_are_recomputed(tmp_path):
    """The upgraded instance of memodag 0.1, run by a memodag with a newer scheme, in the CLI."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(FIXTURES / "release_0_1", home)
    newer = scheme.VERSION_SCHEME + 1
    launcher = (
        "import sys; from memodag.versioning import scheme; "
        f"scheme.VERSION_SCHEME = {newer}; "
        "from memodag.cli.main import main; main(sys.argv[1:])"
    )
    env = {**os.environ, "MEMODAG_HOME": str(home), "COLUMNS": "300", "PYTHONIOENCODING": "utf-8"}
    env.pop("MEMODAG_INSTANCE_URL", None)
    args = ["job", "execute", "-f", str(FIXTURES / "release_job.py"), "-c", str(home / "east.yaml")]

    def memodag(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    first = memodag(launcher)
    assert first.count("version scheme") == 1, first
    assert "stored outputs of job 'release_job' were computed by an older memodag" in first
    assert "Steps: 6 executed, 0 memoized" in first

    again = memodag(launcher)
    assert "version scheme" not in again and "Steps: 0 executed, 6 memoized" in again


def test_an_entry_written_by_the_previous_release_into_an_upgraded_instance_is_reused(
    tmp_path, monkeypatch
):
    # during an upgrade a memodag 0.1 process may still write to the (now upgraded) instance: its
    # INSERT names no scheme, and 0.1 computed versions by scheme 1, so a memodag computing by
    # scheme 1 reuses the entry (one computing by a later scheme recomputes it, as any other)
    import sqlite3

    monkeypatch.setattr(scheme, "VERSION_SCHEME", 1)

    db = tmp_path / "instance.db"
    calls: list[str] = []
    with Instance.from_url(f"sqlite:///{db}", storage_dir=tmp_path / "storage") as instance:
        fan_job(calls).execute_in_process(instance=instance)
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT output_key, version, address, run_id, created_at, size_bytes, recipe "
            "FROM output_index"
        ).fetchall()
        conn.execute("DELETE FROM output_index")
        conn.executemany(  # memodag 0.1's statement, word for word
            "INSERT INTO output_index (output_key, version, address, run_id, created_at, "
            "size_bytes, recipe) VALUES (?,?,?,?,?,?,?)",
            rows,
        )
    calls.clear()
    with Instance.from_url(f"sqlite:///{db}", storage_dir=tmp_path / "storage") as instance:
        result = fan_job(calls).execute_in_process(instance=instance)
        assert calls == []
        assert _scheme_warnings(result) == []
