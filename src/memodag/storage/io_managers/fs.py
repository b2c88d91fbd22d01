"""``fs_io_manager`` (the default) and ``versioned_filesystem_io_manager``: outputs as local files."""

from __future__ import annotations

import os
from typing import Any

from memodag.definitions.config import Field
from memodag.definitions.resources import InitResourceContext, io_manager
from memodag.errors import StorageError
from memodag.storage.io_managers.files import LocalFileStore, PathIOManager

_CONFIG = {
    "base_dir": Field(
        str,
        is_required=False,
        description="Directory for outputs; default: the instance's storage directory.",
    ),
    "serializer": Field(
        str, default_value="pickle", description="Default format: pickle, json, parquet or auto."
    ),
    "allow_pickle": Field(
        bool,
        default_value=True,
        description="false: never write or load a pickle (loading one runs any code it holds); "
        "the default format becomes auto without pickle.",
    ),
}


def _base_dir(context: InitResourceContext) -> str:
    config = context.resource_config or {}
    base_dir = config.get("base_dir")
    if base_dir is not None:
        if not base_dir.strip():
            # most likely an unset variable: never a silent choice of folder
            raise StorageError(
                "fs_io_manager: base_dir is empty; give a directory, or leave base_dir out to "
                "use the instance's storage directory"
            )
        return os.path.abspath(os.path.expanduser(base_dir))
    if context.instance is not None:
        return str(context.instance.storage_dir)
    return os.path.abspath(os.path.join(".memodag", "storage"))


def _serializer(context: InitResourceContext) -> Any:
    return (context.resource_config or {}).get("serializer", "pickle")


def _allow_pickle(context: InitResourceContext) -> bool:
    return bool((context.resource_config or {}).get("allow_pickle", True))


@io_manager(config_schema=_CONFIG)
def fs_io_manager(context: InitResourceContext) -> PathIOManager:
    """Stores each output as a file under ``<base_dir>/<run_id>/<step_key>.<output>``."""
    return PathIOManager(
        LocalFileStore(),
        _base_dir(context),
        _serializer(context),
        allow_pickle=_allow_pickle(context),
    )


@io_manager(config_schema=_CONFIG)
def versioned_filesystem_io_manager(context: InitResourceContext) -> PathIOManager:
    """Stores each output under its version (``<base_dir>/<step_key>/<output>/<version>``), so
    a memoized run's index entries point at files named by version, and ``has_output`` answers by looking for the file."""
    return PathIOManager(
        LocalFileStore(),
        _base_dir(context),
        _serializer(context),
        versioned=True,
        allow_pickle=_allow_pickle(context),
    )
