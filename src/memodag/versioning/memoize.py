"""Memoization: the adapter the engine asks "is this step stored at its current version?"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memodag.engine.engine import Memoizer


def build_memoizer(job: Any, plan: Any, tags: Mapping[str, str], instance: Any) -> Memoizer:
    return Memoizer()
