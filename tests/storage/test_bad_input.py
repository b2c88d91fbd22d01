"""Bad input that must be refused before it does harm: run ids and names that would lead out of
an io manager's base folder, storage locations that are not usable folders, a hung object
store, and stored pickles from a store that does not allow them (issue 14, bad input)."""

from __future__ import annotations

import os
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_process import run_memodag
from memodag import (
    EventType,
    ExecutionError,
    InitResourceContext,
    RetryPolicy,
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


# -- storage locations that cannot hold outputs --------------------------------------------


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write into: a read-only one, or, for root (who ignores
    permissions), /proc/self."""
    if os.geteuid() == 0:
        return Path("/proc/self")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("kind", ["dev-null", "file", "under-a-file", "read-only"])
def test_a_storage_path_that_is_not_a_writable_directory_fails_the_run_before_any_step(
    tmp_path, instance, kind
):
    regular = tmp_path / "a-file"
    regular.write_text("not a folder")
    base = {
        "dev-null": Path("/dev/null"),
        "file": regular,
        "under-a-file": regular / "base",
        "read-only": _unwritable_dir(tmp_path),
    }[kind]
    ran: list[str] = []

    @op
    def first() -> int:
        ran.append("first")
        return 1

    @job(resource_defs={"io_manager": fs_io_manager.configured({"base_dir": str(base)})})
    def one_step():
        first()

    with pytest.raises(ExecutionError) as raised:
        one_step.execute_in_process(instance=instance)
    message = str(raised.value)
    assert "io manager 'io_manager'" in message and str(base) in message, message
    assert "cannot store outputs" in message
    assert ran == []  # refused before the step ran, not at its output
    assert regular.read_text() == "not a folder"


def test_the_cli_reports_an_unusable_storage_path_before_any_step(tmp_path):
    (tmp_path / "job.py").write_text(
        textwrap.dedent(
            """
            from memodag import fs_io_manager, job, op

            @op
            def first() -> int:
                print("STEP RAN")
                return 1

            @job(resource_defs={"io_manager": fs_io_manager.configured({"base_dir": "/dev/null"})})
            def one_step():
                first()
            """
        )
    )
    result = run_memodag(
        "job", "execute", "-f", "job.py", cwd=tmp_path, home=tmp_path / "home", check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr  # a run that failed at its start
    assert "/dev/null is not a directory" in result.stdout + result.stderr
    assert "STEP RAN" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("manager", "config"),
    [
        (object_store_io_manager, {"base_url": ""}),
        (object_store_io_manager, {"base_url": "file://"}),
        (fs_io_manager, {"base_dir": ""}),
    ],
    ids=["base_url-empty", "base_url-file-scheme-only", "base_dir-empty"],
)
def test_an_empty_storage_location_is_an_error_not_the_current_directory(
    tmp_path, monkeypatch, instance, manager, config
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    numbers = _job(manager.configured(config))
    with pytest.raises(Exception, match=r"names no location|base_dir is empty") as raised:
        numbers.execute_in_process(instance=instance)
    assert isinstance(raised.value, StorageError | ExecutionError)
    assert list(cwd.iterdir()) == []


# -- a hung object store --------------------------------------------------------------------


@pytest.fixture
def hung_store() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # held open, never read from or written to
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_a_hung_object_store_fails_the_step_after_its_timeout_and_retries(hung_store, instance):
    pytest.importorskip("s3fs")
    attempts: list[int] = []

    @op(retry_policy=RetryPolicy(max_retries=1))
    def produce() -> int:
        attempts.append(1)
        return 1

    store = object_store_io_manager.configured(
        {
            "base_url": "s3://bucket/prefix",
            "storage_options": {"endpoint_url": hung_store, "key": "k", "secret": "s"},
            "timeout": 1.0,
        }
    )

    @job(resource_defs={"io_manager": store})
    def one_output():
        produce()

    outcome: dict[str, object] = {}

    def run() -> None:
        outcome["result"] = one_output.execute_in_process(instance=instance, raise_on_error=False)

    # in a thread: without a timeout the run would hang for minutes, and the test must end
    runner = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "the run against a hung store did not end within 60 s"
    assert time.monotonic() - started < 30
    result = outcome["result"]
    assert not result.success
    assert len(attempts) == 2  # the step's retry policy tried once more
    failure = result.run_failure or ""
    events = instance.get_events(result.run_id)
    assert any(e.event_type is EventType.STEP_RETRY for e in events)
    messages = " ".join(str(e.message) for e in events if e.step_key == "produce")
    assert "did not answer within 1s" in messages + failure, messages
