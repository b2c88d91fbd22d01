"""When an output cannot be stored, the failure names the op, the output, the io manager and the
format, and says what to do; nothing is left at the output's address."""

from __future__ import annotations

import threading
import uuid

import pytest

from memodag import (
    DynamicOut,
    DynamicOutput,
    EventType,
    Out,
    StepExecutionError,
    StorageError,
    job,
    object_store_io_manager,
    op,
)


@op
def make_lock():
    return {"lock": threading.Lock()}


@op
def use(x):
    return 1


def test_an_unpicklable_output_names_op_output_serializer_and_the_way_out(instance, tmp_path):
    @job
    def locked():
        use(make_lock())

    with pytest.raises(StepExecutionError) as info:
        locked.execute_in_process(instance=instance)

    message = str(info.value)
    assert (
        "op 'make_lock' could not store output 'result' (io manager 'io_manager', "
        "serializer 'pickle'): the pickle serializer cannot store this dict: "
        "TypeError: cannot pickle '_thread.lock' object" in message
    )
    assert "Out(serializer='json' or 'parquet')" in message
    assert "Out(io_manager_key=...)" in message
    assert isinstance(info.value.__cause__, StorageError)
    assert TypeError in _causes(info.value)
    # the run's record says the same, and no file (whole or partial) was left behind
    (run,) = instance.get_runs()
    (failure,) = instance.get_events(run.run_id, [EventType.STEP_FAILURE])
    assert "could not store output 'result'" in failure.message
    assert not [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]


def test_a_piece_on_an_object_store_names_its_step_and_piece(instance):
    @op(out=DynamicOut())
    def pieces():
        yield DynamicOutput(1, mapping_key="fine")
        yield DynamicOutput(2, mapping_key="bad")

    @op(out=Out(io_manager_key="store"))
    def hold(x: int):
        return threading.Lock() if x == 2 else x

    @job(
        resource_defs={
            "store": object_store_io_manager.configured(
                {"base_url": f"memory://outputs-{uuid.uuid4().hex}"}
            )
        }
    )
    def fan():
        pieces().map(hold)

    result = fan.execute_in_process(instance=instance, raise_on_error=False)

    (failure,) = [e for e in result.all_events if e.event_type is EventType.STEP_FAILURE]
    assert failure.step_key == "hold[bad]"
    assert failure.message.startswith(
        "StorageError: op 'hold' in step 'hold[bad]' could not store output 'result' "
        "(io manager 'store', serializer 'pickle'): the pickle serializer cannot store this lock"
    )


def _causes(exc: BaseException | None) -> list[type[BaseException]]:
    found = []
    while exc is not None:
        found.append(type(exc))
        exc = exc.__cause__
    return found
