"""Concurrent runs share work (issue 14 §5): a step another live run computes at the same
version is waited for and reused, not computed again; a run whose holder dies takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

JOB_FILE = textwrap.dedent(
    """
    import os, sys, time
    from memodag import MEMOIZED_RUN_TAG, Instance, job, op

    URL, HOME, MODE = sys.argv[1], sys.argv[2], sys.argv[3]

    def mark(context):
        with open(os.path.join(HOME, "executions.log"), "a") as log:
            log.write(f"{context.op_handle} {os.getpid()}\\n")

    @op(version="1")
    def source(context):
        mark(context)
        if MODE == "hold":
            open(os.path.join(HOME, "holding"), "w").close()
            time.sleep(60)
        time.sleep(0.05)
        return 1

    @op(version="1")
    def step(context, x):
        mark(context)
        time.sleep(0.05)
        return x + 1

    @op(version="1")
    def combine(context, a, b, c):
        mark(context)
        return a + b + c

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def shared():
        root = source()
        ends = []
        for branch in "abc":
            value = root
            for i in range(3):
                value = step.alias(f"{branch}{i}")(value)
            ends.append(value)
        combine(*ends)

    if __name__ == "__main__":
        go = os.path.join(HOME, "go")
        while not os.path.exists(go):
            time.sleep(0.01)
        with Instance.from_url(URL, storage_dir=os.path.join(HOME, "storage")) as instance:
            result = shared.execute_in_process(instance=instance, raise_on_error=False)
            print("STATUS", result.success, result.output_for_node("combine"))
            print("EXECUTED", " ".join(sorted(result.executed_step_keys)))
    """
)
STEPS = 11  # source, three branches of three, combine


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'instance.db'}"


def _start(tmp_path: Path, url: str, mode: str = "normal") -> subprocess.Popen[str]:
    script = tmp_path / "shared_job.py"
    if not script.exists():
        script.write_text(JOB_FILE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.Popen(
        [sys.executable, str(script), url, str(tmp_path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _executions(tmp_path: Path) -> Counter[str]:
    log = tmp_path / "executions.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[0] for line in lines)


def test_six_runs_started_together_execute_each_step_once(tmp_path, url):
    from memodag import Instance

    Instance.from_url(url, storage_dir=tmp_path / "storage").close()  # the schema, once
    runs = [_start(tmp_path, url) for _ in range(6)]
    time.sleep(1.0)  # every process imported memodag and waits for the signal
    (tmp_path / "go").touch()
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        assert "STATUS True 12" in out, out + err
    executions = _executions(tmp_path)
    assert len(executions) == STEPS
    assert set(executions.values()) == {1}, executions  # no step computed twice
    executed = [out.split("EXECUTED", 1)[1].split() for out, _ in outputs]
    assert sum(len(keys) for keys in executed) == STEPS


def _says_it_waits(instance) -> bool:
    from memodag import EventType

    runs = instance.get_runs()
    if len(runs) < 2:
        return False
    logs = instance.get_events(runs[0].run_id, [EventType.LOG])
    return any(e.step_key == "source" and e.message.startswith("waiting for run") for e in logs)


def test_a_run_whose_holder_is_killed_takes_the_step_over(tmp_path, url, monkeypatch):
    from memodag import Instance

    Instance.from_url(url, storage_dir=tmp_path / "storage").close()
    (tmp_path / "go").touch()
    holder = _start(tmp_path, url, "hold")
    deadline = time.monotonic() + 60
    while not (tmp_path / "holding").exists():
        assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()
        time.sleep(0.05)
    waiter = _start(tmp_path, url)
    with Instance.from_url(url, storage_dir=tmp_path / "storage") as instance:
        # the second run says it waits for the first, and does not compute the step itself
        while not _says_it_waits(instance):
            assert waiter.poll() is None and time.monotonic() < deadline, waiter.communicate()
            time.sleep(0.05)
    assert _executions(tmp_path)["source"] == 1
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    killed = time.monotonic()
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert "STATUS True 12" in out
    assert "source" in out.split("EXECUTED", 1)[1].split()  # taken over
    assert time.monotonic() - killed < 10  # not the 60 s the dead holder would have taken
    assert _executions(tmp_path)["source"] == 2


def test_a_run_whose_end_raises_still_ends_and_frees_its_steps(tmp_path):
    # a listener that raises while the run records its end (as a second Ctrl-C could): the run
    # must not stay STARTED holding leases, or every later run of the job in this live process
    # would wait on them
    import threading

    from memodag import MEMOIZED_RUN_TAG, EventType, Instance, RunStatus, job, op
    from memodag.engine.execute import execute_job

    instance = Instance.from_url(f"sqlite:///{tmp_path / 'i.db'}", storage_dir=tmp_path / "s")

    @op(version="1")
    def a() -> int:
        return 1

    @op(version="1")
    def b(a: int) -> int:
        return a + 1

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def pair():
        b(a())

    def breaks(event):
        if event.step_key == "b" or event.event_type in (
            EventType.RUN_FAILURE,
            EventType.RUN_SUCCESS,
        ):
            raise RuntimeError("listener broke")

    with pytest.raises(RuntimeError, match="listener broke"):
        execute_job(pair, instance=instance, listeners=[breaks])
    (first,) = instance.get_runs()
    assert first.status is not RunStatus.STARTED

    finished: dict[str, bool] = {}
    second = threading.Thread(
        target=lambda: finished.update(ok=pair.execute_in_process(instance=instance).success),
        daemon=True,
    )
    second.start()
    second.join(30)
    assert finished == {"ok": True}, "the next run waited on the ended run's leases"
    instance.close()


def test_a_memoized_chain_commits_once_per_executed_step(tmp_path, url, monkeypatch):
    # an executed step's outcome and the lease on the step it makes ready go in one commit:
    # a memoized cold chain writes once per step, not twice (leases cost no extra transaction)
    from memodag import MEMOIZED_RUN_TAG, Instance, job, op
    from memodag.storage.instance.sql import SqlInstanceStorage

    writes = Counter[str]()
    run = SqlInstanceStorage._run

    def counting(self, work, write):
        writes["write"] += bool(write)
        return run(self, work, write)

    @op(version="1")
    def first() -> int:
        return 0

    @op(version="1")
    def inc(x: int) -> int:
        return x + 1

    steps = 40

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def chain():
        value = first()
        for i in range(1, steps):
            value = inc.alias(f"op{i}")(value)

    with Instance.from_url(url, storage_dir=tmp_path / "storage") as instance:
        monkeypatch.setattr(SqlInstanceStorage, "_run", counting)
        result = chain.execute_in_process(instance=instance)
        assert result.success and result.output_for_node(f"op{steps - 1}") == steps - 1
        assert len(result.executed_step_keys) == steps
        # the run's start and end, its first claim, a few pin narrowings: under 12 others
        assert steps <= writes["write"] < steps + 12, writes
        # the chain stays claimed step by step: a second run is memoized whole
        again = chain.execute_in_process(instance=instance)
        assert len(again.memoized_step_keys) == steps
