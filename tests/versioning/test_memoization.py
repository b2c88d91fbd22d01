"""Memoized execution through the public API: what runs, what is skipped, and why."""

from __future__ import annotations

import numpy as np
import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    EventType,
    MemoizationError,
    Out,
    Output,
    fs_io_manager,
    job,
    mem_io_manager,
    object_store_io_manager,
    op,
    resource,
    versioned_filesystem_io_manager,
)

MEMO = {MEMOIZED_RUN_TAG: "true"}


def chain_job(
    calls: list[str],
    versions: dict[str, str] | None = None,
    early_cutoff: bool = False,
    mid_value: int = 1,
):
    versions = versions or {}

    @op(version=versions.get("first", "1"))
    def first():
        calls.append("first")
        return 1

    @op(version=versions.get("mid", "1"), config_schema={"factor": int})
    def mid(context, x):
        calls.append("mid")
        return x * context.op_config["factor"] * mid_value

    @op(version=versions.get("last", "1"))
    def last(x):
        calls.append("last")
        return x + 1

    @job(name="chain", tags=MEMO, early_cutoff=early_cutoff)
    def chain():
        last(mid(first()))

    return chain


CONFIG = {"ops": {"mid": {"config": {"factor": 3}}}}


def test_rerun_with_nothing_changed_executes_nothing(instance):
    calls: list[str] = []
    job_def = chain_job(calls)
    first_run = job_def.execute_in_process(run_config=CONFIG, instance=instance)
    assert calls == ["first", "mid", "last"]
    calls.clear()
    again = job_def.execute_in_process(run_config=CONFIG, instance=instance)
    assert calls == []
    assert again.memoized_step_keys == ["first", "mid", "last"]
    assert again.output_for_node("last") == first_run.output_for_node("last") == 4
    memoized = [e for e in again.all_events if e.event_type is EventType.STEP_MEMOIZED]
    assert {e.step_key for e in memoized} == {"first", "mid", "last"}


def test_config_change_reruns_the_op_and_what_depends_on_it(instance):
    calls: list[str] = []
    job_def = chain_job(calls)
    job_def.execute_in_process(run_config=CONFIG, instance=instance)
    calls.clear()
    result = job_def.execute_in_process(
        run_config={"ops": {"mid": {"config": {"factor": 5}}}}, instance=instance
    )
    assert calls == ["mid", "last"]
    assert result.output_for_node("last") == 6


def test_version_bump_reruns_downstream_only(instance):
    calls: list[str] = []
    chain_job(calls).execute_in_process(run_config=CONFIG, instance=instance)
    calls.clear()
    chain_job(calls, {"mid": "2"}).execute_in_process(run_config=CONFIG, instance=instance)
    assert calls == ["mid", "last"]


def test_early_cutoff_stops_invalidation_when_data_is_unchanged(instance):
    calls: list[str] = []
    chain_job(calls, early_cutoff=True).execute_in_process(run_config=CONFIG, instance=instance)
    calls.clear()
    chain_job(calls, {"mid": "2"}, early_cutoff=True).execute_in_process(
        run_config=CONFIG, instance=instance
    )
    assert calls == ["mid"], "identical data from the re-run op must not invalidate its consumer"
    calls.clear()
    result = chain_job(calls, {"mid": "3"}, early_cutoff=True, mid_value=10).execute_in_process(
        run_config=CONFIG, instance=instance
    )
    assert calls == ["mid", "last"], "changed data must invalidate the consumer"
    assert result.output_for_node("last") == 31


def test_early_cutoff_per_output(instance):
    calls: list[str] = []

    def build(version: str):
        @op(version="1")
        def source():
            calls.append("source")
            return 1

        @op(version=version, out={"kept": Out(early_cutoff=True), "plain": Out()})
        def split(x):
            calls.append("split")
            return x, x

        @op(version="1")
        def use_kept(x):
            calls.append("use_kept")
            return x

        @op(version="1")
        def use_plain(x):
            calls.append("use_plain")
            return x

        @job(name="split_job", tags=MEMO)
        def split_job():
            kept, plain = split(source())
            use_kept(kept)
            use_plain(plain)

        return split_job

    build("1").execute_in_process(instance=instance)
    calls.clear()
    build("2").execute_in_process(instance=instance)
    assert sorted(calls) == ["split", "use_plain"]


