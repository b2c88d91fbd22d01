"""The per-step and per-run costs of issue 11 §6, each against a baseline of the same invocation.

One command runs them all (``python benchmarks/run.py --only costs``):

- ``step_floor``: a 200-step chain by hand, *per step*: call the function, pickle the value to a
  temporary file, rename it into place, and store the step's events and index entry in one SQLite
  transaction (WAL, ``synchronous=NORMAL``, as memodag's instance): what recording each step the
  moment it ends costs at the least.
- ``chain_step_fs`` / ``chain_step_mem``: the same chain in memodag, cold, ``fs_io_manager`` /
  ``mem_io_manager``, SQLite instance; per step against the floor.
- ``chain_step_all_mem``: the same with the instance in memory too (``Instance.ephemeral()``):
  what a step costs when nothing it records touches the disk.
- ``fanout_piece_fs``: W1 N = 1,000 cold, per piece against ``chain_step_fs`` (the cost of a piece
  of a fan-out should be that of a chain step).
- ``memo_rerun_10k_ops`` / ``memo_rerun_10k_pieces``: define + memoized rerun of a 10,000-op chain
  and of a 10,000-piece fan-out, nothing changed (the cold runs before them are not timed).
- ``hamilton_chain_{cold,warm}`` / ``memodag_chain_{cold,warm}``: the same 200-function chain as a
  script in a fresh Python process each, timed whole (interpreter start, imports, the run): Apache
  Hamilton with its cache, memodag with ``SourceHashVersionStrategy`` and the default instance.
  *cold*: nothing stored yet; *warm*: a second process after a first one stored everything.
  Skipped, with a line saying so, when Apache Hamilton is not installed
  (``pip install sf-hamilton``).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import resource
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from benchmarks._shapes import INSTANCE_EPHEMERAL, INSTANCE_SQLITE, IO_FS, IO_MEM, cold_run
from benchmarks.harness import Metrics, Target, Workload, timed, timed_cpu
from benchmarks.memoization import big_rerun
from benchmarks.w1_fanout import cold as w1_cold
from benchmarks.w1_fanout import memoized_rerun as w1_memoized_rerun

STEPS = 200
PIECES = 1_000
BIG = 10_000

_FLOOR_SCHEMA = [
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step_key TEXT,
        event_type TEXT NOT NULL, timestamp DOUBLE PRECISION NOT NULL, message TEXT NOT NULL,
        data TEXT NOT NULL)""",
    """CREATE TABLE output_index (
        output_key TEXT NOT NULL, version TEXT NOT NULL, address TEXT NOT NULL,
        run_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (output_key, version))""",
]


def step_floor(scratch: Path) -> Metrics:
    """The chain by hand, each step made durable as it ends (file renamed, one transaction)."""
    conn = sqlite3.connect(str(scratch / "instance.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in _FLOOR_SCHEMA:
        conn.execute(statement)
    run_id = str(uuid.uuid4())
    run_dir = scratch / "storage" / run_id
    insert_event = (
        "INSERT INTO events (run_id, step_key, event_type, timestamp, message, data) "
        "VALUES (?,?,?,?,?,?)"
    )

    def work() -> int:
        os.makedirs(run_dir)
        value = 0
        for i in range(STEPS):
            key = f"op{i}"
            started = time.time()
            value = 0 if i == 0 else value + 1
            path = f"{run_dir}/{key}.result.pkl"
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as file:
                pickle.dump(value, file)
            os.replace(tmp, path)
            address = json.dumps({"uri": path, "step_key": key, "output_name": "result"})
            ended = time.time()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                insert_event,
                [
                    (run_id, key, "STEP_START", started, "", "{}"),
                    (run_id, key, "HANDLED_OUTPUT", ended, "", address),
                    (run_id, key, "STEP_SUCCESS", ended, "", "{}"),
                ],
            )
            conn.execute(
                "INSERT INTO output_index VALUES (?,?,?,?,?)",
                (f"{key}.result", uuid.uuid4().hex, address, run_id, ended),
            )
            conn.execute("COMMIT")
        return value

    value, run_s, cpu_s = timed_cpu(work)
    conn.close()
    if value != STEPS - 1:
        raise AssertionError(f"step floor computed {value}, expected {STEPS - 1}")
    return {"run_s": run_s, "run_cpu_s": cpu_s}


# -- whole processes: memodag and Apache Hamilton on the same chain ------------------------------


def _chain_functions(decorator: str) -> str:
    """``op0`` returns 0, ``op{i}(op{i-1})`` returns its input + 1: 200 distinct functions."""
    lines = [f"{decorator}def op0() -> int:\n    return 0\n"]
    lines += [
        f"{decorator}def op{i}(op{i - 1}: int) -> int:\n    return op{i - 1} + 1\n"
        for i in range(1, STEPS)
    ]
    return "\n\n".join(lines)


def _memodag_script() -> str:
    calls = "\n".join(f"    v = op{i}(v)" for i in range(1, STEPS))
    return f"""from memodag import SourceHashVersionStrategy, job, op


{_chain_functions("@op" + chr(10))}


@job(version_strategy=SourceHashVersionStrategy())
def chain():
    v = op0()
{calls}


if __name__ == "__main__":
    import sys

    result = chain.execute_in_process()
    assert result.output_for_node("op{STEPS - 1}") == {STEPS - 1}
    memoized = len(result.memoized_step_keys)
    expected = {STEPS} if sys.argv[1:] == ["warm"] else 0
    assert memoized == expected, f"{{memoized}} steps memoized, expected {{expected}}"
"""


def _hamilton_scripts() -> dict[str, str]:
    run = f"""import sys

from hamilton import driver

import hchain_ops

if __name__ == "__main__":
    dr = driver.Builder().with_modules(hchain_ops).with_cache(path=sys.argv[1]).build()
    result = dr.execute(["op{STEPS - 1}"])
    assert result["op{STEPS - 1}"] == {STEPS - 1}
"""
    return {"hchain_ops.py": _chain_functions("") + "\n", "hchain_run.py": run}


def whole_process(scratch: Path, tool: str, warm: bool) -> Metrics:
    """Time one fresh ``python script.py`` process; ``warm``: after an untimed first process."""
    if tool == "hamilton":
        files = _hamilton_scripts()
        command = [sys.executable, "hchain_run.py", str(scratch / "hamilton_cache")]
    else:
        files = {"chain.py": _memodag_script()}
        command = [sys.executable, "chain.py"]
    for name, text in files.items():
        (scratch / name).write_text(text)
    env = {
        **os.environ,
        "MEMODAG_HOME": str(scratch / ".memodag"),
        "HAMILTON_TELEMETRY_ENABLED": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("MEMODAG_INSTANCE_URL", None)

    def once() -> None:
        proc = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"{tool} process failed:\n{proc.stderr[-2000:]}")

    if warm:
        once()
        if tool == "memodag":
            command.append("warm")  # the script checks every step was memoized
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    _, run_s = timed(once)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"run_s": run_s, "run_cpu_s": cpu_s}


