"""Runs started without an explicit instance use ``Instance.get()``: point it at a temporary
home so tests never write ``.memodag`` into the working directory."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def memodag_home(tmp_path, monkeypatch):
    home = tmp_path / "memodag_home"
    monkeypatch.setenv("MEMODAG_HOME", str(home))
    monkeypatch.delenv("MEMODAG_INSTANCE_URL", raising=False)
    return home
