"""Faults on the parallel executors: failing ops, retries, worker processes killed mid-step,
SIGTERM to the driver. A run never hangs, never runs an attempt twice, never half-stores."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from pipelines import (
    after,
    boom,
    bystander,
    dies_once,
    flaky,
    lines,
    marks,
    marks_config,
    max_overlap,
    tagged_job,
    thread_bound_db,
    use_thread_bound_db,
    victim,
)

from memodag import (
    EventType,
    Instance,
    RunStatus,
    StepExecutionError,
    dask_executor,
    job,
    multiprocess_executor,
    op,
)


def test_failing_op_fails_its_step_and_skips_downstream(parallel_executor, instance, tmp_path):
    @job(resource_defs={"marks": marks}, executor_def=parallel_executor)
    def failing():
        after(boom())

    with pytest.raises(
        StepExecutionError, match="Step 'boom' failed: ValueError: bad input 7"
    ) as info:
        failing.execute_in_process(run_config=marks_config(tmp_path), instance=instance)
    # the original exception crossed from the worker process
    assert isinstance(info.value.__cause__, ValueError)

    (run,) = instance.get_runs()
    assert run.status is RunStatus.FAILURE
    events = instance.get_events(run.run_id)
    (failure,) = [e for e in events if e.event_type is EventType.STEP_FAILURE]
    assert failure.data["error"]["class"] == "ValueError"
    assert "bad input 7" in failure.data["error"]["stack"]
    assert [e.step_key for e in events if e.event_type is EventType.STEP_SKIPPED] == ["after"]


def test_retry_policy_reruns_the_step(parallel_executor, instance, tmp_path):
    @job(resource_defs={"marks": marks}, executor_def=parallel_executor)
    def retried():
        after(flaky())

    result = retried.execute_in_process(run_config=marks_config(tmp_path), instance=instance)

    assert result.output_for_node("after") == 42
    assert len(lines(tmp_path, "flaky")) == 2
    kinds = [e.event_type for e in result.all_events if e.step_key == "flaky"]
    assert kinds.count(EventType.STEP_RETRY) == 1
    assert kinds.count(EventType.STEP_FAILURE) == 1


def test_worker_killed_while_storing_fails_the_step_cleanly(parallel_executor, instance, tmp_path):
    @job(resource_defs={"marks": marks}, executor_def=parallel_executor)
    def killed():
        after(victim())

    started = time.monotonic()
    result = killed.execute_in_process(
        run_config=marks_config(tmp_path), instance=instance, raise_on_error=False
    )

    assert time.monotonic() - started < 60  # never hangs
    assert result.failed_step_keys == ["victim"]
    assert result.step_status["after"] == "skipped"
    (failure,) = result.get_step_failure_events()
    message = failure.data["error"]["message"]
    assert "died" in message and "'victim'" in message
    if parallel_executor.name == "multiprocess":
        assert "signal 9" in message
    assert len(lines(tmp_path, "victim")) == 1  # not silently run again
    # the process died mid-write: nothing is at the output's final path, nothing is indexed
    step_dir = instance.storage_dir / result.run_id / "victim"
    assert not step_dir.exists() or all(".tmp-" in p.name for p in step_dir.iterdir())
    assert not instance.get_output_addresses(result.run_id)


def test_worker_killed_step_is_retried_per_policy(parallel_executor, instance, tmp_path):
    @job(resource_defs={"marks": marks}, executor_def=parallel_executor)
    def survives():
        after(dies_once())
        bystander()

    result = survives.execute_in_process(run_config=marks_config(tmp_path), instance=instance)

    assert result.output_for_node("after") == 42
    assert len(lines(tmp_path, "dies_once")) == 2  # attempt 0 killed, attempt 1 ran: no extra run
    events = [e for e in result.all_events if e.step_key == "dies_once"]
    assert [e.event_type for e in events].count(EventType.STEP_RETRY) == 1
    (failure,) = [e for e in events if e.event_type is EventType.STEP_FAILURE]
    assert "died" in failure.message


def test_multiprocess_worker_death_leaves_other_steps_running(instance, tmp_path):
    @job(
        resource_defs={"marks": marks},
        executor_def=multiprocess_executor.configured({"max_concurrent": 3}),
    )
    def mixed():
        after(victim())
        bystander.alias("b1")()
        bystander.alias("b2")()

    result = mixed.execute_in_process(
        run_config=marks_config(tmp_path), instance=instance, raise_on_error=False
    )

    assert result.failed_step_keys == ["victim"]
    assert result.step_status["b1"] == result.step_status["b2"] == "success"
    assert len(lines(tmp_path, "b1")) == len(lines(tmp_path, "b2")) == 1


@pytest.mark.parametrize(
    ("name", "config", "limit", "n_plain"),
    [("multiprocess", {"max_concurrent": 4}, 2, 2), ("dask", {}, 1, 1)],
)
def test_tag_concurrency_limits(name, config, limit, n_plain, request, instance, tmp_path):
    if name == "dask":
        config = {"address": request.getfixturevalue("dask_cluster_ready")}
        executor_def = dask_executor
    else:
        executor_def = multiprocess_executor
    limits = [{"key": "db", "limit": limit}, {"key": "db", "value": "other", "limit": 1}]
    job_def = tagged_job(
        5, n_plain, executor_def.configured({**config, "tag_concurrency_limits": limits})
    )

    result = job_def.execute_in_process(run_config=marks_config(tmp_path), instance=instance)

    assert result.success
    db = [
        (lines(tmp_path, f"db_{i}", "start")[0][1], lines(tmp_path, f"db_{i}", "end")[0][1])
        for i in range(5)
    ]
    # without the limit these would overlap up to the executor's width (4 processes / 2 workers)
    assert max_overlap(db) <= limit
    plain = [
        (lines(tmp_path, f"plain_{i}", "start")[0][1], lines(tmp_path, f"plain_{i}", "end")[0][1])
        for i in range(n_plain)
    ]
    # untagged steps are not held back behind the tagged ones
    assert min(s for s, _ in plain) < max(s for s, _ in db)


DRIVER = textwrap.dedent(
    """
    import os
    import sys
    import time
    from pathlib import Path

    from memodag import MEMOIZED_RUN_TAG, Instance, dask_executor, job, multiprocess_executor, op

    DIR = Path(sys.argv[2])


    @op(version="1")
    def quick() -> int:
        return 1


    @op(version="1")
    def slow(x: int) -> int:
        (DIR / "slow.started").write_text(str(os.getpid()))
        while not (DIR / "release").exists():
            time.sleep(0.05)
        return x + 1


    @op(version="1")
    def last(x: int) -> int:
        return x * 10


    def main() -> None:
        if sys.argv[1] == "multiprocess":
            executor = multiprocess_executor.configured({"max_concurrent": 2})
        else:
            executor = dask_executor.configured({"n_workers": 1})

        @job(executor_def=executor, tags={MEMOIZED_RUN_TAG: "true"})
        def resumable():
            last(slow(quick()))

        instance = Instance.from_url(f"sqlite:///{DIR / 'instance.db'}", storage_dir=DIR / "storage")
        result = resumable.execute_in_process(instance=instance)
        print("RESULT", result.output_for_node("last"), ",".join(result.memoized_step_keys))


    if __name__ == "__main__":
        main()
    """
)


@pytest.mark.parametrize("name", ["multiprocess", "dask"])
def test_sigterm_cancels_the_run_and_a_memoized_rerun_resumes(name, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    command = [sys.executable, str(script), name, str(tmp_path)]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "slow.started").exists():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        workers = psutil.Process(driver.pid).children(recursive=True)
        step_pid = int((tmp_path / "slow.started").read_text())
        assert step_pid in {w.pid for w in workers}
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()

    instance = Instance.from_url(
        f"sqlite:///{tmp_path / 'instance.db'}", storage_dir=tmp_path / "storage"
    )
    (run,) = instance.get_runs()
    assert run.status is RunStatus.CANCELED
    (canceled,) = instance.get_events(run.run_id, [EventType.RUN_CANCELED])
    assert canceled.message == "run canceled: signal 15 (SIGTERM): canceling the run"
    _, still_alive = psutil.wait_procs(workers, timeout=10)
    assert not [p for p in still_alive if p.status() != psutil.STATUS_ZOMBIE], "orphan workers"

    (tmp_path / "release").write_text("")
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "RESULT 20 quick" in rerun.stdout  # 'quick' was stored before the cancel: memoized
    assert instance.get_runs()[0].status is RunStatus.SUCCESS
    instance.close()


def test_resource_failing_in_workers_fails_the_steps_that_need_it(parallel_executor, instance):
    from memodag import op, resource

    @resource
    def broken(context):
        raise ConnectionError("no route to warehouse")

    @op(required_resource_keys={"warehouse"})
    def query(context) -> int:
        return 1

    @job(resource_defs={"warehouse": broken}, executor_def=parallel_executor)
    def needs_warehouse():
        query()

    result = needs_warehouse.execute_in_process(instance=instance, raise_on_error=False)

    assert result.failed_step_keys == ["query"]
    (failure,) = result.get_step_failure_events()
    assert "resource 'warehouse' failed to initialize" in failure.message
    assert "no route to warehouse" in failure.message


def test_worker_resources_are_built_on_the_thread_that_runs_steps(parallel_executor, instance):
    @job(resource_defs={"db": thread_bound_db}, executor_def=parallel_executor)
    def thread_bound():
        use_thread_bound_db()

    assert (
        thread_bound.execute_in_process(instance=instance).output_for_node("use_thread_bound_db")
        == 1
    )


def test_losing_the_dask_scheduler_fails_the_running_steps_instead_of_hanging(
    own_cluster, instance
):
    """The scheduler goes away mid-run: the driver, which holds no futures Dask could cancel,
    notices on its next check that its client lost the scheduler and fails the attempts."""
    import threading

    @op
    def sleepy() -> int:
        time.sleep(5)
        return 1

    cluster = own_cluster()

    @job(executor_def=dask_executor.configured({"address": cluster.scheduler_address}))
    def orphaned():
        sleepy()

    def close_scheduler_once_running() -> None:
        deadline = time.monotonic() + 30
        while not cluster.scheduler.tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.sync(cluster.scheduler.close)

    closer = threading.Thread(target=close_scheduler_once_running)
    started = time.monotonic()
    closer.start()
    result = orphaned.execute_in_process(instance=instance, raise_on_error=False)
    took = time.monotonic() - started
    closer.join(timeout=30)

    assert took < 45
    assert result.failed_step_keys == ["sleepy"]
    (failure,) = result.get_step_failure_events()
    assert "lost its connection to the Dask scheduler" in failure.message


def test_a_dask_connection_blip_mid_run_does_not_lose_the_run(own_cluster, instance):
    """The scheduler drops the driver's connection mid-run: the client reconnects and the run
    completes with the right result (an outcome lost in the gap would be found by the checks
    and its step retried per its policy)."""
    import threading

    from memodag import RetryPolicy

    @op(retry_policy=RetryPolicy(max_retries=2))
    def first() -> int:
        time.sleep(1.5)
        return 1

    @op(retry_policy=RetryPolicy(max_retries=2))
    def then(x: int) -> int:
        time.sleep(1.5)
        return x + 1

    cluster = own_cluster()

    @job(executor_def=dask_executor.configured({"address": cluster.scheduler_address}))
    def chain():
        then.alias("c")(then.alias("b")(first()))

    def drop_the_driver() -> None:
        scheduler = cluster.scheduler
        deadline = time.monotonic() + 30
        while not scheduler.tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        for name, comm in list(scheduler.client_comms.items()):
            if name != "fire-and-forget":
                cluster.loop.add_callback(comm.comm.abort)

    dropper = threading.Thread(target=drop_the_driver)
    dropper.start()
    result = chain.execute_in_process(instance=instance, raise_on_error=False)
    dropper.join(timeout=30)

    assert result.success, result.get_step_failure_events()
    assert result.output_for_node("c") == 3


ORPHAN_DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    from memodag import Instance, dask_executor, job, op

    marks = Path(sys.argv[2])

    @op
    def hold(context) -> int:
        (marks / f"{context.step_key}.started").write_text("")
        deadline = time.monotonic() + 60
        while not (marks / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return 1

    @job(executor_def=dask_executor.configured({"address": sys.argv[1]}))
    def four_holds():
        for name in "abcd":
            hold.alias(name)()

    if __name__ == "__main__":
        four_holds.execute_in_process(instance=Instance.from_url(f"sqlite:///{marks}/i.db"))
    """
)


