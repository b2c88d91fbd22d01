"""``object_store_io_manager``: outputs as objects under a ``file://``, ``memory://`` or ``s3://``
URL, through fsspec (s3fs for S3, with storage options for any S3-compatible server)."""

from __future__ import annotations

from typing import Any

from memodag.definitions.config import Field
from memodag.definitions.resources import InitResourceContext, io_manager
from memodag.errors import StorageError
from memodag.storage.io_managers.files import FsspecFileStore, LocalFileStore, PathIOManager


def make_object_store_manager(
    base_url: str,
    storage_options: dict[str, Any] | None = None,
    serializer: Any = None,
    versioned: bool = False,
) -> PathIOManager:
    """A path io manager writing under ``base_url``; local URLs use atomic renames on disk."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:  # pragma: no cover - fsspec is a core dependency
        raise StorageError("object_store_io_manager needs fsspec: pip install fsspec") from exc
    protocol = base_url.split("://", 1)[0] if "://" in base_url else "file"
    try:
        fs, root = url_to_fs(base_url, **(storage_options or {}))
    except ImportError as exc:
        extra = (
            "memodag[s3]" if protocol in ("s3", "s3a") else f"the fsspec driver for {protocol}://"
        )
        raise StorageError(
            f"object_store_io_manager: base_url {base_url!r} needs {extra}: {exc}"
        ) from exc
    if protocol == "file":
        return PathIOManager(LocalFileStore(), root, serializer, versioned)
    return PathIOManager(FsspecFileStore(fs, protocol), root, serializer, versioned)


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
            str, default_value="pickle", description="Default format: pickle, json or parquet."
        ),
        "versioned": Field(
            bool,
            default_value=False,
            description="Store under the output's version instead of the run id.",
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
    )
