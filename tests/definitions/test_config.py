"""Run config: schemas users write, validation that reports every problem with its path before
any step runs, YAML files, the legacy ``solids`` spelling and nested graph config."""

from __future__ import annotations

import enum

import pytest
from pydantic import BaseModel

from memodag import ConfigError, Field, Noneable, graph, job, op, resource
from memodag.plan.run_config import load_run_config_files

ran: list[str] = []


@op(config_schema={"dog_breed": str, "count": Field(int, default_value=1)})
def emit_dog(context):
    ran.append("emit_dog")
    return [context.op_config["dog_breed"]] * context.op_config["count"]


@op(config_schema={"loud": bool})
def bark(context, dogs):
    ran.append("bark")
    return [d.upper() if context.op_config["loud"] else d for d in dogs]


@job
def dogs():
    bark(emit_dog())


@pytest.fixture(autouse=True)
def _reset_side_effects():
    ran.clear()


def _ops(**sections):
    return {"ops": {name: {"config": cfg} for name, cfg in sections.items()}}


def test_config_reaches_ops_with_defaults_filled():
    result = dogs.execute_in_process(
        run_config=_ops(emit_dog={"dog_breed": "pug"}, bark={"loud": True})
    )
    assert result.output_for_node("bark") == ["PUG"]


def test_every_problem_is_reported_at_once_with_its_path_and_nothing_runs(instance):
    with pytest.raises(ConfigError) as info:
        dogs.execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "emit_dog": {"config": {"dog_breed": 3, "colour": "brown"}},
                    "bark": {"config": {"loud": "yes"}},
                    "howl": {"config": {}},
                },
                "resources": {"nope": {}},
                "extra": 1,
            },
        )
    errors = info.value.errors
    expected = [
        "ops.emit_dog.config.dog_breed: expected str, got int",
        "ops.emit_dog.config.colour: unknown field",
        "ops.bark.config.loud: expected bool, got str",
        "ops.howl: no node named 'howl'",
        "resources.nope: no resource named 'nope'",
        "extra: unknown top-level key",
    ]
    for fragment in expected:
        assert any(fragment in e for e in errors), (fragment, errors)
    assert len(errors) == len(expected)
    assert ran == []
    assert instance.get_runs() == []


def test_missing_required_config_names_the_op_and_schema():
    with pytest.raises(ConfigError) as info:
        dogs.execute_in_process(run_config=_ops(bark={"loud": False}))
    (error,) = info.value.errors
    assert error.startswith("ops.emit_dog.config: required by op 'emit_dog'")
    assert "dog_breed: str" in error
    assert ran == []


def test_unknown_keys_inside_a_node_section():
    with pytest.raises(ConfigError, match=r"ops\.emit_dog\.inputs: unknown key; expected 'config'"):
        dogs.execute_in_process(
            run_config={
                "ops": {
                    "emit_dog": {"config": {"dog_breed": "x"}, "inputs": {}},
                    "bark": {"config": {"loud": True}},
                }
            }
        )


def test_legacy_solids_spelling_is_accepted_and_named_in_errors():
    config = {
        "solids": {
            "emit_dog": {"config": {"dog_breed": "lab"}},
            "bark": {"config": {"loud": False}},
        }
    }
    assert dogs.execute_in_process(run_config=config).output_for_node("bark") == ["lab"]
    with pytest.raises(ConfigError, match=r"solids\.emit_dog\.config\.dog_breed: expected str"):
        dogs.execute_in_process(
            run_config={
                "solids": {
                    "emit_dog": {"config": {"dog_breed": 1}},
                    "bark": {"config": {"loud": False}},
                }
            }
        )
    with pytest.raises(ConfigError, match="either 'ops' or the legacy 'solids'"):
        dogs.execute_in_process(run_config={**config, "ops": {}})


