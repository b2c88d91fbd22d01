"""The instance as ops and resources see it in worker processes: the same ``Instance`` verbs,
the database opened only when asked, and a plain error when the run's instance is in memory."""

from __future__ import annotations

import os

from memodag import Instance, RunStatus, job, multiprocess_executor, op

ON_WORKERS = multiprocess_executor.configured({"max_concurrent": 2})


@op
def look_around(context) -> dict:
    instance = context.instance
    run = instance.get_run(context.run_id)
    return {
        "pid": os.getpid(),
        "is_instance": isinstance(instance, Instance),
        "url": instance.url,
        "storage_dir": str(instance.storage_dir),
        "run": (run.job_name, run.status.value) if run else None,
        "runs_of_job": [r.run_id for r in instance.get_runs(job_name="peek")],
    }


@job(executor_def=ON_WORKERS)
def peek():
    look_around()


def test_ops_on_workers_read_the_run_from_the_instance(any_instance):
    result = peek.execute_in_process(instance=any_instance)
    seen = result.output_for_node("look_around")
    assert seen["pid"] != os.getpid()
    assert seen["is_instance"] is True
    assert seen["url"] == any_instance.url
    assert seen["storage_dir"] == str(any_instance.storage_dir)
    assert seen["run"] == ("peek", RunStatus.STARTED.value)
    assert seen["runs_of_job"] == [result.run_id]


def test_an_in_memory_instance_is_not_reachable_from_workers():
    with Instance.ephemeral() as instance:
        result = peek.execute_in_process(instance=instance, raise_on_error=False)
        (failure,) = result.get_step_failure_events()
    assert failure.step_key == "look_around"
    assert "instance.get_run is not available in a worker process" in failure.message
    assert "use a SQLite file or PostgreSQL instance" in failure.message
