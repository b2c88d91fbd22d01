"""When user code fails: the error is recorded with its traceback, retries follow the op's policy,
downstream steps are skipped, independent branches still run, and the run is marked failed."""

from __future__ import annotations

import pytest

from memodag import (
    Backoff,
    EventType,
    RetryPolicy,
    RunStatus,
    StepExecutionError,
    job,
    op,
)


class SourceUnavailable(Exception):
    pass


@op
def start():
    return 1


@op
def broken(x):
    raise SourceUnavailable(f"source down for {x}")


@op
def after_broken(x):
    return x


@op
def independent(x):
    return x + 100


@op
def after_independent(x):
    return x + 1


@job
def branching():
    value = start()
    after_broken(broken(value))
    after_independent(independent(value))


def test_a_failing_step_records_its_error_and_skips_only_its_downstream(instance):
    result = branching.execute_in_process(instance=instance, raise_on_error=False)

    assert not result.success
    assert result.step_status == {
        "start": "success",
        "broken": "failed",
        "after_broken": "skipped",
        "independent": "success",
        "after_independent": "success",
    }
    assert result.output_for_node("after_independent") == 102
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "broken"
    assert failure.message == "SourceUnavailable: source down for 1"
    error = failure.data["error"]
    assert error["class"] == "SourceUnavailable"
    assert error["message"] == "source down for 1"
    assert "Traceback" in error["stack"]
    assert 'raise SourceUnavailable(f"source down for {x}")' in error["stack"]
    skipped = [e for e in result.all_events if e.event_type == EventType.STEP_SKIPPED]
    assert [(e.step_key, e.message) for e in skipped] == [
        ("after_broken", "upstream step 'broken' failed")
    ]
    assert result.all_events[-1].event_type == EventType.RUN_FAILURE
    assert instance.get_run(result.run_id).status == RunStatus.FAILURE
    assert result.failed_step_keys == ["broken"]


def test_raise_on_error_names_the_step_and_chains_the_users_exception(instance):
    with pytest.raises(
        StepExecutionError, match=r"Step 'broken' failed: SourceUnavailable"
    ) as info:
        branching.execute_in_process(instance=instance)

    assert info.value.step_key == "broken"
    assert isinstance(info.value.__cause__, SourceUnavailable)
    (run,) = instance.get_runs()
    assert run.status == RunStatus.FAILURE
    events = instance.get_events(run.run_id)
    assert events[-1].event_type == EventType.RUN_FAILURE
    # the independent branch still ran before the error was raised
    assert ("after_independent", EventType.STEP_SUCCESS) in [
        (e.step_key, e.event_type) for e in events
    ]


def test_a_failure_deep_in_a_chain_skips_everything_after_it(instance):
    @job
    def chain():
        after_independent.alias("c")(after_independent.alias("b")(broken(start())))

    result = chain.execute_in_process(instance=instance, raise_on_error=False)
    assert result.step_status == {
        "start": "success",
        "broken": "failed",
        "b": "skipped",
        "c": "skipped",
    }


def test_retries_follow_the_policy_until_the_step_succeeds(instance):
    attempts = []

    @op(retry_policy=RetryPolicy(max_retries=3))
    def flaky(context):
        attempts.append(context.retry_number)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "done"

    @job
    def flaky_job():
        flaky()

    result = flaky_job.execute_in_process(instance=instance)
    assert result.success
    assert result.output_for_node("flaky") == "done"
    assert attempts == [0, 1, 2]
    events = result.all_events
    retries = [e for e in events if e.event_type == EventType.STEP_RETRY]
    assert [e.data["attempt"] for e in retries] == [1, 2]
    assert len([e for e in events if e.event_type == EventType.STEP_FAILURE]) == 2
    assert len([e for e in events if e.event_type == EventType.STEP_START]) == 3
    assert instance.get_run(result.run_id).status == RunStatus.SUCCESS


def test_a_step_that_keeps_failing_runs_max_retries_plus_one_times(instance):
    attempts = []

    @op(retry_policy=RetryPolicy(max_retries=2))
    def always_fails():
        attempts.append(1)
        raise ValueError("bad row")

    @op
    def consumer(x):
        attempts.append("consumer")

    @job
    def hopeless():
        consumer(always_fails())

    with pytest.raises(StepExecutionError, match="ValueError: bad row") as info:
        hopeless.execute_in_process(instance=instance)
    assert isinstance(info.value.__cause__, ValueError)
    assert attempts == [1, 1, 1]
    (run,) = instance.get_runs()
    events = instance.get_events(run.run_id)
    assert [e.data["attempt"] for e in events if e.event_type == EventType.STEP_RETRY] == [1, 2]
    assert [e.step_key for e in events if e.event_type == EventType.STEP_SKIPPED] == ["consumer"]
    assert run.status == RunStatus.FAILURE


def test_retry_delays_grow_with_the_backoff(instance):
    @op(retry_policy=RetryPolicy(max_retries=3, delay=0.01, backoff=Backoff.EXPONENTIAL))
    def slow_to_recover():
        raise OSError("still down")

    @job
    def backing_off():
        slow_to_recover()

    result = backing_off.execute_in_process(instance=instance, raise_on_error=False)
    delays = [e.data["delay"] for e in result.all_events if e.event_type == EventType.STEP_RETRY]
    assert delays == pytest.approx([0.01, 0.02, 0.04])


def test_retry_delay_arithmetic():
    assert RetryPolicy(max_retries=3, delay=2).delay_for(3) == 2
    assert RetryPolicy(max_retries=3, delay=2, backoff=Backoff.LINEAR).delay_for(3) == 6
    assert RetryPolicy(max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL).delay_for(3) == 8
    assert RetryPolicy(max_retries=3).delay_for(2) == 0


def test_an_op_without_a_policy_is_not_retried(instance):
    attempts = []

    @op
    def once():
        attempts.append(1)
        raise RuntimeError("no")

    @job
    def single():
        once()

    result = single.execute_in_process(instance=instance, raise_on_error=False)
    assert attempts == [1]
    assert not [e for e in result.all_events if e.event_type == EventType.STEP_RETRY]


def test_a_failed_step_leaves_no_output_behind(instance):
    @op
    def half_done():
        raise RuntimeError("crashed before returning")

    @job
    def crashing():
        half_done()

    result = crashing.execute_in_process(instance=instance, raise_on_error=False)
    assert instance.get_output_addresses(result.run_id) == {}
    assert not instance.storage_dir.exists() or not any(
        p.is_file() for p in instance.storage_dir.rglob("*")
    )
