"""Fixtures for executor tests: one real Dask LocalCluster (worker processes) for the session,
and the executors that run steps outside the driver, configured for this machine."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from memodag import ExecutorDefinition, dask_executor, in_process_executor, multiprocess_executor
from memodag.executors.dask import SCHEDULER_CONFIG


def local_cluster(n_workers: int, processes: bool, **settings: Any) -> Any:
    """A LocalCluster of ``n_workers`` workers of 1 thread, set up as the executor sets its own
    (``SCHEDULER_CONFIG``, memodag preloaded), with Dask ``settings`` on top."""
    import dask
    import distributed

    with dask.config.set({**SCHEDULER_CONFIG, **settings}):
        return distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=":0",
            preload=["memodag.executors.dask_worker"],
            silence_logs=logging.CRITICAL,
        )


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A LocalCluster of 2 worker processes (1 thread each) for the whole session."""
    cluster = local_cluster(2, processes=True)
    yield cluster.scheduler_address
    cluster.close(timeout=20)


@pytest.fixture
def own_cluster() -> Iterator[Callable[..., Any]]:
    """Makes a test's own one-worker cluster (``own_cluster(processes=..., **settings)``), for
    tests that change it (add workers, close its scheduler); closed after the test."""
    clusters: list[Any] = []

    def make(processes: bool = False, **settings: Any) -> Any:
        clusters.append(local_cluster(1, processes, **settings))
        return clusters[-1]

    yield make
    for cluster in clusters:
        gone = cluster.scheduler.status.name in ("closing", "closed")
        with contextlib.suppress(TimeoutError):  # a test may have closed its scheduler
            cluster.close(timeout=2 if gone else 20)


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
