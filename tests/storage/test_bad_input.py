"""Bad input that must be refused before it does harm: run ids and names that would lead out of
an io manager's base folder, storage locations that are not usable folders, a hung object
store, and stored pickles from a store that does not allow them (issue 14, bad input)."""

from __future__ import annotations

import json
import os
import pickle
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
    Out,
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


# -- pickles: who can write the store can run code ---------------------------------------


class _Payload:
    """A pickle that, when loaded, creates a file: any code could run in its place."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _store(base: Path, **config) -> object:
    return fs_io_manager.configured({"base_dir": str(base), **config})


def _pipeline(io_manager, value_fn):
    @op
    def produce():
        return value_fn()

    @op
    def consume(value) -> str:
        return repr(value)

    @job(resource_defs={"io_manager": io_manager})
    def pipeline():
        consume(produce())

    return pipeline


def test_a_store_without_pickle_writes_plain_data_as_json_and_frames_as_parquet(tmp_path, instance):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    base = tmp_path / "base"
    data = {"n": 1, "names": ["a", "b"], "ok": True, "ratio": 0.5, "none": None}
    result = _pipeline(_store(base, allow_pickle=False), lambda: data).execute_in_process(
        instance=instance
    )
    stored = base / result.run_id / "produce.result"
    assert json.loads(stored.read_text()) == data  # plain JSON on disk, no pickle
    assert result.output_for_node("consume") == repr(data)

    frame = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    result = _pipeline(_store(base, allow_pickle=False), lambda: frame).execute_in_process(
        instance=instance
    )
    stored = base / result.run_id / "produce.result"
    assert stored.read_bytes()[:4] == b"PAR1"
    assert result.output_for_node("produce").equals(frame)


def test_writing_a_value_that_needs_pickle_to_a_store_without_pickle_names_the_output(
    tmp_path, instance
):
    pipeline = _pipeline(_store(tmp_path / "base", allow_pickle=False), lambda: {1, 2})
    with pytest.raises(ExecutionError) as raised:
        pipeline.execute_in_process(instance=instance)
    message = str(raised.value)
    assert "op 'produce' could not store output 'result'" in message, message
    assert "allow_pickle: false" in message
    assert "Out(write=..., read=...)" in message  # the way out

    # asking for pickle by name is refused the same way
    @op(out=Out(serializer="pickle"))
    def produce_pickle() -> int:
        return 1

    @job(resource_defs={"io_manager": _store(tmp_path / "base", allow_pickle=False)})
    def explicit():
        produce_pickle()

    with pytest.raises(ExecutionError, match="asks for pickle, and this io manager does not"):
        explicit.execute_in_process(instance=instance)


def test_a_store_without_pickle_refuses_to_load_a_stored_pickle(tmp_path, instance):
    base = tmp_path / "base"
    marker = tmp_path / "code-ran"
    # a run with pickle allowed stores a pickle; someone who can write the store replaces it
    parent = _pipeline(_store(base), lambda: {1, 2}).execute_in_process(instance=instance)
    stored = base / parent.run_id / "produce.result.pkl"
    stored.write_bytes(pickle.dumps(_Payload(str(marker))))

    strict = _pipeline(_store(base, allow_pickle=False), lambda: {1, 2})
    with pytest.raises(ExecutionError) as raised:
        strict.execute_in_process(
            instance=instance, parent_run_id=parent.run_id, step_selection=["consume"]
        )
    message = str(raised.value)
    assert "produce.result" in message and "allow_pickle: false" in message, message
    assert not marker.exists()  # the pickle was never loaded

    # the same file under the auto format (what a store without pickle writes) is refused too
    auto = _store(base, serializer="auto", allow_pickle=False)
    parent = _pipeline(auto, lambda: [1]).execute_in_process(instance=instance)
    (base / parent.run_id / "produce.result").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ExecutionError, match=r"is a pickle.*allow_pickle: false"):
        _pipeline(auto, lambda: [1]).execute_in_process(
            instance=instance, parent_run_id=parent.run_id, step_selection=["consume"]
        )
    assert not marker.exists()


def test_the_cli_fails_a_step_whose_value_needs_pickle_in_a_store_without_pickle(tmp_path):
    (tmp_path / "job.py").write_text(
        textwrap.dedent(
            """
            from memodag import fs_io_manager, job, op

            @op
            def produce():
                return {1, 2}

            store = fs_io_manager.configured({"base_dir": "out", "allow_pickle": False})

            @job(resource_defs={"io_manager": store})
            def strict():
                produce()
            """
        )
    )
    result = run_memodag(
        "job", "execute", "-f", "job.py", cwd=tmp_path, home=tmp_path / "home", check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "allow_pickle: false" in output and "produce" in output, output


def test_the_auto_format_keeps_types_json_cannot_say_by_falling_back_to_pickle(tmp_path, instance):
    base = tmp_path / "base"
    value = {"pair": (1, 2), 3: "int key"}
    result = _pipeline(_store(base, serializer="auto"), lambda: value).execute_in_process(
        instance=instance
    )
    assert (base / result.run_id / "produce.result").read_bytes()[:1] == b"\x80"
    assert result.output_for_node("produce") == value
    result = _pipeline(_store(base, serializer="auto"), lambda: [1, "a"]).execute_in_process(
        instance=instance
    )
    assert json.loads((base / result.run_id / "produce.result").read_text()) == [1, "a"]