def test_run_tag_overrides_job_tag(instance):
    calls: list[str] = []
    job_def = chain_job(calls)
    job_def.execute_in_process(run_config=CONFIG, instance=instance)
    calls.clear()
    job_def.execute_in_process(
        run_config=CONFIG, instance=instance, tags={MEMOIZED_RUN_TAG: "false"}
    )
    assert calls == ["first", "mid", "last"]


def test_memoized_run_refuses_unversioned_ops_before_any_step(instance):
    ran: list[str] = []

    @op(version="1")
    def versioned():
        ran.append("versioned")
        return 1

    @op
    def unversioned_a(x):
        return x

    @op
    def unversioned_b(x):
        return x

    @job(tags=MEMO)
    def partly_versioned():
        unversioned_b(unversioned_a(versioned()))

    with pytest.raises(MemoizationError) as err:
        partly_versioned.execute_in_process(instance=instance)
    assert "unversioned_a" in str(err.value) and "unversioned_b" in str(err.value)
    assert "versioned_strategy" not in str(err.value)
    assert ran == []
    assert instance.get_runs() == []


def test_resource_version_and_config_count(instance):
    calls: list[str] = []

    def build(resource_version: str):
        @resource(version=resource_version, config_schema={"url": str})
        def database(init_context):
            return init_context.resource_config["url"]

        @op(version="1", required_resource_keys={"database"})
        def query(context):
            calls.append("query")
            return context.resources.database

        @job(name="uses_db", resource_defs={"database": database}, tags=MEMO)
        def uses_db():
            query()

        return uses_db

    config = {"resources": {"database": {"config": {"url": "a"}}}}
    build("1").execute_in_process(run_config=config, instance=instance)
    build("1").execute_in_process(run_config=config, instance=instance)
    assert calls == ["query"]
    build("2").execute_in_process(run_config=config, instance=instance)
    assert calls == ["query", "query"]
    build("2").execute_in_process(
        run_config={"resources": {"database": {"config": {"url": "b"}}}}, instance=instance
    )
    assert calls == ["query", "query", "query"]


def test_in_memory_outputs_are_not_reused_across_runs(instance):
    calls: list[str] = []

    @op(version="1")
    def value():
        calls.append("value")
        return 1

    @job(resource_defs={"io_manager": mem_io_manager}, tags=MEMO)
    def in_memory():
        value()

    in_memory.execute_in_process(instance=instance)
    in_memory.execute_in_process(instance=instance)
    assert calls == ["value", "value"]


def test_versioned_filesystem_manager_answers_has_output(instance, tmp_path):
    calls: list[str] = []

    @op(version="1")
    def value():
        calls.append("value")
        return {"a": 1}

    manager = versioned_filesystem_io_manager.configured({"base_dir": str(tmp_path / "versioned")})

    @job(resource_defs={"io_manager": manager}, tags=MEMO)
    def versioned_job():
        value()

    result = versioned_job.execute_in_process(instance=instance)
    address = result.output_address("value")
    assert address.uri.endswith(f"{address.version}.pkl")
    assert (tmp_path / "versioned" / "value" / "result").is_dir()
    versioned_job.execute_in_process(instance=instance)
    assert calls == ["value"]


def test_jobs_do_not_share_stored_outputs(instance):
    calls: list[str] = []

    @op(version="1")
    def shared():
        calls.append("shared")
        return 1

    @job(tags=MEMO)
    def job_a():
        shared()

    @job(tags=MEMO)
    def job_b():
        shared()

    job_a.execute_in_process(instance=instance)
    job_b.execute_in_process(instance=instance)
    assert calls == ["shared", "shared"]


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
