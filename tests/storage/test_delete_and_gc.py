"""IOManager.exists/delete on every built-in io manager, and gc deleting through the io manager
that stored each output: built-in managers rebuilt from the address (S3 included), custom ones
from the job given to gc, the rest reported and kept."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    Address,
    InitResourceContext,
    IOManager,
    OutputContext,
    fs_io_manager,
    io_manager,
    job,
    mem_io_manager,
    object_store_io_manager,
    op,
    versioned_filesystem_io_manager,
)
from memodag.versioning.gc import collect_garbage


def _built_in(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> IOManager:
    if kind == "fs":
        definition, config = fs_io_manager, {"base_dir": str(tmp_path / "fs")}
    elif kind == "versioned":
        definition, config = versioned_filesystem_io_manager, {"base_dir": str(tmp_path / "v")}
    elif kind == "memory":
        definition, config = mem_io_manager, None
    else:
        if kind == "s3":
            bucket = request.getfixturevalue("s3_bucket")
            url, options = f"s3://{bucket.name}/outputs", bucket.storage_options
        else:
            url = f"file://{tmp_path / 'objects'}" if kind == "file" else "memory://gc-test"
            options = {}
        definition = object_store_io_manager
        config = {
            "base_url": url,
            "storage_options": options,
            "serializer": "pickle",
            "versioned": False,
        }
    manager = definition.resource_fn(InitResourceContext(config, None))
    assert isinstance(manager, IOManager)
    return manager


@pytest.mark.parametrize("kind", ["fs", "versioned", "memory", "file", "memory_url", "s3"])
def test_every_built_in_io_manager_tells_whether_it_stored_and_deletes(kind, tmp_path, request):
    manager = _built_in(kind, tmp_path, request)
    context = OutputContext("make", "result", "run-1", version="v1")
    uri = manager.handle_output(context, {"rows": 3})
    address = Address(
        "io_manager", uri, manager.serializer_name(context), "run-1", "make", "result", None, "v1"
    )
    other = Address("io_manager", None, None, "run-1", "other", "result", None, "v1")
    if kind != "memory":
        other = Address(
            "io_manager", uri + ".missing", address.serializer, "run-1", "other", "result"
        )
    assert manager.exists(address)
    assert not manager.exists(other)
    manager.delete(address)
    assert not manager.exists(address)
    manager.delete(address)  # nothing there: not an error
    if kind == "fs":
        # the run folder it emptied went with it, the base folder stays
        assert not (tmp_path / "fs" / "run-1").exists() and (tmp_path / "fs").is_dir()


# -- gc through the io manager that stored the output ----------------------------------------


@op(version="1", config_schema={"n": int})
def make(context):
    return list(range(context.op_config["n"]))


@op(version="1")
def total(values):
    return sum(values)


def _runs(job_def: Any, instance: Any, config: dict[str, Any] | None = None) -> list[Any]:
    """Two runs with different config: the first one's outputs are garbage for --keep-last 1."""
    results = []
    for n in (3, 4):
        run_config = {"ops": {"make": {"config": {"n": n}}}, **(config or {})}
        results.append(job_def.execute_in_process(run_config=run_config, instance=instance))
    return results


def test_gc_deletes_s3_objects_through_the_object_store_io_manager(s3_bucket, instance):
    @job(resource_defs={"io_manager": object_store_io_manager}, tags={MEMOIZED_RUN_TAG: "true"})
    def on_s3():
        total(make())

    storage = {
        "base_url": f"s3://{s3_bucket.name}/runs",
        "storage_options": s3_bucket.storage_options,
    }
    old, new = _runs(on_s3, instance, {"resources": {"io_manager": {"config": storage}}})
    old_keys = {f"runs/{old.run_id}/make.result.pkl", f"runs/{old.run_id}/total.result.pkl"}
    assert old_keys <= set(s3_bucket.keys())

    # an object no event names in the old run's folder (an upload whose outcome was lost)
    stray = f"runs/{old.run_id}/lost.result.pkl"
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=stray, Body=b"x")
    report = collect_garbage(instance, keep_runs=1, dry_run=False)
    assert report.errors == [] and report.unavailable == []
    assert {i.uri for i in report.items} == {
        f"s3://{s3_bucket.name}/{k}" for k in {*old_keys, stray}
    }
    assert s3_bucket.keys() == sorted(
        [f"runs/{new.run_id}/make.result.pkl", f"runs/{new.run_id}/total.result.pkl"]
    )


