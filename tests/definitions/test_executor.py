"""Executor definitions: declared with definitions, their executors loaded only when a run starts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from memodag import DefinitionError, ExecutorDefinition, job, mem_io_manager, op


@op
def one() -> int:
    return 1


@op
def plus_one(x: int) -> int:
    return x + 1


def test_defining_and_validating_loads_no_executor_code_until_a_run_creates_one():
    # a fresh interpreter: sys.modules says exactly what `import memodag` and each step loaded
    script = textwrap.dedent(
        """
        import sys
        import memodag
        from memodag import ConfigError, dask_executor, job, mem_io_manager, multiprocess_executor, op

        def loaded():
            return sorted(m for m in sys.modules if m.startswith("memodag.executors."))

        @op
        def one():
            return 1

        @job(executor_def=multiprocess_executor.configured({"max_concurrent": 2}))
        def parallel():
            one()

        @job(executor_def=dask_executor, resource_defs={"io_manager": mem_io_manager})
        def on_dask():
            one()

        print("defined", loaded())
        try:
            parallel.execute_in_process(
                run_config={"execution": {"multiprocess": {"config": {"max_concurrent": 0}}}}
            )
        except ConfigError as exc:
            print("rejected", "max_concurrent" in str(exc), loaded())
        result = on_dask.execute_in_process(
            run_config={"execution": {"in_process": {}}}, instance=memodag.Instance.ephemeral()
        )
        print("ran", result.success, loaded())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=os.environ, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # `memodag.executors.base` (the Executor ABC users subclass) is public; no executor is
    assert lines[0] == "defined ['memodag.executors.base']"
    assert lines[1] == "rejected True ['memodag.executors.base']"
    assert lines[2] == "ran True ['memodag.executors.base', 'memodag.executors.in_process']"


def test_a_factory_named_by_reference_is_imported_when_the_run_starts(instance):
    # the in-process executor's own factory, under another name: a user's executor works the same
    mine = ExecutorDefinition("mine", "memodag.executors.in_process:create", {})

    @job(executor_def=mine, resource_defs={"io_manager": mem_io_manager})
    def chain():
        plus_one(one())

    result = chain.execute_in_process(instance=instance)
    assert result.success
    assert result.output_for_node("plus_one") == 2


def test_a_factory_reference_that_names_nothing_fails_naming_the_executor(instance):
    with pytest.raises(DefinitionError, match=r"executor 'mine'.*'package\.module:function'"):
        ExecutorDefinition("mine", "not_a_reference")
    with pytest.raises(DefinitionError, match=r"executor 'mine'.*callable"):
        ExecutorDefinition("mine", 42)  # type: ignore[arg-type]

    missing = ExecutorDefinition("mine", "memodag_no_such_module:create", {})

    @job(executor_def=missing)
    def single():
        one()

    with pytest.raises(
        DefinitionError, match=r"executor 'mine': cannot load its factory 'memodag_no_such_module"
    ):
        single.execute_in_process(instance=instance)
