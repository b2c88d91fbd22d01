"""Jobs whose io manager and resource write every lifecycle call they hear to a file, with the
process that heard it: the test (the driver) and worker processes share only the disk."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from memodag import (
    MEMOIZED_RUN_TAG,
    Field,
    Instance,
    RunLifecycle,
    in_process_executor,
    io_manager,
    job,
    multiprocess_executor,
    op,
    resource,
)
from memodag.storage.io_managers.files import LocalFileStore, PathIOManager

_CONFIG = {
    "base": Field(str),
    "log": Field(str),
    "fail": Field(str, default_value="", description="the hook that raises"),
}


def write_line(path: str, entry: dict[str, Any]) -> None:
    with open(path, "a") as file:
        file.write(json.dumps({**entry, "pid": os.getpid()}) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


class RecordingFsManager(PathIOManager):
    """A file io manager that logs its lifecycle, checks each recorded output is already in
    the instance when it hears of it, and refuses to work once torn down (as a connection)."""

    closed = False

    def load_input(self, context):
        if self.closed:
            raise RuntimeError("load_input on a closed io manager")
        return super().load_input(context)

    def __init__(self, config: dict[str, Any], instance: Any) -> None:
        super().__init__(LocalFileStore(), config["base"])
        self.log = config["log"]
        self.fail = config["fail"]
        self.instance = instance

    def _hear(self, hook: str, **entry: Any) -> None:
        write_line(self.log, {"hook": hook, **entry})
        if self.fail == hook:
            raise RuntimeError(f"{hook} exploded")

    def on_run_start(self, run):
        self._hear("start", run_id=run.run_id, key=run.resource_key, job=run.job_name)

    def on_output_recorded(self, run, address, memoized):
        stored = self.instance.get_output_addresses(run.run_id)
        durable = stored.get((address.step_key, address.output_name, address.mapping_key))
        self._hear(
            "recorded",
            output=f"{address.step_key}.{address.output_name}",
            memoized=memoized,
            durable=durable == address,
        )

    def on_run_end(self, run, end):
        self._hear("end", status=end.status, message=end.message)


@io_manager(config_schema=_CONFIG)
def recording_io_manager(context):
    manager = RecordingFsManager(dict(context.resource_config), context.instance)
    yield manager
    manager.closed = True


class Tracker(RunLifecycle):
    """A plain resource that hears the run's start and end."""

    def __init__(self, log: str) -> None:
        self.log = log

    def on_run_start(self, run):
        write_line(self.log, {"hook": "resource start", "key": run.resource_key})

    def on_run_end(self, run, end):
        write_line(self.log, {"hook": "resource end", "status": end.status})


@resource(config_schema={"log": str})
def tracker(context):
    return Tracker(context.resource_config["log"])


@op(version="1", config_schema={"fail": Field(bool, default_value=False)})
def source(context):
    if context.op_config["fail"]:
        raise ValueError("source failed on purpose")
    return 2


@op(version="1")
def double(x):
    return x * 2


@op(version="1", config_schema={"wait_for": Field(str, default_value="")})
def wait(context, x):
    """Blocks until the file ``wait_for`` exists, after saying it started (``.started``)."""
    release = context.op_config["wait_for"]
    if release:
        Path(release + ".started").write_text(str(os.getpid()))
        while not os.path.exists(release):
            time.sleep(0.05)
    return x + 1


def make_job(executor: str, with_tracker: bool = False) -> Any:
    executor_def = (
        in_process_executor
        if executor == "in_process"
        else multiprocess_executor.configured({"max_concurrent": 2})
    )
    resource_defs: dict[str, Any] = {"io_manager": recording_io_manager}
    if with_tracker:
        resource_defs["tracker"] = tracker

    @op(version="1", required_resource_keys={"tracker"} if with_tracker else set())
    def tracked(x):
        return x

    @job(
        name=f"lifecycle_{executor}",
        executor_def=executor_def,
        resource_defs=resource_defs,
        tags={MEMOIZED_RUN_TAG: "true"},
    )
    def lifecycle():
        wait(tracked(double(source())))

    return lifecycle


in_process_job = make_job("in_process")
multiprocess_job = make_job("multiprocess")
tracked_job = make_job("in_process", with_tracker=True)
JOBS = {"in_process": in_process_job, "multiprocess": multiprocess_job}


def run_config(tmp: Path, fail_hook: str = "", fail_op: bool = False, wait_for: str = "") -> dict:
    return {
        "resources": {
            "io_manager": {
                "config": {
                    "base": str(tmp / "data"),
                    "log": str(tmp / "hooks.log"),
                    "fail": fail_hook,
                }
            }
        },
        "ops": {
            "source": {"config": {"fail": fail_op}},
            "wait": {"config": {"wait_for": wait_for}},
        },
    }


def main() -> None:
    """``python lifecycle_jobs.py EXECUTOR DIR``: run a job that waits for DIR/release."""
    executor, tmp = sys.argv[1], Path(sys.argv[2])
    instance = Instance.from_url(f"sqlite:///{tmp / 'instance.db'}", storage_dir=tmp / "storage")
    JOBS[executor].execute_in_process(
        run_config=run_config(tmp, wait_for=str(tmp / "release")), instance=instance
    )


if __name__ == "__main__":
    main()
