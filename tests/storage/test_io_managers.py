"""The built-in io managers through jobs: where outputs go, and the addresses the log records."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest

from memodag import (
    DynamicOut,
    DynamicOutput,
    EventType,
    ExecutionError,
    InitResourceContext,
    InputContext,
    IOManager,
    Out,
    OutputContext,
    StorageError,
    io_manager,
    job,
    mem_io_manager,
    object_store_io_manager,
    op,
    versioned_filesystem_io_manager,
)


@op
def source():
    return 20


@op
def double(source):
    return source * 2


@op
def add_one(double):
    return double + 1


def test_fs_io_manager_records_every_address_and_load(instance):
    @job
    def chain():
        add_one(double(source()))

    result = chain.execute_in_process(instance=instance)
    assert result.output_for_node("add_one") == 41

    addresses = instance.get_output_addresses(result.run_id)
    assert set(addresses) == {
        ("source", "result", None),
        ("double", "result", None),
        ("add_one", "result", None),
    }
    for (step, _, _), address in addresses.items():
        assert address.io_manager_key == "io_manager"
        assert address.serializer == "pickle"
        assert address.run_id == result.run_id
        path = Path(address.uri)
        assert path == instance.storage_dir / result.run_id / f"{step}.result.pkl"
        assert path.is_file()

    loaded = instance.get_events(result.run_id, [EventType.LOADED_INPUT])
    assert [(e.step_key, e.data["input"]) for e in loaded] == [
        ("double", "source"),
        ("add_one", "double"),
    ]
    # each load names the address it read, exactly as recorded when the output was handled
    assert loaded[0].data["address"] == addresses[("source", "result", None)].to_dict()
    assert loaded[1].data["address"] == addresses[("double", "result", None)].to_dict()


def test_fs_io_manager_base_dir_from_run_config(tmp_path, instance):
    @job
    def chain():
        double(source())

    base = tmp_path / "elsewhere"
    result = chain.execute_in_process(
        run_config={"resources": {"io_manager": {"config": {"base_dir": str(base)}}}},
        instance=instance,
    )
    assert Path(result.output_address("double").uri) == base / result.run_id / "double.result.pkl"
    assert result.output_for_node("double") == 40


def test_mem_io_manager_writes_no_files(instance):
    @job(resource_defs={"io_manager": mem_io_manager})
    def chain():
        add_one(double(source()))

    result = chain.execute_in_process(instance=instance)
    assert result.output_for_node("add_one") == 41
    assert result.output_for_node("source") == 20
    address = result.output_address("double")
    assert address.uri == f"memory://{result.run_id}/double/result"
    assert address.serializer is None
    assert not instance.storage_dir.exists() or not any(instance.storage_dir.rglob("*"))
    assert len(instance.get_events(result.run_id, [EventType.LOADED_INPUT])) == 2


def test_mem_io_manager_cannot_serve_a_later_run(instance):
    @job(resource_defs={"io_manager": mem_io_manager})
    def chain():
        double(source())

    parent = chain.execute_in_process(instance=instance)
    runs_before = len(instance.get_runs())
    with pytest.raises(ExecutionError, match="kept in memory") as err:
        chain.execute_in_process(
            instance=instance, parent_run_id=parent.run_id, step_selection=["double"]
        )
    assert "source.result" in str(err.value)
    assert len(instance.get_runs()) == runs_before, "refused before the run was recorded"


def test_each_output_picks_its_io_manager(tmp_path, instance):
    memory_root = f"memory://memodag-test-{uuid.uuid4().hex[:8]}"

    @op(
        out={
            "on_disk": Out(),
            "in_memory": Out(io_manager_key="mem"),
            "in_store": Out(io_manager_key="store", serializer="json"),
        }
    )
    def split():
        from memodag import Output

        yield Output(1, "on_disk")
        yield Output(2, "in_memory")
        yield Output([3], "in_store")

    @op
    def join(a, b, c):
        return a + b + c[0]

    @job(
        resource_defs={
            "mem": mem_io_manager,
            "store": object_store_io_manager.configured({"base_url": memory_root}),
        }
    )
    def mixed():
        a, b, c = split()
        join(a, b, c)

    result = mixed.execute_in_process(instance=instance)
    assert result.output_for_node("join") == 6
    addresses = instance.get_output_addresses(result.run_id)
    by_output = {k[1]: a for k, a in addresses.items() if k[0] == "split"}
    assert by_output["on_disk"].io_manager_key == "io_manager"
    assert Path(by_output["on_disk"].uri).is_file()
    assert by_output["in_memory"].io_manager_key == "mem"
    assert by_output["in_store"].io_manager_key == "store"
    assert by_output["in_store"].serializer == "json"
    uri = by_output["in_store"].uri
    assert uri.startswith("memory://") and uri.endswith("/split.in_store.json")
    with fsspec.open(uri, "rb") as f:
        assert f.read() == b"[3]"


def test_object_store_on_file_url(tmp_path, instance):
    base = tmp_path / "objects"

    @job(
        resource_defs={
            "io_manager": object_store_io_manager.configured({"base_url": f"file://{base}"})
        }
    )
    def chain():
        add_one(double(source()))

    result = chain.execute_in_process(instance=instance)
    assert result.output_for_node("add_one") == 41
    assert Path(result.output_address("double").uri) == base / result.run_id / "double.result.pkl"


def test_object_store_on_memory_url_from_run_config(instance):
    root = f"memory://memodag-test-{uuid.uuid4().hex[:8]}/outputs"

    @job(resource_defs={"io_manager": object_store_io_manager})
    def chain():
        add_one(double(source()))

    result = chain.execute_in_process(
        run_config={"resources": {"io_manager": {"config": {"base_url": root}}}},
        instance=instance,
    )
    assert result.output_for_node("add_one") == 41
    fs = fsspec.filesystem("memory")
    stored = sorted(fs.find(root))
    assert [p.rsplit("/", 1)[-1] for p in stored] == [
        "add_one.result.pkl",
        "double.result.pkl",
        "source.result.pkl",
    ]


def test_dynamic_pieces_are_stored_and_addressed_one_by_one(instance):
    @op(out=DynamicOut())
    def fan():
        for key in ("a", "b"):
            yield DynamicOutput(key.upper(), mapping_key=key)

    @job
    def pieces():
        fan()

    result = pieces.execute_in_process(instance=instance)
    addresses = instance.get_output_addresses(result.run_id)
    assert {k[2] for k in addresses} == {"a", "b"}
    for (_, _, key), address in addresses.items():
        assert (
            Path(address.uri) == instance.storage_dir / result.run_id / "fan.result" / f"{key}.pkl"
        )
    assert result.output_for_node("fan") == {"a": "A", "b": "B"}


def test_reexecution_loads_from_the_parent_runs_files(instance):
    calls: list[str] = []

    @op
    def expensive():
        calls.append("expensive")
        return 5

    @op
    def cheap(expensive):
        calls.append("cheap")
        return expensive + 1

    @job
    def pipeline():
        cheap(expensive())

    parent = pipeline.execute_in_process(instance=instance)
    child = pipeline.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["cheap"]
    )
    assert calls == ["expensive", "cheap", "cheap"]
    assert child.output_for_node("cheap") == 6
    (load,) = instance.get_events(child.run_id, [EventType.LOADED_INPUT])
    assert load.data["address"]["run_id"] == parent.run_id
    assert load.data["address"]["uri"] == parent.output_address("expensive").uri
    assert instance.get_run(child.run_id).parent_run_id == parent.run_id


class _DictIOManager(IOManager):
    def __init__(self) -> None:
        self.stored: dict[str, Any] = {}

    def handle_output(self, context: OutputContext, obj: Any) -> str:
        uri = "dict://" + "/".join(context.get_identifier())
        self.stored[uri] = obj
        return uri

    def load_input(self, context: InputContext) -> Any:
        return self.stored[context.address.uri]


def test_custom_io_manager_addresses_are_recorded(instance):
    shared = _DictIOManager()

    @io_manager
    def dict_io_manager():
        return shared

    @job(resource_defs={"io_manager": dict_io_manager})
    def chain():
        double(source())

    result = chain.execute_in_process(instance=instance)
    assert result.output_for_node("double") == 40
    address = instance.get_output_addresses(result.run_id)[("double", "result", None)]
    assert address.uri == f"dict://{result.run_id}/double/result"
    assert address.serializer is None
    assert shared.stored[address.uri] == 40


def _versioned_manager(base: Path) -> Any:
    definition = versioned_filesystem_io_manager.configured({"base_dir": str(base)})
    return definition.resource_fn(
        InitResourceContext(
            resource_config={"base_dir": str(base), "serializer": "pickle"}, resources=None
        )
    )


def test_versioned_manager_stores_by_version(tmp_path):
    manager = _versioned_manager(tmp_path)
    v1 = OutputContext("step", "result", "run-1", version="v1")
    assert not manager.has_output(v1)
    uri = manager.handle_output(v1, {"n": 1})
    assert Path(uri) == tmp_path / "step" / "result" / "v1.pkl"
    assert manager.has_output(v1)
    # another run asking for the same version finds it; another version is not there
    assert manager.has_output(OutputContext("step", "result", "run-2", version="v1"))
    assert not manager.has_output(OutputContext("step", "result", "run-2", version="v2"))
    loaded = manager.load_input(
        InputContext("x", "consumer", OutputContext("step", "result", "run-2", version="v1"))
    )
    assert loaded == {"n": 1}


def test_versioned_manager_needs_a_version(tmp_path):
    manager = _versioned_manager(tmp_path)
    with pytest.raises(StorageError, match=r"needs a version for output 'step\.result'"):
        manager.handle_output(OutputContext("step", "result", "run-1"), 1)
    assert not list(tmp_path.rglob("*"))


def test_a_custom_in_memory_manager_is_refused_for_worker_processes(instance):
    from memodag import IOManager, multiprocess_executor

    class DictManager(IOManager):
        in_process_only = True

        def __init__(self) -> None:
            self.values: dict[str, object] = {}

        def handle_output(self, context, obj):
            self.values[context.step_key] = obj

        def load_input(self, context):
            return self.values[context.upstream_output.step_key]

    @job(resource_defs={"io_manager": DictManager()}, executor_def=multiprocess_executor)
    def in_memory_on_workers():
        double(source())

    with pytest.raises(ExecutionError, match="cannot cross to worker processes"):
        in_memory_on_workers.execute_in_process(instance=instance)
    assert instance.get_runs() == []
