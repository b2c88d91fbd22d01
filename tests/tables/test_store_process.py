"""The DuckDB file across processes, gc of table versions, and what ``import memodag`` loads."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pandas as pd
import pytest

from memodag import ExecutionError, Stage, Table, duckdb_table_store, job, materialize
from memodag.versioning.gc import collect_garbage


def count_tables(path, schema="memodag_data"):
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ?", [schema]
        ).fetchone()[0]


def read_in_another_process(path):
    """What another process sees opening the file read-only (or why it cannot)."""
    code = (
        "import duckdb, sys\n"
        f"c = duckdb.connect({str(path)!r}, read_only=True)\n"
        'print(c.execute("SELECT count(*) FROM information_schema.tables '
        "WHERE table_schema = 'memodag_data'\").fetchone()[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def two_step_job(path, hold_file, seen):
    @materialize(version="1")
    def first():
        return pd.DataFrame({"a": [1]})

    @materialize(version="1")
    def second(first):
        seen.append(read_in_another_process(path))
        return first

    @job(
        name=f"hold_{hold_file}",
        resource_defs={
            "table_store": duckdb_table_store.configured(
                {"path": str(path), "hold_file": hold_file}
            )
        },
    )
    def held():
        second(first())

    return held


def test_hold_file_write_lets_other_processes_read_between_writes(instance, tmp_path):
    seen: list[str] = []
    path = tmp_path / "w.duckdb"
    assert two_step_job(path, "write", seen).execute_in_process(instance=instance).success
    assert seen == ["1"]  # the first table, written and released before the second op ran


def test_hold_file_run_holds_the_file_until_the_run_ends(instance, tmp_path):
    seen: list[str] = []
    path = tmp_path / "r.duckdb"
    assert two_step_job(path, "run", seen).execute_in_process(instance=instance).success
    assert "Conflicting lock" in seen[0]
    assert read_in_another_process(path) == "2"  # released at run end


def test_a_held_file_is_waited_for_then_named_with_its_process(instance, tmp_path):
    path = tmp_path / "busy.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ready', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"

        @materialize(version="1")
        def blocked():
            return pd.DataFrame({"a": [1]})

        @job(
            resource_defs={
                "table_store": duckdb_table_store.configured(
                    {"path": str(path), "lock_timeout": 0.3}
                )
            }
        )
        def waits():
            blocked()

        result = waits.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        text = "\n".join(str(e.message) for e in instance.get_events(result.run_id))
        assert "is held by another process" in text and f"(PID {holder.pid})" in text
    finally:
        holder.kill()
        holder.wait()


def versioned_job(version):
    @materialize(version=version, name="numbers")
    def numbers():
        return Table(pd.DataFrame({"n": [int(version)]}), name="numbers")

    @job(name="versions")
    def versions():
        with Stage("s"):
            numbers()

    return versions


def test_gc_drops_table_versions_no_kept_run_uses_and_no_stage_shows(instance):
    path = instance.storage_dir.parent / "tables.duckdb"
    versioned_job("1").execute_in_process(instance=instance)
    latest = versioned_job("2")
    latest.execute_in_process(instance=instance)
    assert count_tables(path) == 2

    report = collect_garbage(instance, keep_runs=1, dry_run=False, jobs={"versions": latest})
    assert report.errors == []
    assert len(report.items) == 1
    assert count_tables(path) == 1
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT n FROM s.numbers").fetchall() == [(2,)]
    # the dropped version is computed again when asked for
    assert versioned_job("1").execute_in_process(instance=instance).executed_step_keys == [
        "numbers"
    ]


def test_gc_keeps_a_table_a_committed_stage_shows(instance):
    path = instance.storage_dir.parent / "tables.duckdb"
    shown = versioned_job("1")
    shown.execute_in_process(instance=instance)

    @materialize(version="1")
    def other():
        return pd.DataFrame({"x": [1]})

    @job(name="later")
    def later():
        other()

    later.execute_in_process(instance=instance)
    report = collect_garbage(instance, keep_runs=1, dry_run=False, jobs={"versions": shown})
    assert report.errors == []
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT n FROM s.numbers").fetchall() == [(1,)]


def test_import_memodag_loads_no_frame_library_or_database_driver():
    code = (
        "import sys, memodag\n"
        "heavy = ['pandas', 'polars', 'pyarrow', 'duckdb', 'sqlalchemy', 'numpy']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_a_memoized_run_of_unchanged_stages_never_opens_the_file(instance, tmp_path):
    path = tmp_path / "shared.duckdb"
    store = {"table_store": duckdb_table_store.configured({"path": str(path), "lock_timeout": 0.2})}

    @materialize(version="1")
    def numbers():
        return pd.DataFrame({"n": [1, 2]})

    @job(resource_defs=store)
    def unchanged():
        with Stage("s"):
            numbers()

    assert unchanged.execute_in_process(instance=instance).success
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ready', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        again = unchanged.execute_in_process(instance=instance)
        assert again.success and again.memoized_step_keys == ["numbers"]
    finally:
        holder.kill()
        holder.wait()


def test_a_store_that_cannot_be_used_fails_the_run_before_any_op(instance, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    ran = []

    @materialize(version="1")
    def never():
        ran.append(1)
        return pd.DataFrame({"a": [1]})

    @job(
        resource_defs={
            "table_store": duckdb_table_store.configured({"path": str(blocker / "t.duckdb")})
        }
    )
    def unusable():
        never()

    with pytest.raises(ExecutionError, match=r"cannot create the directory of .*t\.duckdb"):
        unusable.execute_in_process(instance=instance, raise_on_error=False)
    assert ran == []
