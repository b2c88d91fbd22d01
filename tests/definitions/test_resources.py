"""Resources: config, versions, teardown, dependencies between resources, and how jobs bind them."""

from __future__ import annotations

import pytest

from memodag import (
    ConfigError,
    DefinitionError,
    ExecutionError,
    Field,
    ResourceDefinition,
    StepExecutionError,
    job,
    op,
    resource,
)


@op(required_resource_keys={"store"})
def read_store(context):
    return context.resources.store


def test_a_resource_with_config_and_version():
    @resource(config_schema={"url": str, "timeout": Field(int, default_value=5)}, version="2")
    def database(init_context):
        """Connects to the database."""
        cfg = init_context.resource_config
        return f"{cfg['url']}?timeout={cfg['timeout']}"

    assert database.version == "2"
    assert database.description == "Connects to the database."

    @job(resource_defs={"store": database})
    def read():
        read_store()

    result = read.execute_in_process(
        run_config={"resources": {"store": {"config": {"url": "db://x"}}}}
    )
    assert result.output_for_node("read_store") == "db://x?timeout=5"


def test_configured_fixes_the_config_and_run_config_may_not_set_it():
    @resource(config_schema={"url": str})
    def database(init_context):
        return init_context.resource_config["url"]

    @job(resource_defs={"store": database.configured({"url": "db://fixed"})})
    def read():
        read_store()

    assert read.execute_in_process().output_for_node("read_store") == "db://fixed"
    with pytest.raises(ConfigError, match="already configured"):
        read.execute_in_process(run_config={"resources": {"store": {"config": {"url": "x"}}}})


def test_plain_objects_are_resources_too():
    @job(resource_defs={"store": {"k": "v"}})
    def read():
        read_store()

    assert isinstance(read.resource_defs["store"], ResourceDefinition)
    assert read.execute_in_process().output_for_node("read_store") == {"k": "v"}


def test_resources_requiring_other_resources_are_built_after_them():
    built = []

    @resource(config_schema={"root": str})
    def settings(init_context):
        built.append("settings")
        return init_context.resource_config["root"]

    @resource(required_resource_keys={"settings"})
    def store(init_context):
        built.append("store")
        return f"{init_context.resources.settings}/data"

    @job(resource_defs={"store": store, "settings": settings})
    def read():
        read_store()

    result = read.execute_in_process(
        run_config={"resources": {"settings": {"config": {"root": "/srv"}}}}
    )
    assert result.output_for_node("read_store") == "/srv/data"
    assert built == ["settings", "store"]


def test_generator_resources_are_torn_down_after_the_run_even_when_a_step_fails():
    log = []

    @resource
    def connection():
        log.append("open")
        try:
            yield "conn"
        finally:
            log.append("close")

    @op(required_resource_keys={"conn"})
    def breaks(context):
        log.append("step")
        raise RuntimeError("boom")

    @job(resource_defs={"conn": connection})
    def failing():
        breaks()

    with pytest.raises(StepExecutionError):
        failing.execute_in_process()
    assert log == ["open", "step", "close"]

    log.clear()
    result = failing.execute_in_process(raise_on_error=False)
    assert not result.success
    assert log == ["open", "step", "close"]


def test_teardown_runs_after_every_step_finished():
    log = []

    @resource
    def connection():
        yield "conn"
        log.append("teardown")

    @op(required_resource_keys={"conn"})
    def first(context):
        log.append("first")
        return 1

    @op
    def second(x):
        log.append("second")
        return x

    @job(resource_defs={"conn": connection})
    def two_steps():
        second(first())

    two_steps.execute_in_process()
    assert log == ["first", "second", "teardown"]


def test_resources_no_op_needs_are_not_built():
    built = []

    @resource
    def expensive():
        built.append("expensive")
        return 1

    @op
    def plain():
        return 1

    @job(resource_defs={"expensive": expensive})
    def light():
        plain()

    light.execute_in_process()
    assert built == []


def test_a_resource_failing_to_initialize_names_it_and_fails_the_run(instance):
    @resource
    def broken():
        raise ConnectionError("no route")

    @job(resource_defs={"store": broken})
    def read():
        read_store()

    with pytest.raises(
        ExecutionError, match=r"resource 'store' failed to initialize: ConnectionError: no route"
    ):
        read.execute_in_process(instance=instance)
    (run,) = instance.get_runs()
    assert run.status == "FAILURE"


def test_resources_built_before_one_that_fails_are_torn_down(instance):
    log = []

    @resource
    def settings():
        yield "settings"
        log.append("settings closed")

    @resource(required_resource_keys={"settings"})
    def broken(init_context):
        raise ConnectionError("no route")

    @job(resource_defs={"store": broken, "settings": settings})
    def read():
        read_store()

    with pytest.raises(ExecutionError, match="resource 'store' failed"):
        read.execute_in_process(instance=instance)
    assert log == ["settings closed"]


def test_an_op_reading_an_undeclared_resource_is_told_how_to_declare_it():
    @op
    def sneaky(context):
        return context.resources.store

    @job(resource_defs={"store": 1})
    def read():
        sneaky()

    with pytest.raises(StepExecutionError, match="required_resource_keys"):
        read.execute_in_process()


# ---- mistakes caught when the job is defined ------------------------------------------------


def test_a_missing_resource_names_the_op_and_key():
    with pytest.raises(DefinitionError, match=r"op 'read_store' requires resource 'store'"):

        @job
        def read():
            read_store()


def test_a_missing_resource_dependency_names_both_resources():
    @resource(required_resource_keys={"settings"})
    def store(init_context):
        return 1

    with pytest.raises(DefinitionError, match=r"resource 'store' requires resource 'settings'"):

        @job(resource_defs={"store": store})
        def read():
            read_store()


def test_an_output_io_manager_key_must_name_an_io_manager():
    from memodag import Out

    @op(out=Out(io_manager_key="store"))
    def produce():
        return 1

    with pytest.raises(
        DefinitionError, match=r"op 'produce' output 'result' uses io manager 'store'"
    ):

        @job
        def missing():
            produce()

    with pytest.raises(DefinitionError, match=r"resource 'store' is not an io manager"):

        @job(resource_defs={"store": 1})
        def not_io_manager():
            produce()


def test_resources_requiring_each_other_in_a_cycle():
    @resource(required_resource_keys={"b"})
    def a(init_context):
        return 1

    @resource(required_resource_keys={"a"})
    def b(init_context):
        return 2

    with pytest.raises(DefinitionError, match="in a cycle: a -> b -> a"):

        @job(resource_defs={"a": a, "b": b, "store": 1})
        def cyclic():
            read_store()


def test_configured_config_is_checked_at_once():
    @resource(config_schema={"url": str})
    def database(init_context):
        return init_context.resource_config["url"]

    with pytest.raises(ConfigError, match=r"config\.url: expected str, got int"):
        database.configured({"url": 5})


def test_resource_functions_take_at_most_the_init_context():
    with pytest.raises(DefinitionError, match="must take one parameter"):

        @resource
        def two_params(a, b):
            return 1


def test_resource_version_must_be_a_string():
    with pytest.raises(DefinitionError, match="version must be a string"):

        @resource(version=2)
        def versioned():
            return 1
