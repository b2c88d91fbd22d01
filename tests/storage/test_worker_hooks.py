"""The io manager hooks for attempts on worker processes, through a custom io manager on the
multiprocess executor: a worker hears that it serves the run, the driver prepares each input
before its attempt goes out and accepts each output before it is recorded, and an output the
driver cannot accept fails its op, naming it."""

from __future__ import annotations

import os
import pickle

from memodag import IOManager, Out, io_manager, job, multiprocess_executor, op
from memodag.storage.instance import Instance


class JournaledPickles(IOManager):
    """Pickles in a directory; every worker hook appends ``<hook> <pid> <what>`` to a journal."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def _note(self, hook: str, what: str) -> None:
        with open(os.path.join(self.directory, "journal"), "a") as file:
            file.write(f"{hook} {os.getpid()} {what}\n")

    def handle_output(self, context, obj):
        path = os.path.join(self.directory, f"{context.step_key}.{context.name}")
        with open(path, "wb") as file:
            pickle.dump(obj, file)
        return path

    def load_input(self, context):
        with open(context.address.uri, "rb") as file:
            return pickle.load(file)

    def serve_worker(self, run):
        self._note("serve", run.run_id)

    def release_worker(self, run):
        self._note("release", run.run_id)

    def prepare_worker_input(self, run, address):
        self._note("prepare", address.step_key)

    def accept_worker_output(self, run, context, address):
        self._note("accept", f"{context.step_key}.{context.name}")
        if context.name == "refused":
            raise ValueError("the driver will not take it")


def journal(directory) -> list[tuple[str, int, str]]:
    with open(os.path.join(directory, "journal")) as file:
        return [(h, int(p), w) for h, p, w in (line.split() for line in file)]


def test_workers_and_the_driver_hear_the_hand_over_hooks(tmp_path):
    directory = str(tmp_path / "pickles")

    @io_manager
    def journaled(_):
        return JournaledPickles(directory)

    @op
    def make() -> int:
        return 1

    @op
    def add(x: int) -> int:
        return x + 1

    @job(
        executor_def=multiprocess_executor.configured({"max_concurrent": 1}),
        resource_defs={"io_manager": journaled},
    )
    def chain():
        add(make())

    instance = Instance.from_url(f"sqlite:///{tmp_path / 'i.db'}", storage_dir=tmp_path / "s")
    result = chain.execute_in_process(instance=instance)
    assert result.output_for_node("add") == 2
    entries = journal(directory)
    driver = os.getpid()
    # in the driver: the input prepared before add went out, each output accepted
    assert [(h, w) for h, p, w in entries if p == driver] == [
        ("accept", "make.result"),
        ("prepare", "make"),
        ("accept", "add.result"),
    ]
    served = [(h, w) for h, p, w in entries if p != driver]
    assert ("serve", result.run_id) in served
    instance.close()


def test_an_output_the_driver_cannot_accept_fails_its_op(tmp_path):
    directory = str(tmp_path / "pickles")

    @io_manager
    def journaled(_):
        return JournaledPickles(directory)

    @op(out={"refused": Out()})
    def make():
        return 1

    @op
    def after(refused: int) -> int:
        return refused

    @job(executor_def=multiprocess_executor, resource_defs={"io_manager": journaled})
    def refusing():
        after(make())

    instance = Instance.from_url(f"sqlite:///{tmp_path / 'i.db'}", storage_dir=tmp_path / "s")
    result = refusing.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failures = [e.message for e in instance.get_events(result.run_id) if e.step_key == "make"]
    assert any(
        "op 'make' could not store output 'refused' (io manager 'io_manager', in the driver): "
        "the driver will not take it" in m
        for m in failures
    ), failures
    assert result.failed_step_keys == ["make"] and "after" not in result.executed_step_keys
    instance.close()
