"""The engine loop on its own, driven by a fake executor that returns scripted outcomes.

No op runs here: each test says what every attempt yields and checks what the loop decides
(order, memoization, retries, skips, fan-out expansion into the run's own steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from memodag import DynamicOut, DynamicOutput, Instance, RetryPolicy, job, op
from memodag.engine.engine import Engine, Memoizer
from memodag.engine.events import EventLog
from memodag.executors.base import Executor
from memodag.plan.plan import ExecutionPlan, ExecutionStep, build_plan
from memodag.plan.run_config import resolve_run_config
from memodag.runtime.step import StepOutcome, StepTask, StoredOutput
from memodag.storage.io_manager import Address

Script = Callable[[StepTask], StepOutcome]


class FakeExecutor(Executor):
    """Answers each task with ``script(task)``, handing outcomes back a batch at a time."""

    in_process = True

    def __init__(self, script: Script) -> None:
        self.script = script
        self.submitted: list[str] = []
        self._done: list[StepOutcome] = []

    def submit(self, task: StepTask) -> None:
        self.submitted.append(task.step_key)
        self._done.append(self.script(task))

    @property
    def in_flight(self) -> int:
        return len(self._done)

    def wait(self, timeout: float | None) -> list[StepOutcome]:
        done, self._done = self._done, []
        return done


class StoredMemoizer(Memoizer):
    """Memoizes exactly the steps named in ``stored``."""

    enabled = True

    def __init__(self, stored: set[str]) -> None:
        self.stored_keys = stored

    def stored(self, step: ExecutionStep) -> list[Address] | None:
        if step.key not in self.stored_keys:
            return None
        return [address(step.key, name) for name in step.op_def.outs]


def address(step_key: str, output: str, mapping_key: str | None = None) -> Address:
    return Address(
        "io_manager", f"file:///{step_key}", "pickle", "run", step_key, output, mapping_key
    )


def succeed(task: StepTask, pieces: tuple[str, ...] = ()) -> StepOutcome:
    outputs = []
    for name, out in task.op_def.outs.items():
        if out.is_dynamic:
            outputs += [StoredOutput(name, address(task.step_key, name, k), k) for k in pieces]
        else:
            outputs.append(StoredOutput(name, address(task.step_key, name)))
    return StepOutcome(task.step_key, True, [], outputs)


def fail(task: StepTask) -> StepOutcome:
    return StepOutcome(task.step_key, False, [], attempt=task.attempt)


@pytest.fixture
def instance() -> Iterator[Instance]:
    inst = Instance.ephemeral()
    yield inst
    inst.close()


def walk(
    job_def, script: Script, instance: Instance, memoizer: Memoizer | None = None
) -> tuple[Engine, FakeExecutor, ExecutionPlan]:
    plan = build_plan(job_def, resolve_run_config(job_def, None))
    executor = FakeExecutor(script)
    engine = Engine(plan, "run", executor, EventLog(instance), memoizer or Memoizer())
    engine.add_steps(list(engine.steps.values()))
    engine.run()
    return engine, executor, plan


@op
def top():
    return 1


@op
def left(x):
    return x


@op
def right(x):
    return x


@op
def join(a, b):
    return a + b


@job
def diamond():
    t = top()
    join(left(t), right(t))


def test_a_step_is_submitted_only_after_all_its_upstreams_succeeded(instance):
    engine, executor, _ = walk(diamond, succeed, instance)
    order = executor.submitted
    assert order[0] == "top" and order[-1] == "join"
    assert set(order) == {"top", "left", "right", "join"}
    assert engine.result.executed == 4 and engine.result.success


def test_memoized_steps_are_not_submitted_and_release_their_consumers(instance):
    engine, executor, _ = walk(diamond, succeed, instance, StoredMemoizer({"top", "left"}))
    assert executor.submitted == ["right", "join"]
    assert engine.status["top"] == engine.status["left"] == "memoized"
    assert engine.result.memoized == 2


def test_a_failure_skips_everything_downstream(instance):
    engine, executor, _ = walk(
        diamond, lambda t: fail(t) if t.step_key == "left" else succeed(t), instance
    )
    assert "join" not in executor.submitted
    assert engine.status["left"] == "failed" and engine.status["join"] == "skipped"
    assert not engine.result.success


def test_a_failed_attempt_is_retried_per_policy(instance):
    @op(retry_policy=RetryPolicy(max_retries=2))
    def flaky():
        return 1

    @job
    def retried():
        left(flaky())

    attempts: list[int] = []

    def script(task: StepTask) -> StepOutcome:
        if task.step_key == "flaky":
            attempts.append(task.attempt)
            return fail(task) if task.attempt < 2 else succeed(task)
        return succeed(task)

    engine, executor, _ = walk(retried, script, instance)
    assert attempts == [0, 1, 2]
    assert executor.submitted[-1] == "left" and engine.result.success


@op(out=DynamicOut())
def pieces():
    yield DynamicOutput(1, mapping_key="a")


@op
def double(x):
    return 2 * x


@op
def total(xs):
    return sum(xs)


@op
def report(t):
    return t


@job
def fanned():
    report(total(pieces().map(double).collect()))


def test_fan_out_clones_are_run_state_and_the_plan_is_left_unchanged(instance):
    engine, executor, plan = walk(
        fanned, lambda t: succeed(t, ("a", "b")) if t.step_key == "pieces" else succeed(t), instance
    )
    assert executor.submitted == ["pieces", "double[a]", "double[b]", "total", "report"]
    assert set(plan.steps) == {"pieces", "report"}
    assert {"double[a]", "double[b]", "total"} <= set(engine.steps)
    # the same plan walks again from scratch, with other pieces
    _, executor, _ = walk(
        fanned, lambda t: succeed(t, ("z",)) if t.step_key == "pieces" else succeed(t), instance
    )
    assert executor.submitted == ["pieces", "double[z]", "total", "report"]


def test_pieces_an_outcome_cannot_tell_leave_their_consumers_undecided(instance):
    def script(task: StepTask) -> StepOutcome:
        outcome = succeed(task)
        if task.step_key == "pieces":
            outcome.unknown_pieces = frozenset({"result"})
        return outcome

    engine, executor, _ = walk(fanned, script, instance)
    assert executor.submitted == ["pieces"]
    assert engine.unexpanded == [("pieces", "result")]
    assert engine.result.unfinished == ["report"]
