"""Two processes memoizing the same job at once, and a process killed mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from memodag import Instance

JOB_FILE = textwrap.dedent(
    """
    import os, sys, time
    from memodag import MEMOIZED_RUN_TAG, Instance, Out, job, op, versioned_filesystem_io_manager

    HOME = sys.argv[1]
    MODE = sys.argv[2]

    def slow_write(value, file):
        file.write(b"partial")
        file.flush()
        open(os.path.join(HOME, "writing"), "w").close()
        time.sleep(30)
        file.write(value)

    def read(file):
        return file.read()

    @op(version="1")
    def source():
        time.sleep(0.05)
        return list(range(1000))

    @op(version="1")
    def middle(xs):
        return [x * 2 for x in xs]

    @op(version="1", out=Out(write=slow_write, read=read) if MODE == "crash" else Out())
    def last(xs):
        return bytes(str(sum(xs)), "ascii") if MODE == "crash" else sum(xs)

    manager = versioned_filesystem_io_manager.configured({"base_dir": os.path.join(HOME, "data")})

    @job(resource_defs={"io_manager": manager}, tags={MEMOIZED_RUN_TAG: "true"})
    def memo_job():
        last(middle(source()))

    if __name__ == "__main__":
        instance = Instance.from_url(f"sqlite:///{HOME}/instance.db", storage_dir=os.path.join(HOME, "storage"))
        result = memo_job.execute_in_process(instance=instance, raise_on_error=False)
        print("STATUS", result.success, sorted(result.executed_step_keys))
    """
)


def write_job(tmp_path: Path) -> Path:
    path = tmp_path / "memo_job.py"
    path.write_text(JOB_FILE)
    return path


def test_two_processes_running_the_same_memoized_job(tmp_path):
    script = write_job(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), "normal"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert all("STATUS True" in out for out in outputs), outputs

    third = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "normal"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "STATUS True []" in third.stdout, third.stdout + third.stderr
    instance = Instance.from_url(f"sqlite:///{tmp_path}/instance.db")
    runs = instance.get_runs()
    assert len(runs) == 3 and all(r.status.value == "SUCCESS" for r in runs)
    # one index entry per output: the concurrent writers agreed
    keys = [e.output_key for e in instance.index_entries()]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 3


def test_killed_mid_write_leaves_nothing_that_counts_as_stored(tmp_path):
    script = write_job(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), "crash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    marker = tmp_path / "writing"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the step never started writing"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    data_dir = tmp_path / "data" / "last"
    finals = (
        [p for p in data_dir.rglob("*") if p.is_file() and ".tmp-" not in p.name]
        if data_dir.exists()
        else []
    )
    assert finals == [], f"a half-written output sits at its final path: {finals}"
    instance = Instance.from_url(f"sqlite:///{tmp_path}/instance.db")
    keys = [e.output_key for e in instance.index_entries()]
    assert not [k for k in keys if "/last.result@" in k], keys

    # the next memoized run does not take anything half-written for stored: `last` runs again
    marker.unlink()
    rerun = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), "crash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert rerun.poll() is None, rerun.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    rerun.kill()
    rerun.wait(timeout=30)
