"""gc: dry run by default, keeps what recent runs use, deletes index entries and files."""

from __future__ import annotations

import os
import time

from memodag import MEMOIZED_RUN_TAG, job, op
from memodag.versioning.gc import collect_garbage


@op(version="1", config_schema={"size": int})
def blob(context):
    return b"x" * context.op_config["size"]


@op(version="1")
def measure(data):
    return len(data)


@job(tags={MEMOIZED_RUN_TAG: "true"})
def sized():
    measure(blob())


def run(instance, size: int):
    return sized.execute_in_process(
        run_config={"ops": {"blob": {"config": {"size": size}}}}, instance=instance
    )


def test_dry_run_lists_without_deleting_then_deletes(instance):
    old = run(instance, 1000)
    newest = run(instance, 2000)
    report = collect_garbage(instance, keep_runs=1)
    assert report.dry_run
    dropped = {item.uri for item in report.items}
    assert dropped == {old.output_address("blob").uri, old.output_address("measure").uri}
    assert report.total_bytes >= 1000
    assert all(os.path.exists(uri) for uri in dropped)

    done = collect_garbage(instance, keep_runs=1, dry_run=False)
    assert done.errors == []
    assert not any(os.path.exists(uri) for uri in dropped)
    assert os.path.exists(newest.output_address("blob").uri)
    assert collect_garbage(instance, keep_runs=1).items == []

    # the dropped version is recomputed, the kept one is still memoized
    assert run(instance, 1000).executed_step_keys == ["blob", "measure"]
    assert run(instance, 2000).memoized_step_keys == ["blob", "measure"]


def test_outputs_reused_by_a_recent_memoized_run_are_kept(instance):
    first = run(instance, 10)
    run(instance, 10)  # memoized: reuses the first run's outputs
    report = collect_garbage(instance, keep_runs=1)
    assert first.output_address("blob").uri not in {i.uri for i in report.items}


def test_older_than(instance):
    first = run(instance, 10)
    # a clear gap: the second run's outputs must be stored well after the cut-off
    cutoff = instance.get_run(first.run_id).end_time + 0.05
    time.sleep(0.1)
    second = run(instance, 20)
    report = collect_garbage(instance, older_than=cutoff)
    uris = {i.uri for i in report.items}
    assert first.output_address("blob").uri in uris
    assert second.output_address("blob").uri not in uris


# -- one file, several index entries: the versioned layout is not scoped by job ------------------


def _sharing_jobs(tmp_path):
    from memodag import versioned_filesystem_io_manager

    store = versioned_filesystem_io_manager.configured({"base_dir": str(tmp_path / "data")})

    @op(version="1")
    def load():
        return [1, 2, 3]

    @job(resource_defs={"io_manager": store}, tags={MEMOIZED_RUN_TAG: "true"})
    def east():
        load()

    @job(resource_defs={"io_manager": store}, tags={MEMOIZED_RUN_TAG: "true"})
    def west():
        load()

    return east, west


def test_a_file_two_jobs_share_goes_with_both_index_entries(instance, tmp_path):
    east, west = _sharing_jobs(tmp_path)
    shared = east.execute_in_process(instance=instance).output_address("load").uri
    assert west.execute_in_process(instance=instance).output_address("load").uri == shared
    assert len([e for e in instance.index_entries() if e.address.uri == shared]) == 2

    size = os.path.getsize(shared)
    report = collect_garbage(instance, keep_runs=0, dry_run=False)
    assert report.errors == []
    assert report.total_bytes == size  # one file, counted once
    assert sorted(i.index_key[0].split("@")[0] for i in report.items if i.index_key) == [
        "east/load.result",
        "west/load.result",
    ]
    assert not os.path.exists(shared)
    assert [e for e in instance.index_entries() if e.address.uri == shared] == []
    # no entry points at the deleted file: both jobs compute it again
    for again in (east, west):
        result = again.execute_in_process(instance=instance)
        assert result.executed_step_keys == ["load"]
        assert result.output_for_node("load") == [1, 2, 3]


def test_a_shared_file_one_entry_still_keeps_is_not_deleted(instance, tmp_path):
    east, west = _sharing_jobs(tmp_path)
    first = east.execute_in_process(instance=instance)
    cutoff = instance.get_run(first.run_id).end_time + 0.05
    time.sleep(0.1)
    shared = west.execute_in_process(instance=instance).output_address("load").uri
    assert shared == first.output_address("load").uri

    # east's entry is older than the cut-off, west's is not: the file stays, and so do both
    report = collect_garbage(instance, older_than=cutoff, dry_run=False)
    assert shared not in {i.uri for i in report.items}
    assert report.kept == 2
    assert os.path.exists(shared)
    for again in (east, west):
        result = again.execute_in_process(instance=instance)
        assert result.memoized_step_keys == ["load"]
        assert result.output_for_node("load") == [1, 2, 3]


def test_a_kept_reexecution_keeps_the_outputs_it_loaded_from_its_parent(instance):
    @op(version="1")
    def a():
        return 41

    @op(version="1")
    def b(x):
        return x + 1

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def pair():
        b(a())

    first = pair.execute_in_process(instance=instance)
    pair.execute_in_process(instance=instance)  # everything memoized
    child = pair.execute_in_process(
        instance=instance, parent_run_id=first.run_id, step_selection=["b"]
    )
    # the newest run is the re-execution: it loaded `a` from its parent, which gc must keep
    report = collect_garbage(instance, keep_runs=1, dry_run=False)
    assert "a" not in {item.step_key for item in report.items}
    again = pair.execute_in_process(
        instance=instance, parent_run_id=child.run_id, step_selection=["b"]
    )
    assert again.output_for_node("b") == 42
