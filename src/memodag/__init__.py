"""memodag: data pipelines that never recompute what has not changed.

Ops composed into jobs, data passed by reference through per-output storage, every output
versioned, memoized runs that execute only what is not stored at its current version.
"""

from __future__ import annotations

from memodag.definitions.composition import GraphDefinition, graph
from memodag.definitions.config import Field, Noneable
from memodag.definitions.executor import (
    ExecutorDefinition,
    dask_executor,
    in_process_executor,
    multiprocess_executor,
)
from memodag.definitions.io import (
    Backoff,
    DynamicOut,
    DynamicOutput,
    In,
    Out,
    Output,
    RetryPolicy,
)
from memodag.definitions.job import JobDefinition, job
from memodag.definitions.op import OpDefinition, op
from memodag.definitions.resources import (
    InitResourceContext,
    IOManagerDefinition,
    ResourceDefinition,
    io_manager,
    resource,
)
from memodag.definitions.secrets import EnvVar
from memodag.definitions.tables import (
    AUTO_VERSION,
    ExternalTableReference,
    RawSql,
    Stage,
    Table,
    materialize,
)
from memodag.engine.dry_run import list_versions
from memodag.engine.result import ExecuteInProcessResult
from memodag.errors import (
    ConfigError,
    DataVersionError,
    DefinitionError,
    ExecutionError,
    MemodagError,
    MemoizationError,
    OutputLostError,
    StepExecutionError,
    StorageError,
)
from memodag.executors.base import Executor
from memodag.runtime.context import OpExecutionContext, build_op_context
from memodag.storage.instance import Event, EventType, Instance, RunRecord, RunStatus
from memodag.storage.io_manager import (
    Address,
    InputContext,
    IOManager,
    MemoizableIOManager,
    OutputContext,
    RunEnd,
    RunInfo,
    RunLifecycle,
    StoredData,
)
from memodag.storage.io_managers.fs import fs_io_manager, versioned_filesystem_io_manager
from memodag.storage.io_managers.memory import mem_io_manager
from memodag.storage.io_managers.object_store import object_store_io_manager
from memodag.storage.serializers import (
    JsonSerializer,
    ParquetSerializer,
    PickleSerializer,
    Serializer,
)
from memodag.tables.duckdb import duckdb_table_store
from memodag.tables.postgres import postgres_table_store
from memodag.versioning.report import OutputVersion
from memodag.versioning.source_hash import SourceHashVersionStrategy
from memodag.versioning.strategy import (
    MEMOIZED_RUN_TAG,
    OpVersionContext,
    ResourceVersionContext,
    VersionStrategy,
)

# the one source of the version: pyproject.toml reads it ([tool.hatch.version]), the CLI prints it
__version__ = "0.1.0"

__all__ = [
    "AUTO_VERSION",
    "MEMOIZED_RUN_TAG",
    "Address",
    "Backoff",
    "ConfigError",
    "DataVersionError",
    "DefinitionError",
    "DynamicOut",
    "DynamicOutput",
    "EnvVar",
    "Event",
    "EventType",
    "ExecuteInProcessResult",
    "ExecutionError",
    "Executor",
    "ExecutorDefinition",
    "ExternalTableReference",
    "Field",
    "GraphDefinition",
    "IOManager",
    "IOManagerDefinition",
    "In",
    "InitResourceContext",
    "InputContext",
    "Instance",
    "JobDefinition",
    "JsonSerializer",
    "MemodagError",
    "MemoizableIOManager",
    "MemoizationError",
    "Noneable",
    "OpDefinition",
    "OpExecutionContext",
    "OpVersionContext",
    "Out",
    "Output",
    "OutputContext",
    "OutputLostError",
    "OutputVersion",
    "ParquetSerializer",
    "PickleSerializer",
    "RawSql",
    "ResourceDefinition",
    "ResourceVersionContext",
    "RetryPolicy",
    "RunEnd",
    "RunInfo",
    "RunLifecycle",
    "RunRecord",
    "RunStatus",
    "Serializer",
    "SourceHashVersionStrategy",
    "Stage",
    "StepExecutionError",
    "StorageError",
    "StoredData",
    "Table",
    "VersionStrategy",
    "build_op_context",
    "dask_executor",
    "duckdb_table_store",
    "fs_io_manager",
    "graph",
    "in_process_executor",
    "io_manager",
    "job",
    "list_versions",
    "materialize",
    "mem_io_manager",
    "multiprocess_executor",
    "object_store_io_manager",
    "op",
    "postgres_table_store",
    "resource",
    "versioned_filesystem_io_manager",
]
