"""Declaring ops and calling them directly in unit tests, as a user would."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from memodag import (
    ConfigError,
    DefinitionError,
    Field,
    In,
    Out,
    Output,
    RetryPolicy,
    build_op_context,
    op,
    resource,
)


def test_plain_parameters_become_inputs_and_the_docstring_the_description():
    @op
    def add(a, b=2):
        """Adds two numbers."""
        return a + b

    assert add.name == "add"
    assert add.input_names == ("a", "b")
    assert add.ins["b"].default_value == 2
    assert not add.ins["a"].has_default
    assert add.output_names == ("result",)
    assert add.description == "Adds two numbers."
    assert not add.takes_context
    assert add(1) == 3
    assert add(1, b=5) == 6


def test_ins_describe_parameters_and_must_name_real_ones():
    @op(ins={"x": In(description="the number")}, out=Out(description="doubled"))
    def double(x):
        return 2 * x

    assert double.ins["x"].description == "the number"
    assert double.outs["result"].description == "doubled"
    assert double(x=4) == 8

    with pytest.raises(DefinitionError, match=r"op 'bad'.*\['y'\].*not parameters"):

        @op(ins={"y": In()})
        def bad(x):
            return x


def test_op_declaration_options_are_kept():
    policy = RetryPolicy(max_retries=2, delay=0.5)

    @op(
        name="renamed",
        version="v1",
        retry_policy=policy,
        tags={"team": "data"},
        description="explicit",
        required_resource_keys={"db"},
    )
    def original(context):
        return 1

    assert original.name == "renamed"
    assert original.version == "v1"
    assert original.retry_policy is policy
    assert original.tags == {"team": "data"}
    assert original.description == "explicit"
    assert original.required_resource_keys == frozenset({"db"})
    assert original.takes_context
    assert original.input_names == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 3}, "version must be a string"),
        ({"out": {}}, "declares no outputs"),
        ({"out": {"a": 1}}, "output 'a' must be an Out"),
        ({"out": {"not valid": Out()}}, "not valid"),
        ({"config_schema": {"x": set}}, "unsupported config schema"),
    ],
)
def test_invalid_declarations_fail_when_the_op_is_defined(kwargs, message):
    with pytest.raises(DefinitionError, match=message):

        @op(**kwargs)
        def some_op():
            return 1


def test_var_args_are_not_inputs():
    with pytest.raises(DefinitionError, match=r"op 'splat'.*\*args"):

        @op
        def splat(*values):
            return values


def test_positional_only_parameters_cannot_receive_inputs():
    with pytest.raises(DefinitionError, match=r"op 'strict': input 'x' is positional-only"):

        @op
        def strict(x, /):
            return x


def test_the_context_may_be_passed_by_its_parameter_name():
    @op(config_schema={"n": int})
    def short(ctx, x):
        return ctx.op_config["n"] + x

    assert short(ctx=build_op_context(config={"n": 1}), x=2) == 3
    assert short(build_op_context(config={"n": 1}), 2) == 3


def test_retry_policy_rejects_negative_retries():
    with pytest.raises(DefinitionError, match="max_retries must be >= 0"):
        RetryPolicy(max_retries=-1)


def test_several_outputs_returned_as_a_tuple_or_yielded():
    @op(out={"low": Out(), "high": Out()})
    def split(values):
        return min(values), max(values)

    @op(out={"low": Out(), "high": Out()})
    def split_yielding(values):
        yield Output(max(values), "high")
        yield Output(min(values), "low")

    assert split([3, 1, 2]) == (1, 3)
    assert split_yielding([3, 1, 2]) == (1, 3)


def test_returning_the_wrong_number_of_outputs_names_the_op():
    @op(out={"a": Out(), "b": Out()})
    def pair():
        return 1, 2, 3

    with pytest.raises(Exception, match=r"op 'pair' has 2 outputs \['a', 'b'\]"):
        pair()


def test_yielding_an_undeclared_output_names_it():
    @op(out={"a": Out()})
    def wrong():
        yield Output(1, "b")

    with pytest.raises(Exception, match="yielded Output 'b'"):
        wrong()


# ---- build_op_context -----------------------------------------------------------------------


def test_context_config_is_validated_and_defaults_are_filled():
    @op(config_schema={"dog_breed": str, "count": Field(int, default_value=2)})
    def emit_dog(context):
        return [context.op_config["dog_breed"]] * context.op_config["count"]

    assert emit_dog(build_op_context(config={"dog_breed": "corgi"})) == ["corgi", "corgi"]
    assert emit_dog(build_op_context(config={"dog_breed": "pug", "count": 1})) == ["pug"]


def test_context_config_errors_raise_config_error_naming_every_field():
    @op(config_schema={"dog_breed": str, "count": int})
    def emit_dog(context):
        return context.op_config

    with pytest.raises(ConfigError) as info:
        emit_dog(build_op_context(config={"dog_breed": 3, "extra": True}))
    text = str(info.value)
    assert "emit_dog" in text
    assert len(info.value.errors) == 3
    assert any("dog_breed: expected str, got int" in e for e in info.value.errors)
    assert any("count: required field missing" in e for e in info.value.errors)
    assert any("extra: unknown field" in e for e in info.value.errors)


def test_context_without_config_for_an_op_that_requires_it_raises_config_error():
    @op(config_schema={"dog_breed": str})
    def emit_dog(context):
        return context.op_config

    with pytest.raises(ConfigError, match="dog_breed"):
        emit_dog(build_op_context())


def test_context_with_a_pydantic_config_model():
    class Settings(BaseModel):
        threshold: float
        label: str = "x"

    @op(config_schema=Settings)
    def judge(context, value):
        return context.op_config.label if value > context.op_config.threshold else None

    assert judge(build_op_context(config={"threshold": 0.5}), 0.7) == "x"
    with pytest.raises(ConfigError, match="threshold"):
        judge(build_op_context(config={"threshold": "high"}), 0.7)


def test_context_exposes_run_id_op_def_and_a_working_log():
    seen = {}

    @op
    def inspect_context(context):
        context.log.info("checking %s", "things")
        seen["run_id"] = context.run_id
        seen["op_def"] = context.op_def
        return "ok"

    assert inspect_context(build_op_context()) == "ok"
    assert isinstance(seen["run_id"], str) and seen["run_id"]
    assert seen["op_def"] is inspect_context
    # a context is built for ops that take one even if the test passes none
    assert inspect_context() == "ok"


def test_context_resources_as_plain_objects_and_as_definitions():
    @resource(config_schema={"prefix": str})
    def greeter(init_context):
        prefix = init_context.resource_config["prefix"]
        return lambda name: f"{prefix} {name}"

    @op(required_resource_keys={"greet", "numbers"})
    def hello(context):
        return context.resources.greet("dog"), context.resources["numbers"]

    context = build_op_context(
        resources={"greet": greeter.configured({"prefix": "hi"}), "numbers": [1, 2]}
    )
    assert hello(context) == ("hi dog", [1, 2])


def test_context_resource_definition_with_bad_config_raises_config_error():
    @resource(config_schema={"prefix": str})
    def greeter(init_context):
        return init_context.resource_config["prefix"]

    with pytest.raises(ConfigError, match=r"resources\.greet\.config\.prefix"):
        build_op_context(resources={"greet": greeter})
    with pytest.raises(ConfigError, match="expected str, got int"):
        build_op_context(resources={"greet": greeter.configured({"prefix": 1})})


def test_context_resource_defaults_come_from_the_schema():
    @resource(config_schema={"size": Field(int, default_value=10)})
    def pool(init_context):
        return init_context.resource_config["size"]

    @op(required_resource_keys={"pool"})
    def pool_size(context):
        return context.resources.pool

    assert pool_size(build_op_context(resources={"pool": pool})) == 10


def test_generator_resources_are_torn_down_when_the_context_closes():
    events = []

    @resource
    def connection():
        events.append("open")
        yield "conn"
        events.append("close")

    @op(required_resource_keys={"conn"})
    def use(context):
        return context.resources.conn

    with build_op_context(resources={"conn": connection}) as context:
        assert use(context) == "conn"
        assert events == ["open"]
    assert events == ["open", "close"]


def test_context_resources_may_require_each_other():
    @resource(config_schema={"root": Field(str, default_value="/srv")})
    def settings(init_context):
        return init_context.resource_config["root"]

    @resource(required_resource_keys={"settings"})
    def store(init_context):
        return f"{init_context.resources.settings}/data"

    @op(required_resource_keys={"store"})
    def where(context):
        return context.resources.store

    assert where(build_op_context(resources={"store": store, "settings": settings})) == "/srv/data"
    with pytest.raises(DefinitionError, match="resource 'store' requires resource 'settings'"):
        build_op_context(resources={"store": store})


def test_calling_an_op_without_the_resources_it_requires_names_them():
    @op(required_resource_keys={"db", "cache"})
    def needs_both(context):
        return context.resources.db

    with pytest.raises(
        DefinitionError, match=r"op 'needs_both' requires resource\(s\) \['cache'\]"
    ):
        needs_both(build_op_context(resources={"db": 1}))
    with pytest.raises(DefinitionError, match=r"\['cache', 'db'\]"):
        needs_both()


def test_a_missing_input_in_direct_invocation_is_reported():
    @op
    def add(a, b):
        return a + b

    with pytest.raises(DefinitionError, match="input 'b' was not given"):
        add(1)
    with pytest.raises(DefinitionError, match="has no input 'c'"):
        add(1, 2, c=3)
