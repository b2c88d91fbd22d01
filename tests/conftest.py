"""Shared fixtures: instances on real storage, and the real PostgreSQL when CI says it is there."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from memodag import Instance

POSTGRES_ENV = "MEMODAG_TEST_POSTGRES_URL"


@pytest.fixture(scope="session", autouse=True)
def memodag_cache_dir(tmp_path_factory):
    """Source-hash versions cache what they read of installed distributions in the user's cache
    folder: the tests (and the processes they start) use one of their own."""
    os.environ["MEMODAG_CACHE_DIR"] = str(tmp_path_factory.mktemp("memodag_cache"))


@pytest.fixture(autouse=True)
def memodag_home(tmp_path, monkeypatch):
    """Runs started without an explicit instance use ``Instance.get()``: point it at a temporary
    home so no test writes ``.memodag`` into the working directory or reads a developer's."""
    home = tmp_path / "memodag_home"
    monkeypatch.setenv("MEMODAG_HOME", str(home))
    monkeypatch.delenv("MEMODAG_INSTANCE_URL", raising=False)
    monkeypatch.delenv("MEMODAG_TABLE_STORE_URL", raising=False)  # the default table store's
    return home


@pytest.fixture
def instance(tmp_path) -> Iterator[Instance]:
    """A SQLite-file instance with its own storage directory (what users get by default)."""
    inst = Instance.from_url(
        f"sqlite:///{tmp_path / 'instance.db'}", storage_dir=tmp_path / "storage"
    )
    yield inst
    inst.close()


@pytest.fixture
def ephemeral_instance() -> Iterator[Instance]:
    inst = Instance.ephemeral()
    yield inst
    inst.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the real PostgreSQL named by $MEMODAG_TEST_POSTGRES_URL.

    Without the variable the test is skipped (a user without Postgres); with it, an unreachable
    server fails the test: CI sets the variable because the server is there.
    """
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    import psycopg

    schema = f"memodag_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
