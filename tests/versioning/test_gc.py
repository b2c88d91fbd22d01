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