def test_a_dask_drivers_attempts_are_cancelled_when_it_is_killed_outright(own_cluster, tmp_path):
    """A driver SIGKILLed mid-run cannot cancel its fire-and-forget attempts: the scheduler's
    guard does, once the client has been gone for the grace, so the queued ones never run, and
    it removes the run's worker plugin."""
    import dask
    import distributed

    # one thread, one task at a time on the worker: three of the four wait on the scheduler
    cluster = own_cluster(processes=True, **{"distributed.scheduler.worker-saturation": 1.0})
    script = tmp_path / "driver.py"
    script.write_text(ORPHAN_DRIVER)
    driver = subprocess.Popen(
        [sys.executable, str(script), cluster.scheduler_address, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def ours(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith("memodag-step")]

    def run_plugins(dask_scheduler):
        return [n for n in dask_scheduler.worker_plugins if n.startswith("memodag-run-")]

    with (
        dask.config.set({"memodag.orphan-grace": 1}),
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        try:
            deadline = time.monotonic() + 90
            while len(client.run_on_scheduler(ours)) < 4 or not list(tmp_path.glob("*.started")):
                assert driver.poll() is None, driver.communicate()
                assert time.monotonic() < deadline, "the run never got going"
                time.sleep(0.05)
            assert client.run_on_scheduler(run_plugins)
        finally:
            driver.kill()
            driver.wait()
        deadline = time.monotonic() + 30
        while client.run_on_scheduler(ours) or client.run_on_scheduler(run_plugins):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert client.run_on_scheduler(ours) == [], "the killed driver's attempts were left"
        assert client.run_on_scheduler(run_plugins) == [], "its run's plugin was left"
    (tmp_path / "release").write_text("")
    time.sleep(1.0)  # time for a queued attempt to start, were one still there
    assert len(list(tmp_path.glob("*.started"))) == 1
