"""``object_store_io_manager``: outputs as objects under a ``file://``, ``memory://`` or ``s3://``
URL, through fsspec (s3fs for S3, with storage options for any S3-compatible server)."""

from __future__ import annotations

import dataclasses
from typing import Any

from memodag.definitions.config import Field, Noneable
from memodag.definitions.resources import InitResourceContext, io_manager
from memodag.errors import StorageError
from memodag.storage.io_managers.files import FsspecFileStore, LocalFileStore, PathIOManager

_S3_PROTOCOLS = ("s3", "s3a")
#: seconds one object-store call may take, retries inside s3fs/botocore included
DEFAULT_TIMEOUT = 120.0


def _filesystem_options(protocol: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The user's options plus defaults that keep one manager's view of the store fresh.

    fsspec hands out one cached filesystem per set of options, listing cache included; a fresh
    instance per manager keeps runs (and tests) from seeing each other's stale listings. For S3
    the listing cache is off: ``exists`` must see objects other processes wrote a moment ago.
    """
    options = dict(storage_options or {})
    options.setdefault("skip_instance_cache", True)
    if protocol in _S3_PROTOCOLS:
        options.setdefault("use_listings_cache", False)
    return options


def make_object_store_manager(
    base_url: str,
    storage_options: dict[str, Any] | None = None,
    serializer: Any = None,
    versioned: bool = False,
    timeout: float | None = DEFAULT_TIMEOUT,
    allow_pickle: bool = True,
) -> PathIOManager:
    """A path io manager writing under ``base_url``; local URLs use atomic renames on disk."""
    from fsspec.core import url_to_fs

    if not base_url.strip() or base_url.strip().lower() in ("file://", "file:"):
        # fsspec reads these as the current directory: outputs would land wherever the run
        # happened to start
        raise StorageError(
            f"object_store_io_manager: base_url {base_url!r} names no location; give "
            "file:///absolute/path, memory://name or s3://bucket/prefix"
        )
    protocol = base_url.split("://", 1)[0].lower() if "://" in base_url else "file"
    try:
        fs, root = url_to_fs(base_url, **_filesystem_options(protocol, storage_options))
    except ImportError as exc:
        extra = (
            "pip install 'memodag[s3]' (s3fs)"
            if protocol in _S3_PROTOCOLS
            else f"the fsspec driver for {protocol}://"
        )
        raise StorageError(
            f"object_store_io_manager: base_url {base_url!r} needs {extra}: {exc}"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise StorageError(
            f"object_store_io_manager: cannot open base_url {base_url!r} "
            f"(expected file:///path, memory://name or s3://bucket/prefix): {exc}"
        ) from exc
    if protocol == "file":
        return PathIOManager(LocalFileStore(), root, serializer, versioned, allow_pickle)
    if protocol != "memory" and not root.strip("/"):
        raise StorageError(
            f"object_store_io_manager: base_url {base_url!r} names no bucket or directory"
        )
    return PathIOManager(
        FsspecFileStore(fs, protocol, timeout), root, serializer, versioned, allow_pickle
    )


@io_manager(
    config_schema={
        "base_url": Field(
            str,
            description="Where outputs go: file:///path, memory://bucket or s3://bucket/prefix.",
        ),
        "storage_options": Field(
            dict,
            default_value={},
            description="fsspec options, e.g. {endpoint_url: ..., key: ..., secret: ...} for S3.",
        ),
        "serializer": Field(
            str,
            default_value="pickle",
            description="Default format: pickle, json, parquet or auto.",
        ),
        "allow_pickle": Field(
            bool,
            default_value=True,
            description="false: never write or load a pickle (loading one runs any code it "
            "holds); the default format becomes auto without pickle.",
        ),
        "versioned": Field(
            bool,
            default_value=False,
            description="Store under the output's version instead of the run id.",
        ),
        "timeout": Field(
            Noneable(float),
            default_value=DEFAULT_TIMEOUT,
            description="Seconds one call to an S3 store may take (an upload or download of a "
            "whole object, retries included) before the step fails; null waits forever.",
        ),
    }
)
def object_store_io_manager(context: InitResourceContext) -> PathIOManager:
    """Stores each output as an object under ``base_url``; every write is all-or-nothing."""
    config = context.resource_config
    return make_object_store_manager(
        config["base_url"],
        dict(config["storage_options"]),
        config["serializer"],
        config["versioned"],
        config.get("timeout", DEFAULT_TIMEOUT),  # absent when built without schema defaults
        config.get("allow_pickle", True),
    )


# fsspec's memory filesystem lives in the process that writes to it: runs on several processes
# refuse it before any step runs, as they refuse mem_io_manager
object_store_io_manager = dataclasses.replace(
    object_store_io_manager,
    in_process_only_if=lambda config: str((config or {}).get("base_url", "")).startswith("memory:"),
)
