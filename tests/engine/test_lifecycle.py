"""The storage run lifecycle: io managers and resources hear a run start, each output recorded,
and the run end with its status, in the driver, on every executor; results load through live io
managers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memodag import (
    ExecutionError,
    IOManager,
    Out,
    RunStatus,
    StepExecutionError,
    io_manager,
    job,
    op,
)

from .lifecycle_jobs import JOBS, read_log, run_config, tracked_job

HERE = Path(__file__).resolve().parent


def hooks(tmp_path: Path) -> list[str]:
    """The calls heard, as short strings, in order."""
    out = []
    for entry in read_log(tmp_path / "hooks.log"):
        if entry["hook"] == "recorded":
            out.append(f"recorded {entry['output']}" + (" memoized" if entry["memoized"] else ""))
        elif entry["hook"] == "end":
            out.append(f"end {entry['status']}")
        else:
            out.append(entry["hook"])
    return out


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_a_run_is_heard_from_start_to_end_in_the_driver(executor, instance, tmp_path):
    result = JOBS[executor].execute_in_process(run_config=run_config(tmp_path), instance=instance)
    assert result.success
    outputs = ["source.result", "double.result", "tracked.result", "wait.result"]
    assert hooks(tmp_path) == ["start", *(f"recorded {o}" for o in outputs), "end SUCCESS"]
    log = read_log(tmp_path / "hooks.log")
    assert {e["pid"] for e in log} == {os.getpid()}  # the driver, never a worker
    assert all(e["durable"] for e in log if e["hook"] == "recorded")
    assert log[0]["run_id"] == result.run_id and log[0]["key"] == "io_manager"

    (tmp_path / "hooks.log").unlink()
    again = JOBS[executor].execute_in_process(run_config=run_config(tmp_path), instance=instance)
    assert again.memoized_step_keys == ["source", "double", "tracked", "wait"]
    assert hooks(tmp_path) == [
        "start",
        *(f"recorded {o} memoized" for o in outputs),
        "end SUCCESS",
    ]


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_a_failed_run_ends_as_failure_with_only_its_successful_outputs(
    executor, instance, tmp_path
):
    with pytest.raises(StepExecutionError, match="source failed on purpose"):
        JOBS[executor].execute_in_process(
            run_config=run_config(tmp_path, fail_op=True), instance=instance
        )
    assert hooks(tmp_path) == ["start", "end FAILURE"]
    (end,) = [e for e in read_log(tmp_path / "hooks.log") if e["hook"] == "end"]
    assert "source" in end["message"]


def test_a_plain_resource_hears_start_and_end(instance, tmp_path):
    config = run_config(tmp_path)
    config["resources"]["tracker"] = {"config": {"log": str(tmp_path / "hooks.log")}}
    assert tracked_job.execute_in_process(run_config=config, instance=instance).success
    heard = hooks(tmp_path)
    # dependencies first at start, last at end (none here: sorted keys decide among equals)
    assert heard[0:2] == ["start", "resource start"] or heard[0:2] == ["resource start", "start"]
    assert heard[-2:] in (["end SUCCESS", "resource end"], ["resource end", "end SUCCESS"])


def test_a_run_end_hook_that_raises_fails_the_run_and_keeps_what_is_stored(instance, tmp_path):
    job_def = JOBS["in_process"]
    with pytest.raises(ExecutionError, match="io manager 'io_manager' failed at run end"):
        job_def.execute_in_process(run_config=run_config(tmp_path, "end"), instance=instance)
    (run,) = instance.get_runs()
    assert run.status is RunStatus.FAILURE
    failure = instance.get_events(run.run_id)[-1]
    assert "io manager 'io_manager' failed at run end (on_run_end): RuntimeError: end exploded" in (
        failure.message
    )
    # the data and its index entries are untouched: the next run memoizes every step
    for address in instance.get_output_addresses(run.run_id).values():
        assert Path(address.uri).is_file()
    result = job_def.execute_in_process(
        run_config=run_config(tmp_path, "end"), instance=instance, raise_on_error=False
    )
    assert not result.success and "end exploded" in result.run_failure
    assert result.memoized_step_keys == ["source", "double", "tracked", "wait"]


def test_a_run_start_hook_that_raises_fails_the_run_before_any_step(instance, tmp_path):
    with pytest.raises(ExecutionError, match="io manager 'io_manager' failed at run start"):
        JOBS["in_process"].execute_in_process(
            run_config=run_config(tmp_path, "start"), instance=instance
        )
    assert hooks(tmp_path) == ["start"]  # it never started, so it hears no end
    (run,) = instance.get_runs()
    assert run.status is RunStatus.FAILURE
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_a_run_canceled_by_sigterm_ends_as_canceled(executor, tmp_path):
    command = [sys.executable, str(HERE / "lifecycle_jobs.py"), executor, str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "release.started").exists():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    heard = hooks(tmp_path)
    assert heard[0] == "start" and heard[-1] == "end CANCELED", heard
    assert "recorded source.result" in heard and "recorded wait.result" not in heard
    log = read_log(tmp_path / "hooks.log")
    assert {e["pid"] for e in log} == {driver.pid}
    assert "SIGTERM" in log[-1]["message"]


# -- results load through live io managers -------------------------------------------------


class ClosingIOManager(IOManager):
    """Stores values in a shared dict, through a 'connection' closed at teardown."""

    def __init__(self, database: dict) -> None:
        self.database = database
        self.open = True

    def handle_output(self, context, obj):
        assert self.open, "handle_output on a closed io manager"
        uri = f"db://{context.run_id}/{context.step_key}"
        self.database[uri] = obj
        return uri

    def load_input(self, context):
        if not self.open:
            raise RuntimeError("load_input on a closed io manager")
        return self.database[context.address.uri]


def closing_job(executor_def=None):
    database: dict = {}
    built: list[ClosingIOManager] = []

    @io_manager
    def closing():
        manager = ClosingIOManager(database)
        built.append(manager)
        yield manager
        manager.open = False

    @op(out=Out(io_manager_key="db"))
    def make():
        return [1, 2, 3]

    @op(out=Out(io_manager_key="db"))
    def total(values):
        return sum(values)

    kwargs = {"executor_def": executor_def} if executor_def else {}

    @job(resource_defs={"db": closing}, **kwargs)
    def closes():
        total(make())

    return closes, built


def test_results_load_through_io_managers_built_for_the_load(instance):
    closes, built = closing_job()
    result = closes.execute_in_process(instance=instance)
    assert [m.open for m in built] == [False]  # the run's own manager is torn down
    assert result.output_for_node("total") == 6
    assert result.output_for_node("make") == [1, 2, 3]
    # each load had a manager of its own, torn down after it
    assert len(built) == 3 and not any(m.open for m in built)


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_results_load_through_live_io_managers_on_every_executor(executor, instance, tmp_path):
    # the run's io managers (in the driver) are torn down with the run: results still load
    config = run_config(tmp_path)
    result = JOBS[executor].execute_in_process(run_config=config, instance=instance)
    assert result.output_for_node("wait") == 5
    assert result.output_for_node("double") == 4


def test_run_end_is_heard_when_the_last_write_of_the_run_fails(instance, tmp_path, monkeypatch):
    # a store that commits or discards a stage at run end must hear the end even when the
    # instance fails on the run's last commit ("database is locked")
    config = run_config(tmp_path)
    config["resources"]["tracker"] = {"config": {"log": str(tmp_path / "hooks.log")}}
    tracked_job.execute_in_process(run_config=config, instance=instance)
    (tmp_path / "hooks.log").unlink()

    real = instance._storage.store_events
    commits = []

    def locked_after_run_start(events, index_entries):
        commits.append(len(events))
        if len(commits) == 2:  # the first commit records the run's start; the next one fails
            raise RuntimeError("database is locked")
        return real(events, index_entries)

    monkeypatch.setattr(instance._storage, "store_events", locked_after_run_start)
    with pytest.raises(RuntimeError, match="database is locked"):
        tracked_job.execute_in_process(run_config=config, instance=instance)
    heard = hooks(tmp_path)
    assert heard[-2:] in (["end FAILURE", "resource end"], ["resource end", "end FAILURE"]), heard
