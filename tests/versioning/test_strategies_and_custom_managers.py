"""What memodag asks of a ``VersionStrategy`` and of a custom ``MemoizableIOManager``, and how it
reports their mistakes (cases from Dagster's own memoization tests, run against memodag)."""

from __future__ import annotations

from typing import Any

import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    DefinitionError,
    MemoizableIOManager,
    MemoizationError,
    VersionStrategy,
    fs_io_manager,
    io_manager,
    job,
    list_versions,
    op,
    resource,
)

MEMO = {MEMOIZED_RUN_TAG: "true"}


class ConfigVersionStrategy(VersionStrategy):
    """Versions resources by a ``version`` field of their config: written for the job's own
    resources, it knows nothing of io managers (whose config has no such field)."""

    def get_op_version(self, context):
        return "op-1"

    def get_resource_version(self, context):
        return context.resource_config["version"]


@resource(config_schema={"version": str, "url": str})
def database(context):
    return context.resource_config["url"]


def _db_job(calls: list[str], strategy: VersionStrategy):
    @op(required_resource_keys={"database"})
    def query(context):
        calls.append("query")
        return context.resources.database

    @job(
        tags=MEMO,
        version_strategy=strategy,
        resource_defs={"database": database, "io_manager": fs_io_manager},
    )
    def uses_db():
        query()

    return uses_db


def _db_config(version: str) -> dict[str, Any]:
    return {"resources": {"database": {"config": {"version": version, "url": "db://"}}}}


def test_a_strategy_is_asked_only_about_resources_ops_require(instance):
    calls: list[str] = []
    uses_db = _db_job(calls, ConfigVersionStrategy())
    uses_db.execute_in_process(run_config=_db_config("1"), instance=instance)
    uses_db.execute_in_process(run_config=_db_config("1"), instance=instance)
    assert calls == ["query"]  # memoized: the io manager was never put to the strategy
    assert {r.status for r in list_versions(uses_db, _db_config("2"), instance)} == {
        "to-be-recomputed"
    }
    uses_db.execute_in_process(run_config=_db_config("2"), instance=instance)
    assert calls == ["query", "query"]


def test_a_failing_strategy_is_a_memodag_error_naming_it_and_the_resource(instance):
    class Broken(ConfigVersionStrategy):
        def get_resource_version(self, context):
            return context.resource_config["release"]  # no such field

    uses_db = _db_job([], Broken())
    with pytest.raises(MemoizationError) as raised:
        uses_db.execute_in_process(run_config=_db_config("1"), instance=instance)
    message = str(raised.value)
    assert "version strategy Broken failed on resource 'database': KeyError: 'release'" in message
    with pytest.raises(MemoizationError, match="failed on resource 'database'"):
        list_versions(uses_db, _db_config("1"), instance)


@pytest.mark.parametrize("answer", [None, "", "  ", 3])
def test_a_strategy_answer_that_is_not_a_version_is_refused_naming_the_op(instance, answer):
    class Sloppy(VersionStrategy):
        def get_op_version(self, context):
            return answer

    @op
    def value():
        return 1

    @job(tags=MEMO, version_strategy=Sloppy())
    def sloppy():
        value()

    with pytest.raises(MemoizationError) as raised:
        sloppy.execute_in_process(instance=instance)
    assert f"Sloppy.get_op_version returned {answer!r} for op 'value'" in str(raised.value)


def test_a_strategy_that_raises_on_an_op_is_named(instance):
    class Raising(VersionStrategy):
        def get_op_version(self, context):
            raise RuntimeError("no source")

    @op
    def value():
        return 1

    @job(tags=MEMO, version_strategy=Raising())
    def raising():
        value()

    with pytest.raises(
        MemoizationError, match="version strategy Raising failed on op 'value': RuntimeError"
    ):
        raising.execute_in_process(instance=instance)


def test_any_non_empty_text_is_a_version_an_empty_one_is_refused(instance):
    calls: list[str] = []

    # Dagster refused this one; versions here are only ever hashed, so any text will do
    @op(version="well this doesn't work !")
    def value():
        calls.append("value")
        return 1

    @job(tags=MEMO)
    def spaced():
        value()

    spaced.execute_in_process(instance=instance)
    spaced.execute_in_process(instance=instance)
    assert calls == ["value"]
    with pytest.raises(DefinitionError, match="op 'blank': version='' is empty"):

        @op(version="")
        def blank():
            return 1


class ResourcefulManager(MemoizableIOManager):
    """Keeps outputs in a resource (a dict) by version: ``has_output`` needs the resources as
    much as ``handle_output`` does."""

    def handle_output(self, context, obj):
        context.log.info("storing %s", context.step_key)
        context.resources.shelf[(context.step_key, context.version)] = obj
        return None

    def load_input(self, context):
        upstream = context.upstream_output
        return context.resources.shelf[(upstream.step_key, upstream.version)]

    def has_output(self, context):
        context.log.info("looking for %s in %s", context.step_key, context.resource_config)
        assert context.resource_config == {"label": "shelf manager"}
        return (context.step_key, context.version) in context.resources.shelf


def test_a_custom_manager_has_output_gets_resources_config_and_log(instance):
    shelf: dict[Any, Any] = {}
    calls: list[str] = []

    @resource
    def shelf_resource(_):
        return shelf

    @io_manager(config_schema={"label": str}, required_resource_keys={"shelf"})
    def shelf_manager(_):
        return ResourcefulManager()

    @op(version="1")
    def make():
        calls.append("make")
        return 21

    @op(version="1")
    def double(x):
        calls.append(f"double {x}")  # loaded through load_input, from the shelf
        return 2 * x

    @job(tags=MEMO, resource_defs={"shelf": shelf_resource, "io_manager": shelf_manager})
    def shelved():
        double(make())

    config = {"resources": {"io_manager": {"config": {"label": "shelf manager"}}}}
    shelved.execute_in_process(run_config=config, instance=instance)
    again = shelved.execute_in_process(run_config=config, instance=instance)
    assert calls == ["make", "double 21"]
    assert sorted(again.memoized_step_keys) == ["double", "make"]
    assert {r.status for r in list_versions(shelved, config, instance)} == {"stored"}
