"""gc removes files of attempts that never recorded an outcome once their run is over (ended,
or its process gone), and never those of a live run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from memodag import Instance, RunStatus
from memodag.versioning.gc import collect_garbage, run_is_over

HERE = Path(__file__).resolve().parent


def _start(directory: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, str(HERE / "orphan_job.py"), str(directory)]
    driver = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (directory / "started").exists():
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    return driver


def _runs_list(directory: Path) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "MEMODAG_INSTANCE_URL": f"sqlite:///{directory / 'instance.db'}",
    }
    listed = subprocess.run(
        [sys.executable, "-m", "memodag.cli.main", "runs", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def _orphans(instance: Instance) -> set[str]:
    return {i.uri for i in collect_garbage(instance, keep_runs=10).items if i.orphan}


def test_a_killed_runs_unrecorded_file_is_removed_once_its_process_is_gone(tmp_path):
    # a run that ended normally: its files are recorded, and stay
    (tmp_path / "release").touch()
    done = _start(tmp_path)
    assert done.wait(timeout=60) == 0
    (tmp_path / "release").unlink()
    (tmp_path / "started").unlink()

    driver = _start(tmp_path)
    instance = Instance.from_url(
        f"sqlite:///{tmp_path / 'instance.db'}", storage_dir=tmp_path / "storage"
    )
    try:
        live = next(r for r in instance.get_runs() if r.status is RunStatus.STARTED)
        written = tmp_path / "storage" / live.run_id / "halves.first.pkl"
        assert written.is_file()
        assert not run_is_over(instance, live)
        assert _orphans(instance) == set()  # the run may still record it: hands off
        collect_garbage(instance, keep_runs=10, dry_run=False)
        assert written.is_file()
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)

    (dead,) = [r for r in instance.get_runs() if r.run_id == live.run_id]
    assert dead.status is RunStatus.STARTED  # nobody recorded its end
    assert run_is_over(instance, dead)
    listed = _runs_list(tmp_path)
    assert [r["process_gone"] for r in listed if r["run_id"] == dead.run_id] == [True]
    assert [r["process_gone"] for r in listed if r["status"] == "SUCCESS"] == [False]
    assert _orphans(instance) == {str(written)}
    report = collect_garbage(instance, keep_runs=10, dry_run=False)
    assert report.errors == []
    assert not written.exists() and not written.parent.exists()
    finished = [r for r in instance.get_runs() if r.status is RunStatus.SUCCESS]
    for address in instance.get_output_addresses(finished[0].run_id).values():
        assert Path(address.uri).is_file()
    instance.close()


def test_leftovers_in_an_ended_runs_folder_go_and_its_outputs_stay(instance, tmp_path):
    from memodag import job, op

    @op
    def one():
        return 1

    @op
    def two(x):
        return x + 1

    @job
    def small():
        two(one())

    result = small.execute_in_process(instance=instance)
    folder = instance.storage_dir / result.run_id
    # a temporary file of an interrupted write, and an output whose outcome was never recorded
    stray = [folder / "two.result.pkl.tmp-999999-abcdef12", folder / "three.result.pkl"]
    for path in stray:
        path.write_bytes(b"partial")
    report = collect_garbage(instance, keep_runs=10)
    assert {i.uri for i in report.items if i.orphan} == {str(p) for p in stray}
    assert all(i.orphan for i in report.items)  # the recorded outputs are not garbage
    collect_garbage(instance, keep_runs=10, dry_run=False)
    assert not any(p.exists() for p in stray)
    assert result.output_for_node("two") == 2
