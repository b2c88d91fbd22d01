"""Other processes read and write the DuckDB file while a run works: by default a run lets the
file go when it is idle, and at once for a memodag process that waits for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd

from memodag import Stage, Table, duckdb_table_store, job, materialize

SRC = str(Path(__file__).resolve().parents[2] / "src")


def read_in_another_process(path: Path) -> str:
    """``SELECT * FROM raw.first`` as another process sees it, or DuckDB's error."""
    code = (
        "import duckdb\n"
        f"c = duckdb.connect({str(path)!r}, read_only=True)\n"
        'print(c.execute("SELECT * FROM raw.first").fetchall())\n'
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def test_by_default_other_processes_read_committed_stages_while_an_op_works(instance, tmp_path):
    path = tmp_path / "w.duckdb"
    seen: list[str] = []

    def two_stages(value: int, probe: bool):
        @materialize(version=str(value), name="first")
        def first():
            return pd.DataFrame({"a": [value]})

        @materialize(version=str(value), name="slow")
        def slow(first):
            # a long op: the run lets the file go after release_after idle seconds (0.5 s)
            for _ in range(20 if probe else 0):
                seen.append(read_in_another_process(path))
                if seen[-1] == "[(1,)]":
                    break
            return first

        @job(
            name="two_stages",
            resource_defs={"table_store": duckdb_table_store.configured({"path": str(path)})},
        )
        def two_stages():
            with Stage("raw"):
                f = first()
            with Stage("model"):
                slow(f)

        return two_stages

    assert two_stages(1, probe=False).execute_in_process(instance=instance).success
    assert two_stages(2, probe=True).execute_in_process(instance=instance).success
    # while the second run worked: the stage the first one committed, whole
    assert seen[-1] == "[(1,)]", seen
    assert read_in_another_process(path) == "[(2,)]"


RUN = """
import sys, time
import pandas as pd
from memodag import Instance, Stage, duckdb_table_store, job, materialize

def make(i):
    if i == 0:
        @materialize(version="1", name="t0")
        def start():
            return pd.DataFrame({"x": [0]})
        return start

    @materialize(version="1", name=f"t{i}")
    def step(previous):
        time.sleep(0.05)
        return previous + 1
    return step

steps = [make(i) for i in range(100)]
store = duckdb_table_store.configured({"path": sys.argv[1], "release_after": 60.0})

@job(name="busy", resource_defs={"table_store": store})
def busy():
    value = steps[0]()
    for s in steps[1:]:
        value = s(value)

instance = Instance.from_url(f"sqlite:///{sys.argv[2]}", storage_dir=sys.argv[3])
print(busy.execute_in_process(instance=instance).success, flush=True)
"""


def test_a_busy_run_lets_the_file_go_for_a_waiting_memodag_process(instance, tmp_path):
    path = tmp_path / "held.duckdb"
    script = tmp_path / "busy.py"
    script.write_text(textwrap.dedent(RUN))
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    busy = subprocess.Popen(
        [sys.executable, str(script), str(path), str(tmp_path / "b.db"), str(tmp_path / "b")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        holder = Path(f"{path}.holder")
        deadline = time.monotonic() + 60
        while not holder.exists() and busy.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # who holds the file, for the message a process that gives up prints
        held = json.loads(holder.read_text())
        assert held["pid"] == busy.pid and "busy.py" in held["command"]

        @materialize(version="1")
        def mine():
            return pd.DataFrame({"y": [1]})

        store = duckdb_table_store.configured({"path": str(path), "lock_timeout": 3.0})

        @job(resource_defs={"table_store": store})
        def quick():
            with Stage("quick"):
                mine()

        # the busy run writes for ~5 s and would not let go while idle for 60 s
        assert quick.execute_in_process(instance=instance).success
        assert busy.poll() is None, "the busy run ended before the quick one got the file"
    finally:
        out, err = busy.communicate(timeout=120)
    assert out.strip() == "True", err


def test_a_stage_named_like_the_duckdb_file_is_refused_naming_both(instance):
    @materialize(version="1")
    def listing():
        return pd.DataFrame({"a": [1]})

    @job
    def catalog():
        with Stage("Tables"):  # the default file is tables.duckdb: DuckDB's catalog "tables"
            listing()

    result = catalog.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    text = "\n".join(str(e.message) for e in instance.get_events(result.run_id))
    assert "stage 'tables' has the name DuckDB gives the database file" in text
    assert "rename the stage, or give the table store another file" in text


def test_a_sidecar_from_before_is_completed_once_then_memoized_runs_skip_the_file(
    instance, tmp_path
):
    path = tmp_path / "old.duckdb"
    store = {"table_store": duckdb_table_store.configured({"path": str(path), "lock_timeout": 0.2})}

    @materialize(version="1")
    def numbers():
        return pd.DataFrame({"n": [1, 2]})

    @job(resource_defs=store)
    def unchanged():
        with Stage("s"):
            numbers()

    assert unchanged.execute_in_process(instance=instance).success
    sidecar = Path(f"{path}.stages.json")
    data = json.loads(sidecar.read_text())
    del data["complete"]  # as an earlier memodag wrote it: not known to list every stage
    sidecar.write_text(json.dumps(data))
    # the next run reads the stages from the file once, and says so in the sidecar
    assert unchanged.execute_in_process(instance=instance).memoized_step_keys == ["numbers"]
    assert json.loads(sidecar.read_text())["complete"] is True

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
        # the file is held by another process: a run that opened it would fail
        assert unchanged.execute_in_process(instance=instance).memoized_step_keys == ["numbers"]
    finally:
        holder.kill()
        holder.wait()


def test_a_duckdb_relation_handed_to_an_op_stays_usable_past_the_idle_gap(instance, tmp_path):
    import duckdb

    config = {"path": str(tmp_path / "pin.duckdb"), "release_after": 0.05}

    @materialize(version="1")
    def numbers():
        return pd.DataFrame({"n": [1, 2, 3]})

    @materialize(version="1", input_type=duckdb.DuckDBPyRelation)
    def total(numbers):
        assert isinstance(numbers, duckdb.DuckDBPyRelation)
        time.sleep(0.3)  # several idle gaps: the relation reads through the run's connection
        return pd.DataFrame({"total": [numbers.sum("n").fetchall()[0][0]]})

    @job(resource_defs={"table_store": duckdb_table_store.configured(config)})
    def summed():
        total(numbers())

    result = summed.execute_in_process(instance=instance)
    assert result.output_for_node("total")["total"].tolist() == [6]


def test_a_file_held_by_another_program_is_named_by_its_command_line(instance, tmp_path):
    path = tmp_path / "cli.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ready', flush=True); "
            "time.sleep(60)  # a BI tool",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"

        @materialize(version="1")
        def blocked():
            return pd.DataFrame({"a": [1]})

        config = {"path": str(path), "lock_timeout": 0.2}

        @job(resource_defs={"table_store": duckdb_table_store.configured(config)})
        def waits():
            blocked()

        result = waits.execute_in_process(instance=instance, raise_on_error=False)
        text = "\n".join(str(e.message) for e in instance.get_events(result.run_id))
        assert f"(PID {holder.pid})" in text
        assert "time.sleep(60)  # a BI tool" in text  # its command line, from the system
    finally:
        holder.kill()
        holder.wait()


def test_a_duckdb_store_asks_the_file_for_a_table_dropped_while_it_let_go_of_it(tmp_path, instance):
    from memodag.tables.duckdb import DuckDBTableStore
    from memodag.tables.io_manager import TableIOManager

    path = str(tmp_path / "tables.duckdb")
    manager = TableIOManager(DuckDBTableStore(path))  # one store object across runs
    calls: list[str] = []

    def dropped_job(version: str):
        @materialize(version="1")
        def raw():
            calls.append("raw")
            return Table(pd.DataFrame({"x": [1, 2]}))

        @materialize(version=version, input_type=pd.DataFrame)
        def report(raw):
            calls.append("report")
            return raw

        @job(name="dropped", resource_defs={"table_store": manager})
        def shop():
            report(raw())

        return shop

    dropped_job("1").execute_in_process(instance=instance)
    # between the runs another process (as gc does) drops raw's table
    other = DuckDBTableStore(path)
    import duckdb

    with duckdb.connect(path, read_only=True) as conn:
        (physical,) = conn.execute(
            "SELECT physical FROM memodag_meta.tables WHERE physical LIKE 'raw%'"
        ).fetchone()
    other.drop_table(physical)
    other.close()
    calls.clear()
    result = dropped_job("2").execute_in_process(instance=instance)
    assert calls == ["raw", "report"]  # raw's table is gone: raw runs and writes it again
    assert result.output_for_node("report", as_type=pd.DataFrame)["x"].tolist() == [1, 2]
