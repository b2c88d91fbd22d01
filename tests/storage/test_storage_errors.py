"""Storage errors name what was asked, what was wrong, and what to do instead."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from memodag import (
    MemodagError,
    Out,
    StepExecutionError,
    StorageError,
    fs_io_manager,
    job,
    object_store_io_manager,
    op,
)


def test_unknown_serializer_on_an_out(instance):
    with pytest.raises(
        MemodagError, match=r"unknown serializer 'xml'.*'json'.*'parquet'.*'pickle'"
    ):
        # rejected where it is declared, or at the latest when the output is stored

        @op(out=Out(serializer="xml"))
        def make():
            return 1

        @job
        def pipeline():
            make()

        pipeline.execute_in_process(instance=instance)


def test_unknown_default_serializer_of_a_manager(tmp_path, instance):
    @op
    def make():
        return 1

    @job(resource_defs={"io_manager": fs_io_manager.configured({"serializer": "yaml"})})
    def pipeline():
        make()

    with pytest.raises(MemodagError, match="unknown serializer 'yaml'"):
        pipeline.execute_in_process(instance=instance)
    assert not instance.storage_dir.exists() or not any(instance.storage_dir.rglob("*.*"))


def test_json_serializer_given_a_value_json_cannot_hold(instance):
    @op(out=Out(serializer="json"))
    def make():
        return {"ids": {1, 2}}

    @job
    def pipeline():
        make()

    with pytest.raises(StepExecutionError) as info:
        pipeline.execute_in_process(instance=instance)
    message = str(info.value)
    assert "Step 'make' failed" in message
    assert "JSON serializer cannot store a dict value" in message
    assert "set is not JSON serializable" in message
    assert "serializer='pickle'" in message
    assert not any(p.is_file() for p in instance.storage_dir.rglob("*"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": [1]}, "got builtins.dict"),
        (pd.Series([1, 2]), "wrap a Series with .to_frame()"),
        (pd.DataFrame({"mixed": [1, "x"]}), "give each column one type"),
    ],
)
def test_parquet_serializer_given_a_non_table(value, expected, instance):
    @op(out=Out(serializer="parquet"))
    def make():
        return value

    @job
    def pipeline():
        make()

    with pytest.raises(StepExecutionError, match="parquet serializer") as info:
        pipeline.execute_in_process(instance=instance)
    assert expected in str(info.value)


def test_missing_stored_file_names_the_address(instance):
    @op
    def make():
        return 1

    @op
    def use(make):
        return make

    @job
    def pipeline():
        use(make())

    parent = pipeline.execute_in_process(instance=instance)
    uri = parent.output_address("make").uri
    Path(uri).unlink()
    with pytest.raises(StepExecutionError) as info:
        pipeline.execute_in_process(
            instance=instance, parent_run_id=parent.run_id, step_selection=["use"]
        )
    message = str(info.value)
    assert "could not load input 'make'" in message and uri in message


def test_object_store_url_with_an_unknown_protocol(instance):
    @op
    def make():
        return 1

    @job(
        resource_defs={
            "io_manager": object_store_io_manager.configured({"base_url": "nosuch://x/y"})
        }
    )
    def pipeline():
        make()

    with pytest.raises(
        StorageError, match=r"cannot open base_url 'nosuch://x/y'.*s3://bucket/prefix"
    ):
        pipeline.execute_in_process(instance=instance)


def test_s3_url_without_s3fs_says_what_to_install(tmp_path):
    """In a process where s3fs cannot be imported (as on an install without the s3 extra)."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["s3fs"] = None  # import s3fs now raises ImportError
        from memodag import Instance, StorageError, job, object_store_io_manager, op

        @op
        def make():
            return 1

        manager = object_store_io_manager.configured({"base_url": "s3://bucket/prefix"})

        @job(resource_defs={"io_manager": manager})
        def pipeline():
            make()

        try:
            pipeline.execute_in_process(instance=Instance.ephemeral())
        except StorageError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "base_url 's3://bucket/prefix' needs pip install 'memodag[s3]' (s3fs)" in done.stdout