def test_job_default_config_is_merged_under_run_config():
    @job(config=_ops(emit_dog={"dog_breed": "pug", "count": 2}, bark={"loud": False}))
    def configured():
        bark(emit_dog())

    assert configured.execute_in_process().output_for_node("bark") == ["pug", "pug"]
    overridden = configured.execute_in_process(run_config=_ops(emit_dog={"dog_breed": "lab"}))
    assert overridden.output_for_node("bark") == ["lab", "lab"]


def test_yaml_files_are_deep_merged_later_files_winning(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        "ops:\n  emit_dog:\n    config:\n      dog_breed: pug\n      count: 2\n  bark:\n    config:\n      loud: false\n"
    )
    override = tmp_path / "override.yaml"
    override.write_text("ops:\n  bark:\n    config:\n      loud: true\n")
    config = load_run_config_files([base, str(override)])
    assert config["ops"]["emit_dog"]["config"] == {"dog_breed": "pug", "count": 2}
    assert dogs.execute_in_process(run_config=config).output_for_node("bark") == ["PUG", "PUG"]


def test_yaml_file_problems_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config_files([tmp_path / "missing.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("ops: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config_files([broken])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top, got list"):
        load_run_config_files([listing])


# ---- the schema forms users write ---------------------------------------------------------


def _run_config_of(schema, config):
    """Run a one-op job with ``schema`` and return the op's processed config."""

    @op(config_schema=schema)
    def probe(context):
        return context.op_config

    @job
    def probe_job():
        probe()

    run_config = {"ops": {"probe": {"config": config}}} if config is not None else None
    return probe_job.execute_in_process(run_config=run_config).output_for_node("probe")


def test_nested_dicts_lists_and_noneable():
    schema = {
        "source": {"path": str, "retries": Field(int, default_value=3)},
        "columns": [str],
        "limit": Noneable(int),
        "ratio": float,
    }
    config = {"source": {"path": "/data"}, "columns": ["a", "b"], "limit": None, "ratio": 1}
    assert _run_config_of(schema, config) == {
        "source": {"path": "/data", "retries": 3},
        "columns": ["a", "b"],
        "limit": None,
        "ratio": 1.0,
    }


def test_nested_errors_carry_the_full_path():
    schema = {"source": {"path": str}, "columns": [str], "limit": Noneable(int)}
    with pytest.raises(ConfigError) as info:
        _run_config_of(schema, {"source": {"path": 1}, "columns": ["a", 2], "limit": "x"})
    assert sorted(info.value.errors) == sorted(
        [
            "ops.probe.config.source.path: expected str, got int 1",
            "ops.probe.config.columns[1]: expected str, got int 2",
            "ops.probe.config.limit: expected int, got str 'x'",
        ]
    )


def test_optional_fields_and_sections_with_defaults_need_no_config():
    schema = {
        "name": Field(str, is_required=False),
        "settings": {"level": Field(int, default_value=1)},
        "tags": Field([str], default_value=[]),
    }
    assert _run_config_of(schema, None) == {"settings": {"level": 1}, "tags": []}


def test_an_absent_noneable_field_is_none():
    assert _run_config_of({"limit": Noneable(int), "name": str}, {"name": "x"}) == {
        "limit": None,
        "name": "x",
    }


def test_bool_is_not_an_int_and_int_is_accepted_as_float():
    with pytest.raises(ConfigError, match="expected int, got bool"):
        _run_config_of({"n": int}, {"n": True})
    assert _run_config_of({"x": float}, {"x": 2}) == {"x": 2.0}


class Colour(enum.Enum):
    RED = 1
    BLUE = 2


def test_enum_schema_accepts_member_names():
    assert _run_config_of({"colour": Colour}, {"colour": "RED"}) == {"colour": Colour.RED}
    with pytest.raises(
        ConfigError, match=r"colour: expected one of \['RED', 'BLUE'\], got 'GREEN'"
    ):
        _run_config_of({"colour": Colour}, {"colour": "GREEN"})


class Settings(BaseModel):
    threshold: float
    label: str = "default"


def test_pydantic_model_schema_gives_the_op_a_model():
    value = _run_config_of(Settings, {"threshold": 0.5})
    assert value == Settings(threshold=0.5, label="default")


def test_pydantic_errors_carry_the_path():
    with pytest.raises(ConfigError, match=r"ops\.probe\.config\.threshold: "):
        _run_config_of(Settings, {"threshold": "high"})


def test_an_op_without_schema_rejects_config():
    with pytest.raises(ConfigError, match=r"ops\.probe\.config: this takes no config"):
        _run_config_of(None, {"x": 1})


# ---- nested graphs and resources ----------------------------------------------------------


def test_config_for_ops_inside_nested_graphs():
    @op(config_schema={"factor": int})
    def scale(context):
        return context.op_config["factor"]

    @graph
    def inner():
        return scale()

    @graph
    def outer():
        return inner()

    @job
    def nested():
        outer()

    config = {"ops": {"outer": {"ops": {"inner": {"ops": {"scale": {"config": {"factor": 7}}}}}}}}
    assert nested.execute_in_process(run_config=config).output_for_node("outer.inner.scale") == 7

    with pytest.raises(ConfigError) as info:
        nested.execute_in_process(
            run_config={
                "ops": {
                    "outer": {
                        "config": {},
                        "ops": {"inner": {"ops": {"scale": {"config": {"factor": "7"}}}}},
                    }
                }
            }
        )
    assert sorted(info.value.errors) == sorted(
        [
            "ops.outer.config: unknown key for graph node; expected 'ops'",
            "ops.outer.ops.inner.ops.scale.config.factor: expected int, got str '7'",
        ]
    )


def test_resource_config_is_validated_with_op_config():
    @resource(config_schema={"url": str})
    def database(init_context):
        ran.append("database")
        return init_context.resource_config["url"]

    @op(required_resource_keys={"db"})
    def query(context):
        return context.resources.db

    @job(resource_defs={"db": database})
    def uses_db():
        query()

    with pytest.raises(ConfigError) as info:
        uses_db.execute_in_process(run_config={"resources": {"db": {"config": {"url": 5}}}})
    assert info.value.errors == ["resources.db.config.url: expected str, got int 5"]
    with pytest.raises(ConfigError, match=r"resources\.db\.config: required"):
        uses_db.execute_in_process()
    assert ran == []
    result = uses_db.execute_in_process(
        run_config={"resources": {"db": {"config": {"url": "sqlite://"}}}}
    )
    assert result.output_for_node("query") == "sqlite://"


def test_a_whole_config_given_as_a_field_with_a_default():
    assert _run_config_of(Field(int, default_value=3), None) == 3
    assert _run_config_of(Field(int, default_value=3), 5) == 5
    with pytest.raises(ConfigError, match=r"ops\.probe\.config: expected int, got str"):
        _run_config_of(Field(int, default_value=3), "five")


def test_a_default_that_does_not_match_its_type_fails_at_definition():
    from memodag import DefinitionError

    with pytest.raises(DefinitionError, match=r"op 'bad_default' config_schema\.n: the default"):

        @op(config_schema={"n": Field(int, default_value="three")})
        def bad_default(context):
            return 1


def test_legacy_solids_spelling_inside_nested_graphs():
    @op(config_schema={"factor": int})
    def scale(context):
        return context.op_config["factor"]

    @graph
    def inner():
        return scale()

    @job
    def legacy():
        inner()

    config = {"solids": {"inner": {"solids": {"scale": {"config": {"factor": 2}}}}}}
    assert legacy.execute_in_process(run_config=config).output_for_node("inner.scale") == 2


def test_run_config_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match="run config: expected a mapping, got list"):
        dogs.execute_in_process(run_config=[("ops", {})])
    with pytest.raises(ConfigError, match="ops: expected a mapping of node names, got list"):
        dogs.execute_in_process(run_config={"ops": ["emit_dog"]})
