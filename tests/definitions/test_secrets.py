"""Secrets in config: environment-variable references resolved when a resource is built, and
passwords in literal URLs masked wherever run config is stored or shown."""

from __future__ import annotations

import json

import pytest

from memodag import ConfigError, EnvVar, Field, job, list_versions, op, resource

SECRET = "s3cr3t-pw"


@resource(
    config_schema={
        "url": str,
        "port": Field(int, default_value=1),
        "debug": Field(bool, default_value=False),
    }
)
def database(init_context):
    return dict(init_context.resource_config)


@op(required_resource_keys={"db"})
def read_db(context):
    return context.resources.db


@job(resource_defs={"db": database})
def uses_db():
    read_db()


def _stored_text(instance, run_id: str) -> str:
    """Everything the instance keeps about a run: its record, events and index entries."""
    run = instance.get_run(run_id)
    events = instance.get_events(run_id)
    entries = instance.index_entries()
    return json.dumps(
        [run.run_config, [str(e) for e in events], [e.recipe for e in entries]], default=str
    )


def test_env_reference_is_read_when_the_resource_is_built_and_stored_as_the_reference(
    instance, monkeypatch
):
    monkeypatch.setenv("TEST_DB_URL", f"postgresql://app:{SECRET}@db.example/prod")
    monkeypatch.setenv("TEST_DB_PORT", "6543")
    monkeypatch.setenv("TEST_DB_DEBUG", "yes")
    config = {
        "resources": {
            "db": {
                "config": {
                    "url": {"env": "TEST_DB_URL"},
                    "port": {"env": "TEST_DB_PORT"},
                    "debug": EnvVar("TEST_DB_DEBUG"),
                }
            }
        }
    }
    result = uses_db.execute_in_process(run_config=config, instance=instance)
    assert result.output_for_node("read_db") == {
        "url": f"postgresql://app:{SECRET}@db.example/prod",
        "port": 6543,
        "debug": True,
    }
    stored = instance.get_run(result.run_id).run_config
    assert stored["resources"]["db"]["config"] == {
        "url": {"env": "TEST_DB_URL"},
        "port": {"env": "TEST_DB_PORT"},
        "debug": {"env": "TEST_DB_DEBUG"},
    }
    assert SECRET not in _stored_text(instance, result.run_id)


def test_an_unset_or_unconvertible_variable_is_an_error_naming_it_before_any_op_runs(
    instance, monkeypatch
):
    ran = []

    @op(required_resource_keys={"db"})
    def note(context):
        ran.append(1)

    @job(resource_defs={"db": database})
    def noted():
        note()

    monkeypatch.delenv("TEST_DB_UNSET", raising=False)
    monkeypatch.setenv("TEST_DB_PORT", "not-a-port")
    config = {
        "resources": {
            "db": {"config": {"url": {"env": "TEST_DB_UNSET"}, "port": {"env": "TEST_DB_PORT"}}}
        }
    }
    with pytest.raises(ConfigError) as info:
        noted.execute_in_process(run_config=config, instance=instance)
    message = str(info.value)
    assert "resources.db.config.url: environment variable TEST_DB_UNSET is not set" in message
    assert "resources.db.config.port: environment variable TEST_DB_PORT must hold a int" in message
    assert ran == []


def test_env_references_in_op_config_are_refused_naming_the_op():
    @op(config_schema={"url": str})
    def takes_url(context):
        return context.op_config["url"]

    @job
    def plain():
        takes_url()

    with pytest.raises(ConfigError, match=r"ops\.takes_url\.config: environment variables"):
        plain.execute_in_process(
            run_config={"ops": {"takes_url": {"config": {"url": {"env": "X"}}}}}
        )


def test_configured_with_an_env_var(instance, monkeypatch):
    monkeypatch.setenv("TEST_DB_URL", "sqlite:///x.db")

    @job(resource_defs={"db": database.configured({"url": EnvVar("TEST_DB_URL")})})
    def preset():
        read_db()

    result = preset.execute_in_process(instance=instance)
    assert result.output_for_node("read_db")["url"] == "sqlite:///x.db"


def test_the_reference_is_the_version_not_the_value(instance, monkeypatch):
    """Pointing the variable elsewhere does not change versions: the reference is the config."""

    @resource(config_schema={"url": str}, version="1")
    def versioned_db(init_context):
        return init_context.resource_config["url"]

    @op(required_resource_keys={"db"}, version="1")
    def reads(context):
        return context.resources.db

    @job(resource_defs={"db": versioned_db})
    def versioned():
        reads()

    config = {"resources": {"db": {"config": {"url": {"env": "TEST_DB_URL"}}}}}
    monkeypatch.setenv("TEST_DB_URL", "a://one")
    first = list_versions(versioned, config, instance)
    monkeypatch.setenv("TEST_DB_URL", "a://two")
    assert list_versions(versioned, config, instance) == first


def test_a_password_in_a_literal_url_is_masked_in_the_stored_run_and_recipes(instance):
    @resource(config_schema={"url": str}, version="1")
    def versioned_db(init_context):
        return init_context.resource_config["url"]

    @op(required_resource_keys={"db"}, config_schema={"dsn": str}, version="1")
    def reads(context):
        return context.resources.db + context.op_config["dsn"]

    @job(resource_defs={"db": versioned_db}, tags={"memoized_run": "true"})
    def versioned():
        reads()

    url = f"postgresql://app:{SECRET}@db.example:5432/prod"
    dsn = f"host=db.example password={SECRET} dbname=prod"
    config = {
        "resources": {"db": {"config": {"url": url}}},
        "ops": {"reads": {"config": {"dsn": dsn}}},
    }
    result = versioned.execute_in_process(run_config=config, instance=instance)
    assert result.output_for_node("reads") == url + dsn  # the op saw the real values
    stored = instance.get_run(result.run_id).run_config
    assert stored["resources"]["db"]["config"]["url"] == (
        "postgresql://app:***@db.example:5432/prod"
    )
    assert stored["ops"]["reads"]["config"]["dsn"] == "host=db.example password=*** dbname=prod"
    assert SECRET not in _stored_text(instance, result.run_id)


def test_a_bad_value_in_config_errors_does_not_show_the_password():
    @op(config_schema={"port": int})
    def takes_port(context):
        return context.op_config["port"]

    @job
    def plain():
        takes_port()

    with pytest.raises(ConfigError) as info:
        plain.execute_in_process(
            run_config={"ops": {"takes_port": {"config": {"port": f"pg://u:{SECRET}@h/db"}}}}
        )
    assert SECRET not in str(info.value)
    assert "pg://u:***@h/db" in str(info.value)
