"""A step's outcome is recorded and shown the moment the step ends, on every executor: its events
and index entries are committed before the next step starts (in process), listeners hear of it
then, and a run interrupted by SIGINT, SIGTERM or even SIGKILL keeps every step that finished,
so a memoized rerun runs only the rest."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    DynamicOut,
    DynamicOutput,
    EventType,
    Instance,
    RetryPolicy,
    RunStatus,
    in_process_executor,
    job,
    multiprocess_executor,
    op,
)
from memodag.engine.execute import execute_job


def test_each_success_is_stored_and_heard_before_the_next_step_starts(tmp_path):
    db = tmp_path / "instance.db"
    instance = Instance.from_url(f"sqlite:///{db}", storage_dir=tmp_path / "storage")
    heard: list[str] = []
    seen_by_step: dict[str, tuple[list[str], list[str]]] = {}

    @op(out=DynamicOut())
    def pieces():
        for i in range(6):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op
    def clone(context, x: int) -> int:
        # what another process reading the instance sees right now: only committed data
        with Instance.from_url(f"sqlite:///{db}", storage_dir=tmp_path / "storage") as reader:
            stored = [
                e.step_key
                for e in reader.get_events(context.run_id, [EventType.STEP_SUCCESS])
                if e.step_key and e.step_key.startswith("clone[")
            ]
            stored += [
                f"output {key[0]}"
                for key in reader.get_output_addresses(context.run_id)
                if key[0].startswith("clone[")
            ]
        seen_by_step[context.step_key] = (list(heard), stored)
        return x

    @op
    def total(xs: list[int]) -> int:
        return sum(xs)

    @job
    def fan():
        total(pieces().map(clone).collect())

    def listener(event):
        if event.event_type is EventType.STEP_SUCCESS and event.step_key.startswith("clone["):
            heard.append(event.step_key)

    # the CLI's progress display is such a listener
    result = execute_job(fan, instance=instance, listeners=[listener])

    assert result.success and result.output_for_node("total") == 15
    for i in range(6):
        before = [f"clone[k{j}]" for j in range(i)]
        heard_then, stored_then = seen_by_step[f"clone[k{i}]"]
        assert heard_then == before
        assert sorted(stored_then) == sorted(before + [f"output {k}" for k in before])
    instance.close()


DRIVER = textwrap.dedent(
    """
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    from memodag import (
        MEMOIZED_RUN_TAG, DynamicOut, DynamicOutput, EventType, Instance, dask_executor, job,
        multiprocess_executor, op,
    )

    DIR = Path(sys.argv[2])
    N = 8
    K = int(sys.argv[3])  # the piece whose step signals the driver
    SIGNAL = getattr(signal, sys.argv[4])
    RERUN = sys.argv[5] == "rerun"


    def wait_until_recorded(run_id, step_key):
        # outcomes travel back from worker processes: wait until the driver has recorded the
        # previous step, so which steps finished before the signal is the same on every run
        with Instance.from_url(f"sqlite:///{DIR / 'instance.db'}", storage_dir=DIR / "s") as reader:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                done = reader.get_events(run_id, [EventType.STEP_SUCCESS])
                if step_key in {e.step_key for e in done}:
                    return
                time.sleep(0.02)


    @op(version="1", out=DynamicOut())
    def pieces():
        for i in range(N):
            yield DynamicOutput(i, mapping_key=f"k{i}")


    @op(version="1")
    def clone(context, x: int) -> int:
        with open(DIR / "started.txt", "a") as log:
            log.write(context.step_key + "\\n")
        if x == K and not RERUN:
            wait_until_recorded(context.run_id, f"clone[k{K - 1}]")
            os.kill(int(os.environ["DRIVER_PID"]), SIGNAL)
            time.sleep(30)  # the signal ends the run long before this ends
        return x * 10


    @op(version="1")
    def total(xs: list[int]) -> int:
        return sum(xs)


    @op(version="1")
    def after(x: int) -> int:
        return x + 1


    def main() -> None:
        os.environ["DRIVER_PID"] = str(os.getpid())
        executor = {
            "in_process": None,
            "multiprocess": multiprocess_executor.configured({"max_concurrent": 1}),
            "dask": dask_executor.configured({"n_workers": 1}),
        }[sys.argv[1]]

        @job(executor_def=executor, tags={MEMOIZED_RUN_TAG: "true"})
        def fan():
            after(total(pieces().map(clone).collect()))

        instance = Instance.from_url(f"sqlite:///{DIR / 'instance.db'}", storage_dir=DIR / "s")
        result = fan.execute_in_process(instance=instance)
        print("RESULT", result.output_for_node("after"))


    if __name__ == "__main__":
        main()
    """
)

SIGNALLED = [
    ("in_process", "SIGINT"),
    ("in_process", "SIGTERM"),
    ("in_process", "SIGKILL"),
    ("multiprocess", "SIGINT"),
    ("multiprocess", "SIGKILL"),
    ("dask", "SIGTERM"),
]


@pytest.mark.parametrize(("executor", "signal_name"), SIGNALLED)
def test_a_signalled_run_keeps_every_finished_step(executor, signal_name, tmp_path):
    k = 5
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    command = [sys.executable, str(script), executor, str(tmp_path), str(k), signal_name]

    first = subprocess.run([*command, "first"], capture_output=True, text=True, timeout=180)

    assert first.returncode != 0, first.stdout
    if signal_name == "SIGKILL":
        assert first.returncode == -signal.SIGKILL
    started = (tmp_path / "started.txt").read_text().split()
    assert started == [f"clone[k{i}]" for i in range(k + 1)], first.stderr
    instance = Instance.from_url(
        f"sqlite:///{tmp_path / 'instance.db'}", storage_dir=tmp_path / "s"
    )
    (run,) = instance.get_runs()
    # SIGKILL leaves no chance to record an end: the run stays STARTED (a dead run)
    expected_status = RunStatus.STARTED if signal_name == "SIGKILL" else RunStatus.CANCELED
    assert run.status is expected_status

    (tmp_path / "started.txt").unlink()
    rerun = subprocess.run([*command, "rerun"], capture_output=True, text=True, timeout=180)

    assert rerun.returncode == 0, rerun.stderr
    assert "RESULT 281" in rerun.stdout  # 10 * (0 + ... + 7) + 1
    newest = instance.get_runs()[0]
    executed = _steps(instance, newest.run_id, EventType.STEP_SUCCESS)
    memoized = _steps(instance, newest.run_id, EventType.STEP_MEMOIZED)
    assert executed == {f"clone[k{i}]" for i in range(k, 8)} | {"total", "after"}
    assert memoized == {"pieces"} | {f"clone[k{i}]" for i in range(k)}
    assert (tmp_path / "started.txt").read_text().split() == [f"clone[k{i}]" for i in range(k, 8)]
    instance.close()


def _steps(instance: Instance, run_id: str, kind: EventType) -> set[str]:
    return {e.step_key for e in instance.get_events(run_id, [kind]) if e.step_key}


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_a_reused_output_is_recorded_before_a_later_step_runs(executor, tmp_path):
    # while a long step runs, another process (gc, `runs show`) must already see that this live
    # run reuses `first`'s stored output: it is not held back until the long step ends
    url = f"sqlite:///{tmp_path / 'instance.db'}"

    @op(version="1")
    def first():
        return 41

    @op(version="1", config_schema={"label": str})
    def looks(context):
        with Instance.from_url(url, storage_dir=tmp_path / "storage") as other:
            return len(other.get_events(context.run_id, [EventType.STEP_MEMOIZED]))

    @op(version="1")
    def last(x, y):
        return x + y

    executors = {
        "in_process": in_process_executor,
        "multiprocess": multiprocess_executor.configured({"max_concurrent": 1}),
    }

    @job(tags={MEMOIZED_RUN_TAG: "true"}, executor_def=executors[executor])
    def reuse():
        last(first(), looks())

    def config(label: str) -> dict:
        return {"ops": {"looks": {"config": {"label": label}}}}

    with Instance.from_url(url, storage_dir=tmp_path / "storage") as instance:
        reuse.execute_in_process(config("cold"), instance=instance)
        result = reuse.execute_in_process(config("again"), instance=instance)
    assert result.step_status["first"] == "memoized"
    assert result.output_for_node("looks") == 1


def test_log_lines_of_an_in_process_step_are_heard_as_they_are_logged(tmp_path):
    heard: list[tuple[str, str]] = []
    heard_while_running: list[list[tuple[str, str]]] = []

    @op
    def slow(context) -> int:
        context.log.info("started")
        heard_while_running.append(list(heard))
        context.log.warning("halfway")
        heard_while_running.append(list(heard))
        return 1

    @job
    def logs():
        slow()

    with Instance.from_url(
        f"sqlite:///{tmp_path / 'instance.db'}", storage_dir=tmp_path / "storage"
    ) as instance:
        result = execute_job(
            logs,
            instance=instance,
            listeners=[lambda e: heard.append((e.event_type.value, e.message))],
        )
        stored = [e.message for e in result.all_events if e.event_type is EventType.LOG]
    assert heard_while_running[0][-1] == ("LOG", "started")
    assert heard_while_running[1][-1] == ("LOG", "halfway")
    # heard once each, and stored with the step's outcome
    assert [m for kind, m in heard if kind == "LOG"] == ["started", "halfway"]
    assert stored == ["started", "halfway"]


def test_a_retry_run_in_process_starts_after_what_came_before_it_is_recorded(tmp_path):
    url = f"sqlite:///{tmp_path / 'instance.db'}"
    attempts: list[int] = []

    @op(version="1")
    def first():
        return 41

    @op(version="1", config_schema={"label": str}, retry_policy=RetryPolicy(max_retries=1))
    def flaky(context):
        attempts.append(1)
        if len(attempts) % 2 == 1:
            raise RuntimeError("first attempt fails")
        with Instance.from_url(url, storage_dir=tmp_path / "storage") as other:
            return sorted(
                e.event_type.value
                for e in other.get_events(context.run_id)
                if e.event_type in (EventType.STEP_MEMOIZED, EventType.STEP_RETRY)
            )

    @op(version="1")
    def last(x, y):
        return y

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def retried():
        last(first(), flaky())

    with Instance.from_url(url, storage_dir=tmp_path / "storage") as instance:
        retried.execute_in_process(
            {"ops": {"flaky": {"config": {"label": "a"}}}}, instance=instance
        )
        result = retried.execute_in_process(
            {"ops": {"flaky": {"config": {"label": "b"}}}}, instance=instance
        )
        assert result.step_status["first"] == "memoized"
        assert result.output_for_node("last") == ["STEP_MEMOIZED", "STEP_RETRY"]


def test_a_long_run_of_memoized_steps_is_stored_in_batches_as_it_goes(tmp_path, monkeypatch):
    """Memoized steps are recorded in batches of at most FLUSH_EVENTS events even when no step
    executes between them: a run reusing 100,000 outputs never holds all their events."""
    import memodag.engine.events

    monkeypatch.setattr(memodag.engine.events, "FLUSH_EVENTS", 20)
    db = tmp_path / "instance.db"
    instance = Instance.from_url(f"sqlite:///{db}", storage_dir=tmp_path / "storage")

    @op(version="1", out=DynamicOut())
    def many():
        for i in range(100):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op(version="1")
    def same(x: int) -> int:
        return x

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def reused():
        many().map(same)

    reused.execute_in_process(instance=instance)
    stored_when_heard: list[int] = []
    reader = Instance.from_url(f"sqlite:///{db}")

    def listener(event):
        if event.event_type is EventType.STEP_MEMOIZED and event.step_key == "same[k80]":
            run = reader.get_runs(limit=1)[0].run_id
            stored_when_heard.append(len(reader.get_events(run, [EventType.STEP_MEMOIZED])))

    result = execute_job(reused, instance=instance, listeners=[listener])
    assert len(result.memoized_step_keys) == 101
    # 'many' and 80 clones were memoized before 'same[k80]': all but the last batch are stored
    assert stored_when_heard and stored_when_heard[0] >= 60