class KeyValueIOManager(IOManager):
    """A store that is not files: rows of a SQLite table, addressed ``kv://<key>``."""

    uses_instance_index = True  # what the index records is there until gc deletes it

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT)")

    def handle_output(self, context, obj):
        key = f"{context.run_id}/{context.step_key}.{context.name}"
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(obj)))
        return f"kv://{key}"

    def load_input(self, context):
        key = context.address.uri.removeprefix("kv://")
        (value,) = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(value)

    def exists(self, address):
        key = address.uri.removeprefix("kv://")
        return self.db.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone() is not None

    def delete(self, address):
        with self.db:
            self.db.execute("DELETE FROM kv WHERE key = ?", (address.uri.removeprefix("kv://"),))


@io_manager(config_schema={"path": str})
def kv_io_manager(context):
    manager = KeyValueIOManager(context.resource_config["path"])
    yield manager
    manager.db.close()


def _kv_keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {key for (key,) in db.execute("SELECT key FROM kv")}


def test_gc_deletes_a_custom_stores_outputs_through_the_job_and_keeps_them_without(
    instance, tmp_path
):
    @job(resource_defs={"io_manager": kv_io_manager}, tags={MEMOIZED_RUN_TAG: "true"})
    def on_kv():
        total(make())

    database = tmp_path / "kv.db"
    config = {"resources": {"io_manager": {"config": {"path": str(database)}}}}
    old, new = _runs(on_kv, instance, config)
    old_keys = {f"{old.run_id}/make.result", f"{old.run_id}/total.result"}
    assert old_keys <= _kv_keys(database)

    # without the job gc cannot get the io manager: it says so and deletes nothing
    blind = collect_garbage(instance, keep_runs=1, dry_run=False)
    assert blind.items == []
    assert {(i.step_key, i.run_id) for i in blind.unavailable} == {
        ("make", old.run_id),
        ("total", old.run_id),
    }
    assert all("memodag gc -f" in i.reason for i in blind.unavailable)
    assert old_keys <= _kv_keys(database)

    done = collect_garbage(instance, keep_runs=1, dry_run=False, jobs={"on_kv": on_kv})
    assert done.errors == [] and done.unavailable == []
    assert {i.uri for i in done.items} == {f"kv://{k}" for k in old_keys}
    assert _kv_keys(database) == {f"{new.run_id}/make.result", f"{new.run_id}/total.result"}
    # the index entries went too: the first config is recomputed, the second still memoized
    again = _runs(on_kv, instance, config)
    assert again[0].executed_step_keys == ["make", "total"]
    assert again[1].memoized_step_keys == ["make", "total"]


def test_gc_keeps_outputs_of_an_io_manager_that_cannot_delete(instance, tmp_path):
    class NoDelete(KeyValueIOManager):
        delete = IOManager.delete

    @io_manager(config_schema={"path": str})
    def plain(context):
        return NoDelete(context.resource_config["path"])

    @job(resource_defs={"io_manager": plain}, tags={MEMOIZED_RUN_TAG: "true"})
    def on_plain():
        total(make())

    database = tmp_path / "plain.db"
    config = {"resources": {"io_manager": {"config": {"path": str(database)}}}}
    old, _ = _runs(on_plain, instance, config)
    report = collect_garbage(instance, keep_runs=1, dry_run=False, jobs={"on_plain": on_plain})
    assert report.items == []
    assert all("does not implement delete()" in i.reason for i in report.unavailable)
    assert f"{old.run_id}/make.result" in _kv_keys(database)
