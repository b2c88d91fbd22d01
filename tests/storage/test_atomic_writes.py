"""Writes are all-or-nothing: a failing or killed writer never leaves a value at its final path."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import pytest

from memodag import (
    EventType,
    Instance,
    Out,
    StepExecutionError,
    fs_io_manager,
    job,
    object_store_io_manager,
    op,
)

HERE = Path(__file__).parent


class SimulatedCrash(RuntimeError):
    pass


def _write_then_fail(obj: Any, file: BinaryIO) -> None:
    file.write(pickle.dumps(obj)[:10] + b"\0" * 100_000)
    file.flush()
    raise SimulatedCrash("disk full half-way through")


def _failing_job(manager: Any) -> Any:
    @op(out=Out(write=_write_then_fail, read=pickle.load))
    def make():
        return list(range(1000))

    @op
    def use(make):
        return len(make)

    @job(name="failing", resource_defs={"io_manager": manager})
    def failing():
        use(make())

    return failing


def _assert_failed_cleanly(result: Any, instance: Instance) -> None:
    assert not result.success
    assert result.failed_step_keys == ["make"]
    assert result.step_status["use"] == "skipped"
    (failure,) = result.get_step_failure_events()
    assert "SimulatedCrash: disk full half-way through" in failure.message
    assert not instance.get_events(result.run_id, [EventType.HANDLED_OUTPUT])


def _part_files() -> set[str]:
    # the test's own temp folder (see below): other processes staging uploads leave theirs
    # in the machine's
    return {p.name for p in Path(tempfile.gettempdir()).glob("memodag-*.part")}


def test_failing_local_write_leaves_nothing(tmp_path, instance):
    base = tmp_path / "out"
    failing = _failing_job(fs_io_manager.configured({"base_dir": str(base)}))
    result = failing.execute_in_process(instance=instance, raise_on_error=False)
    _assert_failed_cleanly(result, instance)
    # neither the value nor a temporary file is left behind
    assert [p for p in base.rglob("*") if p.is_file()] == []

    with pytest.raises(StepExecutionError, match="Step 'make' failed: SimulatedCrash"):
        failing.execute_in_process(instance=instance)
    assert [p for p in base.rglob("*") if p.is_file()] == []


def test_failing_rewrite_keeps_the_previous_whole_value(tmp_path):
    """The same path written twice (same run id, same base): the failed second write leaves the
    first value in place, whole, instead of a truncated file."""
    base = tmp_path / "out"
    mode = {"fail": False}

    def write(obj: Any, file: BinaryIO) -> None:
        if mode["fail"]:
            _write_then_fail(obj, file)
        pickle.dump(obj, file)

    @op(out=Out(write=write, read=pickle.load))
    def make():
        return {"payload": "x" * 10_000}

    @job(resource_defs={"io_manager": fs_io_manager.configured({"base_dir": str(base)})})
    def rewrite():
        make()

    with Instance.from_url(f"sqlite:///{tmp_path / 'a.db'}") as first:
        result = rewrite.execute_in_process(instance=first, run_id="same-run")
        path = Path(result.output_address("make").uri)
    mode["fail"] = True
    with Instance.from_url(f"sqlite:///{tmp_path / 'b.db'}") as second:
        failed = rewrite.execute_in_process(
            instance=second, run_id="same-run", raise_on_error=False
        )
        assert not failed.success
    with path.open("rb") as f:
        assert pickle.load(f) == {"payload": "x" * 10_000}
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_failing_write_to_memory_store_leaves_nothing(instance):
    root = f"memory://memodag-test-{uuid.uuid4().hex[:8]}"
    failing = _failing_job(object_store_io_manager.configured({"base_url": root}))
    result = failing.execute_in_process(instance=instance, raise_on_error=False)
    _assert_failed_cleanly(result, instance)
    fs = fsspec.filesystem("memory")
    assert not fs.exists(root) or fs.find(root) == []


def test_failing_write_to_s3_leaves_nothing(s3_bucket, instance, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = _part_files()
    failing = _failing_job(
        object_store_io_manager.configured(
            {"base_url": f"s3://{s3_bucket.name}/out", "storage_options": s3_bucket.storage_options}
        )
    )
    result = failing.execute_in_process(instance=instance, raise_on_error=False)
    _assert_failed_cleanly(result, instance)
    assert s3_bucket.keys() == []
    assert _part_files() <= before  # the local staging file is gone too


def _kill_mid_write(tmp_path: Path, base_url: str, *extra: str) -> str:
    """Run slow_writer.py, SIGKILL it once it is half-way through its write; return the run id."""
    marker = tmp_path / "writing"
    run_id = f"killed-{uuid.uuid4().hex[:8]}"
    args = [str(marker), str(tmp_path / "instance.db"), run_id, base_url, *extra]
    staging = tmp_path / "staging"  # the writer's TMPDIR: where object stores stage uploads
    staging.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "slow_writer.py"), *args],
        env={**os.environ, "TMPDIR": str(staging)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"writer exited early:\n{proc.stdout.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("writer never started writing")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return run_id


def test_sigkill_mid_write_leaves_no_file_at_the_final_path(tmp_path):
    base = tmp_path / "out"
    run_id = _kill_mid_write(tmp_path, str(base))
    final = base / run_id / "slow.result"
    assert not final.exists()
    # the killed writer was really half-way: its temporary file is there, under another name
    (partial,) = list(final.parent.iterdir())
    assert partial.name.startswith("slow.result.tmp-") and partial.stat().st_size > 0


def test_sigkill_mid_write_to_s3_leaves_no_object(tmp_path, s3_bucket):
    _kill_mid_write(tmp_path, f"s3://{s3_bucket.name}/out", s3_bucket.endpoint_url)
    assert s3_bucket.keys() == []
    # it was killed while staging the upload, which never started
    (staged,) = list((tmp_path / "staging").iterdir())
    assert staged.name.startswith("memodag-") and staged.stat().st_size > 0
