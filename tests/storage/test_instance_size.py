"""The instance's size (issue 14 §6): a fan-out grows it by under 1 kB per step per run, whatever
the storage path; compact index addresses and packed events read back exactly on both backends;
an instance of schema version 5 (``fixtures/schema_5/``, made by the memodag before compact rows)
upgrades in place, reads what it held and memoizes from it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    Address,
    DynamicOut,
    DynamicOutput,
    Event,
    EventType,
    Instance,
    job,
    op,
)
from memodag.storage.instance import IndexEntry
from memodag.storage.instance.schema import MIGRATIONS, SCHEMA_VERSION

FIXTURES = Path(__file__).parent / "fixtures"
SCHEMA_5_HOME = FIXTURES / "schema_5"
EXPECTED = json.loads((SCHEMA_5_HOME / "expected.json").read_text())


def _fanout_job(n: int):
    @op(version="1", out=DynamicOut())
    def pieces():
        for i in range(n):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op(version="1")
    def double(x: int) -> int:
        return x * 2

    @op(version="1")
    def total(xs: list[int]) -> int:
        return sum(xs)

    @job(name="size_fanout", tags={MEMOIZED_RUN_TAG: "true"})
    def fanout() -> None:
        total(pieces().map(double).collect())

    return fanout


def _file_bytes(db: Path) -> int:
    """The database file's size once its write-ahead log is copied into it."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db.stat().st_size


def test_a_fanout_grows_the_instance_by_under_1_kb_per_step_per_run(tmp_path):
    """W1 with 1,000 pieces, stored under a long path (a user's project directory): a cold run
    and a memoized rerun together grow the SQLite file by under 2 kB per step."""
    pieces = 1000
    steps = pieces + 2
    db = tmp_path / "instance.db"
    storage = tmp_path / "home" / "someone" / "projects" / "a-pipeline-of-theirs" / "storage"
    with Instance.from_url(f"sqlite:///{db}", storage_dir=storage) as inst:
        empty = _file_bytes(db)
        cold = _fanout_job(pieces).execute_in_process(instance=inst)
        assert len(cold.executed_step_keys) == steps
        after_cold = _file_bytes(db)
        rerun = _fanout_job(pieces).execute_in_process(instance=inst)
        assert rerun.executed_step_keys == []
        assert rerun.output_for_node("total") == pieces * (pieces - 1)
        # what the rerun read back from the compact rows: every piece's and clone's address
        addresses = inst.get_output_addresses(cold.run_id)
        assert len(addresses) == 2 * pieces + 1
        assert all(a.uri and a.uri.startswith(str(storage)) for a in addresses.values())
        both = _file_bytes(db)
    per_step_per_run = (both - empty) / steps / 2
    # before compact rows: ~1,700 bytes (2,900 cold, 500 memoized)
    assert per_step_per_run < 1024, f"{per_step_per_run:.0f} bytes per step per run"
    assert (both - after_cold) / steps < 1024


# 8,000 characters that do not compress (PostgreSQL compresses index keys before limiting them)
_NOISE = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(125))


def _tricky_addresses(run_id: str) -> list[Address]:
    base = "/srv/data/projects/some pipeline/storage"
    return [
        # the run id in the URI, after a long prefix (named by id) and a short one (kept)
        Address("io_manager", f"{base}/{run_id}/s.result.pkl", "pickle", run_id, "s", "result"),
        Address("io_manager", f"/x/{run_id}/s.result.pkl", "pickle", run_id, "s", "result"),
        # twice in the URI, with a piece, a version of its own, a size, hash and schema
        Address(
            "files",
            f"{base}/{run_id}/{run_id}/s.result/k1.pkl",
            None,
            run_id,
            "s",
            "result",
            "k1",
            "another-version",
            "data-hash",
            12,
            "c0ffee",
            "a: int64",
        ),
        # the versioned layout: no run id, the step key in the URI
        Address("vfs", f"{base}/step_one/result/v.pkl", "json", run_id, "step_one", "result"),
        # neither, none, and text a database cannot take as it is
        Address("tables", "memodag_data.t__v", None, run_id, "s", "out"),
        Address("mem", None, None, run_id, "s", "out"),
        Address("io_manager", f"/caf\udce9/deep/path/{run_id}/x.pkl", None, run_id, "s", "x"),
        Address("io_manager", f'{base}/"quoted"\\/{run_id}/\x01.pkl', None, run_id, "s", "x"),
        # a prefix too long for an index key of PostgreSQL: kept in place
        Address("io_manager", f"/{_NOISE}/{run_id}/x.pkl", None, run_id, "s", "x"),
    ]


def test_compact_index_addresses_read_back_exactly(any_instance):
    run_id = "run-compact-1"
    addresses = _tricky_addresses(run_id)
    entries = [
        IndexEntry(f"j/s.result[{i}]@x", "v" if a.version is None else "w", a, 1.0 + i)
        for i, a in enumerate(addresses)
    ]
    any_instance.store_events([], entries)

    def read(instance: Any) -> list[Address]:
        found = {e.output_key: e for e in instance.index_entries()}
        return [found[e.output_key].address for e in entries]

    assert read(any_instance) == addresses
    # another process knows none of the prefixes: it reads them from the database
    with Instance.from_url(any_instance.connection_url) as other:
        assert read(other) == addresses
        keys = [e.output_key for e in entries]
        assert [e.address for e in other.entries_for_keys(keys)] == addresses


