"""Fixtures for the storage tests: a real S3-compatible server on loopback, and instance backends.

The S3 server is moto in server mode, started once per session on a free port of 127.0.0.1;
each test gets a bucket of its own, so no test sees another's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from memodag import Instance


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on the test S3 server, with what a job needs to reach it."""

    name: str
    endpoint_url: str
    client: Any  # a boto3 S3 client, to look at the bucket without going through memodag

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url, "key": "testing", "secret": "testing"}

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (listed by boto3, not fsspec)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on a free loopback port, for the whole session."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> S3Bucket:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    name = f"memodag-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return S3Bucket(name, s3_endpoint, client)


@pytest.fixture(params=["sqlite", "postgres"])
def instance_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of an empty instance database: a SQLite file, or a fresh Postgres schema."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'instance.db'}"


@pytest.fixture
def any_instance(instance_url: str, tmp_path) -> Iterator[Instance]:
    """An instance on each backend (parametrized), outputs under ``tmp_path/storage``."""
    inst = Instance.from_url(instance_url, storage_dir=tmp_path / "storage")
    yield inst
    inst.close()
