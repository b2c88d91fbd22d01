"""Configs that would exhaust memory or the stack are refused quickly as ``ConfigError``s (exit 2
on the CLI): YAML alias bombs, configs nested too deep, from a file or a Python dict."""

from __future__ import annotations

import textwrap
import time

import pytest

from cli_process import run_memodag
from memodag import ConfigError, job, op

#: the documented limits (docs/reliability.md, "Bad input")
MAX_CONFIG_DEPTH = 100
MAX_CONFIG_SIZE = 10_000_000


@op(config_schema={"settings": dict})
def configured(context) -> int:
    return len(context.op_config["settings"])


@job
def settings_job():
    configured()


JOB_FILE = textwrap.dedent(
    """
    from memodag import job, op

    @op(config_schema={"settings": dict})
    def configured(context) -> int:
        return len(context.op_config["settings"])

    @job
    def settings_job():
        configured()
    """
)


def _alias_bomb(levels: int = 12) -> str:
    """A few hundred bytes of YAML whose aliases expand to 10**levels strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return (
        "ops:\n  configured:\n    config:\n      settings:\n"
        + "\n".join("        " + line for line in lines)
        + "\n"
    )


def _nested_yaml(depth: int) -> str:
    return (
        "ops:\n  configured:\n    config:\n      settings:\n        deep: "
        + "[" * depth
        + "]" * depth
        + "\n"
    )


def _nested_dict(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return {"ops": {"configured": {"config": {"settings": value}}}}


def test_a_yaml_alias_bomb_is_refused_fast_with_exit_2(tmp_path):
    (tmp_path / "job.py").write_text(JOB_FILE)
    bomb = _alias_bomb()
    assert len(bomb.encode()) < 1000
    (tmp_path / "bomb.yaml").write_text(bomb)
    started = time.monotonic()
    result = run_memodag(
        "job", "execute", "-f", "job.py", "-c", "bomb.yaml",
        cwd=tmp_path, home=tmp_path / "home", check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"expands to more than {MAX_CONFIG_SIZE:,}" in result.stderr
    assert "bomb.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    assert (
        time.monotonic() - started < 30
    )  # the process start dominates; unchecked it ran out of memory


def test_an_alias_bomb_passed_as_a_python_dict_is_refused():
    shared: list = ["lol"] * 10
    for _ in range(12):
        shared = [shared] * 10
    config = {"ops": {"configured": {"config": {"settings": {"bomb": shared}}}}}
    started = time.monotonic()
    with pytest.raises(ConfigError, match="expands to more than"):
        settings_job.execute_in_process(run_config=config)
    assert time.monotonic() - started < 5


def test_a_recursive_yaml_alias_is_refused(tmp_path):
    (tmp_path / "job.py").write_text(JOB_FILE)
    (tmp_path / "loop.yaml").write_text(
        "ops:\n  configured:\n    config:\n      settings:\n        loop: &loop [*loop]\n"
    )
    result = run_memodag(
        "job", "execute", "-f", "job.py", "-c", "loop.yaml",
        cwd=tmp_path, home=tmp_path / "home", check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "contains itself" in result.stderr


def test_a_yaml_config_nested_too_deep_is_a_config_error_with_exit_2(tmp_path):
    (tmp_path / "job.py").write_text(JOB_FILE)
    (tmp_path / "deep.yaml").write_text(_nested_yaml(1200))
    result = run_memodag(
        "job", "execute", "-f", "job.py", "-c", "deep.yaml",
        cwd=tmp_path, home=tmp_path / "home", check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"nested more than {MAX_CONFIG_DEPTH} levels deep" in result.stderr
    assert "RecursionError" not in result.stderr


def test_a_python_config_nested_too_deep_is_a_config_error():
    with pytest.raises(ConfigError, match=f"nested more than {MAX_CONFIG_DEPTH} levels deep"):
        settings_job.execute_in_process(run_config=_nested_dict(1500))


def test_a_config_within_the_limits_runs(tmp_path):
    # the top mapping is level 1: ops, configured, config, settings, then the nesting
    result = settings_job.execute_in_process(run_config=_nested_dict(MAX_CONFIG_DEPTH - 5))
    assert result.output_for_node("configured") == 1
    (tmp_path / "job.py").write_text(JOB_FILE)
    (tmp_path / "ok.yaml").write_text(
        _alias_bomb(levels=3)
        + _nested_yaml(50)[len("ops:\n  configured:\n    config:\n      settings:\n") :]
    )
    run_memodag(
        "job", "execute", "-f", "job.py", "-c", "ok.yaml", cwd=tmp_path, home=tmp_path / "home"
    )
