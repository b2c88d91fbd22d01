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

from memodag import EventType, Instance, RunStatus
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
    # found gone, it is recorded as DIED, with the reason as its last event
    assert [r["status"] for r in listed if r["run_id"] == dead.run_id] == ["DIED"]
    assert instance.get_run(dead.run_id).status is RunStatus.DIED
    last = instance.get_events(dead.run_id)[-1]
    assert last.event_type is EventType.RUN_FAILURE and "run died" in last.message
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


# -- one folder, several spellings: recorded outputs are never orphans --------------------------

PIPE = """
from memodag import Instance, job, op

@op
def one():
    return 1

@op
def two(x):
    return x + 1

@job
def small():
    two(one())

if __name__ == "__main__":
    # the project's instance opened by relative paths, as a script run from the project may
    instance = Instance.from_url("sqlite:///.memodag/instance.db", storage_dir=".memodag/storage")
    print(small.execute_in_process(instance=instance).run_id)
"""


def test_gc_cli_keeps_outputs_a_script_recorded_under_a_relative_storage_dir(tmp_path):
    from cli_process import run_memodag

    project = tmp_path / "project"
    project.mkdir()
    (project / "pipe.py").write_text(PIPE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MEMODAG_INSTANCE_URL", None)
    env.pop("MEMODAG_HOME", None)
    ran = subprocess.run(
        [sys.executable, "pipe.py"], cwd=project, env=env, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    run_id = ran.stdout.split()[-1]
    outputs = {
        project / ".memodag" / "storage" / run_id / f"{s}.result.pkl" for s in ("one", "two")
    }
    assert all(p.is_file() for p in outputs)
    stray = project / ".memodag" / "storage" / run_id / "three.result.pkl"
    stray.write_bytes(b"never recorded")

    # the CLI opens the same instance with an absolute storage folder
    listed = run_memodag("gc", "--keep-last", "10", "--json", cwd=project)
    assert [(i["uri"], i["orphan"]) for i in json.loads(listed.stdout)["items"]] == [
        (str(stray), True)
    ]
    run_memodag("gc", "--keep-last", "10", "--yes", cwd=project)
    assert all(p.is_file() for p in outputs)
    assert not stray.exists()
    # and from another working directory, where the recorded relative paths resolve elsewhere
    elsewhere = run_memodag(
        "gc",
        "--keep-last",
        "10",
        "--yes",
        cwd=tmp_path,
        env={"MEMODAG_HOME": str(project / ".memodag")},
    )
    assert "0 output(s) deleted" in elsewhere.stdout
    assert all(p.is_file() for p in outputs)


def test_outputs_written_through_a_symlinked_base_dir_are_not_orphans(tmp_path):
    from memodag import fs_io_manager, job, op

    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    # the instance's folder, and a job writing to the same folder through a symlink
    instance = Instance.from_url(f"sqlite:///{tmp_path / 'instance.db'}", storage_dir=real)

    @op
    def one():
        return 1

    @op
    def two(x):
        return x + 1

    manager = fs_io_manager.configured({"base_dir": str(link)})

    @job(resource_defs={"io_manager": manager})
    def linked():
        two(one())

    result = linked.execute_in_process(instance=instance)
    stray = real / result.run_id / "two.result.pkl.tmp-999999-abcdef12"
    stray.write_bytes(b"partial")
    assert _orphans(instance) == {str(stray)}
    report = collect_garbage(instance, keep_runs=10, dry_run=False)
    assert report.errors == []
    assert not stray.exists()
    assert sorted(p.name for p in (real / result.run_id).iterdir()) == [
        "one.result.pkl",
        "two.result.pkl",
    ]
    assert result.output_for_node("two") == 2
    instance.close()
