"""Fixtures for executor tests: one real Dask LocalCluster (worker processes) for the session,
and the executors that run steps outside the driver, configured for this machine."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from memodag import ExecutorDefinition, dask_executor, in_process_executor, multiprocess_executor
from memodag.executors.dask import SCHEDULER_CONFIG


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A LocalCluster of 2 worker processes (1 thread each), set up as the executor sets its own."""
    import dask
    import distributed

    with dask.config.set(SCHEDULER_CONFIG):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            preload=["memodag.executors.dask_worker"],
            silence_logs=logging.CRITICAL,
        )
    yield cluster.scheduler_address
    cluster.close(timeout=20)


@pytest.fixture
def dask_cluster_ready(dask_address: str) -> str:
    """The session cluster with both workers up (a test before may have killed one; its nanny
    restarts it): a worker's death fails the attempts queued on it too, so tests start whole."""
    import distributed

    with distributed.Client(dask_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
    return dask_address


def executor_named(request: pytest.FixtureRequest, name: str) -> ExecutorDefinition:
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor.configured({"max_concurrent": 4})
    return dask_executor.configured({"address": request.getfixturevalue("dask_cluster_ready")})


@pytest.fixture(params=["multiprocess", "dask"])
def parallel_executor(request: pytest.FixtureRequest) -> ExecutorDefinition:
    """Each executor that runs steps in other processes."""
    return executor_named(request, request.param)


@pytest.fixture(params=["in_process", "multiprocess", "dask"])
def any_executor(request: pytest.FixtureRequest) -> ExecutorDefinition:
    return executor_named(request, request.param)
