"""Upgrades: an instance written by the release before schema versions opens, upgrades itself once
(also when several processes open it at once), and memoizes from what it holds; a database of a
newer memodag is refused, never downgraded.

``fixtures/release_0_1/`` is an instance home made by memodag 0.1 (commit bfa3c69) running
``fixtures/release_job.py`` three times (see its README): three runs, a fan-out's manifest and
pieces in the index, their outputs on disk. On PostgreSQL, the tables of that release are created
by its DDL and filled with the fixture's rows.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import queue
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from instance_workers import open_instance

from cli_process import run_memodag
from memodag import Instance, StorageError
from memodag.storage.instance.schema import SCHEMA_VERSION

FIXTURES = Path(__file__).parent / "fixtures"
RELEASE_HOME = FIXTURES / "release_0_1"
JOB_FILE = FIXTURES / "release_job.py"

# What memodag 0.1 created on PostgreSQL (its sql.py at bfa3c69, with {autoinc} filled in).
RELEASE_0_1_POSTGRES_DDL = [
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, job_name TEXT NOT NULL, status TEXT NOT NULL,
        tags TEXT NOT NULL, run_config TEXT NOT NULL, parent_run_id TEXT, root_run_id TEXT,
        step_selection TEXT, start_time DOUBLE PRECISION, end_time DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS runs_by_start ON runs (start_time)",
    """CREATE TABLE IF NOT EXISTS events (
        id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, step_key TEXT, event_type TEXT NOT NULL,
        timestamp DOUBLE PRECISION NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, id)",
    """CREATE TABLE IF NOT EXISTS output_index (
        output_key TEXT NOT NULL, version TEXT NOT NULL, address TEXT NOT NULL,
        run_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, size_bytes BIGINT, recipe TEXT,
        PRIMARY KEY (output_key, version))""",
    "CREATE INDEX IF NOT EXISTS output_index_by_key ON output_index (output_key, created_at)",
]
RELEASE_0_1_COLUMNS = {
    "runs": "run_id, job_name, status, tags, run_config, parent_run_id, root_run_id, "
    "step_selection, start_time, end_time",
    "events": "run_id, step_key, event_type, timestamp, message, data",
    "output_index": "output_key, version, address, run_id, created_at, size_bytes, recipe",
}


def _release_rows(table: str) -> list[tuple[Any, ...]]:
    """The rows memodag 0.1 wrote to ``table`` of the fixture, read without memodag."""
    conn = sqlite3.connect(f"file:{RELEASE_HOME / 'instance.db'}?immutable=1", uri=True)
    try:
        order = "id" if table == "events" else RELEASE_0_1_COLUMNS[table].split(",")[0]
        return conn.execute(
            f"SELECT {RELEASE_0_1_COLUMNS[table]} FROM {table} ORDER BY {order}"
        ).fetchall()
    finally:
        conn.close()


RELEASE_RUN_IDS = sorted(row[0] for row in _release_rows("runs"))
# the fixture's database is at schema version 1 (it has output_index.recipe): an upgrade stamps
# each later version once
_UPGRADED = list(range(2, SCHEMA_VERSION + 1))


def _load_release_job() -> Any:
    spec = importlib.util.spec_from_file_location("release_job", JOB_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.release_job


def _label(label: str) -> dict[str, Any]:
    return {"ops": {"report": {"config": {"label": label}}}}


@pytest.fixture
def old_home(tmp_path: Path) -> Path:
    """A copy of the fixture's instance home, as a user of memodag 0.1 has it on disk."""
    home = tmp_path / "home"
    shutil.copytree(RELEASE_HOME, home, ignore=shutil.ignore_patterns("*.yaml", "*.md"))
    return home


@pytest.fixture(params=["sqlite", "postgres"])
def old_instance_url(request: pytest.FixtureRequest, old_home: Path) -> Iterator[str]:
    """The URL of the fixture's database as memodag 0.1 left it: the SQLite file, or the same
    tables and rows in a fresh PostgreSQL schema made by that release's DDL."""
    if request.param == "sqlite":
        yield f"sqlite:///{old_home / 'instance.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    import psycopg

    with psycopg.connect(url) as conn:
        for statement in RELEASE_0_1_POSTGRES_DDL:
            conn.execute(statement)
        for table, columns in RELEASE_0_1_COLUMNS.items():
            marks = ",".join(["%s"] * len(columns.split(",")))
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks})", _release_rows(table)
                )
    yield url


