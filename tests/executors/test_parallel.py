"""The multiprocess and Dask executors run the same jobs as in process, with the same results,
events and semantics; steps run in worker processes, each exactly once per attempt."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import textwrap
import time

import pytest
from pipelines import dynamic_fan_out, fan_out_job, lines, marks_config

from memodag import (
    EventType,
    ExecutionError,
    in_process_executor,
    job,
    mem_io_manager,
    op,
)
from memodag.errors import ConfigError

N = 12


def test_fan_out_same_result_on_every_executor(any_executor, instance, tmp_path):
    result = fan_out_job(N, any_executor).execute_in_process(
        run_config=marks_config(tmp_path), instance=instance
    )

    assert result.success
    assert result.output_for_node("collect") == sum(i * i for i in range(N))
    runs = {f"piece_{i}": lines(tmp_path, f"piece_{i}") for i in range(N)}
    assert all(len(r) == 1 for r in runs.values()), runs  # each step ran exactly once
    pids = {pid for r in runs.values() for pid, _ in r}
    if any_executor is in_process_executor:
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids
    # events from the workers reach the run's event log in the driver, context.log included
    stored = instance.get_events(result.run_id)
    for i in range(N):
        kinds = [e.event_type for e in stored if e.step_key == f"piece_{i}"]
        assert kinds.count(EventType.STEP_START) == 1
        assert kinds.count(EventType.STEP_SUCCESS) == 1
        assert EventType.LOG in kinds and EventType.HANDLED_OUTPUT in kinds


def test_dynamic_fan_out_runs_mapped_pieces_on_workers(parallel_executor, instance, tmp_path):
    run_config = {**marks_config(tmp_path), "ops": {"split": {"config": {"n": 8}}}}
    result = dynamic_fan_out.execute_in_process(
        run_config={**run_config, "execution": _execution(parallel_executor)},
        instance=instance,
    )

    assert result.success
    assert result.output_for_node("total") == sum(i * i for i in range(8))
    squares = [lines(tmp_path, f"square[k{i}]") for i in range(8)]
    assert all(len(s) == 1 for s in squares)
    assert os.getpid() not in {pid for s in squares for pid, _ in s}


def _execution(executor_def):
    """Run config naming the executor, as a user writes it (``execution: {dask: {config: ...}}``)."""
    return {executor_def.name: {"config": dict(executor_def.preset_config)}}


def test_run_config_chooses_the_executor(parallel_executor, instance, tmp_path):
    plain = fan_out_job(4)  # no executor_def: in process unless run config says otherwise
    result = plain.execute_in_process(
        run_config={**marks_config(tmp_path), "execution": _execution(parallel_executor)},
        instance=instance,
    )

    assert result.output_for_node("collect") == 0 + 1 + 4 + 9
    assert os.getpid() not in {lines(tmp_path, f"piece_{i}")[0][0] for i in range(4)}


def test_job_loaded_from_a_file_path_reaches_workers(parallel_executor, instance, tmp_path):
    source = tmp_path / "user_pipeline_file.py"
    source.write_text(
        textwrap.dedent(
            """
            from memodag import job, op

            OFFSET = 100

            def helper(x):
                return x + OFFSET

            @op
            def start() -> int:
                return helper(1)

            @op
            def double(x: int) -> int:
                return 2 * x

            def make(executor_def):
                @job(executor_def=executor_def)
                def from_file():
                    double(start())

                return from_file
            """
        )
    )
    spec = importlib.util.spec_from_file_location("user_pipeline_file", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules["user_pipeline_file"] = module
    try:
        spec.loader.exec_module(module)
        result = module.make(parallel_executor).execute_in_process(instance=instance)
    finally:
        del sys.modules["user_pipeline_file"]

    assert result.output_for_node("double") == 202


def test_in_memory_io_manager_is_refused_before_any_step(parallel_executor, instance, tmp_path):
    @op
    def writes_marker() -> int:
        (tmp_path / "ran").write_text("yes")
        return 1

    @job(resource_defs={"io_manager": mem_io_manager}, executor_def=parallel_executor)
    def in_memory():
        writes_marker()

    with pytest.raises(ExecutionError, match=r"process memory.*fs_io_manager"):
        in_memory.execute_in_process(instance=instance)
    assert not (tmp_path / "ran").exists()
    assert instance.get_runs() == []


def test_a_memory_object_store_is_refused_before_any_step(parallel_executor, instance, tmp_path):
    from memodag import object_store_io_manager

    @op
    def writes_marker() -> int:
        (tmp_path / "ran").write_text("yes")
        return 1

    @op
    def plus_one(x: int) -> int:
        return x + 1

    store = object_store_io_manager.configured({"base_url": "memory://scratch/outputs"})

    @job(resource_defs={"io_manager": store}, executor_def=parallel_executor)
    def in_fsspec_memory():
        plus_one(writes_marker())

    with pytest.raises(ExecutionError, match=r"process memory.*memory:// is one process"):
        in_fsspec_memory.execute_in_process(instance=instance)
    assert not (tmp_path / "ran").exists()
    assert instance.get_runs() == []
    # in process, the same store is fine, and so is re-executing from it in this process
    in_process = {"execution": {"in_process": {}}}
    first = in_fsspec_memory.execute_in_process(instance=instance, run_config=in_process)
    assert (tmp_path / "ran").exists()
    again = in_fsspec_memory.execute_in_process(
        instance=instance,
        run_config=in_process,
        parent_run_id=first.run_id,
        step_selection=["plus_one"],
    )
    assert again.output_for_node("plus_one") == 2


def test_mapped_outputs_come_back_in_emission_order(parallel_executor, instance):
    from memodag import DynamicOut, DynamicOutput

    @op(out=DynamicOut())
    def emit():
        for i in range(4):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op
    def slow_first(i: int) -> int:
        # the first piece finishes last, whichever worker takes it
        time.sleep(0.6 if i == 0 else 0.0)
        return i * 10

    @op(out=DynamicOut())
    def inner(i: int):
        # the first outer piece's inner fan-out is found last
        time.sleep(0.6 if i == 0 else 0.0)
        for j in range(2):
            yield DynamicOutput(i * 10 + j, mapping_key=f"j{j}")

    @op
    def same(x: int) -> int:
        return x

    @job(executor_def=parallel_executor)
    def fan():
        emit().map(slow_first)
        emit.alias("emit_again")().map(lambda p: inner(p).map(same))

    result = fan.execute_in_process(instance=instance)

    assert list(result.output_for_node("slow_first")) == ["k0", "k1", "k2", "k3"]
    assert list(result.output_for_node("slow_first").values()) == [0, 10, 20, 30]
    assert list(result.output_for_node("emit")) == ["k0", "k1", "k2", "k3"]
    nested = [f"k{i},j{j}" for i in range(4) for j in range(2)]
    assert list(result.output_for_node("same")) == nested
    # a re-execution of the innermost clones alone keeps that order too
    again = fan.execute_in_process(
        instance=instance, parent_run_id=result.run_id, step_selection=["same*"]
    )
    assert list(again.output_for_node("same")) == nested
    assert list(again.output_for_node("same").values()) == [
        i * 10 + j for i in range(4) for j in range(2)
    ]


def test_executor_config_is_validated(instance):
    from memodag import dask_executor, multiprocess_executor

    @op
    def one() -> int:
        return 1

    @job(executor_def=multiprocess_executor.configured({"max_concurrent": 0}))
    def bad_mp():
        one()

    @job(executor_def=dask_executor.configured({"address": "tcp://x:1", "n_workers": 2}))
    def bad_dask():
        one()

    @job(executor_def=dask_executor)
    def one_on_dask():
        one()

    @job
    def one_in_process():
        one()

    # each problem under the path the user wrote it at: here the job's .configured(...)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "multiprocess_executor.configured(...).max_concurrent: expected an int >= 1"
        ),
    ):
        bad_mp.execute_in_process(instance=instance)
    with pytest.raises(
        ConfigError,
        match=re.escape("dask_executor.configured(...): give either 'address'") + ".*'n_workers'",
    ):
        bad_dask.execute_in_process(instance=instance)
    for address, problem in [
        ("localhost", "missing port number"),
        ("http://127.0.0.1:8787", "unknown address scheme 'http'"),
        ("", "is empty"),
    ]:
        with pytest.raises(
            ConfigError, match=rf"execution\.dask\.config\.address: .*{re.escape(problem)}"
        ):
            one_on_dask.execute_in_process(
                run_config={"execution": {"dask": {"config": {"address": address}}}},
                instance=instance,
            )
    # every problem at once: the executor's with the ops', range checks with unknown fields
    with pytest.raises(ConfigError) as raised:
        one_on_dask.execute_in_process(
            run_config={
                "ops": {"one": {"config": {"x": 1}}},
                "execution": {"dask": {"config": {"n_workers": 0, "nworkers": 2}}},
            },
            instance=instance,
        )
    assert len(raised.value.errors) == 3, raised.value.errors
    assert any(e.startswith("ops.one") for e in raised.value.errors)
    assert "execution.dask.config.nworkers: unknown field; expected one of [" in "".join(
        raised.value.errors
    )
    assert "execution.dask.config.n_workers: expected an int >= 1, got 0" in raised.value.errors
    # a bool is not an int: reported once, by the schema
    with pytest.raises(ConfigError) as raised:
        one_on_dask.execute_in_process(
            run_config={"execution": {"dask": {"config": {"max_concurrent": False}}}},
            instance=instance,
        )
    assert len(raised.value.errors) == 1, raised.value.errors
    # an executor configured in code is not configured again, silently, by run config
    with pytest.raises(ConfigError, match=r"already configured with \.configured"):
        bad_dask.execute_in_process(
            run_config={"execution": {"config": {"max_concurrent": 2}}}, instance=instance
        )
    # the default executor takes no config: a setting meant for another one is an error
    with pytest.raises(
        ConfigError, match=r"execution\.config\.max_concurrent: unknown field; this takes no config"
    ):
        one_in_process.execute_in_process(
            run_config={"execution": {"config": {"max_concurrent": 4}}}, instance=instance
        )
    assert instance.get_runs() == []
    with pytest.raises(ConfigError, match="unknown field"):
        bad_mp.execute_in_process(
            run_config={"execution": {"multiprocess": {"config": {"workers": 2}}}},
            instance=instance,
        )
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "execution.multiprocess.config.tag_concurrency_limits[0].limit: expected an int >= 1, got 0"
        ),
    ):
        bad_mp.execute_in_process(
            run_config={
                "execution": {
                    "multiprocess": {
                        "config": {"tag_concurrency_limits": [{"key": "db", "limit": 0}]}
                    }
                }
            },
            instance=instance,
        )
    with pytest.raises(
        ConfigError, match=r"start_method: expected one of \['forkserver', 'spawn'\], got 'fork'"
    ):
        bad_mp.execute_in_process(
            run_config={"execution": {"multiprocess": {"config": {"start_method": "fork"}}}},
            instance=instance,
        )


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_multiprocess_workers_start_either_way(start_method, instance, tmp_path):
    from memodag import multiprocess_executor

    executor_def = multiprocess_executor.configured({"start_method": start_method})
    run_config = {**marks_config(tmp_path), "ops": {"split": {"config": {"n": 4}}}}
    result = dynamic_fan_out.execute_in_process(
        run_config={**run_config, "execution": _execution(executor_def)}, instance=instance
    )

    assert result.output_for_node("total") == sum(i * i for i in range(4))
    pids = {pid for i in range(4) for pid, _ in lines(tmp_path, f"square[k{i}]")}
    assert pids and os.getpid() not in pids


def test_a_dask_worker_that_joins_mid_run_serves_its_steps(own_cluster, instance, tmp_path):
    import threading

    import distributed
    from pipelines import grows_mid_run

    cluster = own_cluster(processes=True)
    run_config = {
        "resources": {"marks": {"config": {"dir": str(tmp_path)}}},
        "ops": {"split_after_go": {"config": {"n": 10}}},
        "execution": {"dask": {"config": {"address": cluster.scheduler_address}}},
    }
    outcome: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(
            result=grows_mid_run.execute_in_process(run_config=run_config, instance=instance)
        )
    )
    runner.start()
    cluster.scale(2)
    with distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
    (tmp_path / "go").write_text("")
    runner.join(timeout=120)
    assert not runner.is_alive(), "the run did not finish"

    result = outcome["result"]
    assert result.success
    assert result.output_for_node("total") == sum(i * i for i in range(10))
    pieces = [lines(tmp_path, f"slow_square[k{i}]") for i in range(10)]
    assert all(len(p) == 1 for p in pieces)
    piece_pids = {pid for p in pieces for pid, _ in p}
    (first_pid,) = {pid for pid, _ in lines(tmp_path, "split_after_go")}
    assert len(piece_pids) == 2 and first_pid in piece_pids  # the new worker ran pieces too
    # the run's resources were torn down at the end in every worker that built them
    assert {pid for pid, _ in lines(tmp_path, "teardown")} == piece_pids


def test_large_step_outcomes_come_back_from_dask_workers(dask_cluster_ready, instance):
    """Outcomes reach the driver as Dask events of at most 16 kB each: a step that logs 200 kB
    sends its outcome in parts, and nothing is lost."""
    from memodag import dask_executor

    @op
    def chatty(context) -> int:
        context.log.info("x" * 200_000)
        return 7

    @op
    def small(x: int) -> int:
        return x + 1

    @job(executor_def=dask_executor.configured({"address": dask_cluster_ready}))
    def big_outcome():
        small(chatty())

    result = big_outcome.execute_in_process(instance=instance)

    assert result.output_for_node("small") == 8
    logs = [e for e in instance.get_events(result.run_id) if e.event_type is EventType.LOG]
    assert any(e.step_key == "chatty" and len(e.message) >= 200_000 for e in logs)


def test_a_dask_run_leaves_no_task_or_plugin_on_the_cluster(dask_cluster_ready, instance, tmp_path):
    """A shared cluster keeps nothing of a finished run: attempts are fire-and-forget tasks that
    Dask forgets as they finish (none is kept to be recomputed), and the run's plugin is gone."""
    import distributed

    from memodag import dask_executor

    result = fan_out_job(
        N, dask_executor.configured({"address": dask_cluster_ready})
    ).execute_in_process(run_config=marks_config(tmp_path), instance=instance)
    assert result.success

    with distributed.Client(dask_cluster_ready, set_as_default=False) as client:
        left = client.run_on_scheduler(
            lambda dask_scheduler: (
                [
                    (
                        str(k),
                        ts.state,
                        [c.client_key for c in ts.who_wants or ()],
                        str(ts.processing_on),
                    )
                    for k, ts in dask_scheduler.tasks.items()
                    if str(k).startswith("memodag-")
                ],
                [name for name in dask_scheduler.worker_plugins if name.startswith("memodag-")],
            )
        )
    assert left == ([], [])


