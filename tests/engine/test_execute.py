"""Running jobs in process: results, the run record, events, the default instance, multiple and
optional outputs, and per-output storage with built-in and custom io managers."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from memodag import (
    EventType,
    Instance,
    IOManager,
    Out,
    Output,
    RunStatus,
    io_manager,
    job,
    mem_io_manager,
    op,
)


@op
def make_numbers():
    return [1, 2, 3]


@op
def total(numbers):
    return sum(numbers)


@job
def summing():
    total(make_numbers())


def test_a_run_returns_outputs_and_is_recorded_as_succeeded(instance):
    result = summing.execute_in_process(instance=instance, tags={"owner": "ana"})

    assert result.success
    assert result.output_for_node("total") == 6
    assert result.output_for_node("make_numbers") == [1, 2, 3]
    run = instance.get_run(result.run_id)
    assert run.status == RunStatus.SUCCESS
    assert run.job_name == "summing"
    assert run.tags["owner"] == "ana"
    assert run.end_time is not None and run.end_time >= run.start_time


def test_events_tell_the_story_of_the_run_in_order(instance):
    result = summing.execute_in_process(instance=instance)
    kinds = [(e.event_type, e.step_key) for e in result.all_events]

    assert kinds[0] == (EventType.RUN_START, None)
    assert kinds[-1] == (EventType.RUN_SUCCESS, None)
    assert kinds.index((EventType.STEP_SUCCESS, "make_numbers")) < kinds.index(
        (EventType.STEP_START, "total")
    )
    assert (EventType.LOADED_INPUT, "total") in kinds
    handled = [e for e in result.all_events if e.event_type == EventType.HANDLED_OUTPUT]
    assert {e.step_key for e in handled} == {"make_numbers", "total"}
    assert all(e.run_id == result.run_id for e in result.all_events)


def test_context_log_becomes_a_log_event_and_python_logging(instance, caplog):
    @op
    def chatty(context):
        context.log.info("processed %d rows", 42)
        context.log.warning("almost empty")
        return None

    @job
    def talk():
        chatty()

    with caplog.at_level(logging.INFO, logger="memodag"):
        result = talk.execute_in_process(instance=instance)
    logs = [e for e in result.all_events if e.event_type == EventType.LOG]
    assert [(e.step_key, e.message, e.data["level"]) for e in logs] == [
        ("chatty", "processed 42 rows", "INFO"),
        ("chatty", "almost empty", "WARNING"),
    ]
    assert "processed 42 rows" in caplog.text


def test_log_exception_carries_the_traceback(instance):
    @op
    def recovering(context):
        try:
            {}["missing"]
        except KeyError:
            context.log.exception("lookup failed")
        return "recovered"

    @job
    def recover():
        recovering()

    result = recover.execute_in_process(instance=instance)
    (log,) = [e for e in result.all_events if e.event_type == EventType.LOG]
    assert log.data["level"] == "ERROR"
    assert log.message.startswith("lookup failed\nTraceback")
    assert "KeyError: 'missing'" in log.message


def test_the_context_carries_run_id_op_def_config_and_tags(instance):
    seen = {}

    @op(config_schema={"n": int}, tags={"kind": "probe"})
    def probe(context):
        seen.update(
            run_id=context.run_id,
            op_def=context.op_def,
            config=context.op_config,
            step_key=context.step_key,
            tags=dict(context.tags),
        )

    @job
    def probing():
        probe()

    result = probing.execute_in_process(
        instance=instance, run_config={"ops": {"probe": {"config": {"n": 1}}}}
    )
    assert seen == {
        "run_id": result.run_id,
        "op_def": probe,
        "config": {"n": 1},
        "step_key": "probe",
        "tags": {"kind": "probe"},
    }


def test_without_an_instance_the_default_one_lives_in_memodag_home(memodag_home):
    result = summing.execute_in_process()

    assert (memodag_home / "instance.db").exists()
    address = result.output_address("total")
    assert Path(address.uri).is_relative_to(memodag_home / "storage")
    assert pickle.loads(Path(address.uri).read_bytes()) == 6
    reopened = Instance.get()
    try:
        assert reopened.get_run(result.run_id).status == RunStatus.SUCCESS
    finally:
        reopened.close()


def test_explicit_run_id_is_used(instance):
    result = summing.execute_in_process(instance=instance, run_id="my-run-1")
    assert result.run_id == "my-run-1"
    assert instance.get_run("my-run-1").status == RunStatus.SUCCESS


# ---- multiple and optional outputs ------------------------------------------------------------


def test_several_outputs_are_stored_and_consumed_separately(instance):
    @op(out={"evens": Out(), "odds": Out()})
    def partition(numbers):
        yield Output([n for n in numbers if n % 2 == 0], "evens")
        yield Output([n for n in numbers if n % 2], "odds")

    @job
    def partitioned():
        evens, odds = partition(make_numbers())
        total.alias("sum_evens")(evens)
        total.alias("sum_odds")(odds)

    result = partitioned.execute_in_process(instance=instance)
    assert result.output_for_node("partition", "evens") == [2]
    assert result.output_for_node("partition", output_name="odds") == [1, 3]
    assert result.output_for_node("sum_evens") == 2
    assert result.output_for_node("sum_odds") == 4


def test_an_optional_output_not_yielded_skips_its_consumers_and_the_run_succeeds(instance):
    consumed = []

    @op(out={"valid": Out(), "rejects": Out(is_required=False)})
    def validate(numbers):
        yield Output(numbers, "valid")

    @op
    def report_rejects(rejects):
        consumed.append(rejects)

    @op
    def downstream_of_report(nothing):
        consumed.append(nothing)

    @job
    def validating():
        valid, rejects = validate(make_numbers())
        total(valid)
        downstream_of_report(report_rejects(rejects))

    result = validating.execute_in_process(instance=instance)
    assert result.success
    assert consumed == []
    assert result.step_status["report_rejects"] == "skipped"
    assert result.step_status["downstream_of_report"] == "skipped"
    assert result.output_for_node("total") == 6
    skipped = [e.step_key for e in result.all_events if e.event_type == EventType.STEP_SKIPPED]
    assert sorted(skipped) == ["downstream_of_report", "report_rejects"]
    assert instance.get_run(result.run_id).status == RunStatus.SUCCESS


def test_a_required_output_not_yielded_fails_the_step(instance):
    @op(out={"a": Out(), "b": Out()})
    def half():
        yield Output(1, "a")

    @job
    def incomplete():
        half()

    result = incomplete.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "did not produce required output(s) ['b']" in failure.message


# ---- per-output storage -------------------------------------------------------------------------


def test_outputs_go_to_the_io_manager_their_out_names(instance):
    @op(out={"kept": Out(), "scratch": Out(io_manager_key="mem")})
    def produce():
        return "on disk", "in memory"

    @op
    def join(kept, scratch):
        return f"{kept} + {scratch}"

    @job(resource_defs={"mem": mem_io_manager})
    def mixed():
        kept, scratch = produce()
        join(kept, scratch)

    result = mixed.execute_in_process(instance=instance)
    assert result.output_for_node("join") == "on disk + in memory"
    addresses = instance.get_output_addresses(result.run_id)
    kept = addresses[("produce", "kept", None)]
    scratch = addresses[("produce", "scratch", None)]
    assert kept.io_manager_key == "io_manager"
    assert Path(kept.uri).is_file()
    assert Path(kept.uri).is_relative_to(instance.storage_dir)
    assert scratch.io_manager_key == "mem"
    assert scratch.uri.startswith("memory://")
    assert addresses[("join", "result", None)].io_manager_key == "io_manager"


class RecordingIOManager(IOManager):
    """Keeps values in a dict (``values``: shared by the managers built for one store, as a
    database is) and remembers what each load was asked for."""

    def __init__(self, prefix: str, values: dict[str, object] | None = None) -> None:
        self.prefix = prefix
        self.values: dict[str, object] = {} if values is None else values
        self.loads: list[dict[str, object]] = []

    def handle_output(self, context, obj):
        uri = f"{self.prefix}://{context.run_id}/{context.step_key}/{context.name}"
        self.values[uri] = obj
        return uri

    def load_input(self, context):
        self.loads.append(
            {
                "input": context.name,
                "upstream_step": context.upstream_output.step_key,
                "upstream_output": context.upstream_output.name,
                "uri": context.address.uri,
            }
        )
        return self.values[context.address.uri]


def test_a_custom_io_manager_stores_and_loads_by_address(instance):
    managers = []
    stored: dict[str, object] = {}

    @io_manager(config_schema={"prefix": str})
    def recording(init_context):
        manager = RecordingIOManager(init_context.resource_config["prefix"], stored)
        managers.append(manager)
        return manager

    @op(out=Out(io_manager_key="rec"))
    def produce():
        return {"rows": 3}

    @op
    def consume(data):
        return data["rows"]

    @job(resource_defs={"rec": recording})
    def custom():
        consume(produce())

    result = custom.execute_in_process(
        instance=instance, run_config={"resources": {"rec": {"config": {"prefix": "rec"}}}}
    )
    (manager,) = managers  # one for the run
    assert result.output_for_node("consume") == 3
    uri = f"rec://{result.run_id}/produce/result"
    assert manager.loads[0] == {
        "input": "data",
        "upstream_step": "produce",
        "upstream_output": "result",
        "uri": uri,
    }
    address = instance.get_output_addresses(result.run_id)[("produce", "result", None)]
    assert (address.io_manager_key, address.uri) == ("rec", uri)
    assert result.output_for_node("produce") == {"rows": 3}


def test_an_io_manager_object_can_be_bound_directly(instance):
    manager = RecordingIOManager("direct")

    @op(out=Out(io_manager_key="rec"))
    def produce():
        return 5

    @op
    def consume(x):
        return x * 2

    @job(resource_defs={"rec": manager})
    def direct():
        consume(produce())

    result = direct.execute_in_process(instance=instance)
    assert result.output_for_node("consume") == 10
    assert list(manager.values) == [f"direct://{result.run_id}/produce/result"]
    assert manager.loads[0]["upstream_step"] == "produce"


def test_the_default_io_manager_can_be_replaced(instance):
    @job(resource_defs={"io_manager": mem_io_manager})
    def in_memory():
        total(make_numbers())

    result = in_memory.execute_in_process(instance=instance)
    assert result.output_for_node("total") == 6
    assert result.output_address("total").uri.startswith("memory://")
    assert not instance.storage_dir.exists() or not any(instance.storage_dir.rglob("*"))


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_fs_io_manager_config_picks_the_directory_and_format(instance, tmp_path, serializer):
    result = summing.execute_in_process(
        instance=instance,
        run_config={
            "resources": {
                "io_manager": {
                    "config": {"base_dir": str(tmp_path / "out"), "serializer": serializer}
                }
            }
        },
    )
    address = result.output_address("total")
    assert Path(address.uri).is_relative_to(tmp_path / "out")
    assert address.serializer == serializer
    assert result.output_for_node("total") == 6