def test_packed_events_naming_a_prefix_read_back_exactly(any_instance):
    """An executed step's row names its URIs' prefix by id; events, with every text that looks
    like what is replaced, read back as they were, also from a process that never met it."""
    run_id = "run-compact-2"
    rows = []
    for i, address in enumerate(_tricky_addresses(run_id)):
        step = address.step_key
        rows.append(
            [
                Event(EventType.STEP_START, run_id, 10.0 + i, step, "", {"attempt": 0}),
                Event(
                    EventType.LOADED_INPUT,
                    run_id,
                    10.25 + i,
                    step,
                    "1",
                    {"input": "x", "address": address.to_dict()},
                ),
                Event(
                    EventType.HANDLED_OUTPUT,
                    run_id,
                    10.5 + i,
                    step,
                    f"{run_id} {step} result pickle",
                    {"output": "result", "address": address.to_dict(), "size": 3},
                ),
                Event(EventType.STEP_SUCCESS, run_id, 11.0 + i, step, "", {"duration": 0.5}),
            ]
        )
    for events in rows:
        any_instance.store_events(events)
    expected = [
        (e.event_type, e.timestamp, e.step_key, e.message, dict(e.data))
        for events in rows
        for e in events
    ]

    def read(instance: Any) -> list[tuple[Any, ...]]:
        return [
            (e.event_type, e.timestamp, e.step_key, e.message, e.data)
            for e in instance.get_events(run_id)
        ]

    assert read(any_instance) == expected
    with Instance.from_url(any_instance.connection_url) as other:
        assert read(other) == expected


# -- upgrading an instance of schema version 5 -----------------------------------------------


def _release_job() -> Any:
    spec = importlib.util.spec_from_file_location("release_job", FIXTURES / "release_job.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.release_job


def _fixture_rows(table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    conn = sqlite3.connect(f"file:{SCHEMA_5_HOME / 'instance.db'}?immutable=1", uri=True)
    try:
        cur = conn.execute(f"SELECT * FROM {table}")
        return [d[0] for d in cur.description], cur.fetchall()
    finally:
        conn.close()


@pytest.fixture
def schema_5_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(SCHEMA_5_HOME, home, ignore=shutil.ignore_patterns("*.yaml", "*.md", "*.json"))
    return home


@pytest.fixture(params=["sqlite", "postgres"])
def schema_5_url(request: pytest.FixtureRequest, schema_5_home: Path) -> Iterator[str]:
    """The fixture's database: the SQLite file, or on PostgreSQL the tables of schema version 5
    (memodag 0.1's, then migrations 1-5) holding the fixture's rows."""
    if request.param == "sqlite":
        yield f"sqlite:///{schema_5_home / 'instance.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    import psycopg
    from test_instance_upgrade import RELEASE_0_1_POSTGRES_DDL

    with psycopg.connect(url) as conn:
        for statement in RELEASE_0_1_POSTGRES_DDL:
            conn.execute(statement)
        for migration in MIGRATIONS:
            if migration.version > 1 and migration.version <= 5:
                for statement in migration.statements:
                    conn.execute(
                        statement.format(autoinc="BIGSERIAL PRIMARY KEY", without_rowid="")
                    )
        conn.execute(
            "CREATE TABLE memodag_schema (version INTEGER PRIMARY KEY, memodag_version TEXT "
            "NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        for table in ("memodag_schema", "runs", "events", "output_index"):
            columns, rows = _fixture_rows(table)
            if table == "events":
                columns, rows = columns[1:], [r[1:] for r in rows]  # ids come from the sequence
            marks = ",".join(["%s"] * len(columns))
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)
    yield url


def _schema_versions(url: str) -> list[int]:
    query = "SELECT version FROM memodag_schema ORDER BY 1"
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return [r[0] for r in conn.execute(query)]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(query)]


def _seen(inst: Instance) -> dict[str, Any]:
    """The fixture's runs and index as this memodag reads them, in ``expected.json``'s form."""
    events = {
        run_id: [
            [e.event_type.value, e.timestamp, e.step_key, e.message, e.data]
            for e in inst.get_events(run_id)
        ]
        for run_id in EXPECTED["events"]
    }
    index = [
        [
            e.output_key,
            e.version,
            e.address.to_dict(),
            e.created_at,
            e.size_bytes,
            e.recipe,
            e.version_scheme,
        ]
        for e in sorted(inst.index_entries(), key=lambda e: (e.output_key, e.version))
    ]
    return json.loads(json.dumps({"events": events, "index": index}))


def test_an_instance_of_schema_version_5_upgrades_in_place_and_memoizes(
    schema_5_url, schema_5_home
):
    release_job = _release_job()
    with Instance.from_url(schema_5_url, storage_dir=schema_5_home / "storage") as inst:
        # what the memodag of schema version 5 stored reads back as it read it
        assert _seen(inst) == EXPECTED
        rerun = release_job.execute_in_process(
            run_config={"ops": {"report": {"config": {"label": "east"}}}}, instance=inst
        )
        assert rerun.executed_step_keys == []  # memoized from the rows of schema version 5
        relabeled = release_job.execute_in_process(
            run_config={"ops": {"report": {"config": {"label": "new"}}}}, instance=inst
        )
        assert relabeled.executed_step_keys == ["report"]
        assert relabeled.output_for_node("report") == "new: 28"
    with Instance.from_url(schema_5_url, storage_dir=schema_5_home / "storage") as inst:
        # old rows and new (compact) rows side by side
        seen = _seen(inst)
        assert seen["events"] == EXPECTED["events"]
        # the fixture's entries, and the new report's
        assert [e for e in seen["index"] if e in EXPECTED["index"]] == EXPECTED["index"]
        assert len(seen["index"]) == len(EXPECTED["index"]) + 1
        memoized = inst.get_events(rerun.run_id, [EventType.STEP_MEMOIZED])
        assert len(memoized) == 6
        assert len(inst.get_output_addresses(relabeled.run_id)) == 8
    assert _schema_versions(schema_5_url) == [5, *range(6, SCHEMA_VERSION + 1)]
