"""A stored output that is gone, truncated or replaced is never served: a memoized run
recomputes it (and says so, naming the address), on every built-in path store and executor."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import fsspec
import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    EventType,
    Instance,
    OutputLostError,
    fs_io_manager,
    in_process_executor,
    job,
    multiprocess_executor,
    object_store_io_manager,
    op,
)


@op(version="1")
def source() -> int:
    return 2


@op(version="1")
def double(source: int) -> int:
    return source * 2


@op(version="1")
def final(double: int) -> int:
    return double * 10


def _job(kind: str, tmp_path: Path, executor: str, request: Any) -> Any:
    if kind == "fs":
        manager = fs_io_manager.configured({"base_dir": str(tmp_path / "out")})
    elif kind == "file":
        manager = object_store_io_manager.configured({"base_url": f"file://{tmp_path / 'out'}"})
    else:
        bucket = request.getfixturevalue("s3_bucket")
        manager = object_store_io_manager.configured(
            {"base_url": f"s3://{bucket.name}/out", "storage_options": bucket.storage_options}
        )
    executor_def = (
        multiprocess_executor.configured({"max_concurrent": 2})
        if executor == "multiprocess"
        else in_process_executor
    )

    @job(
        name="lost",
        resource_defs={"io_manager": manager},
        executor_def=executor_def,
        tags={MEMOIZED_RUN_TAG: "true"},
    )
    def lost():
        final(double(source()))

    return lost


class _Files:
    """The stored files of a run, reached the way a user (or a failing disk) would: the local
    path, or the object through its own fsspec client."""

    def __init__(self, instance: Instance, run_id: str, request: Any) -> None:
        self.addresses = instance.get_output_addresses(run_id)
        self.request = request

    def uri(self, step: str) -> str:
        return self.addresses[(step, "result", None)].uri

    def _fs(self, uri: str) -> tuple[Any, str]:
        if uri.startswith("s3://"):
            bucket = self.request.getfixturevalue("s3_bucket")
            fs = fsspec.filesystem(
                "s3", skip_instance_cache=True, client_kwargs={}, **bucket.storage_options
            )
            return fs, uri[len("s3://") :]
        return fsspec.filesystem("file"), uri[7:] if uri.startswith("file://") else uri

    def delete(self, step: str) -> None:
        fs, path = self._fs(self.uri(step))
        fs.rm_file(path)

    def write(self, step: str, data: bytes) -> None:
        fs, path = self._fs(self.uri(step))
        with fs.open(path, "wb") as file:
            file.write(data)

    def read(self, step: str) -> bytes:
        fs, path = self._fs(self.uri(step))
        with fs.open(path, "rb") as file:
            return bytes(file.read())


def _fault(files: _Files, fault: str) -> list[str]:
    """Damage the stored outputs; return the steps a memoized rerun must warn about."""
    if fault == "delete":
        files.delete("double")
        return ["double"]
    if fault == "truncate":
        files.write("double", files.read("double")[:3])
        return ["double"]
    if fault == "replace-middle":
        # another valid pickle of the very same size: only its content hash tells it apart;
        # the final output is gone too, so the rerun must load the altered one
        assert len(pickle.dumps(5, protocol=5)) == len(files.read("double"))
        files.write("double", pickle.dumps(5, protocol=5))
        files.delete("final")
        return ["double"]
    assert fault == "replace-final"
    assert len(pickle.dumps(41, protocol=5)) == len(files.read("final"))
    files.write("final", pickle.dumps(41, protocol=5))
    return ["final"]


def _warnings(instance: Instance, run_id: str) -> list[str]:
    return [
        e.message
        for e in instance.get_events(run_id, [EventType.LOG])
        if (e.data or {}).get("level") == "WARNING"
    ]


@pytest.mark.parametrize("fault", ["delete", "truncate", "replace-middle", "replace-final"])
@pytest.mark.parametrize("kind", ["fs", "file", "s3"])
def test_a_lost_or_altered_output_is_recomputed(kind, fault, tmp_path, request, any_instance):
    pipeline = _job(kind, tmp_path, "in_process", request)
    first = pipeline.execute_in_process(instance=any_instance)
    files = _Files(any_instance, first.run_id, request)
    warned = _fault(files, fault)

    again = pipeline.execute_in_process(instance=any_instance)

    assert again.success
    assert again.output_for_node("final") == 40
    messages = _warnings(any_instance, again.run_id)
    for step in warned:
        assert any(files.uri(step) in m for m in messages), messages
    # what was recomputed is indexed again: the next run reuses everything
    third = pipeline.execute_in_process(instance=any_instance)
    memoized = any_instance.get_events(third.run_id, [EventType.STEP_MEMOIZED])
    assert {e.step_key for e in memoized} == {"source", "double", "final"}
    assert third.output_for_node("final") == 40


@pytest.mark.parametrize("fault", ["delete", "truncate", "replace-middle", "replace-final"])
def test_a_lost_output_is_recomputed_in_worker_processes(fault, tmp_path, request, instance):
    pipeline = _job("fs", tmp_path, "multiprocess", request)
    first = pipeline.execute_in_process(instance=instance)
    files = _Files(instance, first.run_id, request)
    warned = _fault(files, fault)

    again = pipeline.execute_in_process(instance=instance)

    assert again.success
    assert again.output_for_node("final") == 40
    messages = _warnings(instance, again.run_id)
    assert all(any(files.uri(s) in m for m in messages) for s in warned), messages


def test_a_lost_input_of_a_memoized_step_recomputes_its_producers_recursively(
    tmp_path, request, instance
):
    pipeline = _job("fs", tmp_path, "in_process", request)
    first = pipeline.execute_in_process(instance=instance)
    files = _Files(instance, first.run_id, request)
    # every stored output gone: the final one is found missing before it is reused, its
    # input when it is about to be, and so on up
    for step in ("source", "double", "final"):
        files.delete(step)

    again = pipeline.execute_in_process(instance=instance)

    assert again.success and again.output_for_node("final") == 40
    executed = instance.get_events(again.run_id, [EventType.STEP_SUCCESS])
    assert {e.step_key for e in executed} == {"source", "double", "final"}


def test_loading_an_altered_output_raises_naming_its_address(tmp_path, request, instance):
    pipeline = _job("fs", tmp_path, "in_process", request)
    first = pipeline.execute_in_process(instance=instance)
    files = _Files(instance, first.run_id, request)
    files.write("final", pickle.dumps(41, protocol=5))

    with pytest.raises(OutputLostError, match="content hash") as info:
        first.output_for_node("final")
    assert files.uri("final") in str(info.value)
    os.unlink(files.uri("final"))
    with pytest.raises(OutputLostError, match="missing"):
        first.output_for_node("final")


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_verify_outputs_finds_and_repairs_lost_objects(kind, tmp_path, request, instance):
    from memodag.versioning.verify import BAD, OK, verify_outputs

    pipeline = _job(kind, tmp_path, "in_process", request)
    first = pipeline.execute_in_process(instance=instance)
    files = _Files(instance, first.run_id, request)
    jobs = {"lost": pipeline}  # a .configured() store is reached through the job's own manager
    assert {i.status for i in verify_outputs(instance, jobs=jobs).items} == {OK}

    files.delete("source")
    files.write("double", pickle.dumps(5, protocol=5))
    report = verify_outputs(instance, jobs=jobs)
    assert {i.step_key: i.reason for i in report.with_status(BAD)} == {
        "source": "missing",
        "double": "content hash differs from the one recorded",
    }
    # sizes only: the same-size replacement is not seen
    assert [
        i.step_key for i in verify_outputs(instance, jobs=jobs, read=False).with_status(BAD)
    ] == ["source"]

    verify_outputs(instance, repair=True, jobs=jobs)
    assert {i.status for i in verify_outputs(instance, jobs=jobs).items} == {OK}
    again = pipeline.execute_in_process(instance=instance)
    executed = instance.get_events(again.run_id, [EventType.STEP_SUCCESS])
    assert {e.step_key for e in executed} == {"source", "double"}
    assert again.output_for_node("final") == 40


def test_a_memoized_fan_out_reads_only_the_outputs_nothing_in_the_job_reads(instance, monkeypatch):
    # a stat checks each reused output; only one no consumer loads (the job's final one) is
    # also read and hashed before reuse: clones gathered by a collector are checked when it loads
    from memodag import DynamicOut, DynamicOutput
    from memodag.storage.io_managers.files import PathIOManager

    @op(version="1", out=DynamicOut())
    def pieces():
        for i in range(3):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op(version="1")
    def twice(x: int) -> int:
        return 2 * x

    @op(version="1")
    def total(xs: list[int]) -> int:
        return sum(xs)

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def fan():
        total(pieces().map(twice).collect())

    fan.execute_in_process(instance=instance)
    hashed: list[str] = []
    checked = PathIOManager.verify

    def spy(self, address, read=False):
        if read:
            hashed.append(address.step_key)
        return checked(self, address, read=read)

    monkeypatch.setattr(PathIOManager, "verify", spy)
    again = fan.execute_in_process(instance=instance)
    assert again.executed_step_keys == [] and again.output_for_node("total") == 6
    assert hashed == ["total"]


def test_an_altered_fan_out_piece_fails_one_run_and_the_next_recomputes_it(tmp_path, instance):
    # a piece replaced by another value of the same size passes the size check at reuse and
    # fails its consumer's load; the fan-out cannot be expanded twice in one run, so that run
    # fails, but the next memoized run computes the fan-out again instead of failing forever
    import glob

    from memodag import DynamicOut, DynamicOutput

    @op(version="1", out=DynamicOut())
    def split():
        for key in ("a", "b"):
            yield DynamicOutput(10 if key == "a" else 20, mapping_key=key)

    @op(version="1")
    def double(x: int) -> int:
        return 2 * x

    @op(version="1")
    def total(xs: list[int]) -> int:
        return sum(xs)

    store = fs_io_manager.configured({"base_dir": str(tmp_path / "data")})

    @job(resource_defs={"io_manager": store}, tags={MEMOIZED_RUN_TAG: "true"})
    def fan():
        total(split().map(double).collect())

    assert fan.execute_in_process(instance=instance).output_for_node("total") == 60
    files = [
        f for f in glob.glob(str(tmp_path / "data" / "**"), recursive=True) if os.path.isfile(f)
    ]
    (piece,) = [f for f in files if "split" in f and f.endswith("a.pkl")]
    (clone,) = [f for f in files if "double[a]" in f]
    assert len(pickle.dumps(11, protocol=5)) == os.path.getsize(piece)
    Path(piece).write_bytes(pickle.dumps(11, protocol=5))
    os.remove(clone)

    failed = fan.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    again = fan.execute_in_process(instance=instance)
    assert again.output_for_node("total") == 60
    assert "split" in again.executed_step_keys
