"""Memoization must never reuse data after a change that matters: regressions found in review."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    ExecutionError,
    Out,
    Output,
    fs_io_manager,
    job,
    object_store_io_manager,
    op,
    resource,
)
from memodag.hashing import hash_value

MEMO = {MEMOIZED_RUN_TAG: "true"}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({1: "x"}, {"1": "x"}),
        ((1, 2), [1, 2]),
        ([np.zeros(5000)], [np.concatenate([np.zeros(2500), [1.0], np.zeros(2499)])]),
        (pd.Series([1, 2], dtype="int32"), pd.Series([1, 2], dtype="int64")),
        (pd.DataFrame({"a": ["x", "y"]}), pd.DataFrame({"a": ["x", "y"]}, dtype="category")),
    ],
)
def test_data_hash_tells_different_data_apart(a, b):
    assert hash_value(a) != hash_value(b)


def test_data_hash_is_stable_for_equal_data():
    assert hash_value({"a": [1, (2, 3)], "b": None}) == hash_value({"b": None, "a": [1, (2, 3)]})
    assert hash_value(pd.DataFrame({"a": [1, 2]})) == hash_value(pd.DataFrame({"a": [1, 2]}))


def test_early_cutoff_sees_a_change_deep_inside_an_array(instance):
    calls: list[str] = []

    def build(version: str, value: float):
        @op(version=version)
        def produce():
            data = np.zeros(5000)
            data[2500] = value
            return [data]

        @op(version="1")
        def consume(arrays):
            calls.append("consume")
            return float(arrays[0].sum())

        @job(name="arrays", tags=MEMO, early_cutoff=True)
        def arrays():
            consume(produce())

        return arrays

    build("1", 0.0).execute_in_process(instance=instance)
    result = build("2", 42.0).execute_in_process(instance=instance)
    assert calls == ["consume", "consume"]
    assert result.output_for_node("consume") == 42.0


def test_a_resource_built_from_another_changes_with_it(instance):
    calls: list[str] = []

    @resource(config_schema={"url": str})
    def db(init_context):
        return init_context.resource_config["url"]

    @resource(required_resource_keys={"db"})
    def client(init_context):
        return f"client({init_context.resources.db})"

    @op(version="1", required_resource_keys={"client"})
    def fetch(context):
        calls.append("fetch")
        return context.resources.client

    @job(resource_defs={"db": db, "client": client}, tags=MEMO)
    def uses_client():
        fetch()

    def run(url: str):
        return uses_client.execute_in_process(
            run_config={"resources": {"db": {"config": {"url": url}}}}, instance=instance
        )

    run("prod")
    assert run("test").output_for_node("fetch") == "client(test)"
    assert calls == ["fetch", "fetch"]


def test_changing_the_io_manager_does_not_reuse_the_old_storage(instance, tmp_path):
    calls: list[str] = []

    def build(manager):
        @op(version="1")
        def first():
            calls.append("first")
            return 1

        @job(name="moved", resource_defs={"io_manager": manager}, tags=MEMO)
        def moved():
            first()

        return moved

    build(fs_io_manager.configured({"base_dir": str(tmp_path / "a")})).execute_in_process(
        instance=instance
    )
    result = build(
        object_store_io_manager.configured({"base_url": f"file://{tmp_path / 'b'}"})
    ).execute_in_process(instance=instance)
    assert calls == ["first", "first"]
    assert result.output_address("first").uri.startswith(str(tmp_path / "b"))
    # and with the same manager and config, it is memoized again
    build(
        object_store_io_manager.configured({"base_url": f"file://{tmp_path / 'b'}"})
    ).execute_in_process(instance=instance)
    assert calls == ["first", "first"]


def test_reexecution_never_loads_outputs_of_a_failed_attempt(instance):
    @op(out={"a": Out(), "b": Out()})
    def split():
        yield Output("half-done", "a")
        raise RuntimeError("failed after yielding a")

    @op
    def use_a(a):
        return f"used {a}"

    @job
    def half():
        a, _ = split()
        use_a(a)

    parent = half.execute_in_process(instance=instance, raise_on_error=False)
    assert not parent.success
    with pytest.raises(ExecutionError, match=r"split\.a"):
        half.execute_in_process(
            instance=instance, parent_run_id=parent.run_id, step_selection=["use_a"]
        )


def test_reexecuting_the_outer_collector_of_a_nested_fan_out(instance):
    from memodag import DynamicOut, DynamicOutput

    @op(out=DynamicOut())
    def pieces():
        for i in range(2):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op(out=DynamicOut())
    def inner(x):
        for j in range(2):
            yield DynamicOutput(x * 10 + j, mapping_key=f"j{j}")

    @op
    def double(x):
        return 2 * x

    @op
    def total(xs):
        return sum(xs)

    @job
    def nested():
        sums = pieces().map(lambda p: total.alias("inner_total")(inner(p).map(double).collect()))
        total(sums.collect())

    parent = nested.execute_in_process(instance=instance)
    child = nested.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["total"]
    )
    assert child.success
    assert child.step_status["total"] == "success"
    assert child.output_for_node("total") == parent.output_for_node("total") == 44


def test_a_step_that_skips_an_optional_output_is_memoized(instance):
    calls: list[str] = []

    @op(version="1", out={"always": Out(), "sometimes": Out(is_required=False)})
    def produce():
        calls.append("produce")
        yield Output(1, "always")

    @op(version="1")
    def use(x):
        calls.append("use")
        return x

    @op(version="1")
    def use_optional(x):
        calls.append("use_optional")
        return x

    @job(tags=MEMO)
    def optional():
        always, sometimes = produce()
        use(always)
        use_optional(sometimes)

    first = optional.execute_in_process(instance=instance)
    second = optional.execute_in_process(instance=instance)
    assert calls == ["produce", "use"]
    assert first.step_status["use_optional"] == second.step_status["use_optional"] == "skipped"
    assert second.memoized_step_keys == ["produce", "use"]


def test_explain_names_the_helper_that_changed(instance, tmp_path, monkeypatch):
    import importlib
    import sys

    from memodag import list_versions

    package = tmp_path / "proj_explain"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = (
        "from memodag import SourceHashVersionStrategy, job, op\n\n"
        "def shout(word):\n    return word.upper()\n\n"
        "@op\ndef greet():\n    return shout('hi')\n\n"
        "@job(version_strategy=SourceHashVersionStrategy(local_roots=[{root!r}]))\n"
        "def hello():\n    greet()\n"
    )
    (package / "jobs.py").write_text(source.format(root=str(tmp_path)))
    monkeypatch.syspath_prepend(str(tmp_path))
    # the source index looks for edited files at most once a second; this test edits at once
    monkeypatch.setattr("memodag.versioning.source_index._FRESHNESS_INTERVAL", 0.0)
    jobs = importlib.import_module("proj_explain.jobs")
    jobs.hello.execute_in_process(instance=instance)

    (package / "jobs.py").write_text(
        source.format(root=str(tmp_path)).replace("word.upper()", "word.upper() + '!'")
    )
    sys.modules.pop("proj_explain.jobs")
    edited = importlib.import_module("proj_explain.jobs")
    (row,) = list_versions(edited.hello, None, instance, explain=True)
    assert row.status == "to-be-recomputed"
    assert "code of op 'greet' changed" in row.reasons[0]
    assert "function proj_explain.jobs:shout edited" in row.reasons[0], row.reasons


def test_sets_hash_the_same_in_every_process():
    import os
    import subprocess
    import sys

    code = "from memodag.hashing import hash_value; print(hash_value(frozenset({'alpha', 'beta', 'gamma', 8})))"
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            # a clean environment but the same memodag (PYTHONPATH: a source checkout's)
            env={
                "PYTHONHASHSEED": seed,
                "PATH": "",
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            },
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1
    assert hash_value({8, 0}) == hash_value({0, 8})


def test_unpicklable_outputs_and_defaults_never_fail_a_step(instance):
    import threading

    from memodag import In, mem_io_manager

    @op(version="1")
    def produce():
        return [threading.Lock(), 1]

    @op(version="1", ins={"lock": In(default_value=threading.Lock())})
    def with_default(values, lock):
        return values[1]

    @job(tags=MEMO, early_cutoff=True, resource_defs={"io_manager": mem_io_manager})
    def unpicklable():
        with_default(produce())

    assert unpicklable.execute_in_process(instance=instance).output_for_node("with_default") == 1


def test_a_plain_io_manager_instance_is_told_apart_by_where_it_stores(instance, tmp_path):
    from memodag.storage.io_managers.files import LocalFileStore, PathIOManager

    calls: list[str] = []

    def build(base: str):
        @op(version="1")
        def first():
            calls.append("first")
            return 42

        @job(
            name="plain_manager",
            resource_defs={"io_manager": PathIOManager(LocalFileStore(), base)},
            tags=MEMO,
        )
        def plain_manager():
            first()

        return plain_manager

    build(str(tmp_path / "A")).execute_in_process(instance=instance)
    result = build(str(tmp_path / "B")).execute_in_process(instance=instance)
    assert calls == ["first", "first"]
    assert result.output_for_node("first") == 42