def test_a_dask_task_cancelled_on_the_cluster_fails_its_step_instead_of_hanging(
    own_cluster, instance, tmp_path
):
    """Someone cancels one of the run's tasks on a shared cluster before it starts: Dask forgets
    it without a word to the driver. The driver's check of its attempts notices, and the step
    fails with a clear error; the other step finishes."""
    import threading
    import time

    import distributed

    from memodag import dask_executor

    @op
    def hold() -> int:
        deadline = time.monotonic() + 60
        while not (tmp_path / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return 1

    # one thread, and Dask sends it one task at a time: of three, two stay queued on the scheduler
    cluster = own_cluster(**{"distributed.scheduler.worker-saturation": 1.0})

    @job(executor_def=dask_executor.configured({"address": cluster.scheduler_address}))
    def three_holds():
        for name in "abc":
            hold.alias(name)()

    def queued(dask_scheduler):
        return [
            k
            for k, ts in dask_scheduler.tasks.items()
            if str(k).startswith("memodag-step") and ts.state == "queued"
        ]

    outcome: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(
            result=three_holds.execute_in_process(instance=instance, raise_on_error=False)
        )
    )
    runner.start()
    with distributed.Client(cluster, set_as_default=False) as client:
        deadline = time.monotonic() + 30
        while not (keys := client.run_on_scheduler(queued)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert keys, "no task of the run was queued on the scheduler"
        client.cancel([distributed.Future(keys[0], client)], force=True)
    (tmp_path / "go").write_text("")
    runner.join(timeout=60)
    assert not runner.is_alive(), "the run hung on a task Dask dropped"

    result = outcome["result"]
    (failed,) = result.failed_step_keys
    assert sorted(k for k, v in result.step_status.items() if v == "success") == sorted(
        set("abc") - {failed}
    )
    (failure,) = result.get_step_failure_events()
    assert f"step '{failed}'" in failure.message and "without an outcome" in failure.message


def test_multiprocess_workers_see_the_drivers_environment_of_each_run(instance, monkeypatch):
    """Workers fork from a fork server started by the first run; they still see the environment
    the driver has at each run (a notebook that sets a variable between runs)."""
    from memodag import multiprocess_executor

    @op
    def read_env() -> str:
        return os.environ.get("MEMODAG_TEST_SETTING", "unset")

    @job(executor_def=multiprocess_executor.configured({"max_concurrent": 1}))
    def env_job():
        read_env()

    monkeypatch.setenv("MEMODAG_TEST_SETTING", "first")
    assert env_job.execute_in_process(instance=instance).output_for_node("read_env") == "first"
    monkeypatch.setenv("MEMODAG_TEST_SETTING", "second")
    assert env_job.execute_in_process(instance=instance).output_for_node("read_env") == "second"
