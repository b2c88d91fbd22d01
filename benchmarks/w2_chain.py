"""W2 chain: 200 ops in a line (op0 returns 0, each next returns its input + 1), run cold.

memodag variants time ``execute_in_process`` only (definition and instance creation are reported
beside it); the floor does the same work by hand: call the 200 functions, pickle each value to a
file, and insert the events memodag records for such a run (RUN_START, per step STEP_START,
LOADED_INPUT, HANDLED_OUTPUT with the address JSON, STEP_SUCCESS, then RUN_SUCCESS, plus the run
row) into an equivalent SQLite table in one transaction.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks._shapes import (
    INSTANCE_EPHEMERAL,
    INSTANCE_SQLITE,
    IO_FS,
    IO_MEM,
    cold_run,
)
from benchmarks.harness import Metrics, Target, Workload, timed

STEPS = 200

# the tables memodag's SQL instance keeps, written out here so the floor does not import memodag
_FLOOR_SCHEMA = [
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, job_name TEXT NOT NULL, status TEXT NOT NULL,
        tags TEXT NOT NULL, run_config TEXT NOT NULL, parent_run_id TEXT, root_run_id TEXT,
        step_selection TEXT, start_time DOUBLE PRECISION, end_time DOUBLE PRECISION)""",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step_key TEXT,
        event_type TEXT NOT NULL, timestamp DOUBLE PRECISION NOT NULL, message TEXT NOT NULL,
        data TEXT NOT NULL)""",
    "CREATE INDEX events_by_run ON events (run_id, id)",
]


def _functions(n: int) -> list[Callable[..., int]]:
    def first() -> int:
        return 0

    def inc(x: int) -> int:
        return x + 1

    return [first] + [inc] * (n - 1)


def _address(run_id: str, key: str, uri: str) -> dict[str, object]:
    return {
        "io_manager_key": "io_manager",
        "uri": uri,
        "serializer": "pickle",
        "run_id": run_id,
        "step_key": key,
        "output_name": "result",
        "mapping_key": None,
        "version": None,
        "data_hash": None,
    }


def _write_plain(path: str, value: object) -> None:
    with open(path, "wb") as file:
        pickle.dump(value, file)


def _write_atomic(path: str, value: object) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as file:
        pickle.dump(value, file)
    os.replace(tmp, path)


def _read(path: str) -> object:
    with open(path, "rb") as file:
        return pickle.load(file)


def floor(scratch: Path, by_reference: bool = False) -> Metrics:
    """The W2 work by hand. ``by_reference``: also what passing data by reference costs (write to
    a temporary name then rename, read each input back from its file), as fs_io_manager does."""
    conn = sqlite3.connect(str(scratch / "instance.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in _FLOOR_SCHEMA:
        conn.execute(statement)
    functions = _functions(STEPS)
    run_id = str(uuid.uuid4())
    run_dir = str(scratch / "storage" / run_id)

    def work() -> int:
        started = time.time()
        events = [(run_id, None, "RUN_START", started, "job w2", "{}")]
        os.makedirs(run_dir)
        value: int = 0
        previous: dict[str, object] | None = None
        for i, fn in enumerate(functions):
            key = f"op{i}"
            step_started = time.time()
            events.append((run_id, key, "STEP_START", step_started, "", '{"attempt": 0}'))
            if previous is None:
                value = fn()
            else:
                data = json.dumps({"input": "x", "address": previous})
                events.append((run_id, key, "LOADED_INPUT", time.time(), "", data))
                if by_reference:
                    value = _read(str(previous["uri"]))  # type: ignore[assignment]
                value = fn(value)
            path = f"{run_dir}/{key}.result.pkl"
            if by_reference:
                _write_atomic(path, value)
            else:
                _write_plain(path, value)
            address = _address(run_id, key, path)
            data = json.dumps({"output": "result", "address": address, "data_hash": None})
            events.append((run_id, key, "HANDLED_OUTPUT", time.time(), "", data))
            ended = time.time()
            data = json.dumps({"duration": ended - step_started, "attempt": 0})
            events.append((run_id, key, "STEP_SUCCESS", ended, "", data))
            previous = address
        ended = time.time()
        events.append((run_id, None, "RUN_SUCCESS", ended, "", '{"executed": 200, "memoized": 0}'))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
            (run_id, "w2", "SUCCESS", "{}", "{}", None, None, None, started, ended),
        )
        conn.executemany(
            "INSERT INTO events (run_id, step_key, event_type, timestamp, message, data) VALUES (?,?,?,?,?,?)",
            events,
        )
        conn.execute("COMMIT")
        return value

    value, run_s = timed(work)
    if value != STEPS - 1:
        raise AssertionError(f"floor computed {value}, expected {STEPS - 1}")
    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    if count != 4 * STEPS + 1:
        raise AssertionError(f"floor stored {count} events, expected {4 * STEPS + 1}")
    conn.close()
    return {"run_s": run_s}


def file_writes(scratch: Path) -> Metrics:
    """Only the floor's disk part: 200 small pickle files created in a fresh directory. Says how
    fast the disk was during this invocation (it varies several-fold on a shared machine)."""
    directory = scratch / "files"

    def work() -> None:
        os.makedirs(directory)
        for i in range(STEPS):
            _write_plain(f"{directory}/op{i}.pkl", i)

    _, run_s = timed(work)
    return {"run_s": run_s}


def profile_w2(io: str = IO_FS) -> str:
    """cProfile of one cold W2 run (SQLite instance): the 25 functions with the most own time."""
    import cProfile
    import io as io_module
    import pstats
    import tempfile

    from benchmarks._shapes import chain_body
    from memodag import Instance, job, mem_io_manager

    scratch = Path(tempfile.mkdtemp(dir="."))
    resource_defs = {"io_manager": mem_io_manager} if io == IO_MEM else None
    job_def = job(chain_body(STEPS), name="w2", resource_defs=resource_defs)
    instance = Instance.from_url(f"sqlite:///{scratch}/instance.db", storage_dir=scratch / "s")
    profiler = cProfile.Profile()
    profiler.enable()
    job_def.execute_in_process(instance=instance)
    profiler.disable()
    out = io_module.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    text = out.getvalue()
    # keep the table, drop pstats' preamble
    return text[text.find("   ncalls") :] if "   ncalls" in text else text


_per_step = "per_step_s"

WORKLOADS = [
    Workload(
        "w2_floor",
        floor,
        description="W2 by hand: 200 calls, pickle each to a file, events in one SQLite transaction",
        steps=STEPS,
    ),
    Workload(
        "w2_file_writes",
        file_writes,
        description="the floor's disk part alone: create 200 small pickle files",
        baseline="w2_floor",
        steps=STEPS,
    ),
    Workload(
        "w2_floor_by_reference",
        functools.partial(floor, by_reference=True),
        description="floor + atomic write (temp name, rename) + each input read back from its file",
        baseline="w2_floor",
        steps=STEPS,
    ),
    Workload(
        "w2_fs_sqlite",
        functools.partial(
            cold_run, shape="chain", n=STEPS, io=IO_FS, instance_kind=INSTANCE_SQLITE, rerun=True
        ),
        description="W2 cold, fs_io_manager (default), SQLite instance",
        baseline="w2_floor",
        steps=STEPS,
        targets=(
            Target("per step < 0.5 ms", _per_step, max_value=0.5e-3),
            Target("per step <= 3x floor", _per_step, max_ratio=3.0),
        ),
        details=profile_w2,
    ),
    Workload(
        "w2_mem_sqlite",
        functools.partial(
            cold_run, shape="chain", n=STEPS, io=IO_MEM, instance_kind=INSTANCE_SQLITE, rerun=True
        ),
        description="W2 cold, mem_io_manager, SQLite instance",
        baseline="w2_floor",
        steps=STEPS,
        targets=(Target("per step < 0.1 ms", _per_step, max_value=0.1e-3),),
        details=functools.partial(profile_w2, IO_MEM),
    ),
    Workload(
        "w2_fs_ephemeral",
        functools.partial(
            cold_run, shape="chain", n=STEPS, io=IO_FS, instance_kind=INSTANCE_EPHEMERAL, rerun=True
        ),
        description="W2 cold, fs_io_manager, Instance.ephemeral() (in-memory SQLite)",
        baseline="w2_floor",
        steps=STEPS,
    ),
    Workload(
        "w2_mem_ephemeral",
        functools.partial(
            cold_run,
            shape="chain",
            n=STEPS,
            io=IO_MEM,
            instance_kind=INSTANCE_EPHEMERAL,
            rerun=True,
        ),
        description="W2 cold, mem_io_manager, Instance.ephemeral() (in-memory SQLite)",
        baseline="w2_floor",
        steps=STEPS,
    ),
]
