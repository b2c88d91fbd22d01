"""Bad input that must be refused before it does harm: run ids and names that would lead out of
an io manager's base folder, storage locations that are not usable folders, a hung object
store, and stored pickles from a store that does not allow them (issue 14, bad input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memodag import (
    ExecutionError,
    InitResourceContext,
    StorageError,
    fs_io_manager,
    job,
    object_store_io_manager,
    op,
    versioned_filesystem_io_manager,
)
from memodag.storage.io_manager import OutputContext


@op
def make_number() -> int:
    return 7


@op
def double(n: int) -> int:
    return 2 * n


def _job(io_manager):
    @job(resource_defs={"io_manager": io_manager})
    def numbers():
        double(make_number())

    return numbers


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("run_id", ["/abs/path", "../../x", "..", "a/b", "", "x" * 129, "a b"])
def test_a_run_id_that_is_not_a_plain_name_is_refused_before_anything_runs(
    tmp_path, instance, run_id
):
    base = tmp_path / "sandbox" / "base"
    numbers = _job(fs_io_manager.configured({"base_dir": str(base)}))
    before = _files(tmp_path)
    with pytest.raises(ExecutionError, match=r"run_id .* is not valid: use 1 to 128 letters"):
        numbers.execute_in_process(instance=instance, run_id=run_id)
    assert _files(tmp_path) == before  # nothing written, anywhere
    assert instance.get_runs() == []  # and no run recorded


def test_a_run_id_of_letters_digits_dashes_and_underscores_is_used_as_given(tmp_path, instance):
    base = tmp_path / "base"
    numbers = _job(fs_io_manager.configured({"base_dir": str(base)}))
    result = numbers.execute_in_process(instance=instance, run_id="nightly_2026-12-06")
    assert result.run_id == "nightly_2026-12-06"
    assert (base / "nightly_2026-12-06" / "double.result.pkl").is_file()


def _manager(definition, config):
    return definition.resource_fn(InitResourceContext(resource_config=config, resources=None))


@pytest.mark.parametrize(
    "context",
    [
        OutputContext("make_number", "result", "../../escaped"),
        OutputContext("make_number", "result", "/abs/path"),
        OutputContext("make_number", "result", ".."),
        OutputContext("make_number", "result", "run", mapping_key="../../../escaped"),
        OutputContext("../../escaped", "result", "run", version="v1"),
        OutputContext("make_number", "../../escaped", "run", version="v1"),
    ],
    ids=["run-id-up", "run-id-absolute", "run-id-dotdot", "mapping-key", "step", "output"],
)
@pytest.mark.parametrize("kind", ["fs", "versioned", "object_store"])
def test_every_path_io_manager_refuses_a_path_outside_its_base(tmp_path, context, kind):
    base = tmp_path / "sandbox" / "base"
    if kind == "fs":
        manager = _manager(fs_io_manager, {"base_dir": str(base), "serializer": "pickle"})
    elif kind == "versioned":
        manager = _manager(
            versioned_filesystem_io_manager, {"base_dir": str(base), "serializer": "pickle"}
        )
        if context.version is None:  # the versioned layout has no run id: names a piece instead
            context = OutputContext(
                context.step_key,
                context.name,
                "run",
                mapping_key=context.mapping_key or context.run_id,
                version="v1",
            )
    else:
        manager = _manager(
            object_store_io_manager,
            {
                "base_url": f"file://{base}",
                "storage_options": {},
                "serializer": "pickle",
                "versioned": False,
            },
        )
    with pytest.raises(StorageError, match="outside the io manager's base"):
        manager.handle_output(context, 1)
    assert _files(tmp_path) == set()


def test_an_object_store_refuses_a_key_outside_its_prefix(tmp_path):
    manager = _manager(
        object_store_io_manager,
        {
            "base_url": "memory://bad-input-bucket/prefix",
            "storage_options": {},
            "serializer": "pickle",
            "versioned": False,
        },
    )
    with pytest.raises(StorageError, match="outside the io manager's base"):
        manager.handle_output(OutputContext("make_number", "result", "../other"), 1)
    with pytest.raises(StorageError, match="outside the io manager's base"):
        manager.handle_output(OutputContext("make_number", "result", "/abs"), 1)
