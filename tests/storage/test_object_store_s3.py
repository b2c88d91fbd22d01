"""object_store_io_manager against a real S3-compatible server (moto, on loopback)."""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

import fsspec
import pandas as pd
import pyarrow.parquet as pq

from memodag import (
    EventType,
    InitResourceContext,
    InputContext,
    Out,
    OutputContext,
    job,
    object_store_io_manager,
    op,
)


@op
def numbers():
    return [1, 2, 3]


@op(out=Out(serializer="json"))
def total(numbers):
    return {"total": sum(numbers)}


@op
def report(total):
    return f"total={total['total']}"


def _s3_job(bucket: Any, prefix: str = "runs") -> Any:
    manager = object_store_io_manager.configured(
        {
            "base_url": f"s3://{bucket.name}/{prefix}",
            "storage_options": bucket.storage_options,
        }
    )

    @job(name="s3_pipeline", resource_defs={"io_manager": manager})
    def s3_pipeline():
        report(total(numbers()))

    return s3_pipeline


def test_outputs_land_in_the_bucket_and_load_back(s3_bucket, instance):
    result = _s3_job(s3_bucket).execute_in_process(instance=instance)

    run = result.run_id
    assert s3_bucket.keys("runs/") == [
        f"runs/{run}/numbers.result.pkl",
        f"runs/{run}/report.result.pkl",
        f"runs/{run}/total.result.json",
    ]
    # the objects are in the formats the outputs asked for
    assert pickle.loads(s3_bucket.read(f"runs/{run}/numbers.result.pkl")) == [1, 2, 3]
    assert json.loads(s3_bucket.read(f"runs/{run}/total.result.json")) == {"total": 6}

    assert result.output_for_node("report") == "total=6"
    assert result.output_for_node("total") == {"total": 6}
    address = instance.get_output_addresses(run)[("total", "result", None)]
    assert address.uri == f"s3://{s3_bucket.name}/runs/{run}/total.result.json"
    assert address.serializer == "json"
    loads = instance.get_events(run, [EventType.LOADED_INPUT])
    assert {e.data["address"]["uri"] for e in loads} == {
        f"s3://{s3_bucket.name}/runs/{run}/numbers.result.pkl",
        f"s3://{s3_bucket.name}/runs/{run}/total.result.json",
    }


def test_reexecution_loads_the_parents_objects_from_s3(s3_bucket, instance):
    pipeline = _s3_job(s3_bucket)
    parent = pipeline.execute_in_process(instance=instance)
    child = pipeline.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["report"]
    )
    assert child.output_for_node("report") == "total=6"
    (load,) = instance.get_events(child.run_id, [EventType.LOADED_INPUT])
    assert load.data["address"]["uri"] == parent.output_address("total").uri
    assert load.data["address"]["uri"].startswith(f"s3://{s3_bucket.name}/")
    # only the re-executed step wrote a new object
    assert s3_bucket.keys(f"runs/{child.run_id}/") == [f"runs/{child.run_id}/report.result.pkl"]


def test_s3_manager_configured_from_run_config_with_parquet(s3_bucket, instance):
    @op(out=Out(serializer="parquet"))
    def frame():
        return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})

    @op
    def width(frame):
        return frame.shape[1]

    @job(resource_defs={"io_manager": object_store_io_manager})
    def frames():
        width(frame())

    run_config = {
        "resources": {
            "io_manager": {
                "config": {
                    "base_url": f"s3://{s3_bucket.name}/tables",
                    "storage_options": s3_bucket.storage_options,
                }
            }
        }
    }
    result = frames.execute_in_process(run_config=run_config, instance=instance)
    assert result.output_for_node("width") == 2
    key = f"tables/{result.run_id}/frame.result.parquet"
    assert key in s3_bucket.keys("tables/")
    table = pq.read_table(io.BytesIO(s3_bucket.read(key)))
    assert table.column("b").to_pylist() == ["x", "y"]
    pd.testing.assert_frame_equal(
        result.output_for_node("frame"), pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    )


def _manager(bucket: Any, **options: Any) -> Any:
    config = {
        "base_url": f"s3://{bucket.name}/versioned",
        "storage_options": {**bucket.storage_options, **options},
        "serializer": "pickle",
        "versioned": True,
    }
    return object_store_io_manager.resource_fn(InitResourceContext(config, None))


def _listed_elsewhere(bucket: Any, **options: Any) -> None:
    """List the manager's directory through fsspec, as other code in the process might: s3fs
    then caches the listing, which a filesystem shared with the manager would trust."""
    fs = fsspec.filesystem("s3", **{**bucket.storage_options, **options})
    fs.ls(f"{bucket.name}/versioned/step/result")


def test_exists_sees_objects_written_by_others(s3_bucket):
    """Two managers with identical options (as two processes would have) and other code listing
    the bucket in the same process never give a manager a stale view of it."""
    reader = _manager(s3_bucket)
    writer = _manager(s3_bucket)
    first = OutputContext("step", "result", "r1", version="v1")
    second = OutputContext("step", "result", "r1", version="v2")
    assert not reader.has_output(first)
    writer.handle_output(first, "one")
    assert reader.has_output(first)

    _listed_elsewhere(s3_bucket)
    # an object put by a client that is not fsspec at all
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name, Key="versioned/step/result/v2.pkl", Body=pickle.dumps("two")
    )
    assert reader.has_output(second)
    assert reader.load_input(InputContext("x", "consumer", second)) == "two"


def test_exists_is_fresh_even_with_both_fsspec_caches_turned_back_on(s3_bucket):
    options = {"use_listings_cache": True, "skip_instance_cache": False}
    reader = _manager(s3_bucket, **options)
    wanted = OutputContext("step", "result", "r1", version="v1")
    reader.handle_output(OutputContext("step", "result", "r1", version="v0"), 0)
    _listed_elsewhere(s3_bucket, **options)  # the same cached filesystem as the reader's
    assert not reader.has_output(wanted)
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name, Key="versioned/step/result/v1.pkl", Body=pickle.dumps(1)
    )
    assert reader.has_output(wanted)