def _schema_rows(url: str) -> list[int]:
    """The versions recorded in the database's schema table, read without memodag."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return [r[0] for r in conn.execute("SELECT version FROM memodag_schema ORDER BY 1")]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM memodag_schema ORDER BY 1")]


def test_an_instance_of_the_previous_release_upgrades_and_memoizes(old_instance_url, old_home):
    release_job = _load_release_job()
    with Instance.from_url(old_instance_url, storage_dir=old_home / "storage") as inst:
        assert sorted(r.run_id for r in inst.get_runs()) == RELEASE_RUN_IDS
        assert {r.status.value for r in inst.get_runs()} == {"SUCCESS"}
        entries = inst.index_entries()
        assert len(entries) == len(_release_rows("output_index"))
        # every stored version was computed by the only scheme memodag 0.1 had
        assert {e.version_scheme for e in entries} == {1}

        # this memodag computes versions by a newer scheme: everything is recomputed, once
        first = release_job.execute_in_process(run_config=_label("east"), instance=inst)
        assert len(first.executed_step_keys) == 6  # regions, double x3, total, report
        rerun = release_job.execute_in_process(run_config=_label("east"), instance=inst)
        assert rerun.executed_step_keys == []
        assert len(rerun.memoized_step_keys) == 6

        # a new label re-runs only the report, which loads total as the upgraded run stored it
        relabeled = release_job.execute_in_process(run_config=_label("new"), instance=inst)
        assert relabeled.executed_step_keys == ["report"]
        doubled = sum(2 * len(name) for name in ("north", "south", "west"))
        assert relabeled.output_for_node("report") == f"new: {doubled}"
    # upgraded in place: reopened, nothing is migrated again
    with Instance.from_url(old_instance_url) as inst:
        assert len(inst.get_runs()) == 6  # 3 of memodag 0.1's, 3 of this test's
        # runs of memodag 0.1 have no heartbeat (schema 3); runs since record one
        old_run = inst.get_run(RELEASE_RUN_IDS[0])
        assert old_run is not None and old_run.heartbeat is None
        assert inst.get_run(relabeled.run_id).heartbeat is not None
    assert _schema_rows(old_instance_url) == _UPGRADED


def _memodag(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_memodag(*args, cwd=home.parent, home=home)


def test_the_cli_lists_and_memoizes_from_an_instance_of_the_previous_release(old_home):
    listed = _memodag(old_home, "runs", "list", "--json")
    assert sorted(r["run_id"] for r in json.loads(listed.stdout)) == RELEASE_RUN_IDS

    rerun = _memodag(
        old_home, "job", "execute", "-f", str(JOB_FILE), "-c", str(RELEASE_HOME / "sum.yaml")
    )
    # memodag 0.1 computed versions by scheme 1: recomputed once, said once, then memoized
    assert "Steps: 6 executed, 0 memoized, 0 failed" in rerun.stdout
    assert (rerun.stdout + rerun.stderr).count("version scheme") == 1
    again = _memodag(
        old_home, "job", "execute", "-f", str(JOB_FILE), "-c", str(RELEASE_HOME / "sum.yaml")
    )
    assert "Steps: 0 executed, 6 memoized, 0 failed" in again.stdout
    assert "version scheme" not in again.stdout + again.stderr  # same scheme: nothing to say


def test_two_processes_opening_an_old_instance_at_once_upgrade_it_once(old_instance_url):
    openers = 3
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(openers)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=open_instance, args=(old_instance_url, i, barrier, results))
        for i in range(openers)
    ]
    for proc in procs:
        proc.start()
    reported = []
    try:
        reported = [results.get(timeout=120) for _ in procs]
    except queue.Empty:
        pass
    for proc in procs:
        proc.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * openers, "an opener failed (see its stderr)"
    assert sorted(reported) == [(i, len(RELEASE_RUN_IDS)) for i in range(openers)]
    assert _schema_rows(old_instance_url) == _UPGRADED  # migrated once, by one of them


def test_a_database_of_a_newer_memodag_is_refused_not_downgraded(old_instance_url):
    Instance.from_url(old_instance_url).close()  # upgraded to this memodag's schema
    newer = _schema_rows(old_instance_url)[-1] + 1
    if old_instance_url.startswith("sqlite:///"):
        conn = sqlite3.connect(old_instance_url[len("sqlite:///") :])
        with conn:
            conn.execute("INSERT INTO memodag_schema VALUES (?, 'future', 0)", (newer,))
        conn.close()
    else:
        import psycopg

        with psycopg.connect(old_instance_url) as pg:
            pg.execute("INSERT INTO memodag_schema VALUES (%s, 'future', 0)", (newer,))

    with pytest.raises(StorageError) as caught:
        Instance.from_url(old_instance_url)
    message = str(caught.value)
    assert f"schema version {newer}, written by a newer memodag" in message
    assert "never downgrades" in message and "pip install -U memodag" in message
    assert _schema_rows(old_instance_url) == [*_UPGRADED, newer]


def test_events_stored_one_row_each_by_the_previous_release_still_read(old_instance_url, old_home):
    """After the upgrade, a release run's events read back as that release stored them, one row
    each, beside the packed rows of new runs; a re-execution of a release run takes the outputs
    it does not run from that run's events."""
    release_job = _load_release_job()
    old_rows = _release_rows("events")
    with Instance.from_url(old_instance_url, storage_dir=old_home / "storage") as inst:
        for run_id in RELEASE_RUN_IDS:
            events = inst.get_events(run_id)
            stored = [r for r in old_rows if r[0] == run_id]
            assert [(e.step_key, e.event_type.value, e.timestamp, e.data) for e in events] == [
                (r[1], r[2], r[3], json.loads(r[5])) for r in stored
            ]
        first = min(inst.get_runs(), key=lambda r: r.start_time or 0).run_id
        # its 3 region pieces, their 3 doubles, total and report
        assert len(inst.get_output_addresses(first)) == 8

        # this memodag computes versions by a newer scheme: the first run recomputes everything
        release_job.execute_in_process(run_config=_label("again"), instance=inst)
        new = release_job.execute_in_process(run_config=_label("once more"), instance=inst)
        assert new.executed_step_keys == ["report"]
        assert new.output_for_node("report").startswith("once more: ")
        assert any(e.event_type.value == "STEP_MEMOIZED" for e in inst.get_events(new.run_id))
