"""Fixtures for executor tests: one real Dask LocalCluster (worker processes) for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memodag import ExecutorDefinition, in_process_executor
from memodag.executors.dask import EXACTLY_ONCE_CONFIG, dask_executor
from memodag.executors.multiprocess import multiprocess_executor


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A LocalCluster of 2 worker processes x 2 threads, configured as the executor's own."""
    import logging

    import dask
    import distributed

    with dask.config.set(EXACTLY_ONCE_CONFIG):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    yield cluster.scheduler_address
    cluster.close(timeout=20)


@pytest.fixture(params=["multiprocess", "dask"])
def parallel_executor(request) -> ExecutorDefinition:
    """Each executor that runs steps outside the driver, ready to use."""
    if request.param == "multiprocess":
        return multiprocess_executor.configured({"max_concurrent": 4})
    return dask_executor.configured({"address": request.getfixturevalue("dask_address")})


@pytest.fixture(params=["in_process", "multiprocess", "dask"])
def any_executor(request) -> ExecutorDefinition:
    if request.param == "in_process":
        return in_process_executor
    return request.getfixturevalue("parallel_executor_" + request.param)


@pytest.fixture
def parallel_executor_multiprocess() -> ExecutorDefinition:
    return multiprocess_executor.configured({"max_concurrent": 4})


@pytest.fixture
def parallel_executor_dask(dask_address) -> ExecutorDefinition:
    return dask_executor.configured({"address": dask_address})