# memodag at least 3x faster: its time at most a third of Hamilton's
_THIRD = 1 / 3

WORKLOADS = [
    Workload(
        "step_floor",
        step_floor,
        description="200-step chain by hand: pickle to a temp file, rename, one SQLite "
        "transaction (events + index entry) per step",
        steps=STEPS,
    ),
    Workload(
        "chain_step_fs",
        functools.partial(
            cold_run, shape="chain", n=STEPS, io=IO_FS, instance_kind=INSTANCE_SQLITE
        ),
        description="200-op chain cold, fs_io_manager, SQLite instance",
        baseline="step_floor",
        steps=STEPS,
        targets=(
            Target("per step < 0.2 ms", "per_step_s", max_value=0.2e-3),
            Target("per step <= 2x the floor", "per_step_s", max_ratio=2.0),
        ),
    ),
    Workload(
        "chain_step_mem",
        functools.partial(
            cold_run, shape="chain", n=STEPS, io=IO_MEM, instance_kind=INSTANCE_SQLITE
        ),
        description="200-op chain cold, mem_io_manager, SQLite instance",
        baseline="step_floor",
        steps=STEPS,
        targets=(Target("per step < 0.05 ms", "per_step_s", max_value=0.05e-3),),
    ),
    Workload(
        "chain_step_all_mem",
        functools.partial(
            cold_run, shape="chain", n=STEPS, io=IO_MEM, instance_kind=INSTANCE_EPHEMERAL
        ),
        description="200-op chain cold, mem_io_manager, in-memory instance (nothing on disk)",
        baseline="step_floor",
        steps=STEPS,
        targets=(Target("per step < 0.05 ms", "per_step_s", max_value=0.05e-3),),
    ),
    Workload(
        "fanout_piece_fs",
        functools.partial(w1_cold, n=PIECES),
        description="W1 fan-out N = 1,000 cold, fs_io_manager, SQLite instance (per piece)",
        baseline="chain_step_fs",
        steps=PIECES,
        targets=(
            Target("per piece < 0.3 ms", "per_step_s", max_value=0.3e-3),
            Target("per piece <= 1.5x a chain step", "per_step_s", max_ratio=1.5),
        ),
    ),
    Workload(
        "memo_rerun_10k_ops",
        functools.partial(big_rerun, what="rerun"),
        description="10,000-op chain: define + memoized rerun, nothing changed",
        primary="total_s",
        steps=BIG,
        targets=(Target("< 0.5 s above import", "total_s", max_value=0.5),),
    ),
    Workload(
        "memo_rerun_10k_pieces",
        functools.partial(w1_memoized_rerun, n=BIG),
        description="W1 N = 10,000: define + memoized rerun, nothing changed (0 clones run)",
        primary="total_s",
        baseline="memo_rerun_10k_ops",
        steps=BIG,
        targets=(Target("< 0.5 s above import", "total_s", max_value=0.5),),
    ),
    Workload(
        "hamilton_chain_cold",
        functools.partial(whole_process, tool="hamilton", warm=False),
        description="Apache Hamilton, 200-function chain with its cache, whole process, "
        "empty cache",
        requires="hamilton",
        install="sf-hamilton",
    ),
    Workload(
        "memodag_chain_cold",
        functools.partial(whole_process, tool="memodag", warm=False),
        description="memodag, the same 200-function chain (SourceHashVersionStrategy), "
        "whole process, empty instance",
        baseline="hamilton_chain_cold",
        targets=(Target("at least 3x faster than Hamilton", "run_s", max_ratio=_THIRD),),
    ),
    Workload(
        "hamilton_chain_warm",
        functools.partial(whole_process, tool="hamilton", warm=True),
        description="Apache Hamilton, the same chain, whole process, everything cached",
        requires="hamilton",
        install="sf-hamilton",
    ),
    Workload(
        "memodag_chain_warm",
        functools.partial(whole_process, tool="memodag", warm=True),
        description="memodag, the same chain, whole process, everything stored (memoized)",
        baseline="hamilton_chain_warm",
        targets=(Target("at least 3x faster than Hamilton", "run_s", max_ratio=_THIRD),),
    ),
]
