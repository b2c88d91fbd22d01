"""Memoized execution through the public API: what runs, what is skipped, and why."""

from __future__ import annotations

import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    EventType,
    MemoizationError,
    Out,
    job,
    mem_io_manager,
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
